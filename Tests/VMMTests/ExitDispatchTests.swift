import Devices
import KVM
import Synchronization
@testable import VMM
import XCTest

/// Exit dispatch without KVM: exits are built by hand (their data in an
/// `ExitDataBuffer` standing in for the kvm_run page) and handed to the function the
/// vCPU threads call.
final class ExitDispatchTests: XCTestCase {
    final class Register: BusDevice {
        let value = Mutex<UInt64>(0)
        let log = Mutex<[String]>([])
        func read(region: Int, offset: UInt64, data: inout AccessData) {
            log.withLock { $0.append("r \(offset) \(data.size)") }
            data.value = value.withLock { $0 } >> (8 * offset)
        }
        func write(region: Int, offset: UInt64, data: AccessData) {
            log.withLock { $0.append("w \(offset) \(data.size) \(data.value)") }
            value.withLock { $0 = data.value }
        }
    }

    func dispatch(_ exit: VMExit, _ bus: Bus) -> (ExitKind, ExitOutcome) {
        var reader = bus.reader()
        return ExitDispatch.handle(exit, bus: &reader)
    }

    func testPortWritesAndReadsReachTheDeviceAndFillTheExitData() throws {
        let dev = Register()
        let bus = Bus()
        try bus.register(dev, space: .port, start: 0x3F8, length: 8, id: "uart")
        let out = ExitDataBuffer(bytes: [0x41])
        XCTAssertTrue(dispatch(.io(IOExit(port: 0x3F8, direction: .out, size: 1, count: 1, data: out.data)), bus) == (.ioOut, .resume))
        dev.value.withLock { $0 = 0xBEEF }
        let input = ExitDataBuffer(count: 2)
        XCTAssertTrue(dispatch(.io(IOExit(port: 0x3F8, direction: .in, size: 2, count: 1, data: input.data)), bus) == (.ioIn, .resume))
        XCTAssertEqual(input.data.bytes, [0xEF, 0xBE], "the value the guest reads, little-endian")
        XCTAssertEqual(dev.log.withLock { $0 }, ["w 0 1 65", "r 0 2"])
    }

    func testStringPortIOMovesEveryElement() throws {
        let dev = Register()
        let bus = Bus()
        try bus.register(dev, space: .port, start: 0x80, length: 1, id: "post")
        let data = ExitDataBuffer(bytes: [1, 0, 2, 0, 3, 0])
        _ = dispatch(.io(IOExit(port: 0x80, direction: .out, size: 2, count: 3, data: data.data)), bus)
        XCTAssertEqual(dev.log.withLock { $0 }, ["w 0 2 1", "w 0 2 2", "w 0 2 3"], "rep outsw: three words")
    }

    func testMMIOAndUnclaimedAccesses() throws {
        let dev = Register()
        let bus = Bus()
        try bus.register(dev, space: .mmio, start: 0xD000_0000, length: 0x100, id: "regs")
        dev.value.withLock { $0 = 0x1122_3344_5566_7788 }
        let read = ExitDataBuffer(count: 8)
        XCTAssertTrue(dispatch(.mmio(MMIOExit(address: 0xD000_0000, isWrite: false, length: 8, data: read.data)), bus) == (.mmioRead, .resume))
        XCTAssertEqual(read.data.load(size: 8), 0x1122_3344_5566_7788)
        let nobody = ExitDataBuffer(count: 4)
        _ = dispatch(.mmio(MMIOExit(address: 0xFEB0_0000, isWrite: false, length: 4, data: nobody.data)), bus)
        XCTAssertEqual(nobody.data.bytes, [0xFF, 0xFF, 0xFF, 0xFF], "an empty bus reads all ones")
        XCTAssertEqual(bus.unclaimedAccesses, 1)
    }

    func testLifecycleExitsBecomeOutcomes() {
        let bus = Bus()
        XCTAssertTrue(dispatch(.hlt(interruptsEnabled: true), bus) == (.hlt, .resume))
        XCTAssertTrue(dispatch(.hlt(interruptsEnabled: false), bus) == (.hlt, .halted))
        XCTAssertTrue(dispatch(.shutdown, bus) == (.shutdown, .stop(.tripleFault)))
        XCTAssertTrue(dispatch(.systemEvent(type: 1), bus) == (.systemEvent, .stop(.powerOff)))
        XCTAssertTrue(dispatch(.systemEvent(type: 2), bus) == (.systemEvent, .stop(.reset)))
        XCTAssertTrue(dispatch(.interrupted, bus) == (.interrupted, .kicked))
    }

    func testFailuresAreDescribedAndEmulationFailuresOfferedToTheEmulator() {
        let bus = Bus()
        let rejected = InternalError(suberror: 1, instructionBytes: [0xF3, 0x48, 0x0F, 0xB8, 0x03])
        XCTAssertTrue(dispatch(.internalError(rejected), bus) == (.internalError, .rejectedInstruction(rejected)))
        let delivery = InternalError(suberror: 3, data: [0x80000b0e])
        XCTAssertTrue(dispatch(.internalError(delivery), bus) == (.internalError, .failure(exit: "internal error: event delivery failed data [0x80000b0e]", instructionBytes: nil)))
        XCTAssertTrue(dispatch(.failEntry(hardwareReason: 0x21, cpu: 1), bus) == (.failEntry, .failure(exit: "KVM_EXIT_FAIL_ENTRY, hardware reason 0x21 on host CPU 1", instructionBytes: nil)))
        XCTAssertTrue(dispatch(.systemEvent(type: 3), bus) == (.systemEvent, .failure(exit: "system event 3 (crash)", instructionBytes: nil)))
        XCTAssertTrue(dispatch(.unknown(reason: 99, hardwareReason: 0), bus) == (.other, .failure(exit: "unhandled exit reason 99 (hardware reason 0x0)", instructionBytes: nil)))
    }
}
