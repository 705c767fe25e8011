/// What a thread's seccomp filter does with a system call its kind of thread never
/// makes (`run --seccomp`, the description's "seccomp"): stop the VMM with a report
/// naming the call (kill, the default), let it through and have the kernel log it
/// (log: how the lists are checked), or no filter at all (off).
public enum SeccompMode: String, Sendable, CaseIterable, Codable {
    case kill, log, off
}
