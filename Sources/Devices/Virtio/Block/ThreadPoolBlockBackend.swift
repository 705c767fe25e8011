import CLinux
import Glibc
import GuestMemory
import Synchronization

/// The fallback block backend: a few worker threads doing `preadv`/`pwritev`/`fsync`
/// (QEMU's and Cloud Hypervisor's "thread pool" engine). Submission appends to a job
/// list and counts up a semaphore eventfd the idle workers block on; each finished job
/// goes to the completion list and the completion eventfd.
public final class ThreadPoolBlockBackend: BlockBackend {
    public let engine = "thread pool"
    public let completionFD: Int32
    /// Counts queued jobs (EFD_SEMAPHORE: each worker's read takes one).
    private let jobsFD: Int32
    private struct Job: Sendable {
        let operation: BlockOperation
        let fd: Int32
        let vectors: IOVectors
        let token: UInt64
    }
    private let jobs = Mutex<[Job]>([])
    private let done = Mutex<[BlockCompletion]>([])
    private let stopping = Atomic<Bool>(false)
    private let threads = Mutex<[pthread_t]>([])

    public init?(workers: Int) {
        let c = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        let j = eventfd(0, Int32(EFD_CLOEXEC | EFD_SEMAPHORE))
        guard c >= 0, j >= 0 else {
            if c >= 0 { close(c) }
            if j >= 0 { close(j) }
            return nil
        }
        completionFD = c
        jobsFD = j
        for _ in 0..<max(1, workers) {
            guard let t = HostThread.spawn(kind: .blockWorker, { [self] in work() }) else { break }
            threads.withLock { $0.append(t) }
        }
        if threads.withLock({ $0.isEmpty }) { close(c); close(j); return nil }
    }

    deinit {
        stopping.store(true, ordering: .releasing)
        var n = UInt64(threads.withLock { $0.count })
        _ = write(jobsFD, &n, 8)
        for t in threads.withLock({ $0 }) { HostThread.join(t) }
        close(jobsFD)
        close(completionFD)
    }

    public func submit(_ operation: BlockOperation, fd: Int32, vectors: IOVectors, token: UInt64) -> Bool {
        jobs.withLock { $0.append(Job(operation: operation, fd: fd, vectors: vectors, token: token)) }
        var one: UInt64 = 1
        return write(jobsFD, &one, 8) == 8
    }

    /// Workers start each job as it is submitted.
    public func flush() {}

    public func reap() -> [BlockCompletion] {
        var count: UInt64 = 0
        _ = read(completionFD, &count, 8)
        return done.withLock { d in defer { d.removeAll(keepingCapacity: true) }; return d }
    }

    private func work() {
        while true {
            var one: UInt64 = 0
            let n = read(jobsFD, &one, 8)
            if n < 0 && errno == EINTR { continue }
            if stopping.load(ordering: .acquiring) { return }
            guard n == 8, let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            let result = ThreadPoolBlockBackend.perform(job.operation, fd: job.fd, vectors: job.vectors)
            done.withLock { $0.append(BlockCompletion(token: job.token, result: result)) }
            var signal: UInt64 = 1
            _ = write(completionFD, &signal, 8)
        }
    }

    /// One operation, retried on EINTR; bytes moved or -errno.
    static func perform(_ operation: BlockOperation, fd: Int32, vectors: IOVectors) -> Int {
        while true {
            let r: Int
            switch operation {
            case let .read(offset):
                r = vectors.vectors.withUnsafeBufferPointer { preadv(fd, $0.baseAddress, Int32($0.count), off_t(offset)) }
            case let .write(offset):
                r = vectors.vectors.withUnsafeBufferPointer { pwritev(fd, $0.baseAddress, Int32($0.count), off_t(offset)) }
            case .flush:
                r = Int(fsync(fd))
            }
            if r < 0 && errno == EINTR { continue }
            return r < 0 ? -Int(errno) : r
        }
    }
}
