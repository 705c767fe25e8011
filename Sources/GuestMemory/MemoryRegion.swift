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

    /// Where the memory comes from.
    public enum Backing: Sendable {
        /// Zeroed anonymous memory, reserved lazily (`MAP_NORESERVE`): untouched guest
        /// pages cost the host nothing.
        case anonymous
        /// A shared mapping of `fd` from `offset` (e.g. a memfd for snapshots or
        /// vhost-user): writes reach the file.
        case file(fd: Int32, offset: Int64)
    }

    public init(start: GuestAddress, size: UInt64, backing: Backing = .anonymous) throws(GuestMemoryError) {
        guard size > 0, start.adding(size - 1) != nil, size <= UInt64(Int.max) else {
            throw .invalidRegion(start: start, size: size)
        }
        let p: UnsafeMutableRawPointer?
        switch backing {
        case .anonymous:
            p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        case let .file(fd, offset):
            p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, Int(offset))
        }
        guard let p, p != MAP_FAILED else { throw .mapFailed(size: size, errno: Glibc.errno) }
        self.start = start
        self.size = size
        self.host = p
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
