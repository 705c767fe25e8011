import CLinux
import Devices
import Glibc
import GuestMemory
import XCTest

/// virtio-vsock driven as a guest driver would (packets in guest memory, notifications
/// through the MMIO transport) against real Unix sockets on the host side, with
/// Firecracker's conventions: `CONNECT PORT\n` / `OK HOSTPORT\n`, and `PATH_PORT` for
/// the guest's connections to the host.
final class VirtioVsockTests: XCTestCase {
    static let guestCID: UInt64 = 3

    struct Rig {
        let memory: GuestMemory
        let vsock: VirtioVsock
        let transport: VirtioMMIO
        let path: String
        var rx: TestDriver
        var tx: TestDriver
        var nextRx: UInt64 = 0x100000

        init() throws {
            path = temporaryFolder() + "sv-vsock-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            memory = try GuestMemory(ranges: [(0, 0x100_0000)])
            vsock = try VirtioVsock(guestCID: VirtioVsockTests.guestCID, socketPath: path)
            transport = VirtioMMIO(device: vsock, memory: memory, interrupt: nil)
            rx = TestDriver(memory: memory, size: 64, base: 0x10000)
            tx = TestDriver(memory: memory, size: 64, base: 0x20000)
            VirtioMMIOTests.bringUp(transport, queues: [rx, tx])
        }

        var status: UInt32 { VirtioMMIOTests.reg(transport, 0x70) }

        /// The loop's turn: the device's epoll fd said something (or may have).
        func loop() { vsock.eventReady(vsock.eventFDs[0]) }

        mutating func postReceiveBuffers(_ count: Int, size: UInt32 = 4096 + 44) throws {
            for _ in 0..<count {
                let i = rx.nextDescriptor
                try rx.request([(nextRx, size, true)], first: i)
                rx.nextDescriptor = (i + 1) % rx.size
                nextRx += 0x10000
            }
            VirtioMMIOTests.set(transport, 0x50, 0)
        }

        /// Sends a packet from the guest.
        mutating func send(_ h: VsockHeader, payload: [UInt8] = [], at address: UInt64 = 0x800000) throws {
            try memory.write(bytes: h.bytes + payload, at: GuestAddress(address))
            let i = tx.nextDescriptor
            try tx.request([(address, UInt32(VsockHeader.size + payload.count), false)], first: i)
            tx.nextDescriptor = (i + 1) % tx.size
            VirtioMMIOTests.set(transport, 0x50, 1)
            loop()
        }

        /// What the device has put on the receive ring since `from`.
        func received(from: UInt16) throws -> [(VsockHeader, [UInt8])] {
            var out: [(VsockHeader, [UInt8])] = []
            var i = from
            while i != (try rx.usedIndex()) {
                let e = try rx.usedEntry(i)
                let address = 0x100000 + UInt64(e.id) * 0x10000
                let bytes = try memory.read(bytes: Int(e.length), at: GuestAddress(address))
                guard let h = VsockHeader(bytes) else { XCTFail("short packet"); return out }
                out.append((h, Array(bytes.dropFirst(VsockHeader.size))))
                i &+= 1
            }
            return out
        }

        func guestHeader(_ op: VsockHeader.Operation, guestPort: UInt32, hostPort: UInt32, length: UInt32 = 0, flags: UInt32 = 0) -> VsockHeader {
            VsockHeader(sourceCID: VirtioVsockTests.guestCID, destinationCID: 2, sourcePort: guestPort, destinationPort: hostPort,
                        length: length, operation: op, flags: flags, bufferAllocation: 64 * 1024, forwardCount: 0)
        }
    }

    static func readAll(_ fd: Int32, want: Int) -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<200 where out.count < want {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 { out += buffer.prefix(n) } else if n == 0 { break } else { usleep(5000) }
        }
        return out
    }

    static func send(_ fd: Int32, _ text: String) {
        let b = Array(text.utf8)
        XCTAssertEqual(b.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }, b.count)
    }

    func testTheGuestConnectsToAHostSocketAndDataFlowsBothWays() throws {
        var rig = try Rig()
        defer { unlink(rig.path + "_5000") }
        let listener = clinux_unix_listen(rig.path + "_5000", 4)
        XCTAssertGreaterThanOrEqual(listener, 0)
        defer { close(listener) }
        try rig.postReceiveBuffers(8)
        try rig.send(rig.guestHeader(.request, guestPort: 1234, hostPort: 5000))
        var packets = try rig.received(from: 0)
        XCTAssertEqual(packets.count, 1)
        XCTAssertEqual(packets.first?.0.operation, VsockHeader.Operation.response.rawValue)
        XCTAssertEqual(packets.first?.0.destinationPort, 1234)
        XCTAssertEqual(packets.first?.0.bufferAllocation, VirtioVsock.bufferAllocation)
        let host = clinux_accept_nonblocking(listener)
        XCTAssertGreaterThanOrEqual(host, 0)
        defer { close(host) }
        XCTAssertEqual(rig.vsock.statistics.open, 1)

        Self.send(host, "hello from the host")
        rig.loop()
        packets = try rig.received(from: 1)
        XCTAssertEqual(packets.count, 1)
        XCTAssertEqual(packets.first?.0.operation, VsockHeader.Operation.readWrite.rawValue)
        XCTAssertEqual(packets.first.map { String(decoding: $0.1, as: UTF8.self) }, "hello from the host")

        let payload = Array("hello from the guest".utf8)
        try rig.send(rig.guestHeader(.readWrite, guestPort: 1234, hostPort: 5000, length: UInt32(payload.count)), payload: payload)
        XCTAssertEqual(Self.readAll(host, want: payload.count), payload)
        XCTAssertEqual(rig.vsock.statistics.bytesToHost, UInt64(payload.count))

        // Both ways shut: the host sees EOF, the guest gets its RST.
        try rig.send(rig.guestHeader(.shutdown, guestPort: 1234, hostPort: 5000, flags: 3))
        XCTAssertEqual(Self.readAll(host, want: 1), [], "EOF")
        packets = try rig.received(from: 2)
        XCTAssertEqual(packets.last?.0.operation, VsockHeader.Operation.reset.rawValue)
        XCTAssertEqual(rig.vsock.statistics.open, 0)
        XCTAssertEqual(rig.status & VirtioStatus.needsReset, 0)
    }

    func testAGuestConnectingWhereNothingListensIsReset() throws {
        var rig = try Rig()
        try rig.postReceiveBuffers(2)
        try rig.send(rig.guestHeader(.request, guestPort: 7, hostPort: 9999))
        XCTAssertEqual(try rig.received(from: 0).first?.0.operation, VsockHeader.Operation.reset.rawValue)
    }

    func testAHostProgramConnectsWithCONNECTAndGetsOK() throws {
        var rig = try Rig()
        try rig.postReceiveBuffers(8)
        let host = clinux_unix_connect(rig.path)
        XCTAssertGreaterThanOrEqual(host, 0)
        defer { close(host) }
        Self.send(host, "CONNECT 80\n")
        rig.loop()
        var packets = try rig.received(from: 0)
        let request = try XCTUnwrap(packets.first?.0)
        XCTAssertEqual(request.operation, VsockHeader.Operation.request.rawValue)
        XCTAssertEqual(request.destinationPort, 80)
        XCTAssertEqual(request.destinationCID, Self.guestCID)
        let hostPort = request.sourcePort
        try rig.send(rig.guestHeader(.response, guestPort: 80, hostPort: hostPort))
        XCTAssertEqual(String(decoding: Self.readAll(host, want: 4), as: UTF8.self), "OK \(hostPort)\n")
        Self.send(host, "GET /")
        rig.loop()
        packets = try rig.received(from: 1)
        XCTAssertEqual(packets.first.map { String(decoding: $0.1, as: UTF8.self) }, "GET /")
        // The host hangs up: the guest is told both ways are shut.
        close(host)
        rig.loop()
        packets = try rig.received(from: 2)
        XCTAssertEqual(packets.last?.0.operation, VsockHeader.Operation.shutdown.rawValue)
        XCTAssertEqual(packets.last?.0.flags, 3)
        try rig.send(rig.guestHeader(.reset, guestPort: 80, hostPort: hostPort))
        XCTAssertEqual(rig.vsock.statistics.open, 0)
    }

    func testABadCONNECTLineIsRefused() throws {
        let rig = try Rig()
        let host = clinux_unix_connect(rig.path)
        defer { close(host) }
        Self.send(host, "HELLO there\n")
        rig.loop()
        XCTAssertEqual(Self.readAll(host, want: 1), [], "closed")
        XCTAssertEqual(rig.vsock.statistics.refusedHostConnections, 1)
        let flood = clinux_unix_connect(rig.path)
        defer { close(flood) }
        Self.send(flood, String(repeating: "C", count: 200))
        rig.loop()
        XCTAssertEqual(rig.vsock.statistics.refusedHostConnections, 2, "a line that never ends is cut off")
    }

    func testHostilePacketsAreCountedAndTheDeviceGoesOn() throws {
        var rig = try Rig()
        defer { unlink(rig.path + "_5001") }
        let listener = clinux_unix_listen(rig.path + "_5001", 4)
        defer { close(listener) }
        try rig.postReceiveBuffers(60)
        // Shorter than a header; a length beyond the buffer; someone else's CID.
        try rig.memory.write(bytes: [UInt8](repeating: 1, count: 10), at: GuestAddress(0x700000))
        let i = rig.tx.nextDescriptor
        try rig.tx.request([(0x700000, 10, false)], first: i)
        rig.tx.nextDescriptor += 1
        try rig.send(rig.guestHeader(.readWrite, guestPort: 1, hostPort: 5001, length: 1000))
        var spoofed = rig.guestHeader(.request, guestPort: 1, hostPort: 5001)
        spoofed.sourceCID = 99
        try rig.send(spoofed)
        XCTAssertEqual(rig.vsock.statistics.malformedPackets, 3)
        XCTAssertEqual(rig.vsock.statistics.opened, 0)
        // A connection whose guest sends beyond the credit it was given is reset.
        try rig.send(rig.guestHeader(.request, guestPort: 2, hostPort: 5001))
        XCTAssertEqual(rig.vsock.statistics.open, 1)
        let before = try rig.rx.usedIndex()
        // The host reads nothing: its socket fills, then the device's buffer.
        var sent = 0
        while rig.vsock.statistics.open == 1 && sent < 64 {
            let chunk = [UInt8](repeating: 7, count: Int(VirtioVsock.maximumPayload))
            try rig.send(rig.guestHeader(.readWrite, guestPort: 2, hostPort: 5001, length: UInt32(chunk.count)), payload: chunk)
            sent += 1
        }
        XCTAssertEqual(rig.vsock.statistics.open, 0, "past the 256 KiB credit while the host reads nothing")
        XCTAssertGreaterThan(sent, 4, "not before the buffer was full")
        XCTAssertTrue(try rig.received(from: before).contains { $0.0.operation == VsockHeader.Operation.reset.rawValue })
        XCTAssertEqual(rig.status & VirtioStatus.needsReset, 0)
        XCTAssertEqual(try rig.tx.usedIndex(), rig.tx.availableIndex, "every packet is returned")
    }

    func testCreditStopsTheHostFromOverrunningTheGuest() throws {
        var rig = try Rig()
        try rig.postReceiveBuffers(32)
        let host = clinux_unix_connect(rig.path)
        defer { close(host) }
        Self.send(host, "CONNECT 81\n")
        rig.loop()
        let hostPort = try XCTUnwrap(rig.received(from: 0).first?.0.sourcePort)
        // The guest allows 8 KiB in flight.
        var response = rig.guestHeader(.response, guestPort: 81, hostPort: hostPort)
        response.bufferAllocation = 8192
        try rig.send(response)
        _ = Self.readAll(host, want: 4)
        Self.send(host, String(repeating: "x", count: 20_000))
        rig.loop()
        let packets = try rig.received(from: 1)
        let data = packets.filter { $0.0.operation == VsockHeader.Operation.readWrite.rawValue }.reduce(0) { $0 + $1.1.count }
        XCTAssertEqual(data, 8192, "exactly the credit")
        XCTAssertEqual(packets.last?.0.operation, VsockHeader.Operation.creditRequest.rawValue, "then it asks for more")
        // The guest consumed it all: the rest flows.
        var update = rig.guestHeader(.creditUpdate, guestPort: 81, hostPort: hostPort)
        update.bufferAllocation = 64 * 1024
        update.forwardCount = 8192
        try rig.send(update)
        rig.loop()
        let more = try rig.received(from: UInt16(1 + packets.count)).reduce(0) { $0 + $1.1.count }
        XCTAssertEqual(more, 20_000 - 8192)
    }

    func testAResetClosesEveryConnection() throws {
        var rig = try Rig()
        defer { unlink(rig.path + "_6000") }
        let listener = clinux_unix_listen(rig.path + "_6000", 4)
        defer { close(listener) }
        try rig.postReceiveBuffers(4)
        try rig.send(rig.guestHeader(.request, guestPort: 3, hostPort: 6000))
        let host = clinux_accept_nonblocking(listener)
        defer { close(host) }
        XCTAssertEqual(rig.vsock.statistics.open, 1)
        VirtioMMIOTests.set(rig.transport, 0x70, 0)
        XCTAssertEqual(rig.vsock.statistics.open, 0)
        XCTAssertEqual(Self.readAll(host, want: 1), [], "the host sees the connection end")
        var cid = AccessData(size: 4)
        rig.transport.read(region: 0, offset: 0x100, data: &cid)
        XCTAssertEqual(cid.value, Self.guestCID)
    }
}

func temporaryFolder() -> String {
    let t = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    return t.hasSuffix("/") ? t : t + "/"
}
