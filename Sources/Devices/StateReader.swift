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

    /// A byte string of exactly `count` bytes (a fixed-size area: CMOS RAM, a
    /// configuration space); `what` names it in the error.
    public mutating func getBytes(exactly count: Int, _ what: String) throws(StateError) -> [UInt8] {
        let b = try getBytes(limit: count)
        guard b.count == count else { throw StateError("\(what) of \(b.count) bytes, not \(count)") }
        return b
    }

    /// Throws unless everything was read: trailing bytes mean another layout.
    public func finish() throws(StateError) {
        guard isAtEnd else { throw StateError("\(bytes.count - position) bytes left over") }
    }
}
