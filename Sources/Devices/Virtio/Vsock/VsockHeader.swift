/// The header in front of every virtio-vsock packet (virtio 1.2, 5.10.6: 44 bytes,
/// little-endian), read from and written to guest buffers as bytes.
public struct VsockHeader: Equatable, Sendable {
    public static let size = 44
    /// The one socket type served: a stream (SEQPACKET is not offered).
    public static let stream: UInt16 = 1

    public enum Operation: UInt16, Sendable {
        case request = 1, response, reset, shutdown, readWrite, creditUpdate, creditRequest
    }
    /// SHUTDOWN flags: the sender will receive, or send, no more.
    public static let shutdownReceive: UInt32 = 1, shutdownSend: UInt32 = 2

    public var sourceCID: UInt64
    public var destinationCID: UInt64
    public var sourcePort: UInt32
    public var destinationPort: UInt32
    public var length: UInt32
    public var type: UInt16
    public var operation: UInt16
    public var flags: UInt32
    /// The sender's receive buffer for this connection, and how many bytes it has
    /// taken out of it: the peer may have `bufferAllocation - (sent - forwardCount)`
    /// bytes in flight (credit-based flow control, 5.10.6.3).
    public var bufferAllocation: UInt32
    public var forwardCount: UInt32

    public init(sourceCID: UInt64, destinationCID: UInt64, sourcePort: UInt32, destinationPort: UInt32, length: UInt32 = 0,
                operation: Operation, flags: UInt32 = 0, bufferAllocation: UInt32 = 0, forwardCount: UInt32 = 0) {
        self.sourceCID = sourceCID
        self.destinationCID = destinationCID
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.length = length
        self.type = VsockHeader.stream
        self.operation = operation.rawValue
        self.flags = flags
        self.bufferAllocation = bufferAllocation
        self.forwardCount = forwardCount
    }

    /// Reads a header from its 44 bytes (nil if there are fewer).
    public init?(_ b: [UInt8]) {
        guard b.count >= VsockHeader.size else { return nil }
        func le(_ at: Int, _ n: Int) -> UInt64 { (0..<n).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) } }
        sourceCID = le(0, 8)
        destinationCID = le(8, 8)
        sourcePort = UInt32(truncatingIfNeeded: le(16, 4))
        destinationPort = UInt32(truncatingIfNeeded: le(20, 4))
        length = UInt32(truncatingIfNeeded: le(24, 4))
        type = UInt16(truncatingIfNeeded: le(28, 2))
        operation = UInt16(truncatingIfNeeded: le(30, 2))
        flags = UInt32(truncatingIfNeeded: le(32, 4))
        bufferAllocation = UInt32(truncatingIfNeeded: le(36, 4))
        forwardCount = UInt32(truncatingIfNeeded: le(40, 4))
    }

    public var bytes: [UInt8] {
        var b: [UInt8] = []
        b.reserveCapacity(VsockHeader.size)
        func put(_ v: UInt64, _ n: Int) { for i in 0..<n { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
        put(sourceCID, 8); put(destinationCID, 8)
        put(UInt64(sourcePort), 4); put(UInt64(destinationPort), 4); put(UInt64(length), 4)
        put(UInt64(type), 2); put(UInt64(operation), 2); put(UInt64(flags), 4)
        put(UInt64(bufferAllocation), 4); put(UInt64(forwardCount), 4)
        return b
    }
}
