import Glibc
import Synchronization

/// The PC's CMOS memory and MC146818 real-time clock (index port 0x70, data 0x71): the
/// guest reads the host's current time (UTC) in the format it selected in status
/// register B (BCD or binary, 12 or 24 hours), plus the BIOS's memory-size bytes.
/// Writes to the clock registers are ignored, as the clock follows the host.
public final class CMOS: BusDevice {
    public static let portCount: UInt16 = 2

    private struct State {
        var index: UInt8 = 0
        var ram = [UInt8](repeating: 0, count: 128)
    }
    private let state: Mutex<State>

    public init(memorySize: UInt64) {
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
            if let t = CMOS.clock(i, statusB: s.ram[0x0B]) { return UInt64(t) }
            let v = s.ram[i]
            if i == 0x0C { s.ram[0x0C] = 0 } // reading status C acknowledges
            return UInt64(v)
        }
    }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        let v = data.byte
        state.withLock { s in
            if offset == 0 { s.index = v; return } // bit 7 (NMI disable) is kept and ignored
            let i = Int(s.index & 0x7F)
            switch i {
            case 0x00...0x09, 0x32, 0x0C, 0x0D: break       // clock and read-only status
            case 0x0A: s.ram[i] = v & 0x7F                  // UIP is read-only
            default: s.ram[i] = v
            }
        }
    }

    /// A clock register's value now, or nil for other registers.
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
