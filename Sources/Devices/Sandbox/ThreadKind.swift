/// The kinds of thread a VMM process runs, each with its own system-call list
/// (`SeccompPolicy`): the main thread (set-up, the event loop, the API, console and
/// devices served off the vCPUs), vCPU threads, a disk's worker threads (the thread-pool
/// engine) and the thread that reads a standard input epoll cannot watch.
public enum ThreadKind: Int32, Sendable, CaseIterable {
    case main = 0, vcpu, blockWorker, stdinReader

    /// For thread names (at most 15 bytes with the "sv-" prefix).
    var shortName: String {
        switch self {
        case .main: "main"
        case .vcpu: "vcpu"
        case .blockWorker: "disk"
        case .stdinReader: "stdin"
        }
    }

    public var name: String {
        switch self {
        case .main: "main"
        case .vcpu: "vCPU"
        case .blockWorker: "disk worker"
        case .stdinReader: "stdin reader"
        }
    }
}
