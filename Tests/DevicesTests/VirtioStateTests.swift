import Devices
import Foundation
import GuestMemory
import XCTest

/// A virtio transport's saved state brought back into a fresh transport and device, as
/// a restore does: the driver's set-up and where the device was in its rings survive,
/// so the next request is served as if nothing had happened; damaged state is refused
/// and leaves the device as it was.
final class VirtioStateTests: XCTestCase {
    typealias M = VirtioMMIOTests

    func testAnMMIOEntropyDeviceGoesOnFromItsSavedRings() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let first = VirtioMMIO(device: try VirtioRNG(), memory: memory, interrupt: M.Line())
        var driver = TestDriver(memory: memory)
        M.bringUp(first, driver)
        for i in 0..<3 {
            try driver.request([(0x40000 + 0x1000 * UInt64(i), 512, true)], first: UInt16(i))
            M.set(first, 0x50, 0)
        }
        XCTAssertEqual(try driver.usedIndex(), 3)
        var w = StateWriter()
        first.saveState(into: &w)

        // The same memory (as a restored guest's), a new device on a new transport.
        let line = M.Line()
        let second = VirtioMMIO(device: try VirtioRNG(), memory: memory, interrupt: line)
        var r = StateReader(w.bytes)
        try second.restoreState(from: &r)
        try r.finish()
        XCTAssertEqual(M.reg(second, 0x70), 15, "DRIVER_OK, negotiated")
        XCTAssertEqual(second.negotiatedFeatures, first.negotiatedFeatures)
        XCTAssertTrue(line.high, "the pending used-buffer interrupt is still pending")
        try driver.request([(0x48000, 256, true)], first: 3)
        M.set(second, 0x50, 0)
        XCTAssertEqual(try driver.usedIndex(), 4, "the restored device takes the next request, not the first again")
        XCTAssertEqual(try driver.usedEntry(3).id, 3)
        XCTAssertEqual(try driver.usedEntry(3).length, 256)

        // Damaged: every truncation is refused, and the device is untouched.
        for n in stride(from: 0, to: w.bytes.count, by: 7) {
            var damaged = StateReader(Array(w.bytes.prefix(n)))
            XCTAssertThrowsError(try second.restoreState(from: &damaged), "\(n) bytes")
        }
        XCTAssertEqual(M.reg(second, 0x70), 15)
        // A ready queue whose rings lie outside guest memory is refused.
        let small = try GuestMemory(ranges: [(0, 0x8000)])
        var r2 = StateReader(w.bytes)
        XCTAssertThrowsError(try VirtioMMIO(device: try VirtioRNG(), memory: small, interrupt: nil).restoreState(from: &r2))
    }

    func testAConsolesUntakenInputIsSavedAndAQueueOfAnotherSizeRefused() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let console = VirtioConsole(output: VirtioConsoleTests.Collector())
        let t = VirtioMMIO(device: console, memory: memory, interrupt: nil)
        let rx = TestDriver(memory: memory, base: 0x10000), tx = TestDriver(memory: memory, base: 0x20000)
        M.bringUp(t, queues: [rx, tx])
        console.enqueue(Array("typed".utf8))
        var w = StateWriter()
        t.saveState(into: &w)

        let again = VirtioConsole(output: VirtioConsoleTests.Collector())
        let t2 = VirtioMMIO(device: again, memory: memory, interrupt: nil)
        var r = StateReader(w.bytes)
        try t2.restoreState(from: &r)
        var driver = rx
        try driver.request([(0x50000, 64, true)])
        t2.serve(queue: VirtioConsole.receiveQueue)
        XCTAssertEqual(try memory.read(bytes: 5, at: GuestAddress(0x50000)), Array("typed".utf8), "input typed before the snapshot arrives after it")

        // An entropy device's state (one queue) does not go into a console (two).
        let rng = VirtioMMIO(device: try VirtioRNG(), memory: memory, interrupt: nil)
        var w3 = StateWriter()
        rng.saveState(into: &w3)
        var r3 = StateReader(w3.bytes)
        XCTAssertThrowsError(try VirtioMMIO(device: VirtioConsole(output: VirtioConsoleTests.Collector()), memory: memory, interrupt: nil).restoreState(from: &r3))
    }

    /// A restored vsock device has no connections (their sockets stayed with the process
    /// snapshotted) and says so: the driver gets VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the
    /// event queue, and reads the CID again (a clone's new one).
    func testARestoredVsockTellsTheDriverItsTransportWasReset() throws {
        let memory = try GuestMemory(ranges: [(0, 0x100_0000)])
        let folder = temporaryFolder() + "sv-vsock-state-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let first = try VirtioVsock(guestCID: 3, socketPath: folder + "-a")
        defer { first.release() }
        let t1 = VirtioMMIO(device: first, memory: memory, interrupt: nil)
        let rx = TestDriver(memory: memory, size: 64, base: 0x10000), tx = TestDriver(memory: memory, size: 64, base: 0x20000)
        var events = TestDriver(memory: memory, size: 64, base: 0x30000)
        M.bringUp(t1, queues: [rx, tx, events])
        try events.request([(0x90000, 8, true)])
        try memory.write(UInt32(0xFFFF_FFFF), at: GuestAddress(0x90000))
        M.set(t1, 0x50, 2)
        XCTAssertEqual(try events.usedIndex(), 0, "nothing to report before a restore")
        var w = StateWriter()
        t1.saveState(into: &w)

        let second = try VirtioVsock(guestCID: 4, socketPath: folder + "-b")
        defer { second.release() }
        let t2 = VirtioMMIO(device: second, memory: memory, interrupt: nil)
        var r = StateReader(w.bytes)
        try t2.restoreState(from: &r)
        second.eventReady(second.eventFDs[0]) // the event loop's turn
        XCTAssertEqual(try events.usedIndex(), 1)
        XCTAssertEqual(try events.usedEntry(0).length, 4)
        XCTAssertEqual(try memory.read(UInt32.self, at: GuestAddress(0x90000)), 0, "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET")
        XCTAssertEqual(second.readConfig(offset: 0, size: 8), 4, "the CID the driver reads again")
        second.eventReady(second.eventFDs[0])
        XCTAssertEqual(try events.usedIndex(), 1, "reported once")
    }
}
