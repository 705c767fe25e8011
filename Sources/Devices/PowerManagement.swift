import Glibc
import Synchronization

/// The ACPI power-management block the FADT points at (PIIX layout, base 0xB000):
/// PM1a event (status and enable, 4 bytes), PM1a control (2 bytes: SLP_TYP and SLP_EN;
/// entering the `\_S5` sleep type powers the machine off), and the PM timer, a 32-bit
/// counter at 3.579545 MHz derived from the host's monotonic clock. The power button
/// (PM1 status bit 8) raises the SCI while the guest has it enabled, which is how a host
/// asks an ACPI guest to shut down.
public final class PowerManagement: PowerButtonDevice {
    public static let portCount: UInt16 = 12
    public static let timerFrequency: UInt64 = 3_579_545

    let power: any PowerControl
    let s5SleepType: UInt16
    let s3SleepType: UInt16?
    let sci: (any InterruptSource)?
    static let powerButtonBit: UInt16 = 1 << 8
    /// PM1 status and enable: the RTC alarm (RTC_STS / RTC_EN) and, status only, WAK_STS.
    static let rtcBit: UInt16 = 1 << 10
    static let wakeBit: UInt16 = 1 << 15
    private struct Registers { var status: UInt16 = 0; var enable: UInt16 = 0; var control: UInt16 = 1 } // SCI_EN: ACPI mode
    private let registers = Mutex(Registers())
    /// When the PM timer read 0 (moved by a restore, so the timer goes on from its saved value).
    private let started: Atomic<UInt64>

    public init(power: any PowerControl, s5SleepType: UInt16, s3SleepType: UInt16? = nil, sci: (any InterruptSource)? = nil) {
        self.power = power
        self.sci = sci
        self.s5SleepType = s5SleepType
        self.s3SleepType = s3SleepType
        started = Atomic(PowerManagement.now())
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// The PM timer's value now.
    public var timer: UInt32 {
        let ns = PowerManagement.now() &- started.load(ordering: .relaxed)
        // ticks = ns * f / 1e9, split to avoid overflow for long uptimes.
        let ticks = (ns / 1_000_000_000) * PowerManagement.timerFrequency + (ns % 1_000_000_000) * PowerManagement.timerFrequency / 1_000_000_000
        return UInt32(truncatingIfNeeded: ticks)
    }

    public func read(region: Int, offset: UInt64, data: inout AccessData) {
        data.value = UInt64(register(at: offset))
    }

    func register(at offset: UInt64) -> UInt32 {
        switch offset {
        case 0...1: return registers.withLock { UInt32($0.status) >> (8 * UInt32(offset)) }
        case 2...3: return registers.withLock { UInt32($0.enable) >> (8 * UInt32(offset - 2)) }
        case 4...5: return registers.withLock { UInt32($0.control) >> (8 * UInt32(offset - 4)) }
        case 8...11: return timer >> (8 * UInt32(offset - 8))
        default: return 0
        }
    }

    /// Presses the power button: sets PWRBTN_STS and raises the SCI if the guest enabled
    /// it. Returns whether the guest is listening (PWRBTN_EN set).
    @discardableResult
    public func pressPowerButton() -> Bool { fixedEvent(PowerManagement.powerButtonBit) }

    /// The RTC raised an alarm interrupt: sets RTC_STS (an SCI if the guest enabled
    /// RTC_EN). Returns whether RTC_EN is set, i.e. whether the alarm wakes the machine
    /// from S3.
    @discardableResult
    public func rtcAlarm() -> Bool { fixedEvent(PowerManagement.rtcBit) }

    /// The machine woke from a sleep state: WAK_STS, as the guest's resume code expects.
    public func woke() { fixedEvent(PowerManagement.wakeBit) }

    /// A fixed ACPI event: its status bit set, the SCI updated under the lock; returns
    /// whether the guest enabled it.
    @discardableResult
    private func fixedEvent(_ bit: UInt16) -> Bool {
        registers.withLock { r -> Bool in
            r.status |= bit
            updateSCI(r)
            return r.enable & bit != 0
        }
    }

    /// Called with the lock held, so levels follow the register changes in order.
    private func updateSCI(_ r: Registers) {
        sci?.setLevel(r.status & r.enable != 0)
    }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        let value = UInt32(truncatingIfNeeded: data.value)
        switch offset {
        case 0:
            registers.withLock { r in
                r.status &= ~UInt16(truncatingIfNeeded: value) // write 1 to clear
                updateSCI(r)
            }
        case 2:
            registers.withLock { r in
                r.enable = UInt16(truncatingIfNeeded: value)
                updateSCI(r)
            }
        case 4:
            let v = UInt16(truncatingIfNeeded: value)
            let sleepType = (v >> 10) & 7, sleepEnable = v & (1 << 13) != 0
            registers.withLock { $0.control = v & ~(1 << 13) }
            if sleepEnable && sleepType == s5SleepType { power.guestPowerOff() }
            if sleepEnable, let s3SleepType, sleepType == s3SleepType { power.guestSuspend() }
        default: break
        }
    }
}

extension PowerManagement: StatefulDevice {
    /// PM1 status, enable and control, and how far the PM timer has run (it goes on
    /// from there after a restore, never backwards).
    public func saveState(into w: inout StateWriter) {
        let r = registers.withLock { $0 }
        w.put(r.status); w.put(r.enable); w.put(r.control)
        w.put(PowerManagement.now() &- started.load(ordering: .relaxed))
    }

    public func restoreState(from reader: inout StateReader) throws(StateError) {
        let restored = Registers(status: try reader.get(), enable: try reader.get(), control: try reader.get())
        let elapsed: UInt64 = try reader.get()
        started.store(PowerManagement.now() &- elapsed, ordering: .relaxed)
        registers.withLock { r in
            r = restored
            updateSCI(r)
        }
    }
}
