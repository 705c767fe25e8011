import Boot
import CLinux
import Devices
import Glibc
import GuestMemory
import KVM
import Synchronization

/// A virtual machine: KVM objects, guest memory, devices and vCPUs, built from a
/// `MachineConfig` in one readable sequence (like Firecracker's builder) and run until
/// it stops.
public final class Machine: Sendable {
    public let config: MachineConfig
    public let memory: GuestMemory
    public let bus: Bus
    let kvm: KVMSystem
    let vm: VirtualMachine
    let vcpus: [VCPU]
    let control: MachineControl
    private let statistics: [VCPUStatistics]
    /// When `build` started, for start-up figures.
    let buildStarted: UInt64
    let powerButton: PowerManagement?
    let serial: Serial8250
    private let started = Atomic<Bool>(false)
    private let startedAt = Atomic<UInt64>(0)
    private let haltedForGood = Atomic<Int>(0)

    init(config: MachineConfig, memory: GuestMemory, bus: Bus, kvm: KVMSystem, vm: VirtualMachine,
         vcpus: [VCPU], control: MachineControl, buildStarted: UInt64, powerButton: PowerManagement?, serial: Serial8250) {
        self.powerButton = powerButton
        self.serial = serial
        self.config = config
        self.memory = memory
        self.bus = bus
        self.kvm = kvm
        self.vm = vm
        self.vcpus = vcpus
        self.control = control
        self.statistics = vcpus.map { _ in VCPUStatistics() }
        self.buildStarted = buildStarted
    }

    /// Runs the machine on one thread per vCPU until it stops, and says why.
    ///
    /// SIGINT, SIGTERM and SIGHUP are taken from the calling thread for the duration
    /// and turned into a clean stop, so Ctrl-C tears the machine down properly. With a
    /// `timeLimit` (nanoseconds) a guest still running then is stopped with `.timeLimit`.
    public func run(timeLimit: UInt64? = nil) -> MachineResult {
        let started = monotonicNanoseconds()
        VCPUKicker.installHandler()
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        for s in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&stopSignals, s) }
        var previousMask = sigset_t()
        pthread_sigmask(SIG_BLOCK, &stopSignals, &previousMask)
        let signalFD = signalfd(-1, &stopSignals, Int32(SFD_CLOEXEC))

        var threads: [pthread_t] = []
        startedAt.store(started, ordering: .releasing)
        self.started.store(true, ordering: .releasing)
        for (index, vcpu) in vcpus.enumerated() {
            let stats = statistics[index]
            let loop = ExitLoop(vcpu: vcpu, index: index, bus: bus, memory: memory, control: control, statistics: stats,
                                quirks: config.hostQuirks, symbolFile: config.effectiveSymbolFile)
            guard let t = HostThread.spawn({
                if loop.run() == .haltedForGood {
                    if self.haltedForGood.add(1, ordering: .acquiringAndReleasing).newValue == self.vcpus.count {
                        self.control.stop(.halted)
                    }
                }
            }) else {
                control.stop(.vmmFailure("could not start a thread for vCPU \(index)"))
                break
            }
            threads.append(t)
            control.register(VCPUKicker(vcpu: vcpu, thread: t))
        }
        // A stop that raced the registrations above must still reach every vCPU.
        if control.isStopping { control.kickAll() }

        waitForStop(signalFD: signalFD, deadline: timeLimit.map { started + $0 }, watchdog: config.hostQuirks)
        for t in threads { HostThread.join(t) }
        control.unregisterAll()
        if signalFD >= 0 { close(signalFD) }
        pthread_sigmask(SIG_SETMASK, &previousMask, nil)

        let ended = monotonicNanoseconds()
        return MachineResult(reason: control.stopReason ?? .vmmFailure("stopped without a reason"),
                             statistics: currentStatistics(),
                             perVCPU: statistics.map { $0.snapshot() },
                             setupNanoseconds: started - buildStarted,
                             runNanoseconds: ended - started,
                             unclaimedAccesses: bus.unclaimedAccesses,
                             guestResidentBytes: memory.residentBytes)
    }

    /// How often, with host quirks on, a vCPU that has not left KVM_RUN is kicked out
    /// to see whether it hangs on an instruction the host never completes (a hypercall).
    static let watchdogPeriodMilliseconds: Int32 = 10

    private func waitForStop(signalFD: Int32, deadline: UInt64?, watchdog: Bool) {
        var fds = [pollfd(fd: control.stopEvent, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)]
        var lastEntries = [UInt64](repeating: .max, count: vcpus.count)
        while !control.isStopping {
            var timeout: Int32 = -1
            if let deadline {
                let now = monotonicNanoseconds()
                if now >= deadline { control.stop(.timeLimit); break }
                timeout = Int32(min((deadline - now + 999_999) / 1_000_000, UInt64(Int32.max)))
            }
            if watchdog {
                // A vCPU with no exit for a whole period is kicked; its exit loop looks at
                // where it stands. An idle guest costs one exit per period.
                for (i, s) in statistics.enumerated() {
                    let entries = s.entries
                    if entries == lastEntries[i], !control.gate.isClosed { control.kick(i) }
                    lastEntries[i] = entries
                }
                timeout = timeout < 0 ? Machine.watchdogPeriodMilliseconds : min(timeout, Machine.watchdogPeriodMilliseconds)
            }
            let n = poll(&fds, nfds_t(signalFD >= 0 ? 2 : 1), timeout)
            if n < 0 { if errno == EINTR { continue } else { break } }
            if signalFD >= 0 && fds[1].revents & Int16(POLLIN) != 0 {
                var info = signalfd_siginfo()
                if read(signalFD, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
                    control.stop(.signal(Int32(info.ssi_signo)))
                }
            }
        }
    }

    /// Asks the machine to stop (from any thread); `run()` then returns `reason`.
    public func requestStop(_ reason: StopReason) { control.stop(reason) }

    /// Where the machine is in its life.
    public enum State: String, Sendable {
        case created, running, paused, stopped
    }

    public var state: State {
        if control.isStopping { return .stopped }
        if control.gate.isClosed { return .paused }
        return started.load(ordering: .acquiring) ? .running : .created
    }

    /// Stops every vCPU and returns once all are parked, so that nothing in the guest
    /// runs (and no counter moves) until `resume()`. False if that took longer than
    /// `timeoutNanoseconds` (a vCPU stuck in the host kernel) or the machine stopped.
    @discardableResult
    public func pause(timeoutNanoseconds: UInt64 = 5_000_000_000) -> Bool {
        guard !control.isStopping else { return false }
        control.gate.close()
        let running = vcpus.count - haltedForGood.load(ordering: .acquiring)
        let deadline = monotonicNanoseconds() + timeoutNanoseconds
        while control.gate.parked.load(ordering: .acquiring) < running && !control.isStopping {
            control.kickAll()
            if monotonicNanoseconds() > deadline { return false }
            usleep(500)
        }
        return !control.isStopping
    }

    public func resume() { control.gate.open() }

    /// Presses the ACPI power button, asking the guest to shut down. False when the
    /// guest has no ACPI (flat binaries), so nothing can ask it.
    public func pressPowerButton() -> Bool { powerButton?.press() ?? false }

    /// Bytes typed at the guest's serial console (COM1).
    public func sendConsoleInput(_ bytes: [UInt8]) { serial.receive(bytes) }

    /// Nanoseconds since the vCPUs started (0 before).
    public var uptimeNanoseconds: UInt64 {
        let t = startedAt.load(ordering: .acquiring)
        return t == 0 ? 0 : monotonicNanoseconds() - t
    }

    /// The statistics so far, summed over vCPUs (safe while running).
    public func currentStatistics() -> ExitStatistics {
        var total = ExitStatistics()
        for s in statistics { total.add(s.snapshot()) }
        return total
    }

    /// The name of the device at an I/O port, for reports.
    public func portName(_ port: UInt16) -> String { bus.portName(port) }
}

/// How a run ended and what it cost.
public struct MachineResult: Sendable {
    public let reason: StopReason
    public let statistics: ExitStatistics
    public let perVCPU: [ExitStatistics]
    /// From `Machine.build` to the vCPUs starting.
    public let setupNanoseconds: UInt64
    /// From the vCPUs starting to the machine stopping.
    public let runNanoseconds: UInt64
    public let unclaimedAccesses: UInt64
    /// Guest RAM the host actually backs at the end (touched pages).
    public let guestResidentBytes: UInt64
}

/// One vCPU's live statistics, updated by its thread and read by anyone.
final class VCPUStatistics: Sendable {
    private let stats = Mutex(ExitStatistics())
    func update(_ body: (inout ExitStatistics) -> Void) { stats.withLock { body(&$0) } }
    func snapshot() -> ExitStatistics { stats.withLock { $0 } }
    /// Guest entries so far, without copying the hot-spot tables (the watchdog asks
    /// for this a hundred times a second).
    var entries: UInt64 { stats.withLock { $0.entries } }
}
