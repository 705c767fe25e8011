import CLinux
import Devices
import Glibc
import Synchronization

/// The machine's stop switch, shared by vCPU threads, devices and the thread that
/// called `Machine.run()`. The first stop request wins; every later one is ignored.
/// Stopping kicks each vCPU out of `KVM_RUN` (immediate_exit plus a signal) and wakes
/// the waiting thread through an eventfd.
final class StopSwitch: PowerControl, Sendable {
    private let reason = Mutex<StopReason?>(nil)
    private let stopping = Atomic<Bool>(false)
    /// Written once when the machine stops; `Machine.run()` polls it with signals.
    let stopEvent: Int32
    private let kickers = Mutex<[VCPUKicker]>([])

    init() {
        stopEvent = eventfd(0, Int32(EFD_CLOEXEC))
    }

    deinit { close(stopEvent) }

    var isStopping: Bool { stopping.load(ordering: .acquiring) }
    var stopReason: StopReason? { reason.withLock { $0 } }

    func register(_ kicker: VCPUKicker) { kickers.withLock { $0.append(kicker) } }
    func unregisterAll() { kickers.withLock { $0.removeAll() } }

    func stop(_ why: StopReason) {
        let first = reason.withLock { r -> Bool in
            guard r == nil else { return false }
            r = why
            return true
        }
        guard first else { return }
        stopping.store(true, ordering: .releasing)
        // A vCPU thread that stops the machine notices by itself; the others are kicked.
        let me = pthread_self()
        for k in kickers.withLock({ $0 }) where pthread_equal(k.thread, me) == 0 { k.kick() }
        var one: UInt64 = 1
        _ = write(stopEvent, &one, 8)
    }

    /// Kicks every vCPU out of the guest (and wakes parked ones).
    func kickAll() {
        for k in kickers.withLock({ $0 }) { k.kick() }
    }

    /// Kicks vCPU `index` out of the guest.
    func kick(_ index: Int) {
        let k = kickers.withLock { index < $0.count ? $0[index] : nil }
        k?.kick()
    }


    // PowerControl, for devices.
    func guestExit(code: Int32) { stop(.exitPort(code: code)) }
    func guestReset() { stop(.reset) }
    func guestPowerOff() { stop(.powerOff) }
    func guestSuspend() { suspendHandler.withLock { $0 }?() }

    /// What entering ACPI S3 does: set once by the machine.
    let suspendHandler = Mutex<(@Sendable () -> Void)?>(nil)
}
