/// Why a machine stopped.
public enum StopReason: Equatable, Sendable {
    /// The guest wrote `code` to the exit port.
    case exitPort(code: Int32)
    /// The guest powered off (ACPI S5, or a system event).
    case powerOff
    /// The guest asked for a reset (keyboard controller, system event).
    case reset
    /// Every vCPU executed HLT with interrupts disabled: nothing can ever wake it.
    case halted
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`): on real hardware, a reset.
    case tripleFault
    /// The guest was still running when its time limit ran out.
    case timeLimit
    /// Someone asked the VMM to stop the VM (the control API, `swiftvisor stop`/`kill`).
    case hostStop
    /// Stopped once a snapshot of it was taken (`snapshot --stop`): it goes on from the
    /// snapshot.
    case snapshotted
    /// The host asked the VMM to stop (SIGINT from Ctrl-C, SIGTERM, SIGHUP).
    case signal(Int32)
    /// The guest did something the VMM cannot go on from; the text names the exit,
    /// the vCPU, its RIP and the instruction bytes there.
    case guestFailure(String)
    /// A KVM call failed while running (not the guest's fault).
    case vmmFailure(String)

    /// A one-line description for people.
    public var summary: String {
        switch self {
        case let .exitPort(code): "guest exited with code \(code)"
        case .powerOff: "guest powered off"
        case .reset: "guest requested a reset"
        case .halted: "all vCPUs halted with interrupts disabled"
        case .tripleFault: "guest triple-faulted (KVM_EXIT_SHUTDOWN)"
        case .timeLimit: "stopped: the time limit ran out"
        case .hostStop: "stopped from the host"
        case .snapshotted: "stopped after a snapshot"
        case let .signal(s): "stopped by signal \(s)" + (s == 2 ? " (SIGINT)" : s == 15 ? " (SIGTERM)" : "")
        case let .guestFailure(why): "guest failure: \(why)"
        case let .vmmFailure(why): "VMM failure: \(why)"
        }
    }

    /// A short stable word for scripts (`--json`).
    public var kind: String {
        switch self {
        case .exitPort: "exit-port"
        case .powerOff: "power-off"
        case .reset: "reset"
        case .halted: "halted"
        case .tripleFault: "triple-fault"
        case .timeLimit: "time-limit"
        case .hostStop: "host-stop"
        case .snapshotted: "snapshotted"
        case .signal: "signal"
        case .guestFailure: "guest-failure"
        case .vmmFailure: "vmm-failure"
        }
    }
}
