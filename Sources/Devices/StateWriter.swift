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

/// Reads what a `StateWriter` wrote, from a file that may be truncated, corrupt or
/// hostile: every read checks what is left, every length is bounded by the caller.
public struct StateReader: Sendable {
    private let bytes: [UInt8]
    private var position = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var isAtEnd: Bool { position == bytes.count }

    public mutating func get<T: FixedWidthInteger>(_: T.Type = T.self) throws(StateError) -> T {
        let size = MemoryLayout<T>.size
        guard bytes.count - position >= size else { throw StateError("the state ends early") }
        var v: T = 0
        for i in 0..<size { v |= T(truncatingIfNeeded: bytes[position + i]) << (8 * i) }
        position += size
        return v
    }

    public mutating func getBool() throws(StateError) -> Bool {
        switch try get(UInt8.self) {
        case 0: return false
        case 1: return true
        default: throw StateError("a flag is neither 0 nor 1")
        }
    }

    /// A byte string of at most `limit` bytes.
    public mutating func getBytes(limit: Int) throws(StateError) -> [UInt8] {
        let n = Int(try get(UInt32.self))
        guard n <= limit else { throw StateError("a field of \(n) bytes is longer than its limit of \(limit)") }
        guard bytes.count - position >= n else { throw StateError("the state ends early") }
        defer { position += n }
        return Array(bytes[position..<position + n])
    }

    /// Throws unless everything was read: trailing bytes mean another layout.
    public func finish() throws(StateError) {
        guard isAtEnd else { throw StateError("\(bytes.count - position) bytes left over") }
    }
}

/// Saved state that cannot be taken back: truncated, corrupt, or of another layout.
public struct StateError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A device whose state a snapshot saves and a restore writes back (DESIGN
/// "Snapshots"). Saved while every vCPU is parked, restored before any runs; a device
/// not conforming makes a snapshot of its machine refuse, rather than resume wrong.
public protocol StatefulDevice: BusDevice {
    func saveState(into writer: inout StateWriter)
    /// Takes a state back whole or not at all: on a throw the device is as before.
    func restoreState(from reader: inout StateReader) throws(StateError)
}
