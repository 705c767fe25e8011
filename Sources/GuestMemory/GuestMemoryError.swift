import Glibc

/// Why a guest-memory access or mapping was refused.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `[address, +length)` is not inside one region of guest RAM.
    case outOfBounds(address: GuestAddress, length: UInt64)
    /// Two regions overlap, or a region is empty or wraps.
    case invalidRegion(start: GuestAddress, size: UInt64)
    /// The host could not map the memory (`errno`).
    case mapFailed(size: UInt64, errno: Int32)
    /// Saving guest memory to a file failed (`errno` of `operation`).
    case fileFailed(operation: String, errno: Int32)

    public var description: String {
        switch self {
        case let .outOfBounds(address, length):
            "guest access of \(length) bytes at \(address) is outside guest memory"
        case let .invalidRegion(start, size):
            "invalid guest memory region at \(start) of \(size) bytes (empty, wrapping or overlapping)"
        case let .mapFailed(size, errno):
            "could not map \(size) bytes of guest memory (errno \(errno)); try a smaller --memory"
        case let .fileFailed(operation, errno):
            "guest memory file: \(operation): \(String(cString: strerror(errno)))"
        }
    }
}
