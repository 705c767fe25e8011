import Devices
import Synchronization
import XCTest

/// Remembers every access, for checking what the bus passed on.
final class RecordingDevice: BusDevice {
    let log = Mutex<[String]>([])
    let answer: UInt64
    init(answer: UInt64 = 0) { self.answer = answer }
    func read(region: Int, offset: UInt64, data: inout AccessData) {
        log.withLock { $0.append("r\(region) \(offset) \(data.size)") }
        data.value = answer
    }
    func write(region: Int, offset: UInt64, data: AccessData) { log.withLock { $0.append("w\(region) \(offset) \(data.size) \(data.value)") } }
    var entries: [String] { log.withLock { $0 } }
}

final class BusTests: XCTestCase {
    func testDispatchesByRangeWithOffsetsAndRegions() throws {
        let a = RecordingDevice(answer: 7), b = RecordingDevice(answer: 9)
        let bus = Bus()
        try bus.register(a, space: .port, start: 0x3F8, length: 8, id: "a")
        try bus.register(b, space: .port, start: 0x2F8, length: 8, id: "b")
        try bus.register(a, space: .mmio, start: 0xD000_0000, length: 0x1000, region: 1, id: "a")
        XCTAssertEqual(bus.readPort(0x3FD, size: 1), 7)
        bus.writePort(0x2F8, size: 2, value: 0x1234)
        bus.writeMMIO(0xD000_0FF8, size: 8, value: 5)
        XCTAssertEqual(bus.readMMIO(0xD000_0004, size: 4), 7)
        XCTAssertEqual(a.entries, ["r0 5 1", "w1 4088 8 5", "r1 4 4"])
        XCTAssertEqual(b.entries, ["w0 0 2 4660"])
        XCTAssertEqual(bus.unclaimedAccesses, 0)
    }

    func testAccessDataKeepsOnlyItsBytes() {
        var d = AccessData(size: 2, value: 0x1_2345)
        XCTAssertEqual(d.value, 0x2345)
        XCTAssertEqual(d[0], 0x45)
        XCTAssertEqual(d[1], 0x23)
        XCTAssertEqual(d[2], 0, "beyond the access reads 0")
        d[5] = 0xFF
        XCTAssertEqual(d.value, 0x2345, "and writes nothing")
        d[1] = 0xAB
        XCTAssertEqual(d.value, 0xAB45)
        XCTAssertEqual(AccessData(size: 0).size, 1)
        XCTAssertEqual(AccessData(size: 99, value: .max).size, 8)
        XCTAssertEqual(AccessData.allOnes(size: 4).value, 0xFFFF_FFFF)
    }

    func testUnclaimedAccessesReadAllOnesAndAreCounted() {
        let bus = Bus()
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
        let bus = Bus()
        try bus.register(a, space: .port, start: 0x10, length: 0x10, id: "a")
        try bus.register(b, space: .port, start: 0x20, length: 0x10, id: "b")
        XCTAssertEqual(bus.readPort(0x0F, size: 1), 0xFF)
        XCTAssertEqual(bus.readPort(0x10, size: 1), 1)
        XCTAssertEqual(bus.readPort(0x1F, size: 1), 1)
        XCTAssertEqual(bus.readPort(0x20, size: 1), 2)
        XCTAssertEqual(bus.readPort(0x2F, size: 1), 2)
        XCTAssertEqual(bus.readPort(0x30, size: 1), 0xFF)
        XCTAssertEqual(bus.readPort(0xFFFF, size: 1), 0xFF)
    }

    func testOverlappingRegistrationsAreRefused() throws {
        let bus = Bus()
        try bus.register(RecordingDevice(), space: .port, start: 0x3F8, length: 8, id: "com1")
        XCTAssertThrowsError(try bus.register(RecordingDevice(), space: .port, start: 0x3FF, length: 1, id: "x"))
        XCTAssertThrowsError(try bus.register(RecordingDevice(), space: .port, start: 0x3F0, length: 9, id: "x"))
        XCTAssertNoThrow(try bus.register(RecordingDevice(), space: .port, start: 0x3F0, length: 8, id: "y"))
        XCTAssertThrowsError(try bus.register(RecordingDevice(), space: .port, start: 0xFFFF, length: 2, id: "x"), "beyond port 0xFFFF")
        try bus.register(RecordingDevice(), space: .mmio, start: 0x1000, length: 0x1000, id: "m")
        XCTAssertThrowsError(try bus.register(RecordingDevice(), space: .mmio, start: 0x1FFF, length: 2, id: "x")) { e in
            XCTAssertTrue("\(e)".contains("overlaps m (m)"), "\(e)")
        }
        XCTAssertThrowsError(try bus.register(RecordingDevice(), space: .mmio, start: UInt64.max - 1, length: 4, id: "x"), "wrapping range")
        XCTAssertThrowsError(try bus.register(RecordingDevice(), space: .mmio, start: 0x5000, length: 0, id: "x"))
        XCTAssertEqual(bus.mappings.count, 3)
    }

    /// A PCI BAR moves while vCPUs run: a reader that already holds the old map sees
    /// the new one at its next access, and the old address goes unclaimed.
    func testARangeMovesUnderAReaderAndKeepsItsRegion() throws {
        let dev = RecordingDevice(answer: 5)
        let bus = Bus()
        try bus.register(dev, space: .mmio, start: 0xE000_0000, length: 0x100, region: 2, id: "bar")
        try bus.register(RecordingDevice(), space: .mmio, start: 0xF000_0000, length: 0x100, id: "other")
        var reader = bus.reader()
        var d = AccessData(size: 4)
        reader.access(.mmio, 0xE000_0010, write: false, data: &d)
        XCTAssertEqual(d.value, 5)
        try bus.move(id: "bar", region: 2, space: .mmio, to: 0xE800_0000)
        XCTAssertThrowsError(try bus.move(id: "bar", region: 2, space: .mmio, to: 0xF000_0080), "onto another device")
        d = AccessData(size: 4)
        reader.access(.mmio, 0xE000_0010, write: false, data: &d)
        XCTAssertEqual(d.value, 0xFFFF_FFFF, "the old place is empty now")
        d = AccessData(size: 4)
        reader.access(.mmio, 0xE800_0010, write: false, data: &d)
        XCTAssertEqual(d.value, 5)
        XCTAssertEqual(dev.entries, ["r2 16 4", "r2 16 4"], "same region and offset at the new address")
        bus.unregister(id: "bar")
        XCTAssertEqual(bus.readMMIO(0xE800_0010, size: 4), 0xFFFF_FFFF)
        XCTAssertEqual(bus.name(.mmio, 0xF000_0000), "other")
    }

    func testConcurrentAccessWhileTheMapChanges() async throws {
        let dev = RecordingDevice(answer: 3)
        let bus = Bus()
        try bus.register(dev, space: .port, start: 0x60, length: 1, id: "kbd")
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var r = bus.reader()
                    for _ in 0..<500 {
                        var d = AccessData(size: 1)
                        r.access(.port, 0x60, write: false, data: &d)
                        r.access(.port, 0x61, write: false, data: &d)
                    }
                }
            }
            group.addTask {
                for i in 0..<200 { try? bus.register(RecordingDevice(), space: .mmio, start: UInt64(i) << 12, length: 0x1000, id: "m\(i)") }
            }
        }
        XCTAssertEqual(dev.entries.count, 4000)
        XCTAssertEqual(bus.unclaimedAccesses, 4000)
        XCTAssertEqual(bus.mappings.count, 201)
    }
}

final class DeviceManagerTests: XCTestCase {
    func testOwnsDevicesByIdAndAllocatesWindowsAndLinesOnce() throws {
        let manager = DeviceManager(mmioWindow: (0xD000_0000, 0xD000_4000), irqs: [16, 17])
        let uart = RecordingDevice()
        try manager.add(uart, id: "com1", name: "COM1", ranges: [.ports(0x3F8, 8)], interrupts: [4])
        XCTAssertThrowsError(try manager.add(RecordingDevice(), id: "com1", name: "again", ranges: []), "ids are unique")
        XCTAssertThrowsError(try manager.add(RecordingDevice(), id: "clash", name: "clash", ranges: [.ports(0x3FC, 1)]))
        XCTAssertNil(manager.device("clash"), "a device that could not be placed is not kept")
        XCTAssertTrue(manager.device("com1") === uart)
        let w1 = try manager.allocateMMIO(size: 0x200)
        let w2 = try manager.allocateMMIO(size: 0x1000, alignment: 0x1000)
        XCTAssertEqual(w1, 0xD000_0000)
        XCTAssertEqual(w2, 0xD000_1000, "aligned past the first window")
        XCTAssertEqual(try manager.allocateMMIO(size: 0x2000), 0xD000_2000)
        XCTAssertThrowsError(try manager.allocateMMIO(size: 1), "the window is full")
        XCTAssertThrowsError(try manager.allocateMMIO(size: 0x10, alignment: 3), "alignment must be a power of two")
        XCTAssertEqual(try manager.allocateIRQ(), 16)
        XCTAssertEqual(try manager.allocateIRQ(), 17)
        XCTAssertThrowsError(try manager.allocateIRQ())
        let two = RecordingDevice()
        try manager.add(two, id: "kbc", name: "i8042", ranges: [.ports(0x60, 1, region: 0), .ports(0x64, 1, region: 1)])
        manager.bus.writePort(0x64, size: 1, value: 0xAA)
        manager.bus.writePort(0x60, size: 1, value: 0x01)
        XCTAssertEqual(two.entries, ["w1 0 1 170", "w0 0 1 1"], "one device behind two ports, told apart by region")
        XCTAssertEqual(manager.entries.map(\.id), ["com1", "kbc"])
        try manager.move(id: "kbc", region: 1, to: 0x68)
        manager.bus.writePort(0x68, size: 1, value: 0x20)
        XCTAssertEqual(two.entries.last, "w1 0 1 32", "the moved region answers at its new port")
        XCTAssertEqual(manager.entries.last?.ranges.last?.start, 0x68)
        XCTAssertThrowsError(try manager.move(id: "kbc", region: 1, to: 0x3F8), "onto COM1")
        XCTAssertThrowsError(try manager.move(id: "nobody", region: 0, to: 0x100))
    }
}

final class ExitPortTests: XCTestCase {
    final class Power: PowerControl {
        let codes = Mutex<[Int32]>([])
        func guestExit(code: Int32) { codes.withLock { $0.append(code) } }
        func guestReset() {}
        func guestPowerOff() {}
        func guestSuspend() {}
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
