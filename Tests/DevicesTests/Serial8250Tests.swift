import Devices
import Synchronization
import XCTest

final class CapturedOutput: SerialOutput {
    let bytes = Mutex<[UInt8]>([])
    func write(_ byte: UInt8) { bytes.withLock { $0.append(byte) } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

final class Line: InterruptSource {
    let levels = Mutex<[Bool]>([])
    func setLevel(_ high: Bool) { levels.withLock { $0.append(high) } }
    func trigger() { levels.withLock { $0 += [true, false] } }
    var last: Bool? { levels.withLock { $0.last } }
}

final class Serial8250Tests: XCTestCase {
    // Register offsets from COM1.
    let thr: UInt16 = 0, ier: UInt16 = 1, iir: UInt16 = 2, lcr: UInt16 = 3, mcr: UInt16 = 4, lsr: UInt16 = 5, msr: UInt16 = 6, scr: UInt16 = 7

    func testTransmitsWhatTheGuestWritesAndIsAlwaysReady() {
        let out = CapturedOutput()
        let uart = Serial8250(output: out)
        XCTAssertEqual(uart.read(offset: lsr, size: 1) & 0x60, 0x60, "THR empty and transmitter idle")
        for b in "hi\n".utf8 { uart.write(offset: thr, size: 1, value: UInt32(b)) }
        XCTAssertEqual(out.text, "hi\n")
    }

    func testDivisorLatchDoesNotTransmit() {
        let out = CapturedOutput()
        let uart = Serial8250(output: out)
        uart.write(offset: lcr, size: 1, value: 0x83) // DLAB on, 8N1
        uart.write(offset: thr, size: 1, value: 0x01) // divisor low: 115200 baud
        uart.write(offset: ier, size: 1, value: 0x00) // divisor high
        XCTAssertEqual(uart.read(offset: thr, size: 1), 0x01)
        XCTAssertEqual(uart.read(offset: ier, size: 1), 0x00)
        uart.write(offset: lcr, size: 1, value: 0x03)
        XCTAssertEqual(uart.read(offset: lcr, size: 1), 0x03)
        XCTAssertEqual(out.text, "", "divisor writes are not data")
    }

    func testReceivedBytesAreReadInOrderWithDataReady() {
        let uart = Serial8250(output: CapturedOutput())
        XCTAssertEqual(uart.read(offset: lsr, size: 1) & 1, 0)
        uart.receive(Array("ok".utf8))
        XCTAssertTrue(uart.hasPendingInput)
        XCTAssertEqual(uart.read(offset: lsr, size: 1) & 1, 1)
        XCTAssertEqual(uart.read(offset: thr, size: 1), UInt64(UInt8(ascii: "o")))
        XCTAssertEqual(uart.read(offset: thr, size: 1), UInt64(UInt8(ascii: "k")))
        XCTAssertEqual(uart.read(offset: lsr, size: 1) & 1, 0)
        XCTAssertFalse(uart.hasPendingInput)
    }

    func testInputBeyondCapacityIsAnOverrunNotGrowth() {
        let uart = Serial8250(output: CapturedOutput())
        uart.receive([UInt8](repeating: 0x41, count: Serial8250.rxCapacity + 100))
        XCTAssertEqual(uart.read(offset: lsr, size: 1) & 0x02, 0x02, "overrun reported")
        XCTAssertEqual(uart.read(offset: lsr, size: 1) & 0x02, 0, "and cleared by the read")
        var n = 0
        while uart.read(offset: lsr, size: 1) & 1 == 1 { _ = uart.read(offset: thr, size: 1); n += 1 }
        XCTAssertEqual(n, Serial8250.rxCapacity)
    }

    func testAQueueNeverDrainedKeepsItsOrderAcrossCompaction() {
        // Input arriving as fast as the guest reads never empties the queue; it must
        // still be compacted (bounded) and read in order.
        let uart = Serial8250(output: CapturedOutput())
        uart.receive([UInt8](repeating: 0, count: 10))
        for i in 0..<(3 * Serial8250.rxCapacity) {
            uart.receive([UInt8(truncatingIfNeeded: i)])
            _ = uart.read(offset: thr, size: 1)
        }
        var last: [UInt64] = []
        while uart.read(offset: lsr, size: 1) & 1 == 1 { last.append(uart.read(offset: thr, size: 1)) }
        XCTAssertEqual(last, (3 * Serial8250.rxCapacity - 10..<3 * Serial8250.rxCapacity).map { UInt64(UInt8(truncatingIfNeeded: $0)) })
    }

    func testInterruptsFollowIERAndIIR() {
        let line = Line()
        let uart = Serial8250(output: CapturedOutput(), interrupt: line)
        XCTAssertEqual(uart.read(offset: iir, size: 1) & 0x0F, 0x01, "no interrupt pending")
        uart.write(offset: ier, size: 1, value: 0x02) // THRE interrupt on: THR is empty, so it fires
        XCTAssertEqual(line.last, true)
        XCTAssertEqual(uart.read(offset: iir, size: 1) & 0x0F, 0x02, "THR empty")
        XCTAssertEqual(line.last, false, "reading IIR acknowledges THRE")
        uart.write(offset: thr, size: 1, value: 0x41)
        XCTAssertEqual(line.last, true, "sent at once, empty again")
        uart.write(offset: ier, size: 1, value: 0x01) // receive interrupt only
        XCTAssertEqual(line.last, false)
        uart.receive([0x42])
        XCTAssertEqual(line.last, true)
        XCTAssertEqual(uart.read(offset: iir, size: 1) & 0x0F, 0x04, "receive data available")
        _ = uart.read(offset: thr, size: 1)
        XCTAssertEqual(line.last, false)
    }

    func testLoopbackScratchAndModemStatus() {
        let out = CapturedOutput()
        let uart = Serial8250(output: out)
        uart.write(offset: scr, size: 1, value: 0x5A)
        XCTAssertEqual(uart.read(offset: scr, size: 1), 0x5A)
        XCTAssertEqual(uart.read(offset: msr, size: 1), 0xB0)
        uart.write(offset: mcr, size: 1, value: 0x1F) // loopback with all outputs set
        XCTAssertEqual(uart.read(offset: msr, size: 1), 0xF0)
        uart.write(offset: thr, size: 1, value: 0x33)
        XCTAssertEqual(out.text, "", "loopback keeps data inside the UART")
        XCTAssertEqual(uart.read(offset: thr, size: 1), 0x33)
    }
}
