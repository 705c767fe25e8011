/// Builds a device's saved state: little-endian integers and length-prefixed byte
/// strings, in the order the device's `restoreState` reads them back. A plain byte
/// layout rather than JSON, so the VMM needs no serialisation library and a reader can
/// check every length before it trusts it (`StateReader`).
public struct StateWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func put<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }

    public mutating func put(_ flag: Bool) { put(UInt8(flag ? 1 : 0)) }

    /// A 32-bit length, then the bytes.
    public mutating func put(bytes more: some Collection<UInt8>) {
        put(UInt32(truncatingIfNeeded: more.count))
        bytes += more
    }
}
