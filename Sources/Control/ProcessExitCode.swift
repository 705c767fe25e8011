import VMM
/// The exit statuses of `swiftvisor` (and `swiftvisor-cli` behind it), documented in the README.
///
/// A guest's own exit code (written to the exit port) is passed through unchanged, so
/// it can coincide with one of these; `--json` says which it was.
public enum ProcessExitCode {
    public static let success: Int32 = 0
    public static let usage: Int32 = 64
    public static let badImage: Int32 = 65
    public static let fileNotFound: Int32 = 66
    public static let kvmUnavailable: Int32 = 69
    public static let guestFailure: Int32 = 70
    public static let vmmFailure: Int32 = 71
    public static let permissionDenied: Int32 = 77
    /// The guest ran past its time limit (`--timeout`, test runners).
    public static let timeLimit: Int32 = 124
    /// Stopped from the host (`swiftvisor stop` after its grace period, `kill`).
    public static let hostStop: Int32 = 137
    /// No VM of that name.
    public static let notFound: Int32 = 67
    /// The name is taken, or the VM is in a state that does not allow the verb.
    public static let conflict: Int32 = 73
    /// The VM's VMM does not answer.
    public static let unresponsive: Int32 = 75

    /// The status for how a machine stopped.
    public static func forStop(_ reason: StopReason) -> Int32 {
        switch reason {
        case let .exitPort(code): code
        case .powerOff, .reset, .halted, .snapshotted: success
        case .hostStop: hostStop
        case .tripleFault, .guestFailure: guestFailure
        case .timeLimit: timeLimit
        case let .signal(s): 128 + s
        case .vmmFailure: vmmFailure
        }
    }

    /// The status for a machine that could not be built.
    public static func forError(_ error: MachineError) -> Int32 {
        switch error {
        case .config: usage
        case let .kvmUnavailable(_, permission): permission ? permissionDenied : kvmUnavailable
        case .kvm, .memory, .device: vmmFailure
        case .boot: badImage
        case let .file(_, _, missing): missing ? fileNotFound : badImage
        case let .snapshot(e): e.kind == .failed ? vmmFailure : badImage
        }
    }
}
