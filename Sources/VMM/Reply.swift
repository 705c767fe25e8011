import CLinux
import Devices
import Glibc
import Synchronization

/// A one-shot answer from another thread (a vCPU thread answering a command), waited
/// for with a time limit.
final class Reply<Value: Sendable>: Sendable {
    private let value = Mutex<Value?>(nil)
    private let ready: Int32

    init() { ready = eventfd(0, Int32(EFD_CLOEXEC)) }
    deinit { close(ready) }

    func send(_ v: Value) {
        value.withLock { $0 = v }
        var one: UInt64 = 1
        _ = write(ready, &one, 8)
    }

    /// The value, or nil when none came within `timeoutMilliseconds`.
    func wait(timeoutMilliseconds: Int32) -> Value? {
        let deadline = monotonicNanoseconds() + UInt64(max(timeoutMilliseconds, 0)) * 1_000_000
        var p = pollfd(fd: ready, events: Int16(POLLIN), revents: 0)
        while true {
            if let v = value.withLock({ $0 }) { return v }
            let now = monotonicNanoseconds()
            guard now < deadline else { return nil }
            _ = poll(&p, 1, Int32(min((deadline - now) / 1_000_000 + 1, 1000)))
        }
    }
}
