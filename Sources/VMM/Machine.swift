import Boot
import CLinux
import Devices
import Glibc
import GuestMemory
import KVM
import Synchronization

/// A virtual machine: KVM objects, guest memory, devices and vCPUs, built from a
/// `MachineConfig` in one readable sequence (`Machine.build`, like Firecracker's
/// builder), then started, paused, resumed and stopped.
///
/// `run(timeLimit:)` does it all for a caller with nothing else to wait on; a VMM
/// process with an API and a console instead calls `start(on:)` with its event loop and
/// `finish()` once the machine has stopped.
public final class Machine: Sendable {
    public let config: MachineConfig
    public let memory: GuestMemory
    /// Every device, by id, and the bus they sit on.
    public let devices: DeviceManager
    let kvm: KVMSystem
    let vm: VMFileDescriptor
    let threads: [VCPUThread]
    /// `config.tracePath`: every exit, written as the machine runs.
    public let tracer: ExitTracer?
    let stopSwitch: StopSwitch
    /// When `build` started, for start-up figures.
    let buildStarted: UInt64
    /// The virtio devices, whose queue notifications the event loop serves.
    let virtio: [VirtioEndpoint]
    /// Where a flat binary and the structures built for it went (`run --verbose`).
    public let placement: FlatBinary.Placement?
    private let startedAt = Atomic<UInt64>(0)
    /// In ACPI S3: vCPUs parked, memory kept, until a wake event.
    private let suspended = Atomic<Bool>(false)
    private let haltedForGood = Atomic<Int>(0)
    private let loopTimers = Mutex<[Int]>([])
    /// The statistics a second ago and now, for rates.
    private let rateSnapshots = Mutex<(earlier: (UInt64, ExitStatistics)?, later: (UInt64, ExitStatistics)?)>((nil, nil))

    init(config: MachineConfig, memory: GuestMemory, devices: DeviceManager, kvm: KVMSystem, vm: VMFileDescriptor,
         vcpus: [VCPU], stopSwitch: StopSwitch, buildStarted: UInt64, virtio: [VirtioEndpoint] = [], tracer: ExitTracer? = nil,
         placement: FlatBinary.Placement? = nil) {
        self.virtio = virtio
        self.placement = placement
        self.tracer = tracer
        self.config = config
        self.memory = memory
        self.devices = devices
        self.kvm = kvm
        self.vm = vm
        self.stopSwitch = stopSwitch
        self.buildStarted = buildStarted
        let symbols = KernelSymbolSource(path: config.effectiveSymbolFile)
        threads = vcpus.enumerated().map { index, vcpu in
            VCPUThread(vcpu: vcpu, index: index, devices: devices, memory: memory, stopSwitch: stopSwitch,
                       quirks: config.hostQuirks, symbols: symbols, profile: config.profile,
                       trace: tracer.map { $0.rings[index] }, traceStart: tracer?.start ?? 0)
        }
        stopSwitch.suspendHandler.withLock { $0 = { [weak self] in self?.enterS3() } }
    }

    public var bus: Bus { devices.bus }

    /// Readable once the machine is stopping: what an event loop waits on.
    public var stopEventFD: Int32 { stopSwitch.stopEvent }

    /// Runs the machine on one thread per vCPU until it stops, and says why.
    ///
    /// SIGINT, SIGTERM and SIGHUP are taken from the calling thread for the duration
    /// and turned into a clean stop, so Ctrl-C tears the machine down properly. With a
    /// `timeLimit` (nanoseconds) a guest still running then is stopped with `.timeLimit`.
    public func run(timeLimit: UInt64? = nil) -> MachineResult {
        var stopSignals = EventLoop.stopSignals
        var previousMask = sigset_t()
        pthread_sigmask(SIG_BLOCK, &stopSignals, &previousMask)
        defer { pthread_sigmask(SIG_SETMASK, &previousMask, nil) }
        guard let loop = try? EventLoop() else {
            stopSwitch.stop(.vmmFailure("cannot create an event loop"))
            return finish()
        }
        let signalFD = loop.watch(signals: stopSignals) { [self] signal in requestStop(.signal(signal)) }
        defer { if let signalFD { close(signalFD) } }
        start(on: loop, timeLimit: timeLimit)
        loop.run(until: { stopSwitch.isStopping })
        return finish()
    }

    /// How often, with host quirks on, a vCPU that has not left KVM_RUN is kicked out
    /// to see whether it hangs on an instruction the host never completes (a hypercall).
    static let watchdogPeriodNanoseconds: UInt64 = 10_000_000

    /// Starts the vCPU threads and returns; `loop` watches the time limit and, with
    /// host quirks, the hypercall watchdog. The machine is stopping once `stopEventFD`
    /// is readable (the caller's loop decides what then; `finish()` collects the result).
    public func start(on loop: EventLoop, timeLimit: UInt64? = nil) {
        let started = monotonicNanoseconds()
        VCPUKicker.installHandler()
        startedAt.store(started, ordering: .releasing)
        for thread in threads {
            let ok = thread.start { [self] ending in
                if ending == .haltedForGood, haltedForGood.add(1, ordering: .acquiringAndReleasing).newValue == threads.count {
                    stopSwitch.stop(.halted)
                }
            }
            if !ok {
                stopSwitch.stop(.vmmFailure("could not start a thread for vCPU \(thread.index)"))
                break
            }
        }
        // A stop that raced the registrations above must still reach every vCPU.
        if stopSwitch.isStopping { stopSwitch.kickAll() }
        var ids: [Int] = []
        if let timeLimit {
            let (deadline, overflow) = started.addingReportingOverflow(timeLimit)
            if !overflow { ids.append(loop.addTimer(at: deadline) { [self] in requestStop(.timeLimit) }) }
        }
        if config.hostQuirks {
            // A vCPU with no exit for a whole period is kicked; its thread looks at where
            // it stands. An idle guest costs one exit per period.
            var lastEntries = [UInt64](repeating: .max, count: threads.count)
            ids.append(loop.addTimer(at: started + Machine.watchdogPeriodNanoseconds, period: Machine.watchdogPeriodNanoseconds) { [self] in
                for (i, t) in threads.enumerated() where t.phase == .running {
                    let entries = t.statistics.entries
                    if entries == lastEntries[i] { t.kick() }
                    lastEntries[i] = entries
                }
            })
        }
        // Once a second, the statistics, so that rates cover the last whole second.
        ids.append(loop.addTimer(at: started + 1_000_000_000, period: 1_000_000_000) { [self] in
            let now = (monotonicNanoseconds(), currentStatistics())
            rateSnapshots.withLock { $0 = ($0.later, now) }
        })
        if let tracer {
            ids.append(loop.addTimer(at: started + ExitTracer.drainPeriodNanoseconds, period: ExitTracer.drainPeriodNanoseconds) {
                tracer.drain()
            })
        }
        if let profile = config.profile {
            // Each vCPU kicked `hz` times a second; its thread reads where it stood.
            let period = 1_000_000_000 / UInt64(max(1, min(profile.hz, ProfileSettings.maximumHz)))
            ids.append(loop.addTimer(at: started + period, period: period) { [self] in
                for t in threads where t.phase == .running { t.requestSample() }
            })
        }
        if let cmos = devices.device("cmos") as? CMOS {
            // The RTC's once-a-second update, at the host's second boundaries: its alarm
            // interrupts the guest and, in S3, wakes the machine.
            let pm = devices.device("acpi-pm") as? PowerManagement
            ids.append(loop.addTimer(at: monotonicNanoseconds() + CMOS.nanosecondsToNextUpdate(), period: 1_000_000_000) { [self] in
                guard cmos.updateCycle(), let pm else { return }
                if pm.rtcAlarm() && suspended.load(ordering: .acquiring) { wake() }
            })
        }
        loopTimers.withLock { $0 = ids }
        for endpoint in virtio {
            loop.add(endpoint.notifyFD) { _ in endpoint.serviceNotification() }
            let device = endpoint.transport.device
            for fd in device.eventFDs {
                let events = device.triggersOnEdge(fd) ? EventLoop.readable | UInt32(EPOLLET.rawValue) : EventLoop.readable
                loop.add(fd, events: events) { _ in device.eventReady(fd) }
            }
        }
        // The stop request ends the loop's wait (a VMM process replaces this handler
        // with its own, which also collects the machine).
        loop.add(stopSwitch.stopEvent) { _ in loop.wake() }
    }

    /// Once stopping: waits for the vCPU threads, stops watching, and reports.
    public func finish(loop: EventLoop? = nil) -> MachineResult {
        if let loop {
            for id in loopTimers.withLock({ $0 }) { loop.cancelTimer(id) }
            loop.remove(stopSwitch.stopEvent)
            for endpoint in virtio {
                loop.remove(endpoint.notifyFD)
                for fd in endpoint.transport.device.eventFDs { loop.remove(fd) }
            }
        }
        stopSwitch.kickAll()
        for t in threads { t.join() }
        stopSwitch.unregisterAll()
        // Disks unlocked, sockets closed, TAPs kept for a restart: a new machine (the
        // guest rebooted) can take them at once.
        for endpoint in virtio { endpoint.transport.device.release() }
        // After the last exit: nothing is pushed any more.
        tracer?.finish()
        let started = startedAt.load(ordering: .acquiring)
        let ended = monotonicNanoseconds()
        return MachineResult(reason: stopSwitch.stopReason ?? .vmmFailure("stopped without a reason"),
                             statistics: currentStatistics(),
                             perVCPU: threads.map { $0.statistics.snapshot() },
                             setupNanoseconds: started > 0 ? started - buildStarted : 0,
                             runNanoseconds: started > 0 ? ended - started : 0,
                             unclaimedAccesses: bus.unclaimedAccesses,
                             guestResidentBytes: memory.residentBytes,
                             firstExitNanoseconds: threads.map { $0.firstExitAt.load(ordering: .relaxed) }.filter { $0 > 0 }.min()
                                .map { $0 - buildStarted })
    }

    /// Asks the machine to stop (from any thread); `run()` then returns `reason`.
    public func requestStop(_ reason: StopReason) { stopSwitch.stop(reason) }

    /// Where the machine is in its life.
    public enum State: String, Sendable {
        case created, running, paused, suspended, stopped
    }

    public var state: State {
        if stopSwitch.isStopping { return .stopped }
        if startedAt.load(ordering: .acquiring) == 0 { return .created }
        if suspended.load(ordering: .acquiring) { return .suspended }
        let live = threads.filter { $0.phase != .finished }
        return !live.isEmpty && live.allSatisfy({ $0.phase == .paused }) ? .paused : .running
    }

    /// Stops every vCPU and returns once all are parked, so that nothing in the guest
    /// runs (and no counter moves) until `resume()`. False if that took longer than
    /// `timeoutNanoseconds` (a vCPU stuck in the host kernel) or the machine stopped.
    @discardableResult
    public func pause(timeoutNanoseconds: UInt64 = 5_000_000_000) -> Bool {
        guard !stopSwitch.isStopping, startedAt.load(ordering: .acquiring) != 0, !suspended.load(ordering: .acquiring) else { return false }
        for t in threads where t.phase != .finished { t.send(.pause) }
        return waitUntilParked(timeoutNanoseconds: timeoutNanoseconds) && !stopSwitch.isStopping
    }

    /// Waits until no vCPU thread is running (each parked or finished); false on time-out
    /// or when the machine stops meanwhile.
    private func waitUntilParked(timeoutNanoseconds: UInt64) -> Bool {
        let deadline = monotonicNanoseconds() + timeoutNanoseconds
        while threads.contains(where: { $0.phase == .running }) {
            if stopSwitch.isStopping || monotonicNanoseconds() > deadline { return false }
            usleep(200)
        }
        return true
    }

    /// Lets paused vCPUs run again; a machine in S3 is woken instead (as firmware
    /// would, through the waking vector).
    public func resume() {
        if suspended.load(ordering: .acquiring) { wake(); return }
        for t in threads where t.phase == .paused { t.send(.resume) }
    }

    /// The guest wrote the S3 sleep type to PM1 control (on its vCPU thread, in the
    /// middle of that OUT): every vCPU parks before it runs another instruction.
    func enterS3() {
        suspended.store(true, ordering: .releasing)
        for t in threads where t.phase != .finished { t.send(.pause) }
    }

    /// Wakes a machine in S3 as a PC's firmware does: the boot vCPU starts in real mode
    /// at the FACS waking vector, the others wait for INIT/SIPI, memory is as the guest
    /// left it, and PM1 status says WAK_STS. False if the machine was not suspended.
    @discardableResult
    public func wake() -> Bool {
        guard suspended.load(ordering: .acquiring), !stopSwitch.isStopping else { return false }
        guard waitUntilParked(timeoutNanoseconds: 2_000_000_000) else {
            stopSwitch.stop(.vmmFailure("S3: a vCPU did not stop"))
            return false
        }
        let x = (try? memory.read(UInt64.self, at: GuestAddress(ACPITables.facsXWakingVector))) ?? 0
        let v = UInt64((try? memory.read(UInt32.self, at: GuestAddress(ACPITables.facsWakingVector))) ?? 0)
        let vector = x != 0 && x < 0x10_0000 ? x : v
        guard vector != 0, vector < 0x10_0000 else {
            stopSwitch.stop(.guestFailure("woke from S3 with no real-mode waking vector in the FACS (0x\(String(vector, radix: 16)))"))
            return false
        }
        for t in threads where t.phase == .paused {
            guard var s = t.save() else { stopSwitch.stop(.vmmFailure("S3: vCPU \(t.index) did not answer")); return false }
            if t.index == 0 { s.resetToRealMode(at: vector) } else { s.mpState = VCPUState.waitingForSIPI }
            guard t.restore(s) else { stopSwitch.stop(.vmmFailure("S3: KVM refused vCPU \(t.index)'s wake state")); return false }
        }
        (devices.device("acpi-pm") as? PowerManagement)?.woke()
        suspended.store(false, ordering: .releasing)
        for t in threads where t.phase == .paused { t.send(.resume) }
        return true
    }

    /// vCPU `index`'s state, read on its own thread while the machine is paused.
    public func vcpuState(_ index: Int) -> VCPUState? {
        guard threads.indices.contains(index) else { return nil }
        return threads[index].save()
    }

    /// Writes vCPU `index`'s state on its own thread while the machine is paused.
    public func setVCPUState(_ index: Int, _ state: VCPUState) -> Bool {
        guard threads.indices.contains(index) else { return false }
        return threads[index].restore(state)
    }

    /// Presses every power button the machine has (ACPI's), asking the guest to shut
    /// down. False when no device listens (flat binaries have no ACPI).
    public func pressPowerButton() -> Bool {
        var listening = false
        for e in devices.entries { if let b = e.device as? any PowerButtonDevice, b.pressPowerButton() { listening = true } }
        // The power button is a wake event in S3, as on a PC.
        if suspended.load(ordering: .acquiring) { return wake() || listening }
        return listening
    }

    /// Bytes typed at the guest's console: the virtio console when there is one (the
    /// user asked for hvc0), otherwise the first console device (COM1).
    public func sendConsoleInput(_ bytes: [UInt8]) {
        for e in devices.entries {
            if let t = e.device as? any VirtioTransport, let c = t.device as? VirtioConsole {
                c.enqueue(bytes)
                t.serve(queue: VirtioConsole.receiveQueue)
                return
            }
        }
        for e in devices.entries { if let c = e.device as? any ConsoleDevice { c.receive(bytes); return } }
    }

    /// Nanoseconds since the vCPUs started (0 before).
    public var uptimeNanoseconds: UInt64 {
        let t = startedAt.load(ordering: .acquiring)
        return t == 0 ? 0 : monotonicNanoseconds() - t
    }

    /// The statistics so far, summed over vCPUs (safe while running).
    public func currentStatistics() -> ExitStatistics {
        var total = ExitStatistics()
        for t in threads { total.add(t.statistics.snapshot()) }
        return total
    }

    /// The profile so far (`config.profile`): every vCPU's samples, merged.
    public var profile: GuestProfile? {
        guard let profile = config.profile else { return nil }
        var merged: [ProfileSample: UInt64] = [:]
        var perVCPU: [UInt64] = []
        var dropped: UInt64 = 0
        for t in threads {
            guard let s = t.profiler?.snapshot else { continue }
            var n: UInt64 = s.dropped
            for (k, v) in s.samples { merged[k, default: 0] &+= v; n &+= v }
            perVCPU.append(n)
            dropped &+= s.dropped
        }
        return GuestProfile(samples: merged, perVCPU: perVCPU, dropped: dropped, hz: profile.hz)
    }

    /// Exits a second over the last second or so (nil in the first second).
    public var rates: ExitRates? {
        let latest = (monotonicNanoseconds(), currentStatistics())
        let (earlier, later) = rateSnapshots.withLock { $0 }
        // Against the snapshot at least half a second old: a second's worth, give or take.
        guard let base = [later, earlier].compactMap({ $0 }).first(where: { latest.0 - $0.0 >= 500_000_000 }) ?? earlier else { return nil }
        return ExitRates(from: base.1, at: base.0, to: latest.1, at: latest.0)
    }

    /// Each vCPU's phase and where it was at the last sample; asks for a new sample
    /// (taken at once on the vCPU's thread; the next call sees it).
    public func vcpuSnapshots() -> [VCPUSnapshot] {
        threads.map { t in
            let s = t.lastSample.withLock { $0 }
            if t.phase == .running { t.requestSample() }
            let phase = switch t.phase { case .created: "created"; case .running: "running"; case .paused: "paused"; case .finished: "finished" }
            return VCPUSnapshot(index: t.index, phase: phase, rip: s?.rip, cpl: s?.cpl)
        }
    }

    /// The kernel's symbols (`config.effectiveSymbolFile`), parsed on first use: what a
    /// profile is named with.
    public var symbols: KernelSymbols? { threads.first?.symbols?.symbols }

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
    /// From `Machine.build` (for a restore, from reading the snapshot) to the guest's
    /// first exit; nil if it made none.
    public var firstExitNanoseconds: UInt64? = nil

    /// The same result, stopped for another reason (a stop signal that arrived while
    /// the guest was rebooting ends the VM instead of the reboot).
    public func with(reason: StopReason) -> MachineResult {
        MachineResult(reason: reason, statistics: statistics, perVCPU: perVCPU, setupNanoseconds: setupNanoseconds,
                      runNanoseconds: runNanoseconds, unclaimedAccesses: unclaimedAccesses, guestResidentBytes: guestResidentBytes,
                      firstExitNanoseconds: firstExitNanoseconds)
    }
}
