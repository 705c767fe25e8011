import Synchronization

/// An 8250/16550A UART, the serial console every x86 kernel can talk to without a
/// driver of its own (COM1 at 0x3F8, IRQ 4).
///
/// Transmission is immediate (THR is always empty, so a polling driver never waits).
/// Received bytes queue in a FIFO; transmit-empty and receive-ready interrupts follow
/// IER, as Linux's 8250 driver expects. Register map: PC16550D datasheet, table 2.
public final class Serial8250: ConsoleDevice {
    public static let registerCount: UInt16 = 8

    struct State {
        var ier: UInt8 = 0
        var lcr: UInt8 = 0x03        // 8N1
        var mcr: UInt8 = 0x08        // OUT2: interrupts routed to the PIC
        var scratch: UInt8 = 0
        var divisor: UInt16 = 12     // 9600 baud
        var fifoEnabled = false
        var thrEmptyPending = true   // "THR empty" interrupt waiting to be seen in IIR
        var rx: [UInt8] = []
        var rxHead = 0
        var overrun = false
        var rxCount: Int { rx.count - rxHead }
    }

    private let state = Mutex(State())
    private let output: any SerialOutput
    private let interrupt: (any InterruptSource)?
    /// Bytes the guest has not read yet are capped so a stuck guest cannot make the
    /// VMM grow without bound; the overflow sets the overrun bit as on hardware.
    public static let rxCapacity = 4096

    public init(output: any SerialOutput, interrupt: (any InterruptSource)? = nil) {
        self.output = output
        self.interrupt = interrupt
    }

    // Register offsets.
    static let rbrThr = 0, ier = 1, iirFcr = 2, lcr = 3, mcr = 4, lsr = 5, msr = 6, scr = 7
    static let dlab: UInt8 = 0x80
    static let loopback: UInt8 = 0x10
    // IER bits.
    static let ierRx: UInt8 = 0x01, ierThr: UInt8 = 0x02
    // LSR bits.
    static let lsrDataReady: UInt8 = 0x01, lsrOverrun: UInt8 = 0x02, lsrThrEmpty: UInt8 = 0x20, lsrIdle: UInt8 = 0x40

    // The interrupt level is applied while the lock is held: two threads (a vCPU
    // reading RBR, the console delivering input) can then never apply their levels in
    // the opposite order to their state changes.

    public func read(region: Int, offset: UInt64, data: inout AccessData) {
        let value = state.withLock { s -> UInt8 in
            let v = Serial8250.readRegister(Int(offset), &s)
            interrupt?.setLevel(Serial8250.interruptPending(s))
            return v
        }
        data.value = UInt64(value)
    }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        let transmit = state.withLock { s -> UInt8? in
            let t = Serial8250.writeRegister(Int(offset), data.byte, &s)
            interrupt?.setLevel(Serial8250.interruptPending(s))
            return t
        }
        if let transmit { output.write(transmit) }
    }

    /// Bytes from the host (a terminal, a test) for the guest to read.
    public func receive(_ bytes: [UInt8]) {
        state.withLock { s in
            for b in bytes { Serial8250.enqueue(b, &s) }
            interrupt?.setLevel(Serial8250.interruptPending(s))
        }
    }

    /// True while the guest has unread input (hosts use it to pace what they feed).
    public var hasPendingInput: Bool { state.withLock { $0.rxCount > 0 } }

    static func enqueue(_ b: UInt8, _ s: inout State) {
        if s.rxCount >= rxCapacity { s.overrun = true; return }
        if s.rxHead > 0 && s.rxHead == s.rx.count { s.rx.removeAll(keepingCapacity: true); s.rxHead = 0 }
        // A guest that reads while input keeps coming never drains the queue: drop what
        // it has read once that is as much as the queue holds, so the array stays bounded.
        if s.rxHead >= rxCapacity { s.rx.removeFirst(s.rxHead); s.rxHead = 0 }
        s.rx.append(b)
    }

    static func readRegister(_ offset: Int, _ s: inout State) -> UInt8 {
        let dlabSet = s.lcr & dlab != 0
        switch offset {
        case rbrThr:
            if dlabSet { return UInt8(s.divisor & 0xFF) }
            guard s.rxCount > 0 else { return 0 }
            let b = s.rx[s.rxHead]
            s.rxHead += 1
            return b
        case ier:
            return dlabSet ? UInt8(s.divisor >> 8) : s.ier
        case iirFcr:
            let fifoBits: UInt8 = s.fifoEnabled ? 0xC0 : 0
            if s.ier & ierRx != 0 && s.rxCount > 0 { return fifoBits | 0x04 }
            if s.ier & ierThr != 0 && s.thrEmptyPending {
                s.thrEmptyPending = false // reading IIR acknowledges THRE
                return fifoBits | 0x02
            }
            return fifoBits | 0x01
        case lcr:
            return s.lcr
        case mcr:
            return s.mcr
        case lsr:
            var v = lsrThrEmpty | lsrIdle
            if s.rxCount > 0 { v |= lsrDataReady }
            if s.overrun { v |= lsrOverrun; s.overrun = false }
            return v
        case msr:
            if s.mcr & loopback != 0 {
                // DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
                let m = s.mcr
                return ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
            }
            return 0xB0 // DCD, DSR, CTS: a cable with someone listening
        default:
            return s.scratch
        }
    }

    /// Returns a byte to transmit, if the write sent one.
    static func writeRegister(_ offset: Int, _ v: UInt8, _ s: inout State) -> UInt8? {
        let dlabSet = s.lcr & dlab != 0
        switch offset {
        case rbrThr:
            if dlabSet { s.divisor = (s.divisor & 0xFF00) | UInt16(v); return nil }
            s.thrEmptyPending = true // sent at once, so THR is empty again
            if s.mcr & loopback != 0 { enqueue(v, &s); return nil }
            return v
        case ier:
            if dlabSet { s.divisor = (s.divisor & 0x00FF) | UInt16(v) << 8; return nil }
            // Enabling THRE interrupts with THR empty raises one at once (Linux's
            // driver relies on this to start transmitting).
            if v & ierThr != 0 && s.ier & ierThr == 0 { s.thrEmptyPending = true }
            s.ier = v & 0x0F
        case iirFcr:
            s.fifoEnabled = v & 0x01 != 0
            if v & 0x02 != 0 { s.rx.removeAll(); s.rxHead = 0 }
        case lcr:
            s.lcr = v
        case mcr:
            s.mcr = v & 0x1F
        case lsr, msr:
            break // read-only
        default:
            s.scratch = v
        }
        return nil
    }

    static func interruptPending(_ s: State) -> Bool {
        (s.ier & ierRx != 0 && s.rxCount > 0) || (s.ier & ierThr != 0 && s.thrEmptyPending)
    }
}

extension Serial8250: StatefulDevice {
    public func saveState(into w: inout StateWriter) {
        let s = state.withLock { $0 }
        w.put(s.ier); w.put(s.lcr); w.put(s.mcr); w.put(s.scratch); w.put(s.divisor)
        w.put(s.fifoEnabled); w.put(s.thrEmptyPending); w.put(s.overrun)
        w.put(bytes: s.rx[s.rxHead...])
    }

    public func restoreState(from r: inout StateReader) throws(StateError) {
        var s = State()
        s.ier = try r.get(); s.lcr = try r.get(); s.mcr = try r.get(); s.scratch = try r.get(); s.divisor = try r.get()
        s.fifoEnabled = try r.getBool(); s.thrEmptyPending = try r.getBool(); s.overrun = try r.getBool()
        s.rx = try r.getBytes(limit: Serial8250.rxCapacity)
        let restored = s
        state.withLock { s in
            s = restored
            interrupt?.setLevel(Serial8250.interruptPending(s))
        }
    }
}
