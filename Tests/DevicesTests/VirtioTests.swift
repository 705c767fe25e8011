import CLinux
import Devices
import Foundation
import GuestMemory
import Synchronization
import XCTest

/// A guest driver's side of a split virtqueue, in guest memory: what the tests use to
/// hand devices requests (well-formed and hostile) exactly as a driver would.
struct TestDriver {
    let memory: GuestMemory
    let size: UInt16
    let descriptors: UInt64, available: UInt64, used: UInt64
    var nextDescriptor: UInt16 = 0
    var availableIndex: UInt16 = 0

    init(memory: GuestMemory, size: UInt16 = 16, base: UInt64 = 0x10000) {
        self.memory = memory
        self.size = size
        descriptors = base
        available = base + 0x1000
        used = base + 0x2000
    }

    func setUp(_ queue: inout VirtQueue, eventIndex: Bool = false) {
        queue.size = size
        queue.descriptorTable = GuestAddress(descriptors)
        queue.availableRing = GuestAddress(available)
        queue.usedRing = GuestAddress(used)
        queue.eventIndex = eventIndex
        queue.ready = true
    }

    /// Writes descriptor `i` of the table at `table`.
    func descriptor(_ i: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0, table: UInt64? = nil) throws {
        let at = (table ?? descriptors) + UInt64(i) * 16
        try memory.write(address, at: GuestAddress(at))
        try memory.write(length, at: GuestAddress(at + 8))
        try memory.write(flags, at: GuestAddress(at + 12))
        try memory.write(next, at: GuestAddress(at + 14))
    }

    /// Offers the chain starting at `head`.
    mutating func offer(_ head: UInt16) throws {
        try memory.write(head, at: GuestAddress(available + 4 + 2 * UInt64(availableIndex % size)))
        availableIndex &+= 1
        try memory.write(availableIndex, at: GuestAddress(available + 2))
    }

    /// A chain of buffers (address, length, writable), from descriptor `first` on.
    mutating func request(_ buffers: [(UInt64, UInt32, Bool)], first: UInt16 = 0) throws {
        for (i, b) in buffers.enumerated() {
            let index = first + UInt16(i)
            let more = i < buffers.count - 1
            try descriptor(index, address: b.0, length: b.1, flags: (more ? 1 : 0) | (b.2 ? 2 : 0), next: index + 1)
        }
        try offer(first)
    }

    func usedIndex() throws -> UInt16 { try memory.read(UInt16.self, at: GuestAddress(used + 2)) }
    func usedEntry(_ i: UInt16) throws -> (id: UInt32, length: UInt32) {
        let at = used + 4 + 8 * UInt64(i % size)
        return (try memory.read(UInt32.self, at: GuestAddress(at)), try memory.read(UInt32.self, at: GuestAddress(at + 4)))
    }
}

final class VirtQueueTests: XCTestCase {
    func makeMemory() throws -> GuestMemory { try GuestMemory(ranges: [(0, 0x10_0000)]) }

    func testAChainReadsBackAndTheUsedRingAdvances() throws {
        let memory = try makeMemory()
        var driver = TestDriver(memory: memory)
        var q = VirtQueue(maximumSize: 256)
        driver.setUp(&q)
        try q.validate(memory)
        XCTAssertNil(try q.pop(memory), "nothing offered yet")
        try driver.request([(0x40000, 16, false), (0x41000, 512, true), (0x42000, 1, true)])
        let chain = try XCTUnwrap(try q.pop(memory))
        XCTAssertEqual(chain.head, 0)
        XCTAssertEqual(chain.readable.map(\.length), [16])
        XCTAssertEqual(chain.writable.map(\.length), [512, 1])
        XCTAssertEqual(chain.writableLength, 513)
        try q.push(memory, head: chain.head, written: 513)
        XCTAssertEqual(try driver.usedIndex(), 1)
        XCTAssertEqual(try driver.usedEntry(0).length, 513)
        XCTAssertTrue(q.needsInterrupt(memory))
        XCTAssertFalse(q.needsInterrupt(memory), "nothing new since")
    }

    func testIndirectTablesAreFollowedOnce() throws {
        let memory = try makeMemory()
        var driver = TestDriver(memory: memory)
        var q = VirtQueue(maximumSize: 256)
        driver.setUp(&q)
        let table: UInt64 = 0x30000
        try driver.descriptor(0, address: 0x40000, length: 16, flags: 1, next: 1, table: table)
        try driver.descriptor(1, address: 0x41000, length: 64, flags: 2, table: table)
        try driver.descriptor(0, address: table, length: 32, flags: 4)
        try driver.offer(0)
        let chain = try XCTUnwrap(try q.pop(memory))
        XCTAssertEqual(chain.buffers.map(\.length), [16, 64])
    }

    /// Hostile chains: each is refused with its reason, nothing crashes or hangs.
    func testHostileChainsAreRefused() throws {
        let memory = try makeMemory()
        func attempt(_ build: (inout TestDriver) throws -> Void) throws -> VirtQueueError? {
            var driver = TestDriver(memory: memory)
            var q = VirtQueue(maximumSize: 256)
            driver.setUp(&q)
            try memory.fill(0, count: 0x3000, at: GuestAddress(0x10000))
            try build(&driver)
            do { _ = try q.pop(memory); return nil } catch { return error }
        }
        // A loop: descriptor 0 -> 1 -> 0 ...
        XCTAssertEqual(try attempt { d in
            try d.descriptor(0, address: 0x40000, length: 8, flags: 1, next: 1)
            try d.descriptor(1, address: 0x40000, length: 8, flags: 1, next: 0)
            try d.offer(0)
        }, .chainTooLong(limit: 16))
        // A next index beyond the table.
        XCTAssertEqual(try attempt { d in
            try d.descriptor(0, address: 0x40000, length: 8, flags: 1, next: 500)
            try d.offer(0)
        }, .descriptorIndexOutOfRange(500, size: 16))
        // A head beyond the table.
        XCTAssertEqual(try attempt { d in try d.offer(40) }, .descriptorIndexOutOfRange(40, size: 16))
        // A huge length, and an address beyond RAM.
        XCTAssertEqual(try attempt { d in try d.request([(0x40000, .max, false)]) }, .bufferOutsideMemory(0x40000, UInt64(UInt32.max)))
        XCTAssertEqual(try attempt { d in try d.request([(0xFFFF_FFFF_FFFF_0000, 8, false)]) }, .bufferOutsideMemory(0xFFFF_FFFF_FFFF_0000, 8))
        // An indirect table inside an indirect table.
        XCTAssertEqual(try attempt { d in
            try d.descriptor(0, address: 0x31000, length: 16, flags: 4, table: 0x30000)
            try d.descriptor(0, address: 0x30000, length: 16, flags: 4)
            try d.offer(0)
        }, .nestedIndirectTable)
        // Indirect with NEXT, and an indirect table of a wrong length.
        XCTAssertEqual(try attempt { d in try d.descriptor(0, address: 0x30000, length: 16, flags: 5, next: 1); try d.offer(0) }, .indirectWithNext)
        XCTAssertEqual(try attempt { d in try d.descriptor(0, address: 0x30000, length: 15, flags: 4); try d.offer(0) }, .badIndirectTable(length: 15))
        XCTAssertEqual(try attempt { d in try d.descriptor(0, address: 0x30000, length: 16 * 1000, flags: 4); try d.offer(0) }, .badIndirectTable(length: 16_000))
        // A readable buffer after a writable one.
        XCTAssertEqual(try attempt { d in try d.request([(0x40000, 8, true), (0x41000, 8, false)]) }, .readableAfterWritable)
        // The available index jumping by more than the queue size.
        XCTAssertEqual(try attempt { d in try memory.write(UInt16(1000), at: GuestAddress(d.available + 2)) }, .availIndexJumped(from: 0, to: 1000, size: 16))
        // Rings outside memory are refused when the queue is made ready.
        var q = VirtQueue(maximumSize: 256)
        q.size = 16
        q.descriptorTable = GuestAddress(0xFFFF_F000)
        XCTAssertThrowsError(try q.validate(memory))
        q.size = 3
        XCTAssertThrowsError(try q.validate(memory), "not a power of two")
    }

    func testEventIndexSuppressesInterruptsTheDriverDidNotAskFor() throws {
        let memory = try makeMemory()
        var driver = TestDriver(memory: memory)
        var q = VirtQueue(maximumSize: 256)
        driver.setUp(&q, eventIndex: true)
        // used_event = 1: interrupt only once the used index passes 1.
        try memory.write(UInt16(1), at: GuestAddress(driver.available + 4 + 2 * 16))
        for i in UInt16(0)..<3 { try driver.request([(0x40000, 8, true)], first: i) }
        let a = try XCTUnwrap(try q.pop(memory))
        try q.push(memory, head: a.head, written: 0)
        XCTAssertFalse(q.needsInterrupt(memory), "used index 1 has not passed used_event 1")
        let b = try XCTUnwrap(try q.pop(memory))
        try q.push(memory, head: b.head, written: 0)
        XCTAssertTrue(q.needsInterrupt(memory))
        XCTAssertEqual(try memory.read(UInt16.self, at: GuestAddress(driver.used + 4 + 8 * 16)), 2, "avail_event: where the device is")
    }
}

/// The MMIO transport and the devices, driven register by register as Linux's
/// virtio_mmio driver does.
final class VirtioMMIOTests: XCTestCase {
    final class Line: InterruptSource {
        let level = Mutex(false)
        func setLevel(_ high: Bool) { level.withLock { $0 = high } }
        func trigger() {}
        var high: Bool { level.withLock { $0 } }
    }

    static func reg(_ t: VirtioMMIO, _ o: UInt64) -> UInt32 {
        var d = AccessData(size: 4)
        t.read(region: 0, offset: o, data: &d)
        return UInt32(d.value)
    }

    static func set(_ t: VirtioMMIO, _ o: UInt64, _ v: UInt32) { t.write(region: 0, offset: o, data: AccessData(size: 4, value: UInt64(v))) }
    func reg(_ t: VirtioMMIO, _ o: UInt64) -> UInt32 { Self.reg(t, o) }
    func set(_ t: VirtioMMIO, _ o: UInt64, _ v: UInt32) { Self.set(t, o, v) }
    func bringUp(_ t: VirtioMMIO, _ driver: TestDriver, features: UInt64? = nil) { Self.bringUp(t, driver, features: features) }

    /// Feature negotiation and queue set-up for queue 0, as the driver does them.
    static func bringUp(_ t: VirtioMMIO, _ driver: TestDriver, features: UInt64? = nil) {
        set(t, 0x70, 1); set(t, 0x70, 3) // ACKNOWLEDGE, DRIVER
        set(t, 0x14, 0); let low = reg(t, 0x10)
        set(t, 0x14, 1); let high = reg(t, 0x10)
        let offered = UInt64(high) << 32 | UInt64(low)
        let accepted = features ?? offered
        set(t, 0x24, 0); set(t, 0x20, UInt32(truncatingIfNeeded: accepted))
        set(t, 0x24, 1); set(t, 0x20, UInt32(truncatingIfNeeded: accepted >> 32))
        set(t, 0x70, 11) // FEATURES_OK
        set(t, 0x30, 0)
        set(t, 0x38, UInt32(driver.size))
        set(t, 0x80, UInt32(driver.descriptors)); set(t, 0x84, 0)
        set(t, 0x90, UInt32(driver.available)); set(t, 0x94, 0)
        set(t, 0xA0, UInt32(driver.used)); set(t, 0xA4, 0)
        set(t, 0x44, 1)
        set(t, 0x70, 15) // DRIVER_OK
    }

    /// Feature negotiation (`accept` picks from what is offered) and every queue's
    /// set-up, queue i on `drivers[i]`, then DRIVER_OK: a multi-queue device's bring-up.
    static func bringUp(_ t: VirtioMMIO, queues drivers: [TestDriver], accept: (UInt64) -> UInt64 = { $0 }) {
        set(t, 0x70, 1); set(t, 0x70, 3)
        set(t, 0x14, 0); let low = reg(t, 0x10)
        set(t, 0x14, 1); let high = reg(t, 0x10)
        let accepted = accept(UInt64(high) << 32 | UInt64(low))
        set(t, 0x24, 0); set(t, 0x20, UInt32(truncatingIfNeeded: accepted))
        set(t, 0x24, 1); set(t, 0x20, UInt32(truncatingIfNeeded: accepted >> 32))
        set(t, 0x70, 11)
        for (index, d) in drivers.enumerated() {
            set(t, 0x30, UInt32(index))
            set(t, 0x38, UInt32(d.size))
            set(t, 0x80, UInt32(d.descriptors)); set(t, 0x84, 0)
            set(t, 0x90, UInt32(d.available)); set(t, 0x94, 0)
            set(t, 0xA0, UInt32(d.used)); set(t, 0xA4, 0)
            set(t, 0x44, 1)
        }
        set(t, 0x70, 15)
    }

    func testIdentityNegotiationAndEntropy() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let line = Line()
        let t = VirtioMMIO(device: try VirtioRNG(), memory: memory, interrupt: line)
        XCTAssertEqual(reg(t, 0x00), 0x7472_6976, "magic 'virt'")
        XCTAssertEqual(reg(t, 0x04), 2, "version 2: no legacy")
        XCTAssertEqual(reg(t, 0x08), 4, "entropy device")
        XCTAssertEqual(reg(t, 0x34), 256)
        var driver = TestDriver(memory: memory)
        // A driver that does not accept VERSION_1 is refused FEATURES_OK.
        set(t, 0x70, 3); set(t, 0x24, 1); set(t, 0x20, 0); set(t, 0x70, 11)
        XCTAssertEqual(reg(t, 0x70) & 8, 0, "FEATURES_OK cleared: legacy drivers are not served")
        set(t, 0x70, 0)
        XCTAssertEqual(reg(t, 0x70), 0, "reset")
        bringUp(t, driver)
        XCTAssertEqual(reg(t, 0x70), 15)
        try driver.request([(0x40000, 4096, true)])
        set(t, 0x50, 0) // QueueNotify
        XCTAssertEqual(try driver.usedIndex(), 1)
        XCTAssertEqual(try driver.usedEntry(0).length, 4096)
        let bytes = try memory.read(bytes: 4096, at: GuestAddress(0x40000))
        XCTAssertGreaterThan(Set(bytes).count, 200, "random bytes")
        XCTAssertTrue(line.high)
        XCTAssertEqual(reg(t, 0x60), 1, "used-buffer interrupt")
        set(t, 0x64, 1)
        XCTAssertFalse(line.high, "acknowledged")
        XCTAssertEqual(t.statistics.completed, 1)
    }

    /// A notification written to the register (not caught by an ioeventfd) is handed to
    /// the event loop instead of served on the writing vCPU thread.
    func testRegisterNotificationsAreHandedOff() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let t = VirtioMMIO(device: try VirtioRNG(), memory: memory, interrupt: nil)
        var driver = TestDriver(memory: memory)
        bringUp(t, driver)
        let woken = Mutex(0)
        t.handNotificationsOff { woken.withLock { $0 += 1 } }
        try driver.request([(0x40000, 64, true)])
        set(t, 0x50, 0)
        XCTAssertEqual(woken.withLock { $0 }, 1)
        XCTAssertEqual(try driver.usedIndex(), 0, "nothing served on the writer's thread")
        t.notifyAll() // what the loop does for the ioeventfd
        XCTAssertEqual(try driver.usedIndex(), 1)
    }

    func testAMalformedChainSetsNeedsResetAndIsCounted() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let line = Line()
        let t = VirtioMMIO(device: try VirtioRNG(), memory: memory, interrupt: line)
        var driver = TestDriver(memory: memory)
        bringUp(t, driver)
        try driver.descriptor(0, address: 0x40000, length: 8, flags: 3, next: 0) // loops to itself
        try driver.offer(0)
        set(t, 0x50, 0)
        XCTAssertEqual(reg(t, 0x70) & 64, 64, "DEVICE_NEEDS_RESET")
        XCTAssertEqual(reg(t, 0x60) & 2, 2, "configuration-change interrupt")
        XCTAssertEqual(t.statistics.malformed, 1)
        XCTAssertEqual(t.statistics.lastError, "a descriptor chain longer than 16 descriptors (a loop?)")
        set(t, 0x50, 0)
        XCTAssertEqual(t.statistics.malformed, 1, "a broken device takes no more requests until reset")
        set(t, 0x70, 0)
        XCTAssertEqual(reg(t, 0x70), 0)
        XCTAssertFalse(line.high)
    }

    func testBlockReadsWritesFlushesAndStaysInsideItsImage() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let file = NSTemporaryDirectory() + "swiftvisor-blk-\(getpid()).img"
        var image = [UInt8](repeating: 0, count: 8192)
        for i in 0..<image.count { image[i] = UInt8(i / 512) }
        FileManager.default.createFile(atPath: file, contents: Data(image))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let blk = try VirtioBlock(path: file, serial: "swiftvisor-test")
        XCTAssertThrowsError(try VirtioBlock(path: file), "a writable image is locked to one VM")
        XCTAssertEqual(blk.capacity, 16)
        let t = VirtioMMIO(device: blk, memory: memory, interrupt: nil)
        var c = AccessData(size: 8)
        t.read(region: 0, offset: 0x100, data: &c)
        XCTAssertEqual(c.value, 16, "capacity in sectors")
        var driver = TestDriver(memory: memory)
        bringUp(t, driver)
        func header(_ type: UInt32, _ sector: UInt64, at a: UInt64) throws {
            try memory.write(type, at: GuestAddress(a)); try memory.write(UInt32(0), at: GuestAddress(a + 4))
            try memory.write(sector, at: GuestAddress(a + 8))
        }
        func submit(_ buffers: [(UInt64, UInt32, Bool)]) throws -> (status: UInt8, length: UInt32) {
            // Each request is complete before the next, so its descriptors are free again.
            try driver.request(buffers, first: 0)
            set(t, 0x50, 0)
            let used = try driver.usedIndex()
            let status = try memory.read(UInt8.self, at: GuestAddress(0x50000))
            return (status, try driver.usedEntry(used &- 1).length)
        }
        // Read sector 3.
        try header(0, 3, at: 0x40000)
        var r = try submit([(0x40000, 16, false), (0x41000, 512, true), (0x50000, 1, true)])
        XCTAssertEqual(r.status, 0)
        XCTAssertEqual(r.length, 513)
        XCTAssertEqual(try memory.read(bytes: 4, at: GuestAddress(0x41000)), [3, 3, 3, 3])
        // Write sector 5, then read it back from the file.
        try header(1, 5, at: 0x40000)
        try memory.fill(0xAB, count: 512, at: GuestAddress(0x42000))
        r = try submit([(0x40000, 16, false), (0x42000, 512, false), (0x50000, 1, true)])
        XCTAssertEqual(r.status, 0)
        let after = try Data(contentsOf: URL(fileURLWithPath: file))
        XCTAssertEqual(after[5 * 512], 0xAB)
        XCTAssertEqual(after.count, 8192)
        // Beyond the end, and a sector number that would wrap: I/O error, file unchanged.
        try header(1, 16, at: 0x40000)
        XCTAssertEqual(try submit([(0x40000, 16, false), (0x42000, 512, false), (0x50000, 1, true)]).status, 1)
        try header(0, .max / 256, at: 0x40000)
        XCTAssertEqual(try submit([(0x40000, 16, false), (0x41000, 512, true), (0x50000, 1, true)]).status, 1)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: file)).count, 8192, "never written past its size")
        // Flush, GET_ID, and an unknown request type.
        try header(4, 0, at: 0x40000)
        XCTAssertEqual(try submit([(0x40000, 16, false), (0x50000, 1, true)]).status, 0)
        try header(8, 0, at: 0x40000)
        XCTAssertEqual(try submit([(0x40000, 16, false), (0x43000, 20, true), (0x50000, 1, true)]).status, 0)
        XCTAssertEqual(try memory.readCString(at: GuestAddress(0x43000), maxLength: 20), "swiftvisor-test")
        try header(99, 0, at: 0x40000)
        XCTAssertEqual(try submit([(0x40000, 16, false), (0x50000, 1, true)]).status, 2, "unsupported")
        XCTAssertEqual(t.statistics.malformed, 0)
        XCTAssertEqual(t.statistics.completed, 7)
    }

    func testDiscardAndWriteZeroesStayInsideTheImage() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let file = NSTemporaryDirectory() + "swiftvisor-discard-\(getpid()).img"
        FileManager.default.createFile(atPath: file, contents: Data(repeating: 0xEE, count: 64 * 1024))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let blk = try VirtioBlock(path: file)
        XCTAssertNotEqual(blk.offeredFeatures & (1 << 13), 0, "VIRTIO_BLK_F_DISCARD")
        XCTAssertNotEqual(blk.offeredFeatures & (1 << 14), 0, "VIRTIO_BLK_F_WRITE_ZEROES")
        XCTAssertEqual(blk.readConfig(offset: 40, size: 4), 32, "max_discard_seg")
        XCTAssertEqual(blk.readConfig(offset: 56, size: 1), 1, "write_zeroes_may_unmap")
        let t = VirtioMMIO(device: blk, memory: memory, interrupt: nil)
        var driver = TestDriver(memory: memory)
        bringUp(t, driver)
        func submit(_ type: UInt32, _ segments: [(UInt64, UInt32, UInt32)]) throws -> UInt8 {
            try memory.write(type, at: GuestAddress(0x40000))
            try memory.write(UInt64(0), at: GuestAddress(0x40008))
            for (i, s) in segments.enumerated() {
                let at = GuestAddress(0x41000 + UInt64(16 * i))
                try memory.write(s.0, at: at)
                try memory.write(s.1, at: GuestAddress(at.value + 8))
                try memory.write(s.2, at: GuestAddress(at.value + 12))
            }
            try driver.request([(0x40000, 16, false), (0x41000, UInt32(16 * segments.count), false), (0x50000, 1, true)], first: 0)
            set(t, 0x50, 0)
            return try memory.read(UInt8.self, at: GuestAddress(0x50000))
        }
        func image() throws -> Data { try Data(contentsOf: URL(fileURLWithPath: file)) }
        XCTAssertEqual(try submit(11, [(8, 8, 0)]), 0, "discard sectors 8-15")
        XCTAssertEqual(try submit(13, [(32, 4, 0), (40, 2, 1)]), 0, "write zeroes, then with UNMAP")
        let after = try image()
        XCTAssertEqual(after.count, 64 * 1024, "the image keeps its size")
        XCTAssertEqual(after[32 * 512], 0)
        XCTAssertEqual(after[36 * 512 - 1], 0)
        XCTAssertEqual(after[36 * 512], 0xEE, "nothing past the range")
        XCTAssertEqual(after[40 * 512], 0)
        XCTAssertEqual(after[42 * 512], 0xEE)
        XCTAssertEqual(after[7 * 512], 0xEE)
        // Hostile segments: past the end, wrapping, flags discard does not have, too many.
        XCTAssertEqual(try submit(11, [(127, 2, 0)]), 1)
        XCTAssertEqual(try submit(13, [(.max / 512, 1, 0)]), 1)
        XCTAssertEqual(try submit(11, [(0, 1, 1)]), 2)
        XCTAssertEqual(try submit(13, [(0, 1, 4)]), 2)
        XCTAssertEqual(try submit(11, Array(repeating: (0, 1, 0), count: 33)), 2)
        XCTAssertEqual(try image().count, 64 * 1024)
        XCTAssertEqual(t.statistics.malformed, 0)
    }

    /// Reads, writes and flushes through each asynchronous engine, as the machine runs
    /// them: the request is handed over at the notification and finished when the
    /// completion eventfd fires (the event loop's job, done here by hand).
    func testAsynchronousEnginesFinishRequestsThroughTheTransport() throws {
        var engines: [any BlockBackend] = [try XCTUnwrap(ThreadPoolBlockBackend(workers: 2))]
        if let ring = IOURingBlockBackend(entries: 64) { engines.append(ring) } else { print("note: io_uring is not available here; only the thread pool is tested") }
        for backend in engines {
            let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
            let file = NSTemporaryDirectory() + "swiftvisor-async-\(getpid()).img"
            var image = [UInt8](repeating: 0, count: 16 * 512)
            for i in 0..<image.count { image[i] = UInt8(i / 512) }
            FileManager.default.createFile(atPath: file, contents: Data(image))
            defer { try? FileManager.default.removeItem(atPath: file) }
            let blk = try VirtioBlock(path: file, queues: 2, memory: memory, backend: backend)
            XCTAssertEqual(blk.engine, backend.engine)
            XCTAssertEqual(blk.readConfig(offset: 34, size: 2), 2, "num_queues")
            XCTAssertNotEqual(blk.offeredFeatures & (1 << 12), 0, "VIRTIO_BLK_F_MQ")
            let line = Line()
            let t = VirtioMMIO(device: blk, memory: memory, interrupt: line)
            var driver = TestDriver(memory: memory)
            bringUp(t, driver)
            // Waits until the used ring reaches `used`, finishing completions as the event
            // loop would (io_uring may have finished a page-cache read during the notify).
            func finish(until used: UInt16) throws {
                let deadline = Date().addingTimeInterval(5)
                while try driver.usedIndex() != used && Date() < deadline {
                    var p = pollfd(fd: try XCTUnwrap(blk.completionFD), events: Int16(POLLIN), revents: 0)
                    _ = poll(&p, 1, 100)
                    blk.completeReady()
                }
                XCTAssertEqual(try driver.usedIndex(), used, "\(backend.engine): completions within 5 s")
            }
            func header(_ type: UInt32, _ sector: UInt64) throws {
                try memory.write(type, at: GuestAddress(0x40000)); try memory.write(UInt32(0), at: GuestAddress(0x40004))
                try memory.write(sector, at: GuestAddress(0x40008))
            }
            // A read of sectors 2-3 into two buffers: nothing is used until completion.
            try header(0, 2)
            try memory.write(UInt8(0xFF), at: GuestAddress(0x50000))
            try driver.request([(0x40000, 16, false), (0x41000, 512, true), (0x42000, 512, true), (0x50000, 1, true)], first: 0)
            set(t, 0x50, 0)
            try finish(until: 1)
            XCTAssertEqual(try driver.usedEntry(0).length, 1025)
            XCTAssertEqual(try memory.read(UInt8.self, at: GuestAddress(0x50000)), 0)
            XCTAssertEqual(try memory.read(bytes: 2, at: GuestAddress(0x41000)), [2, 2])
            XCTAssertEqual(try memory.read(bytes: 2, at: GuestAddress(0x42000)), [3, 3])
            XCTAssertTrue(line.high, "used-buffer interrupt")
            // A write whose header and data share one buffer, then a flush.
            try header(1, 7)
            try memory.fill(0x5A, count: 512, at: GuestAddress(0x40010))
            try driver.request([(0x40000, 16 + 512, false), (0x50000, 1, true)], first: 4)
            set(t, 0x50, 0)
            try finish(until: 2)
            try header(4, 0)
            try driver.request([(0x40000, 16, false), (0x50000, 1, true)], first: 6)
            set(t, 0x50, 0)
            try finish(until: 3)
            XCTAssertEqual(try memory.read(UInt8.self, at: GuestAddress(0x50000)), 0)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: file))[7 * 512 + 100], 0x5A)
            // Past the end: refused at once, never handed to the engine.
            try header(0, 16)
            try driver.request([(0x40000, 16, false), (0x41000, 512, true), (0x50000, 1, true)], first: 8)
            set(t, 0x50, 0)
            XCTAssertEqual(try driver.usedIndex(), 4)
            XCTAssertEqual(try memory.read(UInt8.self, at: GuestAddress(0x50000)), 1)
            XCTAssertEqual(blk.inFlight, 0)
            XCTAssertEqual(t.statistics.completed, 4)
            XCTAssertEqual(t.statistics.malformed, 0)
        }
    }

    /// An engine that holds its completions until told: what a slow disk looks like.
    final class HeldBackend: BlockBackend {
        let engine = "held"
        let completionFD = eventfd(0, Int32(EFD_NONBLOCK))
        let held = Mutex<[BlockCompletion]>([])
        let released = Mutex<[BlockCompletion]>([])
        func submit(_ operation: Devices.BlockOperation, fd: Int32, vectors: IOVectors, token: UInt64) -> Bool {
            held.withLock { $0.append(BlockCompletion(token: token, result: operation == .flush ? 0 : vectors.length)) }
            return true
        }
        func flush() {}
        func release() {
            let h = held.withLock { h in defer { h.removeAll() }; return h }
            released.withLock { $0 += h }
            var one: UInt64 = 1
            _ = write(completionFD, &one, 8)
        }
        func reap() -> [BlockCompletion] { released.withLock { r in defer { r.removeAll() }; return r } }
    }

    func testAResetDropsCompletionsThatArriveAfterIt() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let file = NSTemporaryDirectory() + "swiftvisor-held-\(getpid()).img"
        FileManager.default.createFile(atPath: file, contents: Data(count: 8192))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let engine = HeldBackend()
        let blk = try VirtioBlock(path: file, memory: memory, backend: engine)
        let t = VirtioMMIO(device: blk, memory: memory, interrupt: nil)
        var driver = TestDriver(memory: memory)
        bringUp(t, driver)
        try memory.write(UInt32(0), at: GuestAddress(0x40000)); try memory.write(UInt64(1), at: GuestAddress(0x40008))
        try driver.request([(0x40000, 16, false), (0x41000, 512, true), (0x50000, 1, true)])
        set(t, 0x50, 0)
        XCTAssertEqual(blk.inFlight, 1)
        XCTAssertEqual(try driver.usedIndex(), 0)
        // Held, then released after a reset and a new set-up: not pushed to the new ring.
        set(t, 0x70, 0)
        try memory.fill(0, count: 0x3000, at: GuestAddress(driver.descriptors))
        driver = TestDriver(memory: memory)
        bringUp(t, driver)
        engine.release()
        blk.eventReady(engine.completionFD)
        XCTAssertEqual(blk.inFlight, 0)
        XCTAssertEqual(try driver.usedIndex(), 0, "nothing pushed after the reset")
        // The same without a reset completes normally.
        try driver.request([(0x40000, 16, false), (0x41000, 512, true), (0x50000, 1, true)])
        set(t, 0x50, 0)
        engine.release()
        blk.eventReady(engine.completionFD)
        XCTAssertEqual(try driver.usedIndex(), 1)
    }

    func testAReadOnlyDiskRefusesWrites() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let file = NSTemporaryDirectory() + "swiftvisor-ro-\(getpid()).img"
        FileManager.default.createFile(atPath: file, contents: Data(count: 4096))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let blk = try VirtioBlock(path: file, readOnly: true)
        XCTAssertNoThrow(try VirtioBlock(path: file, readOnly: true), "readers share")
        XCTAssertNotEqual(blk.offeredFeatures & (1 << 5), 0, "VIRTIO_BLK_F_RO")
        let t = VirtioMMIO(device: blk, memory: memory, interrupt: nil)
        var driver = TestDriver(memory: memory)
        bringUp(t, driver)
        try memory.write(UInt32(1), at: GuestAddress(0x40000))
        try memory.write(UInt64(0), at: GuestAddress(0x40008))
        try driver.request([(0x40000, 16, false), (0x42000, 512, false), (0x50000, 1, true)])
        set(t, 0x50, 0)
        XCTAssertEqual(try memory.read(UInt8.self, at: GuestAddress(0x50000)), 1, "VIRTIO_BLK_S_IOERR")
    }
}

final class VirtioConsoleTests: XCTestCase {
    final class Collector: SerialOutput {
        let bytes = Mutex<[UInt8]>([])
        func write(_ byte: UInt8) { bytes.withLock { $0.append(byte) } }
        var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
    }

    func testTransmitReceiveAndHeldInput() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let out = Collector()
        let console = VirtioConsole(output: out)
        XCTAssertEqual(console.deviceType, 3)
        var rx = VirtQueue(maximumSize: 256), tx = VirtQueue(maximumSize: 256)
        var rxDriver = TestDriver(memory: memory, base: 0x10000), txDriver = TestDriver(memory: memory, base: 0x20000)
        rxDriver.setUp(&rx)
        txDriver.setUp(&tx)
        // Transmit: what the guest writes reaches the console output, across buffers.
        try memory.write(bytes: Array("hello, ".utf8), at: GuestAddress(0x40000))
        try memory.write(bytes: Array("world".utf8), at: GuestAddress(0x41000))
        try txDriver.request([(0x40000, 7, false), (0x41000, 5, false)])
        XCTAssertEqual(try console.process(queue: VirtioConsole.transmitQueue, &tx, memory: memory), 1)
        XCTAssertEqual(out.text, "hello, world")
        XCTAssertEqual(try txDriver.usedEntry(0).length, 0)
        // Receive: input typed before the guest offers buffers is held, then delivered.
        console.enqueue(Array("ls\n".utf8))
        XCTAssertEqual(try console.process(queue: VirtioConsole.receiveQueue, &rx, memory: memory), 0)
        try rxDriver.request([(0x50000, 2, true)])
        XCTAssertEqual(try console.process(queue: VirtioConsole.receiveQueue, &rx, memory: memory), 1)
        XCTAssertEqual(try memory.read(bytes: 2, at: GuestAddress(0x50000)), Array("ls".utf8))
        XCTAssertEqual(try rxDriver.usedEntry(0).length, 2)
        try rxDriver.request([(0x51000, 16, true)], first: 1)
        XCTAssertEqual(try console.process(queue: VirtioConsole.receiveQueue, &rx, memory: memory), 1)
        XCTAssertEqual(try rxDriver.usedEntry(1).length, 1, "the rest: the newline")
        // No input: a buffer the guest offers stays on the ring for later.
        try rxDriver.request([(0x52000, 16, true)], first: 2)
        XCTAssertEqual(try console.process(queue: VirtioConsole.receiveQueue, &rx, memory: memory), 0)
        XCTAssertEqual(try rxDriver.usedIndex(), 2)
        console.enqueue([0x71])
        XCTAssertEqual(try console.process(queue: VirtioConsole.receiveQueue, &rx, memory: memory), 1)
        XCTAssertEqual(try memory.read(UInt8.self, at: GuestAddress(0x52000)), 0x71)
        // A guest that never reads: input beyond 64 KiB is dropped and counted.
        console.enqueue([UInt8](repeating: 0x41, count: 70_000))
        XCTAssertEqual(console.droppedInput, UInt64(70_000 - VirtioConsole.maximumPending))
        // An emergency write, before any queue is up.
        console.writeConfig(offset: 8, size: 4, value: 0x21)
        XCTAssertEqual(out.text, "hello, world!")
        console.reset()
        XCTAssertEqual(try console.process(queue: VirtioConsole.receiveQueue, &rx, memory: memory), 0, "reset drops held input")
    }
}

final class RateLimiterTests: XCTestCase {
    func testTokenBucketsRefillEvenlyAndNeverOverflow() {
        var b = TokenBucket(perSecond: 1000, now: 0)
        XCTAssertTrue(b.take(1000, now: 0))
        XCTAssertFalse(b.take(1, now: 0))
        XCTAssertEqual(b.wait(for: 100, now: 0), 100_000_000, "100 tokens take 0.1 s")
        XCTAssertTrue(b.take(100, now: 100_000_000))
        XCTAssertFalse(b.take(2000, now: 100_000_000), "more than the bucket: only when it is full")
        XCTAssertTrue(b.take(2000, now: 5_000_000_000))
        var huge = TokenBucket(perSecond: .max, now: 0)
        XCTAssertTrue(huge.take(.max, now: 0))
        XCTAssertTrue(huge.take(.max / 2, now: .max), "refill with extreme values does not trap")
        XCTAssertTrue(huge.take(1, now: .max))
        var limiter = RateLimiter(RateLimit(bytesPerSecond: 4096, operationsPerSecond: 2), now: 0)
        XCTAssertNil(limiter.admit(bytes: 512, now: 0))
        XCTAssertNil(limiter.admit(bytes: 512, now: 0))
        XCTAssertNotNil(limiter.admit(bytes: 512, now: 0), "the third request in a second waits")
        XCTAssertNil(limiter.admit(bytes: 512, now: 600_000_000))
    }

    func testALimitedDiskLeavesRequestsOnTheRingUntilItsTimer() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let file = NSTemporaryDirectory() + "swiftvisor-limit-\(getpid()).img"
        FileManager.default.createFile(atPath: file, contents: Data(count: 64 * 1024))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let blk = try VirtioBlock(path: file, rateLimit: RateLimit(operationsPerSecond: 10))
        XCTAssertEqual(blk.eventFDs.count, 1, "the limiter's timer")
        let t = VirtioMMIO(device: blk, memory: memory, interrupt: nil)
        var driver = TestDriver(memory: memory, size: 64)
        VirtioMMIOTests.bringUp(t, driver)
        for i in 0..<15 {
            try memory.write(UInt32(0), at: GuestAddress(0x40000)); try memory.write(UInt64(0), at: GuestAddress(0x40008))
            try driver.request([(0x40000, 16, false), (0x41000, 512, true), (0x50000 + UInt64(i), 1, true)], first: UInt16(3 * i))
        }
        t.write(region: 0, offset: 0x50, data: AccessData(size: 4, value: 0))
        XCTAssertEqual(t.statistics.malformed, 0)
        XCTAssertEqual(try driver.usedIndex(), 10, "10 requests a second: the rest wait on the ring")
        XCTAssertEqual(blk.throttled, 1)
        t.write(region: 0, offset: 0x50, data: AccessData(size: 4, value: 0))
        XCTAssertEqual(try driver.usedIndex(), 10, "a notification while waiting takes nothing")
        var p = pollfd(fd: blk.eventFDs[0], events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&p, 1, 2000), 1, "the timer fires")
        blk.eventReady(blk.eventFDs[0])
        XCTAssertGreaterThan(try driver.usedIndex(), 10, "served again once tokens are back")
    }
}
