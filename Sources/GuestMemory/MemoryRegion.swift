import Glibc

/// One contiguous range of guest-physical memory and the host mapping behind it.
///
/// The mapping is private to this object: it is created in `init`, unmapped in
/// `deinit`, and only `GuestMemory` turns addresses inside it into host pointers.
public final class MemoryRegion: @unchecked Sendable {
    // Sound to share: the mapping's address and size never change, and the bytes in
    // it are shared with the guest anyway (concurrent access is the guest's business,
    // as on real hardware).
    public let start: GuestAddress
    public let size: UInt64
    @usableFromInline let host: UnsafeMutableRawPointer
    /// Whether the mapping is made of reserved 2 MiB huge pages (hugetlbfs).
    public let hugeTLB: Bool
    /// Anonymous memory: a page the host has never backed reads as zeros.
    public let isAnonymous: Bool

    /// Where the memory comes from.
    public enum Backing: Sendable {
        /// Zeroed anonymous memory, reserved lazily (`MAP_NORESERVE`): untouched guest
        /// pages cost the host nothing.
        case anonymous
        /// A shared mapping of `fd` from `offset` (e.g. a memfd for snapshots or
        /// vhost-user): writes reach the file.
        case file(fd: Int32, offset: Int64)
        /// A private (copy-on-write) mapping of `fd` from `offset`: pages are read from
        /// the file on first touch and the guest's writes stay in this process. How a
        /// snapshot's memory file comes back, at a cost that does not grow with its size.
        case privateFile(fd: Int32, offset: Int64)
    }

    /// How anonymous guest RAM is backed (`run --hugepages`, `--mergeable`).
    public struct Options: Equatable, Sendable {
        /// Try the host's reserved 2 MiB pages (`MAP_HUGETLB`): fewer TLB misses and
        /// page faults for the guest. Reserved at map time, not lazily (a huge page
        /// that cannot be had later would kill the VM with SIGBUS); where there are too
        /// few (or the size is not a multiple of 2 MiB) the region falls back to
        /// ordinary pages with `MADV_HUGEPAGE`, so transparent huge pages may still
        /// back it, and `hugeTLB` says so.
        public var hugePages: Bool
        /// Let KSM merge identical guest pages (`MADV_MERGEABLE`): less host memory
        /// for many VMs of one image, at the cost of ksmd's scanning and of a timing
        /// side channel between the guests it merges; off unless asked.
        public var mergeable: Bool

        public init(hugePages: Bool = false, mergeable: Bool = false) {
            self.hugePages = hugePages
            self.mergeable = mergeable
        }
    }

    public static let hugePageSize: UInt64 = 2 << 20

    public init(start: GuestAddress, size: UInt64, backing: Backing = .anonymous, options: Options = Options()) throws(GuestMemoryError) {
        guard size > 0, start.adding(size - 1) != nil, size <= UInt64(Int.max) else {
            throw .invalidRegion(start: start, size: size)
        }
        var p: UnsafeMutableRawPointer? = nil
        var huge = false
        switch backing {
        case .anonymous:
            if options.hugePages && size % MemoryRegion.hugePageSize == 0 {
                let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT)
                p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, flags, -1, 0)
                huge = p != nil && p != MAP_FAILED
            }
            if !huge {
                p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
                if let p, p != MAP_FAILED, options.hugePages { _ = madvise(p, Int(size), MADV_HUGEPAGE) }
            }
        case let .file(fd, offset):
            p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, Int(offset))
        case let .privateFile(fd, offset):
            p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, Int(offset))
        }
        guard let p, p != MAP_FAILED else { throw .mapFailed(size: size, errno: Glibc.errno) }
        // A child the VMM forks (a helper, a jail's supervisor) must neither copy guest
        // RAM nor share it copy-on-write with the guest's pages under DMA-like I/O
        // (O_DIRECT, io_uring into guest buffers).
        _ = madvise(p, Int(size), MADV_DONTFORK)
        if options.mergeable { _ = madvise(p, Int(size), MADV_MERGEABLE) }
        self.start = start
        self.size = size
        self.host = p
        self.hugeTLB = huge
        if case .anonymous = backing { isAnonymous = true } else { isAnonymous = false }
    }

    deinit { munmap(host, Int(size)) }

    /// The host virtual address of the first byte, for `KVM_SET_USER_MEMORY_REGION`.
    public var hostAddress: UInt64 { UInt64(UInt(bitPattern: host)) }

    /// One past the last guest-physical address.
    public var end: UInt64 { start.value + size }

    /// True when `[address, +length)` lies entirely inside this region.
    @inlinable
    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        guard address.value >= start.value else { return false }
        let offset = address.value - start.value
        return offset <= size && length <= size - offset
    }
}
