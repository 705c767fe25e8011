import CLinux
import Devices
import Glibc
import Synchronization

/// The VMM process's one event loop (`epoll`): signals (a signalfd), the machine's
/// stop request, console input, the API socket and its connections, timers, and later
/// ioeventfds and TAP devices. One thread waits on all of them; every handler runs on
/// it and must not block, so a slow client or a flooding guest delays nothing else.
///
/// Only the loop's own thread (its handlers, or the code that set it up before `run`)
/// adds and removes sources; other threads may only call `wake()` and `post(_:)`.
public final class EventLoop: @unchecked Sendable {
    // Sound to share: the tables below are touched only by the loop's thread; `wake`
    // and `post` use an eventfd and a Mutex.
    public typealias Handler = (_ events: UInt32) -> Void

    public static let readable = UInt32(EPOLLIN.rawValue) | UInt32(EPOLLRDHUP.rawValue)
    public static let writable = UInt32(EPOLLOUT.rawValue)
    public static let hangUp = UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLERR.rawValue) | UInt32(EPOLLRDHUP.rawValue)

    private let epoll: Int32
    private let wakeFD: Int32
    private var handlers: [Int32: Handler] = [:]
    private struct Timer { let id: Int; let deadline: UInt64; let period: UInt64?; let handler: () -> Void }
    private var timers: [Timer] = []
    private var nextTimerID = 1
    private let posted = Mutex<[@Sendable () -> Void]>([])
    private var stopped = false

    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    public init() throws(Failure) {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard epoll >= 0, wakeFD >= 0 else { throw Failure(description: "cannot create the event loop: \(String(cString: strerror(errno)))") }
        var e = epoll_event(events: UInt32(EPOLLIN.rawValue), data: epoll_data_t(fd: wakeFD))
        epoll_ctl(epoll, EPOLL_CTL_ADD, wakeFD, &e)
    }

    deinit {
        close(epoll)
        close(wakeFD)
    }

    /// Calls `handler` whenever `fd` has any of `events` (it keeps being called while
    /// the condition holds: level-triggered). False for an fd epoll cannot watch (a
    /// regular file, /dev/null): read those some other way.
    @discardableResult
    public func add(_ fd: Int32, events: UInt32 = EventLoop.readable, handler: @escaping Handler) -> Bool {
        var e = epoll_event(events: events, data: epoll_data_t(fd: fd))
        if epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &e) != 0 {
            guard errno == EEXIST, epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &e) == 0 else { return false }
        }
        handlers[fd] = handler
        return true
    }

    /// The signals that stop a VM cleanly: SIGINT (Ctrl-C), SIGTERM, SIGHUP.
    public static var stopSignals: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, s) }
        return set
    }

    /// Hands each of `signals` (which the caller has blocked) to `handler` on this loop,
    /// through a signalfd. Returns the fd for the caller to close, or nil if there is none.
    public func watch(signals: sigset_t, handler: @escaping (Int32) -> Void) -> Int32? {
        var set = signals
        let fd = signalfd(-1, &set, Int32(SFD_CLOEXEC | SFD_NONBLOCK))
        guard fd >= 0 else { return nil }
        add(fd) { _ in
            var info = signalfd_siginfo()
            if read(fd, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
                handler(Int32(info.ssi_signo))
            }
        }
        return fd
    }

    /// Changes what `fd` is watched for.
    public func modify(_ fd: Int32, events: UInt32) {
        var e = epoll_event(events: events, data: epoll_data_t(fd: fd))
        epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &e)
    }

    /// Stops watching `fd` (the caller closes it).
    public func remove(_ fd: Int32) {
        handlers[fd] = nil
        epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nil)
    }

    /// Runs `handler` at `deadline` (monotonic nanoseconds), then every `period` if
    /// given. Returns an id for `cancelTimer`.
    @discardableResult
    public func addTimer(at deadline: UInt64, period: UInt64? = nil, handler: @escaping () -> Void) -> Int {
        let id = nextTimerID
        nextTimerID += 1
        timers.append(Timer(id: id, deadline: deadline, period: period.map { max($0, 1) }, handler: handler))
        return id
    }

    public func cancelTimer(_ id: Int) { timers.removeAll { $0.id == id } }

    /// From any thread: runs `work` on the loop's thread soon.
    public func post(_ work: @escaping @Sendable () -> Void) {
        posted.withLock { $0.append(work) }
        wake()
    }

    /// From any thread: makes the loop look at `shouldStop` again.
    public func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Ends `run` after the current round (from the loop's thread).
    public func stop() { stopped = true }

    /// Waits for and dispatches events until `stop()` or `shouldStop()` says so.
    public func run(until shouldStop: () -> Bool = { false }) {
        stopped = false
        var events = [epoll_event](repeating: epoll_event(), count: 32)
        while !stopped && !shouldStop() {
            var timeout: Int32 = -1
            if let next = timers.map(\.deadline).min() {
                let now = monotonicNanoseconds()
                timeout = next <= now ? 0 : Int32(min((next - now + 999_999) / 1_000_000, 60_000))
            }
            let n = events.withUnsafeMutableBufferPointer { epoll_wait(epoll, $0.baseAddress, Int32($0.count), timeout) }
            if n < 0 && errno != EINTR { break }
            for i in 0..<max(Int(n), 0) {
                let fd = events[i].data.fd
                if fd == wakeFD {
                    var drain: UInt64 = 0
                    _ = read(wakeFD, &drain, 8)
                    continue
                }
                handlers[fd]?(events[i].events)
            }
            for work in posted.withLock({ p -> [@Sendable () -> Void] in let w = p; p.removeAll(); return w }) { work() }
            fireTimers()
        }
    }

    private func fireTimers() {
        let now = monotonicNanoseconds()
        let due = timers.filter { $0.deadline <= now }
        guard !due.isEmpty else { return }
        timers.removeAll { $0.deadline <= now }
        for t in due {
            if let period = t.period {
                var next = t.deadline + period
                if next <= now { next = now + period }
                timers.append(Timer(id: t.id, deadline: next, period: period, handler: t.handler))
            }
            t.handler()
        }
    }
}
