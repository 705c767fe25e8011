import CLinux
import Glibc
import GuestMemory
import Synchronization

/// virtio-blk (type 2; virtio 1.2, 5.2) over a raw image file or block device: read,
/// write, flush, GET_ID, discard (a hole punched in the image) and write-zeroes (a
/// range zeroed, or punched when the driver allows unmapping), on one queue or several
/// (VIRTIO_BLK_F_MQ: one per vCPU, up to `maximumQueues`). Every request is checked
/// against the disk's size with checked arithmetic, so a guest can never make the VMM
/// read or write outside the image (nor grow it); a read-only disk answers writes with
/// VIRTIO_BLK_S_IOERR, as the specification says.
///
/// Reads, writes and flushes go to a `BlockBackend` (io_uring, or worker threads) that
/// moves data directly between the image and guest RAM; the request is finished (its
/// status byte written, the used ring pushed, the driver interrupted) when the backend's
/// completion eventfd fires on the event loop. Without a backend (none could be made)
/// they are served at once with pread/pwrite. The rest are rare and served at once.
public final class VirtioBlock: VirtioDevice {
    public let deviceType: UInt32 = 2
    public let queueSizes: [UInt16]
    public let path: String
    public let readOnly: Bool
    /// Opened with O_DIRECT (`direct`, `cache=none`): no host page cache.
    public let direct: Bool
    /// GET_ID's answer (at most 20 bytes).
    public let serial: String
    /// Size in 512-byte sectors.
    public let capacity: UInt64
    private let fd: Int32
    private let backend: (any BlockBackend)?
    private let memory: GuestMemory?
    private let completer = Mutex<VirtioCompleter?>(nil)

    /// A request the backend is working on.
    private struct Pending {
        let queue: Int
        let head: UInt16
        let status: GuestAddress
        /// Bytes the backend must move for success.
        let expected: Int
        /// Bytes the device writes into the guest's buffers on success (a read's data).
        let dataWritten: UInt32
        /// The device's reset count when it started: a completion after a reset is dropped.
        let epoch: UInt64
    }
    private struct Requests {
        var pending: [UInt64: Pending] = [:]
        var nextToken: UInt64 = 1
        var epoch: UInt64 = 0
    }
    private let requests = Mutex(Requests())
    /// Bandwidth and operations per second (`bw=`, `iops=`): requests beyond them stay on
    /// the ring until the limiter's timer (a timerfd the event loop watches) fires.
    private let limiter: RateLimitTimer
    public var rateLimit: RateLimit { limiter.limit }

    public static let maximumQueues = 8
    static let sectorSize: UInt64 = 512
    static let featureReadOnly: UInt64 = 1 << 5, featureFlush: UInt64 = 1 << 9, featureBlockSize: UInt64 = 1 << 6
    static let featureMultiQueue: UInt64 = 1 << 12
    static let featureDiscard: UInt64 = 1 << 13, featureWriteZeroes: UInt64 = 1 << 14
    static let typeIn: UInt32 = 0, typeOut: UInt32 = 1, typeFlush: UInt32 = 4, typeGetID: UInt32 = 8
    static let typeDiscard: UInt32 = 11, typeWriteZeroes: UInt32 = 13
    /// Discard and write-zeroes limits the configuration space announces: sectors per
    /// segment, segments per request.
    static let maximumRangeSectors: UInt32 = 0x20_0000, maximumSegments: UInt32 = 32
    static let statusOK: UInt8 = 0, statusIOError: UInt8 = 1, statusUnsupported: UInt8 = 2

    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    /// Opens `path`; a writable disk also takes an advisory lock, so two VMs cannot
    /// write one image. `memory` and `backend` make reads, writes and flushes
    /// asynchronous (the machine passes both; tests may leave them out).
    public init(path: String, readOnly: Bool = false, serial: String? = nil, direct: Bool = false, queues: Int = 1,
                rateLimit: RateLimit = RateLimit(), memory: GuestMemory? = nil, backend: (any BlockBackend)? = nil) throws(Failure) {
        let fd = open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | (direct ? CLINUX_O_DIRECT : 0))
        guard fd >= 0 else {
            let why = String(cString: strerror(errno))
            throw Failure(description: "cannot open disk \(path)\(direct ? " with O_DIRECT" : ""): \(why)")
        }
        guard flock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0 else {
            close(fd)
            throw Failure(description: "disk \(path) is in use by another VM (locked)")
        }
        let size = lseek(fd, 0, SEEK_END)
        guard size >= 0 else { close(fd); throw Failure(description: "cannot size disk \(path): \(String(cString: strerror(errno)))") }
        self.fd = fd
        self.path = path
        self.readOnly = readOnly
        self.direct = direct
        self.capacity = UInt64(size) / VirtioBlock.sectorSize
        self.serial = String((serial ?? String(path.split(separator: "/").last ?? "disk")).utf8.prefix(20)) ?? "disk"
        queueSizes = Array(repeating: 256, count: min(max(queues, 1), VirtioBlock.maximumQueues))
        self.memory = memory
        self.backend = memory == nil ? nil : backend
        do { limiter = try RateLimitTimer(rateLimit) } catch { close(fd); throw Failure(description: "disk \(path): \(error.description)") }
    }

    deinit { close(fd) }

    /// Unlocks the image, so that the machine a rebooting guest gets next can lock it
    /// again (the fd stays open for whatever I/O is still in flight).
    public func release() { flock(fd, LOCK_UN) }

    /// The engine serving reads and writes: "io_uring", "thread pool" or "synchronous".
    public var engine: String { backend?.engine ?? "synchronous" }
    /// The engine's completion eventfd (nil when requests are served at once).
    public var completionFD: Int32? { backend?.completionFD }
    public var eventFDs: [Int32] { (backend.map { [$0.completionFD] } ?? []) + (limiter.fd >= 0 ? [limiter.fd] : []) }
    /// Times a request had to wait for the rate limiter.
    public var throttled: UInt64 { limiter.throttled }

    public func eventReady(_ fd: Int32) {
        guard fd == limiter.fd else { completeReady(); return }
        limiter.fired()
        let completer = completer.withLock { $0 }
        for q in queueSizes.indices { completer?.serve(queue: q) }
    }

    /// Whether the limiter lets `chain` go now (its data bytes, one request); if not, the
    /// device takes nothing more until the limiter's timer fires.
    func admit(_ chain: DescriptorChain) -> Bool {
        guard rateLimit.isLimited else { return true }
        return limiter.admit(bytes: chain.writableLength &- min(chain.writableLength, 1) &+ (chain.readableLength &- min(chain.readableLength, 16)))
    }
    public func attach(_ completer: VirtioCompleter) { self.completer.withLock { $0 = completer } }
    /// Requests the backend is working on.
    public var inFlight: Int { requests.withLock { $0.pending.count } }

    public var offeredFeatures: UInt64 {
        VirtioBlock.featureFlush | VirtioBlock.featureBlockSize
            | (readOnly ? VirtioBlock.featureReadOnly : VirtioBlock.featureDiscard | VirtioBlock.featureWriteZeroes)
            | (queueSizes.count > 1 ? VirtioBlock.featureMultiQueue : 0)
    }

    /// Configuration space: capacity (u64 at 0), blk_size (u32 at 20), and the discard
    /// and write-zeroes limits (u32s at 36-55, write_zeroes_may_unmap at 56).
    public func readConfig(offset: Int, size: Int) -> UInt64 {
        var bytes = [UInt8](repeating: 0, count: 60)
        func put(_ at: Int, _ v: UInt64, _ n: Int) { for i in 0..<n { bytes[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        put(0, capacity, 8)
        put(20, VirtioBlock.sectorSize, 4)
        put(34, UInt64(queueSizes.count), 2)
        put(36, UInt64(VirtioBlock.maximumRangeSectors), 4)
        put(40, UInt64(VirtioBlock.maximumSegments), 4)
        put(44, 1, 4)
        put(48, UInt64(VirtioBlock.maximumRangeSectors), 4)
        put(52, UInt64(VirtioBlock.maximumSegments), 4)
        put(56, 1, 1)
        var v: UInt64 = 0
        for i in 0..<min(max(size, 0), 8) where offset >= 0 && offset + i < bytes.count {
            v |= UInt64(bytes[offset + i]) << (8 * UInt64(i))
        }
        return v
    }

    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    /// The driver reset the device: requests still with the backend complete into memory
    /// the driver has given up, and are not pushed to the (new) rings.
    public func reset() { requests.withLock { $0.epoch &+= 1; $0.pending.removeAll() } }

    public func process(queue index: Int, _ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int {
        var done = 0
        defer { backend?.flush() }
        while let chain = try queue.pop(memory) {
            guard admit(chain) else {
                queue.undoPop()
                break
            }
            let header = try header(of: chain, memory: memory)
            if let header, try start(chain, header: header, queue: index, memory: memory) { continue }
            let written = try serve(chain, header: header, memory: memory)
            try queue.push(memory, head: chain.head, written: written)
            done += 1
        }
        return done
    }

    /// Hands a read, write or flush to the backend. False when the request is to be
    /// served at once instead (another type, a request the disk refuses, no backend).
    func start(_ chain: DescriptorChain, header: (type: UInt32, sector: UInt64), queue: Int,
               memory: GuestMemory) throws(VirtQueueError) -> Bool {
        guard let backend else { return false }
        let writable = chain.writable
        guard let last = writable.last else { return false }
        let (type, sector) = header
        let status = GuestAddress(last.address.value + UInt64(last.length) - 1)
        var ranges: [(address: GuestAddress, length: UInt64)] = []
        let operation: BlockOperation
        switch type {
        case VirtioBlock.typeIn:
            // The writable buffers, less the status byte at the end of the last one.
            ranges = writable.map { ($0.address, UInt64($0.length)) }
            ranges[ranges.count - 1].length -= 1
            guard let offset = span(sector: sector, length: ranges.reduce(0) { $0 + $1.length }) else { return false }
            operation = .read(offset: offset)
        case VirtioBlock.typeOut:
            guard !readOnly else { return false }
            // The readable buffers after the 16-byte header (which may share one).
            var skip: UInt64 = 16
            for b in chain.readable {
                let cut = min(skip, UInt64(b.length))
                skip -= cut
                if UInt64(b.length) > cut { ranges.append((GuestAddress(b.address.value + cut), UInt64(b.length) - cut)) }
            }
            let length = ranges.reduce(0) { $0 + $1.length }
            guard length > 0, length <= VirtioBlock.maximumWrite, let offset = span(sector: sector, length: length) else { return false }
            operation = .write(offset: offset)
        case VirtioBlock.typeFlush:
            guard !readOnly else { return false }
            operation = .flush
        default:
            return false
        }
        let vectors: IOVectors
        do { vectors = try memory.ioVectors(ranges) } catch { throw .bufferOutsideMemory(ranges.first?.address.value ?? 0, 0) }
        let expected = operation == .flush ? 0 : vectors.length
        let token = requests.withLock { r -> UInt64 in
            let t = r.nextToken
            r.nextToken &+= 1
            r.pending[t] = Pending(queue: queue, head: chain.head, status: status, expected: expected,
                                   dataWritten: type == VirtioBlock.typeIn ? UInt32(truncatingIfNeeded: expected) : 0, epoch: r.epoch)
            return t
        }
        guard backend.submit(operation, fd: fd, vectors: vectors, token: token) else {
            // The backend refused (its ring is full): served at once instead.
            requests.withLock { _ = $0.pending.removeValue(forKey: token) }
            return false
        }
        return true
    }

    /// A request's type and sector: read in place when the first buffer holds the whole
    /// 16-byte header (what drivers do), gathered across buffers otherwise.
    func header(of chain: DescriptorChain, memory: GuestMemory) throws(VirtQueueError) -> (type: UInt32, sector: UInt64)? {
        if let first = chain.buffers.first, !first.writable, first.length >= 16 {
            do {
                return (try memory.read(UInt32.self, at: first.address), try memory.read(UInt64.self, at: GuestAddress(first.address.value + 8)))
            } catch {
                throw .bufferOutsideMemory(first.address.value, 16)
            }
        }
        let bytes = try chain.readBytes(count: 16, memory: memory)
        guard bytes.count == 16 else { return nil }
        return ((0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[$1]) << (8 * $1) },
                (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[8 + $1]) << (8 * $1) })
    }

    /// The backend's completion eventfd fired: finish each request (status byte, then the
    /// used ring through the transport, which interrupts the driver if it wants).
    public func completeReady() {
        guard let backend, let memory else { return }
        let finished = backend.reap()
        guard !finished.isEmpty else { return }
        let completer = completer.withLock { $0 }
        struct Done { let request: Pending; let result: Int }
        let done = requests.withLock { r in
            finished.compactMap { c -> Done? in
                guard let p = r.pending.removeValue(forKey: c.token), p.epoch == r.epoch else { return nil }
                return Done(request: p, result: c.result)
            }
        }
        var byQueue = [[UsedElement]](repeating: [], count: queueSizes.count)
        for d in done {
            let ok = d.result == d.request.expected
            try? memory.write(ok ? VirtioBlock.statusOK : VirtioBlock.statusIOError, at: d.request.status)
            if d.request.queue < byQueue.count {
                byQueue[d.request.queue].append(UsedElement(head: d.request.head, written: (ok ? d.request.dataWritten : 0) + 1))
            }
        }
        for (q, f) in byQueue.enumerated() where !f.isEmpty { completer?.complete(queue: q, f) }
    }

    /// One request: a 16-byte header the device reads (`header`, parsed once by `process`;
    /// nil when the chain is too short to hold one), data, and a status byte (the last
    /// device-writable byte). Returns the bytes written into the guest's buffers.
    func serve(_ chain: DescriptorChain, header: (type: UInt32, sector: UInt64)?, memory: GuestMemory) throws(VirtQueueError) -> UInt32 {
        // The status byte is the last byte of the last writable buffer.
        guard let last = chain.writable.last else { throw .emptyChain }
        let statusAddress = GuestAddress(last.address.value + UInt64(last.length) - 1)
        guard let (type, sector) = header else {
            try? memory.write(VirtioBlock.statusIOError, at: statusAddress)
            return 1
        }
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
                    let n = bytes.withUnsafeMutableBytes { b in b.baseAddress.map { pread(fd, $0, b.count, off_t(position)) } ?? -1 }
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
                let n = payload.isEmpty ? 0 : payload.withUnsafeBytes { b in b.baseAddress.map { pwrite(fd, $0, b.count, off_t(offset)) } ?? -1 }
                if n != payload.count { status = VirtioBlock.statusIOError }
            } else {
                status = VirtioBlock.statusIOError
            }
        case VirtioBlock.typeFlush:
            if !readOnly && fsync(fd) != 0 { status = VirtioBlock.statusIOError }
        case VirtioBlock.typeDiscard, VirtioBlock.typeWriteZeroes:
            status = try ranges(type: type, chain, memory: memory)
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

    /// Discard or write-zeroes: the segments (sector u64, sectors u32, flags u32) after
    /// the header, each checked against the disk, then applied with fallocate(2) and
    /// FALLOC_FL_KEEP_SIZE, so the image never grows. Discard punches a hole (where the
    /// file system cannot, it is a no-op: discarding is advice); write-zeroes punches
    /// when the driver set UNMAP, zeroes the range otherwise, and writes zeros itself
    /// where the file system has neither.
    func ranges(type: UInt32, _ chain: DescriptorChain, memory: GuestMemory) throws(VirtQueueError) -> UInt8 {
        let length = chain.readableLength &- min(chain.readableLength, 16)
        guard !readOnly else { return VirtioBlock.statusIOError }
        guard length > 0, length % 16 == 0, length / 16 <= UInt64(VirtioBlock.maximumSegments) else { return VirtioBlock.statusUnsupported }
        let bytes = try chain.readBytes(from: 16, count: length, memory: memory)
        guard UInt64(bytes.count) == length else { return VirtioBlock.statusIOError }
        var segments: [(offset: UInt64, length: UInt64, unmap: Bool)] = []
        for s in stride(from: 0, to: bytes.count, by: 16) {
            let sector = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[s + $1]) << (8 * $1) }
            let count = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[s + 8 + $1]) << (8 * $1) }
            let flags = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[s + 12 + $1]) << (8 * $1) }
            // Only UNMAP (bit 0), and only for write-zeroes (virtio 1.2, 5.2.6.2).
            guard flags & ~1 == 0, type == VirtioBlock.typeWriteZeroes || flags == 0 else { return VirtioBlock.statusUnsupported }
            guard count <= VirtioBlock.maximumRangeSectors,
                  let offset = span(sector: sector, length: UInt64(count) * VirtioBlock.sectorSize) else { return VirtioBlock.statusIOError }
            segments.append((offset, UInt64(count) * VirtioBlock.sectorSize, flags & 1 != 0))
        }
        for s in segments where s.length > 0 {
            let keep = FALLOC_FL_KEEP_SIZE
            if type == VirtioBlock.typeDiscard {
                let r = clinux_fallocate(fd, keep | FALLOC_FL_PUNCH_HOLE, Int64(s.offset), Int64(s.length))
                if r != 0 && r != -EOPNOTSUPP { return VirtioBlock.statusIOError }
                continue
            }
            var r = clinux_fallocate(fd, keep | (s.unmap ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE), Int64(s.offset), Int64(s.length))
            if r == -EOPNOTSUPP && s.unmap { r = clinux_fallocate(fd, keep | FALLOC_FL_ZERO_RANGE, Int64(s.offset), Int64(s.length)) }
            if r == -EOPNOTSUPP { r = writeZeroes(offset: s.offset, length: s.length) ? 0 : -EIO }
            if r != 0 { return VirtioBlock.statusIOError }
        }
        return VirtioBlock.statusOK
    }

    /// Zeroes with plain writes, 64 KiB at a time (file systems without fallocate).
    func writeZeroes(offset: UInt64, length: UInt64) -> Bool {
        let chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var done: UInt64 = 0
        while done < length {
            let n = Int(min(UInt64(chunk.count), length - done))
            let w = chunk.withUnsafeBytes { b in b.baseAddress.map { pwrite(fd, $0, n, off_t(offset + done)) } ?? -1 }
            guard w > 0 else { return false }
            done += UInt64(w)
        }
        return true
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


extension VirtioBlock {
    /// Reaps the engine until every request in flight is finished (status byte and used
    /// ring written), so a snapshot neither loses one nor records one half done.
    public func quiesce(timeoutNanoseconds: UInt64) -> Bool {
        let deadline = monotonicNanoseconds() &+ timeoutNanoseconds
        while inFlight > 0 {
            completeReady()
            if inFlight == 0 { break }
            guard monotonicNanoseconds() < deadline else { return false }
            usleep(200)
        }
        return true
    }
}
