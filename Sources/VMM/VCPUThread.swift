import CLinux
import Devices
import Glibc
import GuestMemory
import KVM
import Synchronization

/// One vCPU's thread: a small state machine driven by commands (Firecracker's vCPU
/// events). Running, it loops: enter the guest, dispatch the exit, repeat. Commands
/// arrive over the kick (immediate_exit and a signal), so a vCPU inside `KVM_RUN` sees
/// them at once; a paused vCPU parks on its own thread, where its registers can be read
/// and written (`save`, `restore`), until `resume` or `finish`.
///
/// This is the hot path: no allocation and no lock held across `KVM_RUN`; a pending
/// command costs one atomic load per exit.
final class VCPUThread: Sendable {
    enum Command: Sendable {
        case pause
        case resume
        /// The vCPU's state (nil if KVM refused to read it); complete, with these
        /// MSRs, for a snapshot.
        case save(msrs: [UInt32]?, lapic: Bool, Reply<Result<VCPUState, KVMError>>)
        /// Writes a state; answers whether KVM took it.
        case restore(VCPUState, Reply<Bool>)
        /// Leaves the loop (the machine is stopping).
        case finish
    }

    enum Phase: Int, Sendable { case created, running, paused, finished }

    enum Ending: Sendable { case stopped, haltedForGood }

    let vcpu: VCPU
    let index: Int
    let devices: DeviceManager
    let memory: GuestMemory
    let stopSwitch: StopSwitch
    let statistics = VCPUStatistics()
    /// When this vCPU's first exit came (0 before): how long a restore took until the
    /// guest ran (`MachineResult.firstExitNanoseconds`).
    let firstExitAt = Atomic<UInt64>(0)
    /// Complete instructions the host's emulator rejects (`HostQuirks`).
    let quirks: Bool
    /// Names the code a failure stopped in (`MachineConfig.symbolFile`, opened by the machine).
    let symbols: KernelSymbolSource?
    /// `--profile`: this vCPU's samples, and whether stacks are walked.
    let profiler: ProfileRecorder?
    let profileStacks: Bool
    /// `--trace`: where this vCPU's exits go, and the time they are counted from.
    let trace: TraceRing?
    let traceStart: UInt64
    /// A sample is wanted: taken when the kick that follows gets the vCPU out. With no
    /// profiler only RIP and CPL are read.
    private let sampleRequested = Atomic<Bool>(false)

    private let commands = Mutex<[Command]>([])
    private let hasCommands = Atomic<Bool>(false)
    /// Readable while commands wait: what a parked thread sleeps on.
    private let wakeup: Int32
    private let phaseValue = Atomic<Int>(Phase.created.rawValue)
    private let thread = Mutex<pthread_t?>(nil)

    init(vcpu: VCPU, index: Int, devices: DeviceManager, memory: GuestMemory, stopSwitch: StopSwitch, quirks: Bool, symbols: KernelSymbolSource?,
         profile: ProfileSettings? = nil, trace: TraceRing? = nil, traceStart: UInt64 = 0) {
        self.trace = trace
        self.traceStart = traceStart
        self.profiler = profile.map { _ in ProfileRecorder() }
        self.profileStacks = profile?.stacks ?? false
        self.vcpu = vcpu
        self.index = index
        self.devices = devices
        self.memory = memory
        self.stopSwitch = stopSwitch
        self.quirks = quirks
        self.symbols = symbols
        wakeup = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
    }

    deinit { close(wakeup) }

    var phase: Phase { Phase(rawValue: phaseValue.load(ordering: .acquiring)) ?? .finished }

    /// Starts the thread; `ended` runs on it when the loop is left.
    func start(ended: @escaping @Sendable (Ending) -> Void) -> Bool {
        phaseValue.store(Phase.running.rawValue, ordering: .releasing)
        guard let t = HostThread.spawn(kind: .vcpu, { [self] in
            let ending = loop()
            if let rip = try? vcpu.registers().rip { statistics.update { $0.finalRIP = rip } }
            phaseValue.store(Phase.finished.rawValue, ordering: .releasing)
            ended(ending)
        }) else {
            phaseValue.store(Phase.finished.rawValue, ordering: .releasing)
            return false
        }
        thread.withLock { $0 = t }
        stopSwitch.register(VCPUKicker(vcpu: vcpu, thread: t, wakeup: wakeup))
        return true
    }

    func join() { if let t = thread.withLock({ $0 }) { HostThread.join(t) } }

    /// Queues `command` and gets the vCPU out of the guest to see it.
    func send(_ command: Command) {
        commands.withLock { $0.append(command) }
        hasCommands.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(wakeup, &one, 8)
        kick()
    }

    /// Out of `KVM_RUN` without a command (the hypercall watchdog). The wakeup eventfd
    /// is left alone: only commands and stops wake a parked thread.
    func kick() {
        vcpu.requestImmediateExit()
        if let t = thread.withLock({ $0 }) { pthread_kill(t, VCPUKicker.signal) }
    }

    /// Where the guest was at the last sample (linear RIP, CPL): what `top` shows.
    let lastSample = Mutex<(rip: UInt64, cpl: UInt8)?>(nil)

    /// Takes a sample of where the guest is (the profiler's timer asks, and the API
    /// for `top`); the profiler, when on, keeps it.
    func requestSample() {
        sampleRequested.store(true, ordering: .releasing)
        kick()
    }

    /// The vCPU's state, read on its own thread; it must be paused (nil otherwise, or
    /// when it does not answer within `timeoutMilliseconds`).
    func save(timeoutMilliseconds: Int32 = 2000) -> VCPUState? {
        if case let .success(s)? = save(msrs: nil, lapic: false, timeoutMilliseconds: timeoutMilliseconds) { return s }
        return nil
    }

    /// The state, complete with `msrs` when given (and the LAPIC, for a vCPU that has
    /// one in the kernel); nil when the vCPU is not paused or does not answer in time.
    func save(msrs: [UInt32]?, lapic: Bool, timeoutMilliseconds: Int32 = 2000) -> Result<VCPUState, KVMError>? {
        guard phase == .paused else { return nil }
        let reply = Reply<Result<VCPUState, KVMError>>()
        send(.save(msrs: msrs, lapic: lapic, reply))
        return reply.wait(timeoutMilliseconds: timeoutMilliseconds)
    }

    /// Writes `state` on the vCPU's own thread; it must be paused.
    func restore(_ state: VCPUState, timeoutMilliseconds: Int32 = 2000) -> Bool {
        guard phase == .paused else { return false }
        let reply = Reply<Bool>()
        send(.restore(state, reply))
        return reply.wait(timeoutMilliseconds: timeoutMilliseconds) ?? false
    }

    private func loop() -> Ending {
        var bus = devices.bus.reader()
        var left = monotonicNanoseconds()
        var sawExit = false
        while !stopSwitch.isStopping {
            if hasCommands.load(ordering: .acquiring) {
                guard obeyCommands() else { break }
                // Time spent paused (or saving state) is neither the guest's nor an exit's.
                left = monotonicNanoseconds()
            }
            if stopSwitch.isStopping { break }
            let exit: VMExit
            // Two clock reads an exit, not three: the last exit's `done` stands for
            // this entry (between them only the two atomic loads above). A read costs
            // ~50 ns on some hosts, 1% of a port-I/O exit.
            let entered = left
            do {
                exit = try vcpu.run()
            } catch {
                stopSwitch.stop(.vmmFailure("vCPU \(index): \(error.description)"))
                return .stopped
            }
            let exited = monotonicNanoseconds()
            if !sawExit {
                sawExit = true
                firstExitAt.store(exited, ordering: .relaxed)
            }
            if sampleRequested.load(ordering: .relaxed), sampleRequested.exchange(false, ordering: .acquiring) {
                if let sample = ProfileRecorder.sample(vcpu, memory: memory, stacks: profiler != nil && profileStacks) {
                    profiler?.record(sample)
                    lastSample.withLock { $0 = (sample.frames.first ?? 0, sample.cpl) }
                }
                if case .interrupted = exit {
                    // The sampler's own kick: not the guest's exit, so not counted (nor
                    // seen by the hypercall watchdog, which watches the count).
                    let done = monotonicNanoseconds()
                    statistics.update { s in
                        s.guestNanoseconds += exited - entered
                        s.vmmNanoseconds += done - exited
                    }
                    left = done
                    continue
                }
            }
            var (kind, outcome) = ExitDispatch.handle(exit, bus: &bus)
            var ending: Ending? = nil

            switch outcome {
            case .resume:
                break
            case .halted:
                ending = .haltedForGood
            case let .stop(reason):
                stopSwitch.stop(reason)
            case .kicked:
                // Hosts that leave a hypercall hanging give no exit for it: the machine's
                // watchdog kicks a vCPU that has been silent, and here it is completed.
                if quirks, !stopSwitch.isStopping {
                    switch InstructionEmulator.complete(nil, vcpu: vcpu, memory: memory) {
                    case .completed: kind = .emulated
                    case .notAnInstructionWeComplete: break
                    case let .failed(reason): outcome = .failure(exit: "hypercall: \(reason)", instructionBytes: nil)
                    }
                }
            case let .rejectedInstruction(e):
                switch quirks ? InstructionEmulator.complete(e, vcpu: vcpu, memory: memory) : .notAnInstructionWeComplete {
                case .completed: kind = .emulated
                case .notAnInstructionWeComplete: outcome = .failure(exit: e.description, instructionBytes: e.instructionBytes)
                case let .failed(reason): outcome = .failure(exit: "\(e.description): \(reason)", instructionBytes: e.instructionBytes)
                }
            case .failure:
                break
            }
            if case let .failure(what, bytes) = outcome {
                stopSwitch.stop(.guestFailure(FailureReport.describe(vcpu: vcpu, index: index, memory: memory, symbols: symbols,
                                                                      exit: what, instructionBytes: bytes)))
            }

            let done = monotonicNanoseconds()
            let port: UInt16? = if case let .io(io) = exit { io.port } else { nil }
            let page: UInt64? = if case let .mmio(m) = exit { m.address & ~0xFFF } else { nil }
            let k = kind
            statistics.update { s in
                s[k] += 1
                s.entries += 1
                s.guestNanoseconds += exited - entered
                s.vmmNanoseconds += done - exited
                if let port { s.ports.count(UInt64(port)) }
                if let page { s.mmio.count(page) }
            }
            if let trace { record(exit, kind: k, into: trace, exited: exited, done: done) }
            left = done
            if let ending { return ending }
        }
        return .stopped
    }

    /// One exit into the trace ring: when, where (RIP from the registers KVM synced
    /// into `kvm_run`), the port or address and data, and the VMM's time on it.
    private func record(_ exit: VMExit, kind: ExitKind, into ring: TraceRing, exited: UInt64, done: UInt64) {
        var address: UInt64 = 0, data: UInt64 = 0, size: UInt8 = 0, flags: UInt8 = 0
        switch exit {
        case let .io(io):
            address = UInt64(io.port)
            size = UInt8(truncatingIfNeeded: io.size)
            if io.data.count >= 1 { data = io.data.load(size: min(io.data.count, 8)) }
            flags = TraceRecord.hasAccess | (io.direction == .out ? TraceRecord.isWrite : 0)
        case let .mmio(m):
            address = m.address
            size = UInt8(truncatingIfNeeded: m.length)
            if m.data.count >= 1 { data = m.data.load(size: min(m.data.count, 8)) }
            flags = TraceRecord.hasAccess | (m.isWrite ? TraceRecord.isWrite : 0)
        default:
            break
        }
        ring.push(time: exited &- traceStart, rip: vcpu.exitRIP, address: address, data: data, handling: done &- exited,
                  vcpu: UInt16(truncatingIfNeeded: index), kind: UInt8(truncatingIfNeeded: kind.rawValue), size: size, flags: flags)
    }

    /// Carries out queued commands, parking while paused. False when the loop must end.
    private func obeyCommands() -> Bool {
        var paused = false
        while true {
            var drain: UInt64 = 0
            _ = read(wakeup, &drain, 8)
            hasCommands.store(false, ordering: .releasing)
            let batch = commands.withLock { c -> [Command] in let b = c; c.removeAll(); return b }
            for command in batch {
                switch command {
                case .pause:
                    if !paused {
                        // Re-enter KVM_RUN with immediate_exit set: KVM completes a pending
                        // port or MMIO read into the registers and returns at once, so
                        // what `save` reads is whole (api.rst, KVM_RUN).
                        vcpu.requestImmediateExit()
                        _ = try? vcpu.run()
                    }
                    paused = true
                    phaseValue.store(Phase.paused.rawValue, ordering: .releasing)
                case .resume:
                    paused = false
                    phaseValue.store(Phase.running.rawValue, ordering: .releasing)
                case let .save(msrs, lapic, reply):
                    reply.send(Result { () throws(KVMError) in try VCPUState(reading: vcpu, msrs: msrs, lapic: lapic) })
                case let .restore(state, reply):
                    reply.send((try? state.write(to: vcpu)) != nil)
                case .finish:
                    return false
                }
            }
            if stopSwitch.isStopping { return false }
            guard paused else { return true }
            // Parked: sleep until the next command (or a stop, noticed within 100 ms).
            var p = pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0)
            while !hasCommands.load(ordering: .acquiring) && !stopSwitch.isStopping {
                if poll(&p, 1, 100) > 0 {
                    var drain: UInt64 = 0
                    _ = read(wakeup, &drain, 8) // a stray wake must not make this spin
                }
            }
        }
    }
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
