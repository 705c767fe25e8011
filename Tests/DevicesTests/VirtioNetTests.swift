import CLinux
import Devices
import Glibc
import GuestMemory
import Synchronization
import XCTest

/// virtio-net driven as a guest driver would drive it (descriptors in guest memory,
/// notifications through the MMIO transport), its host side a datagram socket pair: one
/// frame per read and write, as a TAP with IFF_VNET_HDR.
final class VirtioNetTests: XCTestCase {
    final class SocketBackend: NetBackend {
        let fd: Int32
        let peer: Int32
        let supportedOffloads: UInt32
        let offloads = Mutex<[UInt32]>([])
        init(offloads: UInt32 = TapDevice.allOffloads) throws {
            var fds: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
                throw XCTSkip("socketpair: \(errno)")
            }
            // Room for a flood of frames in flight.
            var size: Int32 = 4 << 20
            for f in fds { setsockopt(f, SOL_SOCKET, SO_SNDBUF, &size, 4); setsockopt(f, SOL_SOCKET, SO_RCVBUF, &size, 4) }
            fd = fds[0]
            peer = fds[1]
            supportedOffloads = offloads
        }
        deinit { close(fd); close(peer) }
        func setOffloads(_ flags: UInt32) -> Bool { offloads.withLock { $0.append(flags) }; return true }
        /// The host side sends a frame (net header first) to the guest.
        func send(_ frame: [UInt8]) { XCTAssertEqual(frame.withUnsafeBytes { Glibc.send(peer, $0.baseAddress, $0.count, 0) }, frame.count) }
        /// What the guest transmitted, frame by frame.
        func received() -> [[UInt8]] {
            var frames: [[UInt8]] = []
            var buffer = [UInt8](repeating: 0, count: 70_000)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(peer, $0.baseAddress, $0.count, 0) }
                if n < 0 { return frames }
                frames.append(Array(buffer.prefix(n)))
            }
        }
    }

    /// A device on the MMIO transport with both queues set up, each with its own driver.
    struct Rig {
        let memory: GuestMemory
        let backend: SocketBackend
        let net: VirtioNet
        let transport: VirtioMMIO
        var rx: TestDriver
        var tx: TestDriver

        init(features accept: (UInt64) -> UInt64 = { $0 }, offloads: UInt32 = TapDevice.allOffloads, rxSize: UInt16 = 64,
             transmitLimit: RateLimit = RateLimit()) throws {
            memory = try GuestMemory(ranges: [(0, 0x100_0000)])
            backend = try SocketBackend(offloads: offloads)
            net = try VirtioNet(backend: backend, mac: MACAddress("52:54:00:12:34:56")!, transmitLimit: transmitLimit)
            transport = VirtioMMIO(device: net, memory: memory, interrupt: nil)
            rx = TestDriver(memory: memory, size: rxSize, base: 0x10000)
            tx = TestDriver(memory: memory, size: 64, base: 0x20000)
            VirtioMMIOTests.bringUp(transport, queues: [rx, tx], accept: accept)
        }

        func notify(_ queue: UInt32) { VirtioMMIOTests.set(transport, 0x50, queue) }
        var status: UInt32 { VirtioMMIOTests.reg(transport, 0x70) }

        /// Posts `count` receive buffers of `size` bytes each, one descriptor a chain.
        mutating func postReceiveBuffers(_ count: Int, size: UInt32, at base: UInt64 = 0x100000) throws {
            for _ in 0..<count {
                let i = rx.nextDescriptor
                try rx.request([(base + UInt64(i) * 0x10000, size, true)], first: i)
                rx.nextDescriptor = (i + 1) % rx.size
            }
        }

        mutating func transmit(_ buffers: [(UInt64, UInt32, Bool)]) throws {
            let i = tx.nextDescriptor
            try tx.request(buffers, first: i)
            tx.nextDescriptor = (i + UInt16(buffers.count)) % tx.size
        }

        /// The host's side became readable: the loop's call.
        func hostSent() { net.eventReady(backend.fd) }
    }

    static func frame(_ payload: Int, seed: UInt8 = 1) -> [UInt8] {
        [UInt8](repeating: 0, count: TapDevice.headerSize) + (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
    }

    func testConfigurationAndFeatures() throws {
        let rig = try Rig()
        XCTAssertEqual(VirtioMMIOTests.reg(rig.transport, 0x08), 1, "network device")
        XCTAssertEqual(rig.status, 15)
        var mac: [UInt8] = []
        for i in 0..<6 {
            var d = AccessData(size: 1)
            rig.transport.read(region: 0, offset: 0x100 + UInt64(i), data: &d)
            mac.append(UInt8(d.value))
        }
        XCTAssertEqual(mac, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        var status = AccessData(size: 2)
        rig.transport.read(region: 0, offset: 0x106, data: &status)
        XCTAssertEqual(status.value, 1, "link up")
        let offered = rig.net.offeredFeatures
        for f in [VirtioNet.Feature.mac, VirtioNet.Feature.mergeableReceiveBuffers, VirtioNet.Feature.guestTSO4, VirtioNet.Feature.hostTSO4] {
            XCTAssertNotEqual(offered & f, 0)
        }
        // Activation told the TAP what the driver takes; a reset takes it back.
        XCTAssertEqual(rig.backend.offloads.withLock { $0 }.last, TapDevice.allOffloads)
        VirtioMMIOTests.set(rig.transport, 0x70, 0)
        XCTAssertEqual(rig.backend.offloads.withLock { $0 }.last, 0)
        // A host without receive offloads offers the guest none.
        let plain = try Rig(offloads: 0)
        XCTAssertEqual(plain.net.offeredFeatures & (VirtioNet.Feature.guestChecksum | VirtioNet.Feature.guestTSO4), 0)
        XCTAssertEqual(plain.backend.offloads.withLock { $0 }.last, 0)
    }

    func testTransmitHandsTheKernelTheFrameAsTheGuestLaidItOut() throws {
        var rig = try Rig()
        let frame = Self.frame(1500)
        try rig.memory.write(bytes: frame.prefix(12), at: GuestAddress(0x200000))
        try rig.memory.write(bytes: frame.dropFirst(12).prefix(700), at: GuestAddress(0x300000))
        try rig.memory.write(bytes: frame.dropFirst(712), at: GuestAddress(0x400000))
        try rig.transmit([(0x200000, 12, false), (0x300000, 700, false), (0x400000, 800, false)])
        rig.notify(1)
        XCTAssertEqual(rig.backend.received(), [frame])
        XCTAssertEqual(try rig.tx.usedIndex(), 1)
        XCTAssertEqual(rig.net.statistics.transmittedFrames, 1)
        XCTAssertEqual(rig.net.statistics.transmittedBytes, 1500)
    }

    func testHostileTransmitRequestsAreCountedAndTheDeviceGoesOn() throws {
        var rig = try Rig()
        try rig.transmit([(0x200000, 4, false)]) // shorter than the net header
        try rig.transmit([(0x200000, 65_535, false), (0x300000, 65_535, false)]) // longer than any frame
        try rig.transmit([(0x200000, 0, false), (0x300000, 100, true)]) // nothing to send
        let frame = Self.frame(60)
        try rig.memory.write(bytes: frame, at: GuestAddress(0x500000))
        try rig.transmit([(0x500000, UInt32(frame.count), false)])
        rig.notify(1)
        XCTAssertEqual(rig.net.statistics.malformedFrames, 3)
        XCTAssertEqual(rig.backend.received(), [frame], "the good frame after them still goes")
        XCTAssertEqual(try rig.tx.usedIndex(), 4, "every request is returned")
        XCTAssertEqual(rig.status & VirtioStatus.needsReset, 0, "bad frames are not a broken queue")
    }

    func testReceiveFillsMergeableBuffersWithoutACopyAndSaysHowMany() throws {
        var rig = try Rig()
        try rig.postReceiveBuffers(40, size: 2048)
        rig.notify(0)
        let frame = Self.frame(4000, seed: 9)
        rig.backend.send(frame)
        rig.hostSent()
        XCTAssertEqual(try rig.rx.usedIndex(), 2, "4012 bytes in two 2 KiB buffers")
        XCTAssertEqual(try rig.rx.usedEntry(0).length, 2048)
        XCTAssertEqual(try rig.rx.usedEntry(1).length, UInt32(frame.count - 2048))
        var got = try rig.memory.read(bytes: 2048, at: GuestAddress(0x100000))
        got += try rig.memory.read(bytes: frame.count - 2048, at: GuestAddress(0x110000))
        XCTAssertEqual(try rig.memory.read(UInt16.self, at: GuestAddress(0x100000 + 10)), 2, "num_buffers")
        got[10] = 0; got[11] = 0
        XCTAssertEqual(got, frame)
        XCTAssertEqual(rig.net.statistics.receivedFrames, 1)
        XCTAssertEqual(rig.net.statistics.copiedFrames, 0, "read straight into the guest's buffers")
        // The unused buffers went back: the next frame starts in the third.
        rig.backend.send(Self.frame(100))
        rig.hostSent()
        XCTAssertEqual(try rig.rx.usedIndex(), 3)
        XCTAssertEqual(try rig.rx.usedEntry(2).id, 2)
    }

    func testAFrameWaitsForBuffersInsteadOfBeingLost() throws {
        var rig = try Rig()
        let first = Self.frame(3000, seed: 3), second = Self.frame(1000, seed: 4)
        rig.backend.send(first)
        rig.backend.send(second)
        rig.hostSent()
        XCTAssertEqual(try rig.rx.usedIndex(), 0, "no buffers yet")
        // Too few buffers for the largest frame: the frame is read aside and copied.
        try rig.postReceiveBuffers(2, size: 2048)
        rig.notify(0)
        XCTAssertEqual(try rig.rx.usedIndex(), 2)
        XCTAssertEqual(rig.net.statistics.copiedFrames, 1)
        XCTAssertGreaterThan(rig.net.statistics.receiveStalls, 0)
        var got = try rig.memory.read(bytes: 2048, at: GuestAddress(0x100000)) + rig.memory.read(bytes: first.count - 2048, at: GuestAddress(0x110000))
        got[10] = 0; got[11] = 0
        XCTAssertEqual(got, first)
        // The second waits (held by the device) until the guest posts more.
        try rig.postReceiveBuffers(1, size: 2048)
        rig.notify(0)
        XCTAssertEqual(try rig.rx.usedIndex(), 3)
        XCTAssertEqual(try rig.rx.usedEntry(2).length, UInt32(second.count))
        XCTAssertEqual(rig.net.statistics.receivedFrames, 2)
        XCTAssertEqual(rig.net.statistics.droppedFrames, 0)
    }

    func testWithoutMergeableBuffersAFrameTooBigForItsBufferIsDroppedAndCounted() throws {
        var rig = try Rig(features: { $0 & ~VirtioNet.Feature.mergeableReceiveBuffers })
        try rig.postReceiveBuffers(4, size: 512)
        rig.notify(0)
        rig.backend.send(Self.frame(1000))
        rig.backend.send(Self.frame(200))
        rig.hostSent()
        XCTAssertEqual(rig.net.statistics.droppedFrames, 1)
        XCTAssertEqual(try rig.rx.usedIndex(), 1, "the small frame after it arrives")
        XCTAssertEqual(try rig.rx.usedEntry(0).length, 212)
        XCTAssertEqual(try rig.memory.read(UInt16.self, at: GuestAddress(0x100000 + 10)), 1, "num_buffers is 1")
    }

    func testAFloodIsServedABudgetAtATime() throws {
        var rig = try Rig(rxSize: 256)
        try rig.postReceiveBuffers(200, size: 0x10000)
        rig.notify(0)
        for i in 0..<100 { rig.backend.send(Self.frame(64, seed: UInt8(i))) }
        rig.hostSent()
        XCTAssertEqual(try rig.rx.usedIndex(), UInt16(VirtioNet.budget), "one pass takes a budget's worth")
        let more = rig.net.eventFDs[1]
        var p = pollfd(fd: more, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&p, 1, 0), 1, "and asks the loop to come back")
        rig.net.eventReady(more)
        XCTAssertEqual(try rig.rx.usedIndex(), 100)
    }

    func testATransmitRateLimitHoldsFramesOnTheRing() throws {
        var rig = try Rig(transmitLimit: RateLimit(operationsPerSecond: 5))
        let frame = Self.frame(60)
        try rig.memory.write(bytes: frame, at: GuestAddress(0x500000))
        for _ in 0..<8 { try rig.transmit([(0x500000, UInt32(frame.count), false)]) }
        rig.notify(1)
        XCTAssertEqual(rig.backend.received().count, 5)
        XCTAssertEqual(rig.net.throttled, 1)
        let timer = try XCTUnwrap(rig.net.eventFDs.last)
        var p = pollfd(fd: timer, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&p, 1, 2000), 1)
        rig.net.eventReady(timer)
        let later = rig.backend.received().count
        XCTAssertTrue((1...3).contains(later), "a token a fifth of a second: \(later)")
        XCTAssertEqual(try rig.tx.usedIndex(), UInt16(5 + later))
    }

    func testReceiveChargesBytesAfterTheFact() {
        var limiter = RateLimiter(RateLimit(bytesPerSecond: 1000), now: 0)
        XCTAssertNil(limiter.admit(bytes: 0, now: 0))
        limiter.charge(bytes: 3000, now: 0)
        XCTAssertNotNil(limiter.admit(bytes: 0, now: 1_000_000_000), "2000 bytes still owed after a second")
        XCTAssertNil(limiter.admit(bytes: 0, now: 3_000_000_000), "paid off")
    }

    func testMACAddresses() {
        XCTAssertEqual(MACAddress("52:54:00:AB:cd:ef")?.description, "52:54:00:ab:cd:ef")
        XCTAssertEqual(MACAddress("52-54-00-ab-cd-ef")?.description, "52:54:00:ab:cd:ef")
        for bad in ["01:00:5e:00:00:01", "52:54:00:ab:cd", "52:54:00:ab:cd:ef:00", "52:54:00:ab:cd:xg", "5:54:00:ab:cd:ef", "", "52:54-00:ab:cd:ef"] {
            XCTAssertNil(MACAddress(bad), bad)
        }
        let a = MACAddress.derived(vm: "web", device: "eth0")
        XCTAssertEqual(a, MACAddress.derived(vm: "web", device: "eth0"), "stable")
        XCTAssertNotEqual(a, MACAddress.derived(vm: "web", device: "eth1"))
        XCTAssertNotEqual(a, MACAddress.derived(vm: "db", device: "eth0"))
        for m in [a, MACAddress.random()] {
            XCTAssertEqual(m.bytes[0] & 3, 2, "locally administered, unicast")
        }
    }

    /// A real TAP, made in a network namespace of its own (so the host's network never
    /// sees it): the VNET header size and the offload probe work, and the device takes it.
    func testARealTAPOpensWithItsHeaderAndOffloads() throws {
        guard geteuid() == 0 else { throw XCTSkip("making a TAP needs root (CAP_NET_ADMIN)") }
        guard access("/dev/net/tun", R_OK | W_OK) == 0 else { throw XCTSkip("no /dev/net/tun (modprobe tun)") }
        let opened = Mutex<(name: String, offloads: UInt32, created: Bool)?>(nil)
        let failure = Mutex<String?>(nil)
        // The namespace belongs to one thread: the test's own keeps the host's.
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Context {
            guard clinux_unshare(CLINUX_CLONE_NEWNET) == 0 else { failure.withLock { $0 = "cannot make a network namespace" }; return }
            do {
                let tap = try TapDevice(name: "svtest0")
                let net = try? VirtioNet(backend: tap, mac: MACAddress.random())
                // tap=auto for an unnamed VM: the kernel numbers it.
                let numbered = try TapDevice.open(name: NetConfigName.unnamed)
                opened.withLock { $0 = (tap.name + " " + numbered.name, tap.supportedOffloads, tap.created && net != nil && numbered.created) }
            } catch { failure.withLock { $0 = "\(error)" } }
        })
        XCTAssertEqual(pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<Context>.fromOpaque(raw).takeRetainedValue().body()
            return nil
        }, box.toOpaque()), 0)
        pthread_join(thread, nil)
        if let e = failure.withLock({ $0 }) { return XCTFail(e) }
        let tap = try XCTUnwrap(opened.withLock { $0 })
        XCTAssertEqual(tap.name, "svtest0 svtap0")
        XCTAssertNotEqual(tap.offloads & CLINUX_TUN_F_CSUM, 0, "checksum offload")
        XCTAssertTrue(tap.created)
    }

    /// What `NetConfig.interfaceName` gives `tap=auto` on an unnamed VM (VMM's type;
    /// this target sees Devices only).
    enum NetConfigName { static let unnamed = "svtap%d" }

    final class Context: @unchecked Sendable {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }
}
