import Devices
import Synchronization
import XCTest

/// Remembers every access, for checking what the bus passed on.
final class RecordingDevice: PortIODevice, MMIODevice {
    let log = Mutex<[String]>([])
    let answer: UInt64
    init(answer: UInt64 = 0) { self.answer = answer }
    func read(offset: UInt16, size: Int) -> UInt32 { log.withLock { $0.append("pio r \(offset) \(size)") }; return UInt32(truncatingIfNeeded: answer) }
    func write(offset: UInt16, size: Int, value: UInt32) { log.withLock { $0.append("pio w \(offset) \(size) \(value)") } }
    func read(offset: UInt64, size: Int) -> UInt64 { log.withLock { $0.append("mmio r \(offset) \(size)") }; return answer }
    func write(offset: UInt64, size: Int, value: UInt64) { log.withLock { $0.append("mmio w \(offset) \(size) \(value)") } }
    var entries: [String] { log.withLock { $0 } }
}

final class BusTests: XCTestCase {
    func testDispatchesByRangeWithOffsets() throws {
        let a = RecordingDevice(answer: 7), b = RecordingDevice(answer: 9)
        var builder = Bus.Builder()
        try builder.register(a, port: 0x3F8, count: 8)
        try builder.register(b, port: 0x2F8, count: 8)
        try builder.register(a, address: 0xD000_0000, length: 0x1000)
        let bus = builder.build()
        XCTAssertEqual(bus.readPort(0x3FD, size: 1), 7)
        bus.writePort(0x2F8, size: 2, value: 0x1234)
        bus.writeMMIO(0xD000_0FF8, size: 8, value: 5)
        XCTAssertEqual(bus.readMMIO(0xD000_0004, size: 4), 7)
        XCTAssertEqual(a.entries, ["pio r 5 1", "mmio w 4088 8 5", "mmio r 4 4"])
        XCTAssertEqual(b.entries, ["pio w 0 2 4660"])
        XCTAssertEqual(bus.unclaimedAccesses, 0)
    }

    func testUnclaimedAccessesReadAllOnesAndAreCounted() {
        let bus = Bus.Builder().build()
        XCTAssertEqual(bus.readPort(0x80, size: 1), 0xFF)
        XCTAssertEqual(bus.readPort(0xCFC, size: 2), 0xFFFF)
        XCTAssertEqual(bus.readPort(0xCFC, size: 4), 0xFFFF_FFFF)
        XCTAssertEqual(bus.readMMIO(0xFEE0_0000, size: 8), UInt64.max)
        XCTAssertEqual(bus.readMMIO(0xFEE0_0000, size: 1), 0xFF)
        bus.writePort(0x80, size: 1, value: 1)
        bus.writeMMIO(0, size: 4, value: 1)
        XCTAssertEqual(bus.unclaimedAccesses, 7)
    }

    func testEdgesOfARangeBelongToTheRightDevice() throws {
        let a = RecordingDevice(answer: 1), b = RecordingDevice(answer: 2)
        var builder = Bus.Builder()
        try builder.register(a, port: 0x10, count: 0x10)
        try builder.register(b, port: 0x20, count: 0x10)
        let bus = builder.build()
        XCTAssertEqual(bus.readPort(0x0F, size: 1), 0xFF)
        XCTAssertEqual(bus.readPort(0x10, size: 1), 1)
        XCTAssertEqual(bus.readPort(0x1F, size: 1), 1)
        XCTAssertEqual(bus.readPort(0x20, size: 1), 2)
        XCTAssertEqual(bus.readPort(0x2F, size: 1), 2)
        XCTAssertEqual(bus.readPort(0x30, size: 1), 0xFF)
        XCTAssertEqual(bus.readPort(0xFFFF, size: 1), 0xFF)
    }

    func testOverlappingRegistrationsAreRefused() throws {
        var builder = Bus.Builder()
        try builder.register(RecordingDevice(), port: 0x3F8, count: 8)
        XCTAssertThrowsError(try builder.register(RecordingDevice(), port: 0x3FF, count: 1))
        XCTAssertThrowsError(try builder.register(RecordingDevice(), port: 0x3F0, count: 9))
        XCTAssertNoThrow(try builder.register(RecordingDevice(), port: 0x3F0, count: 8))
        try builder.register(RecordingDevice(), address: 0x1000, length: 0x1000)
        XCTAssertThrowsError(try builder.register(RecordingDevice(), address: 0x1FFF, length: 2))
        XCTAssertThrowsError(try builder.register(RecordingDevice(), address: UInt64.max - 1, length: 4), "wrapping range")
        XCTAssertThrowsError(try builder.register(RecordingDevice(), address: 0x5000, length: 0))
    }

    func testConcurrentAccessFromManyThreads() async throws {
        let dev = RecordingDevice(answer: 3)
        var builder = Bus.Builder()
        try builder.register(dev, port: 0x60, count: 1)
        let bus = builder.build()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 { group.addTask { for _ in 0..<500 { _ = bus.readPort(0x60, size: 1); _ = bus.readPort(0x61, size: 1) } } }
        }
        XCTAssertEqual(dev.entries.count, 4000)
        XCTAssertEqual(bus.unclaimedAccesses, 4000)
    }
}

final class ExitPortTests: XCTestCase {
    final class Power: PowerControl {
        let codes = Mutex<[Int32]>([])
        func guestExit(code: Int32) { codes.withLock { $0.append(code) } }
        func guestReset() {}
        func guestPowerOff() {}
    }

    func testWritesBecomeExitCodes() {
        let power = Power()
        let port = ExitPort(power: power)
        port.write(offset: 0, size: 1, value: 42)
        port.write(offset: 0, size: 4, value: 0x1_0003) // truncated like a process status
        XCTAssertEqual(power.codes.withLock { $0 }, [42, 3])
        XCTAssertEqual(port.read(offset: 0, size: 1), 0)
    }
}
