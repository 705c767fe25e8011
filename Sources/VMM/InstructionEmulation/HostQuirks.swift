/// How a host runs guests, as the live probe shows it.
public enum HostClass: String, Sendable, Equatable {
    /// Guest kernel mode runs on the processor (VT-x, AMD-V): the normal case.
    case hardwareAssisted = "hardware-assisted"
    /// Guest kernel mode is emulated instruction by instruction (PVM and similar
    /// nested setups): user mode is fast, kernels are hundreds of times slower.
    case emulatedKernelMode = "emulated-kernel-mode"
    case unknown

    /// Kernel mode more than this many times slower than user mode is emulation, not
    /// hardware (on VT-x/AMD-V the two loops run at the same speed).
    public static let emulationRatio = 10.0

}

/// Work-arounds Swiftvisor applies on hosts that need them, and only there: chosen
/// from the probe (what the host does), never from a host name. All of it in one place.
public struct HostQuirks: Sendable, Equatable {
    /// Added to a Linux guest's command line: features the host's instruction
    /// emulator cannot execute in kernel mode, turned off in the guest (CPUID is not
    /// virtualized on such hosts, so they cannot be hidden through KVM_SET_CPUID2).
    public var kernelCommandLine: [String]
    /// Instructions the VMM completes itself when the host's emulator rejects them.
    public var emulatedInstructions: [String]
    /// Why these quirks are on, for `--verbose` and the doctor.
    public var reasons: [String]

    public static let none = HostQuirks(kernelCommandLine: [], emulatedInstructions: [], reasons: [])

    public var isEmpty: Bool { kernelCommandLine.isEmpty && emulatedInstructions.isEmpty }

    /// What Swiftvisor does on a host whose KVM emulates guest kernel mode.
    public static let emulatedKernelMode = HostQuirks(
        // nowatchdog: at a thousandth of the speed, the soft-lockup detector fires on
        // ordinary work, and each report's backtrace (kallsyms lookups) costs minutes.
        // cryptomgr.notests: the crypto self-tests (RSA private-key operations among
        // them) take tens of minutes there; a kernel booted with fips=1 runs them anyway.
        kernelCommandLine: ["noxsave", "clearcpuid=popcnt,cx16,smap,smep,umip,ssse3", "nowatchdog", "cryptomgr.notests"],
        emulatedInstructions: ["int3 (inject #BP)", "fwait", "ldmxcsr/stmxcsr (through the vCPU's XSAVE state)", "VMCALL/VMMCALL hypercalls the host leaves hanging"],
        reasons: ["guest kernel mode is emulated: its emulator cannot execute XSAVE, POPCNT, CMPXCHG16B, CLAC/STAC, LDMXCSR, SSSE3 and others at CPL 0, nor deliver INT3, and a hypercall made at CPL 0 never completes"])

}
