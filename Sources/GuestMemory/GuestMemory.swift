import Glibc

/// All of a guest's RAM, and the one interface through which the VMM, its devices and
/// its loaders touch it.
///
/// Every access names a guest-physical range and is checked to lie inside one region
/// before any host pointer is formed, so a guest-supplied address or length (a virtio
/// descriptor, a boot parameter) can never reach host memory outside guest RAM: the
/// worst it gets is `GuestMemoryError.outOfBounds`.
public final class GuestMemory: Sendable {
    /// Sorted by start address, never overlapping.
    public let regions: [MemoryRegion]

    public init(regions: [MemoryRegion]) throws(GuestMemoryError) {
        let sorted = regions.sorted { $0.start < $1.start }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.end > b.start.value {
            throw .invalidRegion(start: b.start, size: b.size)
        }
        self.regions = sorted
    }

    /// Convenience: anonymous regions of the given `(start, size)` ranges.
    public convenience init(ranges: [(start: UInt64, size: UInt64)], options: MemoryRegion.Options = .init()) throws(GuestMemoryError) {
        var made: [MemoryRegion] = []
        for r in ranges { made.append(try MemoryRegion(start: GuestAddress(r.start), size: r.size, options: options)) }
        try self.init(regions: made)
    }

    /// Whether every region is made of reserved huge pages.
    public var hugeTLB: Bool { regions.allSatisfy(\.hugeTLB) }

    /// Total bytes of guest RAM.
    public var size: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// The region holding all of `[address, +length)`, if one does.
    @inlinable
    public func region(containing address: GuestAddress, length: UInt64 = 1) -> MemoryRegion? {
        // Few regions (two at most for RAM below and above the PCI hole): a scan beats
        // a search.
        for r in regions where r.contains(address, length: length) { return r }
        return nil
    }

    /// True when the whole range is guest RAM.
    public func isValid(_ address: GuestAddress, length: UInt64) -> Bool {
        region(containing: address, length: length) != nil
    }

    /// The single place where a guest range becomes a host pointer. (Inlinable, as the
    /// typed accessors below, so that devices in other modules get them specialised for
    /// each integer type instead of going through generic witnesses on every field.)
    @inlinable @inline(__always)
    func host(_ address: GuestAddress, _ length: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        guard let r = region(containing: address, length: length) else {
            throw .outOfBounds(address: address, length: length)
        }
        return r.host + Int(address.value - r.start.value)
    }

    // MARK: Typed access (little-endian, as x86 stores it)

    @inlinable
    public func read<T: FixedWidthInteger>(_: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let p = try host(address, UInt64(MemoryLayout<T>.size))
        return T(littleEndian: p.loadUnaligned(as: T.self))
    }

    @inlinable
    public func write<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let p = try host(address, UInt64(MemoryLayout<T>.size))
        p.storeBytes(of: value.littleEndian, as: T.self)
    }

    // MARK: Bulk access

    /// Copies `bytes` into guest memory at `address`.
    public func write<C: Collection>(bytes: C, at address: GuestAddress) throws(GuestMemoryError) where C.Element == UInt8 {
        let p = try host(address, UInt64(bytes.count))
        var i = 0
        let done: Bool? = bytes.withContiguousStorageIfAvailable { src in
            if let base = src.baseAddress { p.copyMemory(from: base, byteCount: src.count) }
            return true
        }
        if done == nil { for b in bytes { p.storeBytes(of: b, toByteOffset: i, as: UInt8.self); i += 1 } }
    }

    /// Reads `count` bytes from `address`.
    public func read(bytes count: Int, at address: GuestAddress) throws(GuestMemoryError) -> [UInt8] {
        guard count >= 0 else { throw .outOfBounds(address: address, length: 0) }
        let p = try host(address, UInt64(count))
        return [UInt8](UnsafeRawBufferPointer(start: p, count: count))
    }

    /// Fills `[address, +count)` with `value`.
    public func fill(_ value: UInt8, count: UInt64, at address: GuestAddress) throws(GuestMemoryError) {
        let p = try host(address, count)
        memset(p, Int32(value), Int(count))
    }

    /// Copies within guest memory (overlap allowed, as `memmove`).
    public func copy(from source: GuestAddress, to destination: GuestAddress, count: UInt64) throws(GuestMemoryError) {
        let s = try host(source, count)
        let d = try host(destination, count)
        memmove(d, s, Int(count))
    }

    /// Lends the bytes of a guest range to `body` for reading, without a copy (e.g. to
    /// `write(2)` them to a disk image). The buffer must not escape `body`.
    public func withBytes<R>(at address: GuestAddress, count: Int,
                             _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard count >= 0 else { throw GuestMemoryError.outOfBounds(address: address, length: 0) }
        let p = try host(address, UInt64(count))
        return try body(UnsafeRawBufferPointer(start: p, count: count))
    }

    /// Lends a guest range to `body` for writing, without a copy (e.g. for `read(2)`).
    public func withMutableBytes<R>(at address: GuestAddress, count: Int,
                                    _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        guard count >= 0 else { throw GuestMemoryError.outOfBounds(address: address, length: 0) }
        let p = try host(address, UInt64(count))
        return try body(UnsafeMutableRawBufferPointer(start: p, count: count))
    }

    /// Host I/O vectors for guest ranges, for I/O that the kernel performs on guest RAM
    /// directly and later (a disk's `preadv` on a worker thread, an io_uring request).
    /// Each range is checked as any access is. The vectors point into this memory's
    /// mappings, which never move: they are valid for as long as this object lives, so
    /// whoever submits I/O with them keeps it alive until the I/O completes.
    public func ioVectors(_ ranges: [(address: GuestAddress, length: UInt64)]) throws(GuestMemoryError) -> IOVectors {
        var v: [iovec] = []
        v.reserveCapacity(ranges.count)
        for r in ranges where r.length > 0 {
            guard r.length <= UInt64(Int.max) else { throw .outOfBounds(address: r.address, length: r.length) }
            v.append(iovec(iov_base: try host(r.address, r.length), iov_len: Int(r.length)))
        }
        return IOVectors(vectors: v, memory: self)
    }

    /// A NUL-terminated string of at most `maxLength` bytes (command lines, names).
    public func readCString(at address: GuestAddress, maxLength: Int) throws(GuestMemoryError) -> String {
        var bytes: [UInt8] = []
        for i in 0..<maxLength {
            guard let a = address.adding(UInt64(i)) else { throw .outOfBounds(address: address, length: UInt64(i)) }
            let b: UInt8 = try read(at: a)
            if b == 0 { break }
            bytes.append(b)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Drops and restores access to the host page behind `address` (`mprotect` to
    /// none, then back), as QEMU's pc-testdev "flush page" does: KVM must then fault
    /// the page in again, which tests its shadow/EPT invalidation.
    public func refaultPage(at address: GuestAddress) throws(GuestMemoryError) {
        let page = address.value & ~0xFFF
        let p = try host(GuestAddress(page), 0x1000)
        mprotect(p, 0x1000, PROT_NONE)
        mprotect(p, 0x1000, PROT_READ | PROT_WRITE)
    }

    /// The regions laid end to end, as a snapshot's memory file holds them: region i
    /// at the sum of the sizes before it.
    public var fileLayout: [(start: UInt64, size: UInt64, fileOffset: UInt64)] {
        zip(regions, GuestMemory.fileOffsets(regions.map(\.size))).map { ($0.start.value, $0.size, $1) }
    }

    /// Where each region of `sizes` starts in a memory file: at the sum of the sizes
    /// before it (UInt64.max past an overflow, which no file offset can be).
    static func fileOffsets(_ sizes: [UInt64]) -> [UInt64] {
        var offset: UInt64 = 0
        return sizes.map { size in
            defer { let (sum, overflow) = offset.addingReportingOverflow(size); offset = overflow ? .max : sum }
            return offset
        }
    }

    /// Maps guest RAM of `ranges` copy-on-write from a snapshot's memory file (laid out
    /// as `fileLayout`): nothing is read until the guest touches it.
    public convenience init(ranges: [(start: UInt64, size: UInt64)], privateFile fd: Int32) throws(GuestMemoryError) {
        var made: [MemoryRegion] = []
        for (r, offset) in zip(ranges, GuestMemory.fileOffsets(ranges.map(\.size))) {
            guard offset <= UInt64(Int64.max) else { throw .invalidRegion(start: GuestAddress(r.start), size: r.size) }
            made.append(try MemoryRegion(start: GuestAddress(r.start), size: r.size, backing: .privateFile(fd: fd, offset: Int64(offset))))
        }
        try self.init(regions: made)
    }

    /// Writes all of guest RAM to `fd` (an empty file) as `fileLayout` lays it out, as
    /// a sparse file: pages of zeros are holes, so a guest that touched 10 MiB of 4 GiB
    /// costs 10 MiB of disk, and anonymous pages the host never backed are not even
    /// read (`mincore`). Returns the bytes actually written.
    public func save(to fd: Int32) throws(GuestMemoryError) -> UInt64 {
        let page = 4096
        var vec = [UInt8](repeating: 0, count: 1 << 16)
        var written: UInt64 = 0
        for (region, layout) in zip(regions, fileLayout) {
            let window = page << 16
            var offset = 0
            let size = Int(region.size)
            while offset < size {
                let length = min(window, size - offset)
                let pages = (length + page - 1) / page
                let base = region.host + offset
                if region.isAnonymous {
                    guard mincore(base, length, &vec) == 0 else { throw .fileFailed(operation: "mincore", errno: errno) }
                }
                // Runs of pages that hold something, each written with one pwrite.
                var i = 0
                while i < pages {
                    func holdsData(_ i: Int) -> Bool {
                        if region.isAnonymous && vec[i] & 1 == 0 { return false }
                        let p = (base + i * page).assumingMemoryBound(to: UInt64.self)
                        let words = min(page, length - i * page) / 8
                        for w in 0..<words where p[w] != 0 { return true }
                        return false
                    }
                    guard holdsData(i) else { i += 1; continue }
                    var j = i + 1
                    while j < pages && holdsData(j) { j += 1 }
                    let runStart = i * page, runLength = min(j * page, length) - runStart
                    var done = 0
                    while done < runLength {
                        let n = pwrite(fd, base + runStart + done, runLength - done, off_t(layout.fileOffset) + off_t(offset + runStart + done))
                        if n < 0 && errno == EINTR { continue }
                        guard n > 0 else { throw .fileFailed(operation: "write", errno: n < 0 ? errno : EIO) }
                        done += n
                    }
                    written += UInt64(runLength)
                    i = j
                }
                offset += length
            }
        }
        // The holes at the end: the file is as long as guest RAM.
        guard ftruncate(fd, off_t(size)) == 0 else { throw .fileFailed(operation: "ftruncate", errno: errno) }
        return written
    }

    /// Pages actually backed by host memory (`mincore`), to tell guest memory apart
    /// from the VMM's own in resident-size figures. Asked 256 MiB at a time, so that
    /// the question costs 64 KiB of the VMM's memory whatever the guest's size (a
    /// vector for all of a 4 GiB guest at once would be 1 MiB).
    public var residentBytes: UInt64 {
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let window = page << 16
        var vec = [UInt8](repeating: 0, count: 1 << 16)
        var total: UInt64 = 0
        for r in regions {
            var offset: UInt64 = 0
            while offset < r.size {
                let length = min(window, r.size - offset)
                guard mincore(r.host + Int(offset), Int(length), &vec) == 0 else { break }
                let pages = Int((length + page - 1) / page)
                total += UInt64(vec.prefix(pages).reduce(0) { $0 + Int($1 & 1) }) * page
                offset += length
            }
        }
        return total
    }
}

/// Host I/O vectors into guest RAM (`GuestMemory.ioVectors`), with the memory they point
/// into kept alive beside them, so that in-flight I/O never outlives its buffers.
/// Sendable: the pointers are into mappings the guest's RAM owns for its whole life.
public struct IOVectors: @unchecked Sendable {
    public let vectors: [iovec]
    let memory: GuestMemory

    /// Total bytes.
    public var length: Int { vectors.reduce(0) { $0 + $1.iov_len } }
}
