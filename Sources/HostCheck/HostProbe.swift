import Control
import Boot
import Devices
import Glibc
import VMM

/// What the live probe measured: tiny guests (Guests/probe.s) run on this host's KVM.
public struct ProbeResult: Sendable, Equatable {
    /// Port-I/O exit round trip, guest to VMM and back.
    public var exitNanoseconds: Double?
    /// One iteration (two instructions) of a loop in guest kernel mode, and in user mode.
    public var kernelLoopNanoseconds: Double?
    public var userLoopNanoseconds: Double?
    public var syscall: SyscallOutcome
    /// Probes that could not run, and why.
    public var errors: [String]

    public init(exitNanoseconds: Double?, kernelLoopNanoseconds: Double?, userLoopNanoseconds: Double?,
                syscall: SyscallOutcome, errors: [String] = []) {
        self.exitNanoseconds = exitNanoseconds; self.kernelLoopNanoseconds = kernelLoopNanoseconds
        self.userLoopNanoseconds = userLoopNanoseconds; self.syscall = syscall; self.errors = errors
    }

    /// Guest instructions per second in kernel and user mode (two per loop iteration).
    public var kernelInstructionsPerSecond: Double? { kernelLoopNanoseconds.map { 2e9 / max($0, 0.01) } }
    public var userInstructionsPerSecond: Double? { userLoopNanoseconds.map { 2e9 / max($0, 0.01) } }
}

/// Whether a guest's SYSCALL from ring 3 reaches its handler in ring 0.
public enum SyscallOutcome: String, Sendable, Equatable {
    case reachesKernel = "reaches-kernel"
    /// The handler ran, but still in ring 3 (PVM hosts): ordinary kernels cannot run
    /// user space there.
    case staysInUserMode = "stays-in-user-mode"
    case failed
    case notRun = "not-run"
}

/// Runs the probe guests, each in its own small VM with a time limit, so that a host
/// whose KVM misbehaves gets a report rather than a hang.
public enum HostProbe {
    public static let timeLimitNanoseconds: UInt64 = 15_000_000_000

    public static func run(devicePath: String = "/dev/kvm") -> ProbeResult {
        var errors: [String] = []

        func measure(_ entry: UInt64, _ name: String) -> (nanoseconds: Double, result: Int32)? {
            let image = FlatBinary(bytes: ProbeGuest.bytes, mode: .long, loadAddress: ProbeGuest.loadAddress,
                                   entry: entry, userAccessible: true)
            let config = MachineConfig(memorySize: 8 << 20, vcpuCount: 1, boot: .flatImage(image), kvmPath: devicePath)
            do {
                let machine = try Machine.build(config, console: DiscardOutput())
                let r = machine.run(timeLimit: timeLimitNanoseconds)
                guard case let .exitPort(code) = r.reason else {
                    errors.append("\(name): \(r.reason.summary)")
                    return nil
                }
                return (Double(r.runNanoseconds), code)
            } catch {
                errors.append("\(name): \(error.description)")
                return nil
            }
        }

        var result = ProbeResult(exitNanoseconds: nil, kernelLoopNanoseconds: nil, userLoopNanoseconds: nil, syscall: .notRun)
        if let m = measure(ProbeGuest.exitLoop, "exit round trip") {
            result.exitNanoseconds = m.nanoseconds / Double(ProbeGuest.exitCount + 1)
        }
        // Each loop run also takes one exit to end it: take that off where known.
        let oneExit = result.exitNanoseconds ?? 0
        if let m = measure(ProbeGuest.kernelLoop, "kernel-mode loop") {
            result.kernelLoopNanoseconds = max(m.nanoseconds - oneExit, 1) / Double(ProbeGuest.loopIterations)
        }
        if let m = measure(ProbeGuest.userLoop, "user-mode loop") {
            result.userLoopNanoseconds = max(m.nanoseconds - oneExit, 1) / Double(ProbeGuest.loopIterations)
        }
        if let m = measure(ProbeGuest.syscallProbe, "system call from ring 3") {
            switch m.result {
            case ProbeGuest.syscallReachedRing0: result.syscall = .reachesKernel
            case ProbeGuest.syscallReachedRing0 + 3: result.syscall = .staysInUserMode
            default:
                result.syscall = .failed
                errors.append("system call from ring 3: the guest reported 0x\(String(m.result, radix: 16))")
            }
        } else {
            result.syscall = .failed
        }
        result.errors = errors
        return result
    }
}

extension HostProbe {
    /// This host's class, probed once per host boot and remembered in `cacheDirectory`
    /// (keyed by the kernel's boot_id), so that starting a VM costs the probe only once.
    public static func cachedClass(devicePath: String = "/dev/kvm", cacheDirectory: String) -> HostClass {
        let bootID = (FileSystem.readText("/proc/sys/kernel/random/boot_id") ?? "unknown").filter { $0.isHexDigit }
        let file = cacheDirectory + "/host-class-" + bootID
        if let text = FileSystem.readText(file), let c = HostClass(rawValue: text.trimmingWhitespace), c != .unknown { return c }
        let c = HostClass.classify(run(devicePath: devicePath))
        if c != .unknown, FileSystem.makeDirectories(cacheDirectory, mode: 0o755) == nil {
            _ = FileSystem.writeAtomically(Array(c.rawValue.utf8), to: file, mode: 0o644) // a cache: losing it costs a probe
        }
        return c
    }
}

extension HostClass {
    public static func classify(_ probe: ProbeResult?) -> HostClass {
        guard let k = probe?.kernelLoopNanoseconds, let u = probe?.userLoopNanoseconds, u > 0 else { return .unknown }
        return k / u > emulationRatio ? .emulatedKernelMode : .hardwareAssisted
    }
}

extension HostQuirks {
    public static func forHost(_ hostClass: HostClass, syscall: SyscallOutcome) -> HostQuirks {
        guard hostClass == .emulatedKernelMode else { return .none }
        var q = emulatedKernelMode
        if syscall == .staysInUserMode {
            q.reasons.append("SYSCALL from guest ring 3 arrives in ring 3: guest user space needs a kernel that completes such system calls itself")
        }
        return q
    }
}
