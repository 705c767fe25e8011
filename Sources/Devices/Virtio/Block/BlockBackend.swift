import Glibc
import GuestMemory

/// One disk operation a backend carries out on an image's file descriptor.
public enum BlockOperation: Sendable, Equatable {
    /// preadv into guest RAM at a byte offset of the image.
    case read(offset: UInt64)
    /// pwritev from guest RAM.
    case write(offset: UInt64)
    /// fsync.
    case flush
}

/// What became of a submitted operation: the bytes moved, or a negative errno.
public struct BlockCompletion: Sendable, Equatable {
    public let token: UInt64
    public let result: Int
    public init(token: UInt64, result: Int) {
        self.token = token
        self.result = result
    }
}

/// How virtio-blk's requests reach the disk without blocking the thread that serves the
/// queue: io_uring where the host has it, a small pool of worker threads otherwise.
/// Both move data directly between the image and guest RAM (`IOVectors`), and both
/// signal finished operations on an eventfd that the machine's event loop watches, so
/// completions are pushed to the used ring on the loop's thread.
public protocol BlockBackend: AnyObject, Sendable {
    /// "io_uring" or "thread pool", for `inspect`.
    var engine: String { get }
    /// Readable when completions are waiting for `reap()`.
    var completionFD: Int32 { get }
    /// Queues `operation` on `fd`; callable from any thread. False if it could not be
    /// queued (the caller serves the request itself). Queued operations start at the
    /// latest at `flush()`, so that one system call starts a whole batch.
    func submit(_ operation: BlockOperation, fd: Int32, vectors: IOVectors, token: UInt64) -> Bool
    /// Starts what `submit` queued.
    func flush()
    /// The operations finished since the last call.
    func reap() -> [BlockCompletion]
}

/// The backend a disk gets: io_uring unless the host refuses it or
/// `SWIFTVISOR_NO_IO_URING` is set (CI runs the block tests once that way, so the
/// thread pool is exercised too).
public enum BlockBackends {
    public static func make(queueDepth: Int) -> (any BlockBackend)? {
        let disabled = getenvString("SWIFTVISOR_NO_IO_URING").map { !$0.isEmpty && $0 != "0" } ?? false
        if !disabled, let ring = IOURingBlockBackend(entries: queueDepth) { return ring }
        return ThreadPoolBlockBackend(workers: 4)
    }

    static func getenvString(_ name: String) -> String? {
        guard let p = getenv(name) else { return nil }
        return String(cString: p)
    }
}
