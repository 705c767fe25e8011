import CLinux
import CURing
import Glibc
import GuestMemory
import Synchronization

/// The asynchronous block backend (Cloud Hypervisor's default): one io_uring per disk,
/// its completions signalled on an eventfd registered with the ring. Submission and
/// reaping share one lock (the ring's submission and completion sides are each
/// single-threaded in liburing); the vectors of each in-flight operation are kept until
/// it completes.
public final class IOURingBlockBackend: BlockBackend {
    public let engine = "io_uring"
    public let completionFD: Int32
    private struct Ring: ~Copyable {
        var ring: io_uring
        var inFlight: [UInt64: IOVectors] = [:]
    }
    private let state: Mutex<Ring>

    /// nil where the host has no io_uring (old kernels, seccomp, io_uring_disabled).
    public init?(entries: Int) {
        var ring = io_uring()
        guard io_uring_queue_init(UInt32(min(max(entries, 8), 4096)), &ring, 0) == 0 else { return nil }
        let fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard fd >= 0, io_uring_register_eventfd(&ring, fd) == 0 else {
            if fd >= 0 { close(fd) }
            io_uring_queue_exit(&ring)
            return nil
        }
        completionFD = fd
        state = Mutex(Ring(ring: ring))
    }

    deinit {
        state.withLock { s in
            // Start anything still queued, then wait for what is in flight: its buffers
            // are guest RAM.
            _ = io_uring_submit(&s.ring)
            while !s.inFlight.isEmpty {
                var cqe: UnsafeMutablePointer<io_uring_cqe>?
                guard io_uring_wait_cqe(&s.ring, &cqe) == 0, let c = cqe else { break }
                s.inFlight[c.pointee.user_data] = nil
                io_uring_cqe_seen(&s.ring, c)
            }
            io_uring_queue_exit(&s.ring)
        }
        close(completionFD)
    }

    public func submit(_ operation: BlockOperation, fd: Int32, vectors: IOVectors, token: UInt64) -> Bool {
        state.withLock { s in
            guard s.inFlight[token] == nil else { return false }
            var sqe = io_uring_get_sqe(&s.ring)
            if sqe == nil {
                _ = io_uring_submit(&s.ring)
                sqe = io_uring_get_sqe(&s.ring)
            }
            guard let e = sqe else { return false }
            switch operation {
            case let .read(offset):
                vectors.vectors.withUnsafeBufferPointer { io_uring_prep_readv(e, fd, $0.baseAddress, UInt32($0.count), offset) }
            case let .write(offset):
                vectors.vectors.withUnsafeBufferPointer { io_uring_prep_writev(e, fd, $0.baseAddress, UInt32($0.count), offset) }
            case .flush:
                io_uring_prep_fsync(e, fd, 0)
            }
            e.pointee.user_data = token
            // The buffers stay alive in inFlight until completion (and the iovec array
            // too: it is read when the batch is submitted, at flush).
            s.inFlight[token] = vectors
            return true
        }
    }

    public func flush() {
        state.withLock { s in _ = io_uring_submit(&s.ring) }
    }

    public func reap() -> [BlockCompletion] {
        var count: UInt64 = 0
        _ = read(completionFD, &count, 8)
        return state.withLock { s in
            var out: [BlockCompletion] = []
            var cqe: UnsafeMutablePointer<io_uring_cqe>?
            while io_uring_peek_cqe(&s.ring, &cqe) == 0, let c = cqe {
                let token = c.pointee.user_data
                out.append(BlockCompletion(token: token, result: Int(c.pointee.res)))
                s.inFlight[token] = nil
                io_uring_cqe_seen(&s.ring, c)
                cqe = nil
            }
            return out
        }
    }
}
