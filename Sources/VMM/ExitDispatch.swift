import Devices
import KVM

/// What the vCPU thread does after an exit.
enum ExitOutcome: Equatable, Sendable {
    /// Back into the guest.
    case resume
    /// HLT with interrupts disabled and no in-kernel irqchip: nothing can wake this vCPU
    /// again, so its thread ends.
    case halted
    /// The machine stops, for this reason.
    case stop(StopReason)
    /// Out of `KVM_RUN` because someone asked (a kick): look at commands, and with host
    /// quirks at whether the vCPU hangs on a hypercall.
    case kicked
    /// KVM's instruction emulator gave up: the instruction-emulation stage may complete
    /// the instruction; otherwise it is the guest's failure.
    case rejectedInstruction(InternalError)
    /// The guest did something the VMM cannot go on from: `exit` says what, for the
    /// failure report (which adds where the vCPU was).
    case failure(exit: String, instructionBytes: [UInt8]?)

    static func == (a: ExitOutcome, b: ExitOutcome) -> Bool {
        switch (a, b) {
        case (.resume, .resume), (.halted, .halted), (.kicked, .kicked): true
        case let (.stop(x), .stop(y)): x == y
        case let (.rejectedInstruction(x), .rejectedInstruction(y)): x.description == y.description
        case let (.failure(x, xb), .failure(y, yb)): x == y && xb == yb
        default: false
        }
    }
}

/// Exit dispatch as a plain function (Firecracker's `handle_kvm_exit`): port I/O and
/// MMIO go to the bus, HLT, shutdown and system events to the machine's life cycle,
/// everything else to the failure report. It touches nothing but the bus, so it is
/// tested without KVM.
///
/// The path of a port write, from the guest to the UART: `VCPUThread.loop` (KVM_RUN)
/// → `ExitDispatch.handle` (here) → `Bus.Reader.access` → `Serial8250.write`.
enum ExitDispatch {
    @inline(__always)
    static func handle(_ exit: VMExit, bus: inout Bus.Reader) -> (ExitKind, ExitOutcome) {
        switch exit {
        case let .io(io):
            let write = io.direction == .out
            for i in 0..<io.count {
                let offset = i * io.size
                var data = AccessData(size: io.size, value: write ? io.data.load(offset: offset, size: io.size) : 0)
                bus.access(.port, UInt64(io.port), write: write, data: &data)
                if !write { io.data.store(data.value, offset: offset, size: io.size) }
            }
            return (write ? .ioOut : .ioIn, .resume)
        case let .mmio(m):
            var data = AccessData(size: m.length, value: m.isWrite ? m.data.load(size: m.length) : 0)
            bus.access(.mmio, m.address, write: m.isWrite, data: &data)
            if !m.isWrite { m.data.store(data.value, size: m.length) }
            return (m.isWrite ? .mmioWrite : .mmioRead, .resume)
        case let .hlt(interruptsEnabled):
            // Without an in-kernel interrupt controller nothing can interrupt this vCPU:
            // HLT with IF=0 halts it for good; with IF=1 it resumes at once (README "HLT").
            return (.hlt, interruptsEnabled ? .resume : .halted)
        case .shutdown:
            return (.shutdown, .stop(.tripleFault))
        case let .systemEvent(type):
            switch type {
            case 1: return (.systemEvent, .stop(.powerOff))
            case 2: return (.systemEvent, .stop(.reset))
            default: return (.systemEvent, .failure(exit: "system event \(type) (crash)", instructionBytes: nil))
            }
        case .interrupted:
            return (.interrupted, .kicked)
        case let .internalError(e):
            if e.suberror == 1 { return (.internalError, .rejectedInstruction(e)) }
            return (.internalError, .failure(exit: e.description, instructionBytes: e.instructionBytes))
        case let .failEntry(reason, cpu):
            return (.failEntry, .failure(exit: "KVM_EXIT_FAIL_ENTRY, hardware reason 0x\(String(reason, radix: 16)) on host CPU \(cpu)", instructionBytes: nil))
        case let .exception(vector, code):
            return (.other, .failure(exit: "KVM_EXIT_EXCEPTION vector \(vector) error code 0x\(String(code, radix: 16))", instructionBytes: nil))
        case .debug:
            return (.other, .failure(exit: "KVM_EXIT_DEBUG with no debugger attached", instructionBytes: nil))
        case let .unknown(reason, hw):
            return (.other, .failure(exit: "unhandled exit reason \(reason) (hardware reason 0x\(String(hw, radix: 16)))", instructionBytes: nil))
        }
    }
}
