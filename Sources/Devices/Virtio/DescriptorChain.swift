import GuestMemory

/// One request a driver put on a virtqueue: the buffers of a descriptor chain (indirect
/// tables already followed), each checked to lie inside guest RAM. Device-readable
/// buffers come first, device-writable ones after, as the specification requires of
/// drivers (virtio 1.2, 2.7.4.2).
public struct DescriptorChain: Sendable, Equatable {
    /// The head descriptor's index: what goes back in the used ring.
    public let head: UInt16
    public let buffers: [Buffer]

    public struct Buffer: Sendable, Equatable {
        public let address: GuestAddress
        public let length: UInt32
        /// Device-writable (VIRTQ_DESC_F_WRITE).
        public let writable: Bool

        public init(address: GuestAddress, length: UInt32, writable: Bool) {
            self.address = address
            self.length = length
            self.writable = writable
        }
    }

    public var readable: [Buffer] { buffers.filter { !$0.writable } }
    public var writable: [Buffer] { buffers.filter(\.writable) }
    /// Bytes the device may read, and write (each at most 4 GiB: lengths are checked as
    /// the chain is read).
    public var readableLength: UInt64 { readable.reduce(0) { $0 + UInt64($1.length) } }
    public var writableLength: UInt64 { writable.reduce(0) { $0 + UInt64($1.length) } }

    /// Up to `count` of the bytes the driver gave the device to read, starting `offset`
    /// bytes into them (a request's header, then its payload), across buffers.
    public func readBytes(from offset: UInt64 = 0, count: UInt64, memory: GuestMemory) throws(VirtQueueError) -> [UInt8] {
        var skip = offset
        var out: [UInt8] = []
        for b in readable where UInt64(out.count) < count {
            var address = b.address.value, length = UInt64(b.length)
            let skipped = min(skip, length)
            skip -= skipped; address += skipped; length -= skipped
            let n = min(length, count - UInt64(out.count))
            guard n > 0 else { continue }
            do { out += try memory.read(bytes: Int(n), at: GuestAddress(address)) }
            catch { throw .bufferOutsideMemory(address, n) }
        }
        return out
    }

    /// Writes `bytes` into the device-writable buffers in order; returns how many fit.
    @discardableResult
    public func write<C: Collection>(_ bytes: C, to memory: GuestMemory) throws(VirtQueueError) -> Int where C.Element == UInt8 {
        try DescriptorChain.write(bytes, into: writable, memory: memory)
    }

    /// Writes `bytes` into the device-writable buffers starting `offset` bytes into them
    /// (a field inside a header already received there); returns how many fit.
    @discardableResult
    public func write(_ bytes: [UInt8], at offset: UInt64, to memory: GuestMemory) throws(VirtQueueError) -> Int {
        var rest = bytes[...]
        for r in DescriptorChain.ranges(of: writable, from: offset, count: UInt64(bytes.count)) {
            let n = Int(r.length)
            do { try memory.write(bytes: rest.prefix(n), at: r.address) }
            catch { throw .bufferOutsideMemory(r.address.value, r.length) }
            rest = rest.dropFirst(n)
        }
        return bytes.count - rest.count
    }

    /// The guest ranges of `buffers` from `offset` bytes into them on, at most `count`
    /// bytes: where a payload after a header lies (for I/O vectors, or a write).
    public static func ranges(of buffers: [Buffer], from offset: UInt64, count: UInt64) -> [(address: GuestAddress, length: UInt64)] {
        var skip = offset, left = count
        var out: [(address: GuestAddress, length: UInt64)] = []
        for b in buffers where left > 0 {
            let length = UInt64(b.length)
            if skip >= length { skip -= length; continue }
            let n = min(length - skip, left)
            out.append((GuestAddress(b.address.value + skip), n))
            left -= n
            skip = 0
        }
        return out
    }

    /// Writes `bytes` into `buffers` in order (a device that keeps the last byte for its
    /// status passes the others); returns how many fit.
    @discardableResult
    public static func write<C: Collection>(_ bytes: C, into buffers: [Buffer], memory: GuestMemory) throws(VirtQueueError) -> Int where C.Element == UInt8 {
        var rest = bytes[...]
        var written = 0
        for b in buffers where !rest.isEmpty && b.length > 0 {
            let n = min(Int(b.length), rest.count)
            do { try memory.write(bytes: rest.prefix(n), at: b.address) }
            catch { throw .bufferOutsideMemory(b.address.value, UInt64(b.length)) }
            rest = rest.dropFirst(n)
            written += n
        }
        return written
    }
}

/// A malformed queue or chain: counted, reported, and the device marked as needing a
/// reset (virtio 1.2, 2.1.2: DEVICE_NEEDS_RESET), never a crash or a hang.
public enum VirtQueueError: Error, Equatable, Sendable, CustomStringConvertible {
    case notReady
    case ringOutsideMemory(String, UInt64)
    case availIndexJumped(from: UInt16, to: UInt16, size: UInt16)
    case descriptorIndexOutOfRange(UInt16, size: UInt16)
    case chainTooLong(limit: Int)
    case nestedIndirectTable
    case indirectWithNext
    case badIndirectTable(length: UInt32)
    case bufferOutsideMemory(UInt64, UInt64)
    case readableAfterWritable
    case emptyChain

    public var description: String {
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        switch self {
        case .notReady: return "the queue is not ready"
        case let .ringOutsideMemory(what, a): return "the \(what) at \(hex(a)) is not in guest RAM"
        case let .availIndexJumped(from, to, size): return "the available index moved from \(from) to \(to), more than the queue's \(size) entries"
        case let .descriptorIndexOutOfRange(i, size): return "descriptor index \(i) is beyond the queue's \(size) entries"
        case let .chainTooLong(limit): return "a descriptor chain longer than \(limit) descriptors (a loop?)"
        case .nestedIndirectTable: return "an indirect table inside an indirect table"
        case .indirectWithNext: return "a descriptor both indirect and chained (INDIRECT with NEXT)"
        case let .badIndirectTable(length): return "an indirect table of \(length) bytes (not a whole, non-zero number of descriptors)"
        case let .bufferOutsideMemory(a, n): return "a buffer of \(n) bytes at \(hex(a)) is not in guest RAM"
        case .readableAfterWritable: return "a device-readable buffer after a device-writable one"
        case .emptyChain: return "a chain with no buffers"
        }
    }
}
