import Glibc
import Synchronization

/// The PC's CMOS memory and MC146818 real-time clock (index port 0x70, data 0x71): the
/// guest reads the host's current time (UTC) in the format it selected in status
/// register B (BCD or binary, 12 or 24 hours), plus the BIOS's memory-size bytes.
/// Writes to the clock registers are ignored, as the clock follows the host. Status A's
/// update-in-progress bit rises for the last 2.2 ms of each host second; the update
/// cycle (`updateCycle`, once a second from the VMM) sets the update and alarm flags in
/// status C and raises IRQ 8 for the ones status B enables. An alarm interrupt is also
/// what wakes a PC from ACPI S3 (the PM block's RTC_STS).
public final class CMOS: BusDevice {
    public static let portCount: UInt16 = 2

    private struct State {
        var index: UInt8 = 0
        var ram = [UInt8](repeating: 0, count: 128)
    }
    private let state: Mutex<State>
    /// IRQ 8: raised when an enabled event (alarm, update) sets its flag in register C,
    /// lowered when the guest reads register C.
    private let interrupt: (any InterruptSource)?

    // Registers A-D and their bits (MC146818 datasheet).
    static let regA = 0x0A, regB = 0x0B, regC = 0x0C, regD = 0x0D
    static let uip: UInt8 = 0x80
    static let irqf: UInt8 = 0x80, alarmFlag: UInt8 = 0x20, updateFlag: UInt8 = 0x10
    static let alarmEnable: UInt8 = 0x20, updateEnable: UInt8 = 0x10, setBit: UInt8 = 0x80
    /// How long before each second's update the update-in-progress bit is high: 244 µs
    /// of warning plus the update itself (the datasheet's 1984 µs), as guests that wait
    /// for it to rise and fall (kvm-unit-tests' `s3`, Linux's clock reads) expect.
    static let uipWindowNanoseconds: Int = 2_228_000

    public init(memorySize: UInt64, interrupt: (any InterruptSource)? = nil) {
        self.interrupt = interrupt
        var ram = [UInt8](repeating: 0, count: 128)
        ram[0x0A] = 0x26            // status A: 32.768 kHz time base, 1024 Hz rate
        ram[0x0B] = 0x02            // status B: 24-hour mode, BCD
        ram[0x0D] = 0x80            // status D: clock and RAM valid
        ram[0x15] = 0x80; ram[0x16] = 0x02 // 640 KiB base memory
        let extendedKiB = min(max(Int64(memorySize) - 0x10_0000, 0) / 1024, 0xFFFF)
        ram[0x17] = UInt8(extendedKiB & 0xFF); ram[0x18] = UInt8(extendedKiB >> 8)
        ram[0x30] = ram[0x17]; ram[0x31] = ram[0x18]
        let above16M = min(max(Int64(min(memorySize, 0xC000_0000)) - 0x100_0000, 0) / 0x1_0000, 0xFFFF)
        ram[0x34] = UInt8(above16M & 0xFF); ram[0x35] = UInt8(above16M >> 8)
        let above4G = memorySize > 0xC000_0000 ? (memorySize - 0xC000_0000) / 0x1_0000 : 0
        ram[0x5B] = UInt8(above4G & 0xFF); ram[0x5C] = UInt8((above4G >> 8) & 0xFF); ram[0x5D] = UInt8((above4G >> 16) & 0xFF)
        state = Mutex(State(ram: ram))
    }

    public func read(region: Int, offset: UInt64, data: inout AccessData) {
        guard offset == 1 else { data.value = 0xFF; return }
        data.value = state.withLock { s -> UInt64 in
            let i = Int(s.index & 0x7F)
            if let t = CMOS.clock(i, statusB: s.ram[CMOS.regB]) { return UInt64(t) }
            var v = s.ram[i]
            if i == CMOS.regA, s.ram[CMOS.regB] & CMOS.setBit == 0, CMOS.nanosecondsIntoSecond() >= 1_000_000_000 - CMOS.uipWindowNanoseconds {
                v |= CMOS.uip
            }
            if i == CMOS.regC { // reading status C acknowledges every event
                s.ram[CMOS.regC] = 0
                interrupt?.setLevel(false)
            }
            return UInt64(v)
        }
    }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        let v = data.byte
        state.withLock { s in
            if offset == 0 { s.index = v; return } // bit 7 (NMI disable) is kept and ignored
            let i = Int(s.index & 0x7F)
            switch i {
            case 0x00, 0x02, 0x04, 0x06...0x09, 0x32, CMOS.regC, CMOS.regD: break // clock and read-only status
            case CMOS.regA: s.ram[i] = v & 0x7F                                 // UIP is read-only
            default: s.ram[i] = v                                                // alarms (1, 3, 5), B, RAM
            }
        }
    }

    /// The once-a-second update cycle, driven by the VMM's clock: sets the update flag,
    /// and the alarm flag when the time matches the alarm registers (a value of 0xC0 or
    /// more there matches anything); raises IRQ 8 for the events the guest enabled.
    /// Returns whether an alarm interrupt happened (what wakes a suspended PC).
    @discardableResult
    public func updateCycle() -> Bool {
        state.withLock { s -> Bool in
            let b = s.ram[CMOS.regB]
            guard b & CMOS.setBit == 0 else { return false } // the guest is setting the clock
            var flags = CMOS.updateFlag
            let matches = [(0x00, 0x01), (0x02, 0x03), (0x04, 0x05)].allSatisfy { time, alarm in
                let a = s.ram[alarm]
                return a >= 0xC0 || CMOS.clock(time, statusB: b) == a
            }
            if matches { flags |= CMOS.alarmFlag }
            s.ram[CMOS.regC] |= flags
            let enabled = s.ram[CMOS.regC] & b & (CMOS.alarmEnable | CMOS.updateEnable)
            if enabled != 0 {
                s.ram[CMOS.regC] |= CMOS.irqf
                interrupt?.setLevel(true)
            }
            return matches && b & CMOS.alarmEnable != 0
        }
    }

    /// Nanoseconds until the next update cycle (the next whole second of the host's
    /// wall clock), for the VMM's timer.
    public static func nanosecondsToNextUpdate() -> UInt64 { UInt64(1_000_000_000 - nanosecondsIntoSecond()) }

    static func nanosecondsIntoSecond() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int(ts.tv_nsec)
    }

    static func clock(_ index: Int, statusB: UInt8) -> UInt8? {
        guard [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].contains(index) else { return nil }
        var now = time(nil)
        var t = tm()
        gmtime_r(&now, &t)
        let binary = statusB & 0x04 != 0, twentyFour = statusB & 0x02 != 0
        func encode(_ v: Int32) -> UInt8 { binary ? UInt8(v) : UInt8((v / 10) << 4 | v % 10) }
        switch index {
        case 0x00: return encode(t.tm_sec)
        case 0x02: return encode(t.tm_min)
        case 0x04:
            if twentyFour { return encode(t.tm_hour) }
            let h = t.tm_hour % 12 == 0 ? 12 : t.tm_hour % 12
            return encode(h) | (t.tm_hour >= 12 ? 0x80 : 0)
        case 0x06: return encode(t.tm_wday + 1)
        case 0x07: return encode(t.tm_mday)
        case 0x08: return encode(t.tm_mon + 1)
        case 0x09: return encode((t.tm_year + 1900) % 100)
        default: return encode((t.tm_year + 1900) / 100)
        }
    }
}

extension CMOS: StatefulDevice {
    /// The index and the 128 bytes of CMOS RAM; the clock registers follow the host's
    /// time, so a restored guest reads the time of the restore, as a PC's RTC would.
    public func saveState(into w: inout StateWriter) {
        let s = state.withLock { $0 }
        w.put(s.index)
        w.put(bytes: s.ram)
    }

    public func restoreState(from r: inout StateReader) throws(StateError) {
        let index: UInt8 = try r.get()
        let ram = try r.getBytes(exactly: 128, "CMOS RAM")
        state.withLock { $0 = State(index: index, ram: ram) }
    }
}
