import Devices
import GuestMemory
import KVM

/// One vCPU's run loop: enter the guest, dispatch the exit, repeat until the machine
/// stops. This is the hot path: no allocation and no lock held across `KVM_RUN`.
struct ExitLoop: Sendable {
    let vcpu: VCPU
    let index: Int
    let bus: Bus
    let memory: GuestMemory
    let control: MachineControl
    let statistics: VCPUStatistics
    /// Complete instructions the host's emulator rejects (`HostQuirks`).
    let quirks: Bool
    /// Names the code a failure stopped in (`MachineConfig.symbolFile`).
    let symbolFile: String?

    enum Outcome { case stopped, haltedForGood }

    func run() -> Outcome {
        let outcome = loop()
        if let rip = try? vcpu.registers().rip { statistics.update { $0.finalRIP = rip } }
        return outcome
    }

    private func loop() -> Outcome {
        var left = monotonicNanoseconds()
        while !control.isStopping {
            control.gate.wait { control.isStopping }
            if control.isStopping { break }
            let exit: VMExit
            let entered = monotonicNanoseconds()
            do {
                exit = try vcpu.run()
            } catch {
                control.stop(.vmmFailure("vCPU \(index): \(error.description)"))
                return .stopped
            }
            let exited = monotonicNanoseconds()
            var kind = ExitKind.other
            var outcome: Outcome? = nil

            switch exit {
            case let .io(io):
                kind = io.direction == .in ? .ioIn : .ioOut
                for i in 0..<io.count {
                    let offset = i * io.size
                    if io.direction == .out {
                        bus.writePort(io.port, size: io.size, value: UInt32(truncatingIfNeeded: io.data.load(offset: offset, size: io.size)))
                    } else {
                        io.data.store(UInt64(bus.readPort(io.port, size: io.size)), offset: offset, size: io.size)
                    }
                }
            case let .mmio(m):
                kind = m.isWrite ? .mmioWrite : .mmioRead
                if m.isWrite {
                    bus.writeMMIO(m.address, size: m.length, value: m.data.load(size: m.length))
                } else {
                    m.data.store(bus.readMMIO(m.address, size: m.length), size: m.length)
                }
            case let .hlt(interruptsEnabled):
                kind = .hlt
                // Without an in-kernel interrupt controller nothing can interrupt this
                // vCPU: HLT with IF=0 halts it for good; with IF=1 it resumes at once
                // (see README "HLT").
                if !interruptsEnabled { outcome = .haltedForGood }
            case .shutdown:
                kind = .shutdown
                control.stop(.tripleFault)
            case let .systemEvent(type):
                kind = .systemEvent
                switch type {
                case 1: control.stop(.powerOff)
                case 2: control.stop(.reset)
                default: control.stop(.guestFailure("vCPU \(index): system event \(type) (crash)"))
                }
            case .interrupted:
                kind = .interrupted
                // Hosts that leave a hypercall hanging give no exit for it: the machine's
                // watchdog kicks a vCPU that has been silent, and here it is completed.
                if quirks, !control.isStopping {
                    switch completeRejectedInstruction(nil, onlyKernelHypercall: true) {
                    case .completed: kind = .emulated
                    case .notAQuirk: break
                    case let .failed(reason):
                        control.stop(.guestFailure(FailureReport.describe(vcpu: vcpu, index: index, memory: memory, symbolFile: symbolFile,
                                                                         exit: "hypercall: \(reason)", instructionBytes: nil)))
                    }
                }
            case let .internalError(e):
                kind = .internalError
                switch quirks && e.suberror == 1 ? completeRejectedInstruction(e) : .notAQuirk {
                case .completed:
                    kind = .emulated
                case .notAQuirk:
                    control.stop(.guestFailure(FailureReport.describe(vcpu: vcpu, index: index, memory: memory, symbolFile: symbolFile,
                                                                     exit: e.description, instructionBytes: e.instructionBytes)))
                case let .failed(reason):
                    control.stop(.guestFailure(FailureReport.describe(vcpu: vcpu, index: index, memory: memory, symbolFile: symbolFile,
                                                                     exit: "\(e.description): \(reason)", instructionBytes: e.instructionBytes)))
                }
            case let .failEntry(reason, cpu):
                kind = .failEntry
                control.stop(.guestFailure(FailureReport.describe(vcpu: vcpu, index: index, memory: memory, symbolFile: symbolFile,
                    exit: "KVM_EXIT_FAIL_ENTRY, hardware reason 0x\(String(reason, radix: 16)) on host CPU \(cpu)", instructionBytes: nil)))
            case let .exception(vector, code):
                control.stop(.guestFailure(FailureReport.describe(vcpu: vcpu, index: index, memory: memory, symbolFile: symbolFile,
                    exit: "KVM_EXIT_EXCEPTION vector \(vector) error code 0x\(String(code, radix: 16))", instructionBytes: nil)))
            case .debug:
                control.stop(.guestFailure(FailureReport.describe(vcpu: vcpu, index: index, memory: memory, symbolFile: symbolFile,
                    exit: "KVM_EXIT_DEBUG with no debugger attached", instructionBytes: nil)))
            case let .unknown(reason, hw):
                control.stop(.guestFailure(FailureReport.describe(vcpu: vcpu, index: index, memory: memory, symbolFile: symbolFile,
                    exit: "unhandled exit reason \(reason) (hardware reason 0x\(String(hw, radix: 16)))", instructionBytes: nil)))
            }

            let done = monotonicNanoseconds()
            let k = kind
            let port: UInt16? = if case let .io(io) = exit { io.port } else { nil }
            let page: UInt64? = if case let .mmio(m) = exit { m.address & ~0xFFF } else { nil }
            statistics.update { s in
                s[k] += 1
                s.entries += 1
                s.guestNanoseconds += exited - entered
                s.vmmNanoseconds += (entered - left) + (done - exited)
                if let port { s.ports.count(UInt64(port)) }
                if let page { s.mmio.count(page) }
            }
            left = done
            if let outcome { return outcome }
        }
        return .stopped
    }

    private enum QuirkResult { case completed, notAQuirk, failed(String) }

    /// Completes an instruction the host's emulator rejected when it is one the quirk
    /// emulator knows (`HostQuirks`); anything else is the guest's failure to report.
    /// `onlyKernelHypercall`: the vCPU was kicked out by the watchdog, not stopped by an
    /// emulation failure; only a VMCALL/VMMCALL at CPL 0 (which the host never
    /// completes) is then done, anything else left to run on.
    private func completeRejectedInstruction(_ e: InternalError?, onlyKernelHypercall: Bool = false) -> QuirkResult {
        let bytes = e?.instructionBytes.flatMap { $0.isEmpty ? nil : $0 } ?? FailureReport.bytesAtRIP(vcpu, memory)
        guard let sregs = try? vcpu.specialRegisters(),
              let action = QuirkEmulator.action(for: bytes, longMode: sregs.cs.l != 0) else { return .notAQuirk }
        if onlyKernelHypercall, action != .hypercall || sregs.ss.dpl != 0 { return .notAQuirk }
        do {
            switch try QuirkEmulator.perform(action, on: vcpu, special: sregs, memory: memory) {
            case .completed: return .completed
            case let .operandOutsideRAM(a): return .failed("its memory operand 0x\(String(a, radix: 16)) is not guest RAM")
            }
        } catch {
            return .failed("completing it failed: \(error.description)")
        }
    }
}
