import Glibc
import GuestMemory

/// virtio-blk (type 2; virtio 1.2, 5.2) over a raw image file or block device: read,
/// write, flush, GET_ID. Every request is checked against the disk's size with checked
/// arithmetic, so a guest can never make the VMM read or write outside the image (nor
/// grow it); a read-only disk answers writes with VIRTIO_BLK_S_IOERR, as the
/// specification says. The backend here is synchronous `pread`/`pwrite` on the thread
/// that serves the queue (the event loop's, when notifications come through an
/// ioeventfd).
public final class VirtioBlock: VirtioDevice {
    public let deviceType: UInt32 = 2
    public let queueSizes: [UInt16] = [256]
    public let path: String
    public let readOnly: Bool
    /// GET_ID's answer (at most 20 bytes).
    public let serial: String
    /// Size in 512-byte sectors.
    public let capacity: UInt64
    private let fd: Int32

    static let sectorSize: UInt64 = 512
    static let featureReadOnly: UInt64 = 1 << 5, featureFlush: UInt64 = 1 << 9, featureBlockSize: UInt64 = 1 << 6
    static let typeIn: UInt32 = 0, typeOut: UInt32 = 1, typeFlush: UInt32 = 4, typeGetID: UInt32 = 8
    static let statusOK: UInt8 = 0, statusIOError: UInt8 = 1, statusUnsupported: UInt8 = 2

    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    /// Opens `path`; a writable disk also takes an advisory lock, so two VMs cannot
    /// write one image.
    public init(path: String, readOnly: Bool = false, serial: String? = nil) throws(Failure) {
        let fd = open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(description: "cannot open disk \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0 else {
            close(fd)
            throw Failure(description: "disk \(path) is in use by another VM (locked)")
        }
        let size = lseek(fd, 0, SEEK_END)
        guard size >= 0 else { close(fd); throw Failure(description: "cannot size disk \(path): \(String(cString: strerror(errno)))") }
        self.fd = fd
        self.path = path
        self.readOnly = readOnly
        self.capacity = UInt64(size) / VirtioBlock.sectorSize
        self.serial = String((serial ?? String(path.split(separator: "/").last ?? "disk")).utf8.prefix(20)) ?? "disk"
    }

    deinit { close(fd) }

    public var offeredFeatures: UInt64 {
        VirtioBlock.featureFlush | VirtioBlock.featureBlockSize | (readOnly ? VirtioBlock.featureReadOnly : 0)
    }

    /// Configuration space: capacity (u64 at 0), blk_size (u32 at 20).
    public func readConfig(offset: Int, size: Int) -> UInt64 {
        var bytes = [UInt8](repeating: 0, count: 24)
        for i in 0..<8 { bytes[i] = UInt8(truncatingIfNeeded: capacity >> (8 * UInt64(i))) }
        for i in 0..<4 { bytes[20 + i] = UInt8(truncatingIfNeeded: UInt32(VirtioBlock.sectorSize) >> (8 * UInt32(i))) }
        var v: UInt64 = 0
        for i in 0..<min(max(size, 0), 8) where offset >= 0 && offset + i < bytes.count {
            v |= UInt64(bytes[offset + i]) << (8 * UInt64(i))
        }
        return v
    }

    public func writeConfig(offset: Int, size: Int, value: UInt64) {}
    public func reset() {}

    public func process(queue index: Int, _ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int {
        var done = 0
        while let chain = try queue.pop(memory) {
            let written = try serve(chain, memory: memory)
            try queue.push(memory, head: chain.head, written: written)
            done += 1
        }
        return done
    }

    /// One request: a 16-byte header the device reads, data, and a status byte (the last
    /// device-writable byte). Returns the bytes written into the guest's buffers.
    func serve(_ chain: DescriptorChain, memory: GuestMemory) throws(VirtQueueError) -> UInt32 {
        // The status byte is the last byte of the last writable buffer.
        guard let last = chain.writable.last else { throw .emptyChain }
        let statusAddress = GuestAddress(last.address.value + UInt64(last.length) - 1)
        let header = try chain.readBytes(count: 16, memory: memory)
        guard header.count == 16 else {
            try? memory.write(VirtioBlock.statusIOError, at: statusAddress)
            return 1
        }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(header[o + $1]) << (8 * $1) } }
        let type = u32(0)
        let sector = (0..<8).reduce(UInt64(0)) { $0 | UInt64(header[8 + $1]) << (8 * $1) }
        // Data: readable bytes after the header (OUT), writable bytes before the status (IN).
        var dataIn = chain.writable
        dataIn[dataIn.count - 1] = .init(address: last.address, length: last.length - 1, writable: true)
        var status = VirtioBlock.statusOK
        var written: UInt32 = 0
        switch type {
        case VirtioBlock.typeIn:
            let length = dataIn.reduce(UInt64(0)) { $0 + UInt64($1.length) }
            if let offset = span(sector: sector, length: length) {
                var position = offset
                for b in dataIn where b.length > 0 {
                    var bytes = [UInt8](repeating: 0, count: Int(b.length))
                    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, off_t(position)) }
                    guard n == Int(b.length) else { status = VirtioBlock.statusIOError; break }
                    do { try memory.write(bytes: bytes, at: b.address) } catch { throw .bufferOutsideMemory(b.address.value, UInt64(b.length)) }
                    position += UInt64(b.length)
                    written += b.length
                }
            } else {
                status = VirtioBlock.statusIOError
            }
        case VirtioBlock.typeOut:
            // At most 16 MiB a request: more is a malformed chain, not something to hold.
            let length = chain.readableLength &- min(chain.readableLength, 16)
            guard length <= VirtioBlock.maximumWrite else { throw .bufferOutsideMemory(chain.readable[0].address.value, length) }
            let payload = try chain.readBytes(from: 16, count: length, memory: memory)
            if readOnly {
                status = VirtioBlock.statusIOError
            } else if let offset = span(sector: sector, length: UInt64(payload.count)) {
                let n = payload.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, off_t(offset)) }
                if n != payload.count { status = VirtioBlock.statusIOError }
            } else {
                status = VirtioBlock.statusIOError
            }
        case VirtioBlock.typeFlush:
            if !readOnly && fsync(fd) != 0 { status = VirtioBlock.statusIOError }
        case VirtioBlock.typeGetID:
            var id = Array(serial.utf8.prefix(20))
            id += [UInt8](repeating: 0, count: 20 - id.count)
            written += UInt32(try DescriptorChain.write(id, into: dataIn, memory: memory))
        default:
            status = VirtioBlock.statusUnsupported
        }
        do { try memory.write(status, at: statusAddress) } catch { throw .bufferOutsideMemory(statusAddress.value, 1) }
        return written + 1
    }

    /// The byte offset of `length` bytes at `sector`, if they lie inside the disk
    /// (checked arithmetic: a hostile sector number cannot wrap around).
    func span(sector: UInt64, length: UInt64) -> UInt64? {
        let (offset, o1) = sector.multipliedReportingOverflow(by: VirtioBlock.sectorSize)
        let (end, o2) = offset.addingReportingOverflow(length)
        guard !o1, !o2, end <= capacity * VirtioBlock.sectorSize, length % VirtioBlock.sectorSize == 0 else { return nil }
        return offset
    }

    /// The largest write request served (a larger one is refused as malformed).
    static let maximumWrite: UInt64 = 16 << 20
}
