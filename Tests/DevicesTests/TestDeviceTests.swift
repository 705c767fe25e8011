import Devices
import GuestMemory
import Synchronization
import Foundation
import Glibc
import XCTest

final class TestDeviceTests: XCTestCase {
    final class Power: PowerControl {
        let log = Mutex<[String]>([])
        func guestExit(code: Int32) { log.withLock { $0.append("exit \(code)") } }
        func guestReset() { log.withLock { $0.append("reset") } }
        func guestPowerOff() { log.withLock { $0.append("off") } }
        func guestSuspend() { log.withLock { $0.append("suspend") } }
        var entries: [String] { log.withLock { $0 } }
    }

    func testDebugExitReportsTheValueWritten() {
        let p = Power()
        DebugExit(power: p).write(offset: 0, size: 4, value: 1)
        XCTAssertEqual(p.entries, ["exit 1"])
    }

    func testFirmwareConfigSignatureCPUsAndRAM() {
        let fw = FirmwareConfig(cpus: 3, ramSize: 128 << 20)
        func read(_ key: UInt16, _ n: Int) -> UInt64 {
            fw.write(offset: 0, size: 2, value: UInt32(key))
            var v: UInt64 = 0
            for i in 0..<n { v |= UInt64(fw.read(offset: 1, size: 1)) << (8 * UInt64(i)) }
            return v
        }
        XCTAssertEqual(read(FirmwareConfig.Key.signature, 4), 0x554D_4551) // "QEMU"
        XCTAssertEqual(read(FirmwareConfig.Key.cpuCount, 2), 3)
        XCTAssertEqual(read(FirmwareConfig.Key.ramSize, 8), 128 << 20)
        XCTAssertEqual(read(0x7777, 4), 0, "unknown keys read as zeros")
        fw.write(offset: 0, size: 2, value: UInt32(FirmwareConfig.Key.cpuCount))
        XCTAssertEqual(fw.read(offset: 1, size: 2), 3, "a wide read returns consecutive bytes")
    }

    func testPCTestDeviceScratchFlushIRQsAndMemory() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10000)])
        final class Line: InterruptSource {
            let levels = Mutex<[Bool]>([])
            func setLevel(_ high: Bool) { levels.withLock { $0.append(high) } }
            func trigger() {}
        }
        let lines = (0..<24).map { _ in Line() }
        let dev = PCTestDevice(memory: memory, irqLines: lines)
        let scratch = dev.window(PCTestDevice.Region.scratch.rawValue), bytes = dev.window(PCTestDevice.Region.bytes.rawValue)
        scratch.write(offset: 0, size: 4, value: 0x1122_3344)
        XCTAssertEqual(scratch.read(offset: 0, size: 4), 0x1122_3344)
        XCTAssertEqual(scratch.read(offset: 2, size: 1), 0x22)
        bytes.write(offset: 1, size: 1, value: 0xAA)
        XCTAssertEqual(scratch.read(offset: 0, size: 4), 0x1122_AA44, "both windows share the register")
        scratch.write(offset: 2, size: 2, value: 0xBEEF)
        XCTAssertEqual(scratch.read(offset: 0, size: 4), 0xBEEF_AA44)

        try memory.write(UInt32(0x5A5A), at: GuestAddress(0x3000))
        dev.window(PCTestDevice.Region.flush.rawValue).write(offset: 0, size: 4, value: 0x3004)
        XCTAssertEqual(try memory.read(UInt32.self, at: GuestAddress(0x3000)), 0x5A5A, "flushing keeps the contents")
        dev.window(PCTestDevice.Region.flush.rawValue).write(offset: 0, size: 4, value: 0xFFFF_0000) // outside RAM: ignored

        dev.window(PCTestDevice.Region.irq.rawValue).write(offset: 11, size: 1, value: 1)
        dev.window(PCTestDevice.Region.irq.rawValue).write(offset: 11, size: 1, value: 0)
        XCTAssertEqual(lines[11].levels.withLock { $0 }, [true, false])

        dev.write(region: PCTestDevice.Region.memory.rawValue, offset: 0xFFF8, size: 8, value: 0x0102_0304_0506_0708)
        XCTAssertEqual(dev.read(region: PCTestDevice.Region.memory.rawValue, offset: 0xFFF8, size: 8), 0x0102_0304_0506_0708)
        XCTAssertEqual(dev.read(region: PCTestDevice.Region.memory.rawValue, offset: 0xFFFC, size: 2), 0x0304)
    }

    func testPowerManagementTimerAdvancesAndS5PowersOff() {
        let p = Power()
        let pm = PowerManagement(power: p, s5SleepType: 5)
        let t0 = pm.read(offset: 8, size: 4)
        usleep(2000)
        let t1 = pm.read(offset: 8, size: 4)
        XCTAssertGreaterThan(t1 &- t0, 3579 * 2 / 2, "about 3.58 ticks per microsecond")
        XCTAssertLessThan(t1 &- t0, 3_579_545, "far less than a second's worth")
        pm.write(offset: 4, size: 2, value: UInt32(3 << 10 | 1 << 13)) // S3: not offered
        XCTAssertEqual(p.entries, [])
        pm.write(offset: 4, size: 2, value: UInt32(5 << 10 | 1 << 13))
        XCTAssertEqual(p.entries, ["off"])
    }

    final class Level: InterruptSource {
        let levels = Mutex<[Bool]>([])
        func setLevel(_ high: Bool) { levels.withLock { $0.append(high) } }
        func trigger() {}
        var last: Bool? { levels.withLock { $0.last } }
    }

    /// S3 as the `\_S3` sleep type, the RTC alarm as a wake event (RTC_STS/RTC_EN) and
    /// an SCI, and WAK_STS after the wake.
    func testS3SleepTypeSuspendsAndTheRTCAlarmIsAWakeEvent() {
        let p = Power(), sci = Level()
        let pm = PowerManagement(power: p, s5SleepType: 5, s3SleepType: 1, sci: sci)
        pm.write(offset: 4, size: 2, value: UInt32(1 << 10)) // SLP_TYP without SLP_EN: nothing
        XCTAssertEqual(p.entries, [])
        pm.write(offset: 4, size: 2, value: UInt32(1 << 10 | 1 << 13))
        XCTAssertEqual(p.entries, ["suspend"])
        XCTAssertFalse(pm.rtcAlarm(), "RTC_EN clear: the alarm does not wake")
        XCTAssertEqual(pm.read(offset: 0, size: 2) & 0x400, 0x400, "RTC_STS set all the same")
        pm.write(offset: 0, size: 2, value: 0x400) // write 1 to clear
        pm.write(offset: 2, size: 2, value: 0x400) // RTC_EN
        XCTAssertTrue(pm.rtcAlarm())
        XCTAssertEqual(sci.last, true, "an enabled fixed event raises the SCI")
        pm.woke()
        XCTAssertEqual(pm.read(offset: 1, size: 1) & 0x80, 0x80, "WAK_STS")
        pm.write(offset: 0, size: 2, value: 0x8400)
        XCTAssertEqual(sci.last, false)
    }

    func testRTCUpdateInProgressRisesOnceASecondAndAlarmsRaiseIRQ8() {
        let irq = Level()
        let cmos = CMOS(memorySize: 64 << 20, interrupt: irq)
        func reg(_ i: UInt8) -> UInt64 { cmos.write(offset: 0, size: 1, value: i); return cmos.read(offset: 1, size: 1) }
        func set(_ i: UInt8, _ v: UInt8) { cmos.write(offset: 0, size: 1, value: i); cmos.write(offset: 1, size: 1, value: v) }
        // What the s3 test and Linux do: wait for UIP to rise, then to fall.
        var rose = false, fell = false
        let deadline = Date().addingTimeInterval(3)
        while !(rose && fell) && Date() < deadline {
            let uip = reg(0x0A) & 0x80 != 0
            if uip { rose = true } else if rose { fell = true }
        }
        XCTAssertTrue(rose && fell, "UIP rises and falls within a second")
        set(0x0A, 0xA6)
        XCTAssertEqual(reg(0x0A) & 0x7F, 0x26, "UIP cannot be written")
        // An alarm that matches any time, without AIE: the flag, no interrupt.
        for a: UInt8 in [0x01, 0x03, 0x05] { set(a, 0xC0) }
        XCTAssertFalse(cmos.updateCycle())
        XCTAssertEqual(reg(0x0C), 0x30, "alarm and update flags, no IRQF")
        XCTAssertEqual(reg(0x0C), 0, "reading C clears it")
        set(0x0B, UInt8(reg(0x0B)) | 0x20) // AIE
        XCTAssertTrue(cmos.updateCycle(), "an enabled alarm interrupt")
        XCTAssertEqual(irq.last, true, "IRQ 8 raised")
        XCTAssertEqual(reg(0x0C), 0xB0)
        XCTAssertEqual(irq.last, false, "and lowered when C is read")
        // An alarm for another hour does not fire.
        set(0x05, 0x3F)
        XCTAssertFalse(cmos.updateCycle())
        XCTAssertEqual(reg(0x0C) & 0x20, 0)
    }
}

final class PlatformDeviceTests: XCTestCase {
    func testCMOSClockFollowsTheHostInBCDAndBinary() {
        let cmos = CMOS(memorySize: 256 << 20)
        func reg(_ i: UInt8) -> UInt64 { cmos.write(offset: 0, size: 1, value: UInt32(i)); return cmos.read(offset: 1, size: 1) }
        var now = time(nil)
        var t = tm()
        gmtime_r(&now, &t)
        let bcdYear = reg(0x09)
        XCTAssertEqual((bcdYear >> 4) * 10 + (bcdYear & 0xF), UInt64((t.tm_year + 1900) % 100))
        XCTAssertEqual(reg(0x32), 0x20, "century in BCD")
        cmos.write(offset: 0, size: 1, value: 0x0B)
        cmos.write(offset: 1, size: 1, value: 0x06) // binary, 24-hour
        XCTAssertEqual(reg(0x09), UInt64((t.tm_year + 1900) % 100))
        XCTAssertEqual(reg(0x0D), 0x80, "valid RAM and time")
        let ext = reg(0x17) | reg(0x18) << 8
        XCTAssertEqual(ext, 0xFFFF, "extended memory in KiB, capped")
        cmos.write(offset: 0, size: 1, value: 0x40)
        cmos.write(offset: 1, size: 1, value: 0x5A)
        XCTAssertEqual(reg(0x40), 0x5A, "ordinary CMOS bytes are kept")
    }

    func testI8042SelfTestCommandByteAndReset() {
        let p = TestDeviceTests.Power()
        let kbc = I8042(power: p)
        let data = kbc.window(I8042.Region.data.rawValue), command = kbc.window(I8042.Region.command.rawValue)
        command.write(offset: 0, size: 1, value: 0xAA)
        XCTAssertEqual(command.read(offset: 0, size: 1) & 1, 1, "output buffer full")
        XCTAssertEqual(data.read(offset: 0, size: 1), 0x55)
        command.write(offset: 0, size: 1, value: 0x60)
        data.write(offset: 0, size: 1, value: 0x21)
        command.write(offset: 0, size: 1, value: 0x20)
        XCTAssertEqual(data.read(offset: 0, size: 1), 0x21)
        XCTAssertEqual(p.entries, [])
        command.write(offset: 0, size: 1, value: 0xFE)
        XCTAssertEqual(p.entries, ["reset"])
        command.write(offset: 0, size: 1, value: 0xD1)
        data.write(offset: 0, size: 1, value: 0x00)
        XCTAssertEqual(p.entries, ["reset", "reset"], "output port with the reset line low")
    }

    func testI8042AnswersAGuestNeverReadsAreBounded() {
        let kbc = I8042(power: TestDeviceTests.Power())
        let data = kbc.window(I8042.Region.data.rawValue), command = kbc.window(I8042.Region.command.rawValue)
        for _ in 0..<100_000 { command.write(offset: 0, size: 1, value: 0x20) }
        var n = 0
        while command.read(offset: 0, size: 1) & 1 == 1 { XCTAssertEqual(data.read(offset: 0, size: 1), 0x45); n += 1 }
        XCTAssertEqual(n, 16, "the controller's answers are queued up to QEMU's 16, the rest dropped")
    }
}
