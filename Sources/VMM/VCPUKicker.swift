import Glibc
import KVM

/// Gets a vCPU thread out of `KVM_RUN` promptly: `immediate_exit` covers the window
/// before the ioctl, and a signal (`SIGUSR1`, whose handler does nothing and does not
/// restart system calls) interrupts one already running.
struct VCPUKicker: Sendable {
    static let signal = SIGUSR1
    let vcpu: VCPU
    let thread: pthread_t
    /// The eventfd a parked vCPU thread sleeps on: a kick wakes it too.
    let wakeup: Int32

    func kick() {
        vcpu.requestImmediateExit()
        pthread_kill(thread, VCPUKicker.signal)
        var one: UInt64 = 1
        _ = write(wakeup, &one, 8)
    }

    /// Installs the do-nothing handler once per process.
    static func installHandler() {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0 // no SA_RESTART: KVM_RUN must return EINTR
        sigaction(signal, &action, nil)
    }
}
