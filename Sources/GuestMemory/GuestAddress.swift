/// A guest-physical address. Its own type so that a host pointer, a length or a guest
/// value can never be passed where an address is meant.
public struct GuestAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let value: UInt64
    @inlinable public init(_ value: UInt64) { self.value = value }

    public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.value < b.value }

    /// `self + offset`, or nil where that wraps past 2^64 (a hostile guest's favourite).
    public func adding(_ offset: UInt64) -> GuestAddress? {
        let (r, o) = value.addingReportingOverflow(offset)
        return o ? nil : GuestAddress(r)
    }

    public var description: String { "0x" + String(value, radix: 16) }
}
