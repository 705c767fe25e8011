import CLinux
import Glibc
import Synchronization

/// Where vCPU threads wait while a machine is paused. Closed, an eventfd is unreadable
/// and `wait()` blocks in `poll`; opening it makes it readable for every waiter at
/// once. `parked` counts the threads inside, so that `pause` can return only when every
/// vCPU has really stopped.
final class PauseGate: Sendable {
    private let fd: Int32
    private let closed = Atomic<Bool>(false)
    let parked = Atomic<Int>(0)

    init() { fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) }
    deinit { Glibc.close(fd) }

    var isClosed: Bool { closed.load(ordering: .acquiring) }

    func close() {
        var drain: UInt64 = 0
        _ = read(fd, &drain, 8) // unreadable again
        closed.store(true, ordering: .releasing)
    }

    func open() {
        closed.store(false, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// Blocks while the gate is closed, unless `stop()` says to leave.
    func wait(until stop: () -> Bool) {
        guard isClosed else { return }
        parked.add(1, ordering: .acquiringAndReleasing)
        defer { parked.subtract(1, ordering: .acquiringAndReleasing) }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while isClosed && !stop() {
            _ = poll(&p, 1, 100) // the timeout only bounds how late a stop is noticed
        }
    }
}
