// swiftvisor-net-bench: virtio-net and virtio-vsock device models measured against the
// host's own path, for `scripts/bench --virtio-net`. As for the block bench, this
// program is the guest driver (descriptors in guest memory, notifications on an eventfd
// as KVM's ioeventfd would signal them, interrupts on another eventfd as an irqfd would
// carry them), and each device runs as in the VMM: on an event loop on its own thread.
//
//   swiftvisor-net-bench TAP [--seconds S] [--only NAME]
//
// TAP must exist and be up (scripts/bench makes one in a network namespace of its own,
// MTU 65500 so that a 64 KiB frame is one frame). Measured, each beside the host's own
// figure, as JSON lines:
// - transmit: the device writes the guest's frames to the TAP, against `write(2)` of the
//   same frames to the TAP in a loop;
// - receive: frames a packet socket sends on the TAP reach the guest's buffers, against
//   `read(2)` of them from the TAP in a loop (the same sender feeds both);
// - vsock: a guest connection to a host Unix socket carries the guest's data to a host
//   reader (and back), against a Unix socket pair with the same chunk sizes.
import CLinux
import Control
import Devices
import Glibc
import GuestMemory
import Synchronization
import VMM

func fail(_ message: String) -> Never {
    StandardStream.error("swiftvisor-net-bench: \(message)\n")
    exit(1)
}

var arguments = Array(CommandLine.arguments.dropFirst())
guard let tapName = arguments.first else { fail("usage: swiftvisor-net-bench TAP [--seconds S]") }
arguments.removeFirst()
var secondsSetting = 2.0
var onlySetting: String?
while let flag = arguments.first {
    arguments.removeFirst()
    guard let value = arguments.first else { fail("\(flag) needs a value") }
    arguments.removeFirst()
    switch flag {
    case "--seconds": secondsSetting = Double(value) ?? secondsSetting
    case "--only": onlySetting = value
    default: fail("unknown option \(flag)")
    }
}
/// Only the tests whose name contains this.
let only = onlySetting
func wanted(_ test: String) -> Bool { only.map { test.contains($0) } ?? true }
let seconds = secondsSetting
let sizes = [64, 65_500 + 14]

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A flag and a count other threads read (Atomic itself cannot be captured or copied).
final class Shared: Sendable {
    let stop = Atomic<Bool>(false)
    let count = Atomic<UInt64>(0)
}

/// Interrupts as an irqfd carries them: an eventfd the driver waits on, written at
/// every signal.
final class EventFDLine: InterruptSource {
    let fd = eventfd(0, Int32(EFD_CLOEXEC))
    func setLevel(_ high: Bool) { if high { trigger() } }
    func trigger() { var one: UInt64 = 1; _ = write(fd, &one, 8) }
}

/// One device on virtio-mmio, its queues at fixed places, served by an event loop on its
/// own thread; the caller is the driver.
final class Harness {
    let memory: GuestMemory
    let transport: VirtioMMIO
    let irq: EventFDLine
    let notify = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
    let loop: EventLoop
    let done = Shared()
    var thread: pthread_t?
    static let queueSize: UInt16 = 256
    /// Queue q's rings: descriptors, available, used.
    static func rings(_ q: Int) -> (UInt64, UInt64, UInt64) {
        let base = 0x10000 + UInt64(q) * 0x10000
        return (base, base + 0x4000, base + 0x8000)
    }

    init(device: any VirtioDevice, memory: GuestMemory) throws {
        self.memory = memory
        let line = EventFDLine()
        let transport = VirtioMMIO(device: device, memory: memory, interrupt: line)
        irq = line
        self.transport = transport
        func set(_ o: UInt64, _ v: UInt32) { transport.write(region: 0, offset: o, data: AccessData(size: 4, value: UInt64(v))) }
        set(0x70, 1); set(0x70, 3)
        set(0x14, 0); var d = AccessData(size: 4); transport.read(region: 0, offset: 0x10, data: &d)
        set(0x24, 0); set(0x20, UInt32(d.value) & ~(1 << 29)) // all the device's bits but EVENT_IDX: an interrupt each round
        set(0x24, 1); set(0x20, 1)
        set(0x70, 11)
        for q in 0..<device.queueSizes.count {
            let (desc, avail, used) = Harness.rings(q)
            try memory.fill(0, count: 0x10000, at: GuestAddress(desc)) // fresh rings, as a driver allocates them
            set(0x30, UInt32(q)); set(0x38, UInt32(min(Harness.queueSize, device.queueSizes[q])))
            set(0x80, UInt32(desc)); set(0x84, 0); set(0x90, UInt32(avail)); set(0x94, 0); set(0xA0, UInt32(used)); set(0xA4, 0)
            set(0x44, 1)
        }
        set(0x70, 15)
        var status = AccessData(size: 4)
        transport.read(region: 0, offset: 0x70, data: &status)
        guard status.value == 15 else { throw Failure("the device refused the driver (status \(status.value))") }
        loop = try EventLoop()
        let notify = self.notify
        loop.add(notify) { _ in var n: UInt64 = 0; _ = read(notify, &n, 8); transport.notifyAll() }
        for fd in device.eventFDs {
            let events = device.triggersOnEdge(fd) ? EventLoop.readable | UInt32(EPOLLET.rawValue) : EventLoop.readable
            loop.add(fd, events: events) { _ in device.eventReady(fd) }
        }
        let (loop, done) = (self.loop, self.done)
        guard let t = HostThread.spawn({ loop.run(until: { done.stop.load(ordering: .acquiring) }) }) else { throw Failure("no thread") }
        thread = t
    }

    func stop() {
        done.stop.store(true, ordering: .releasing)
        loop.wake()
        if let thread { HostThread.join(thread) }
        close(notify)
        close(irq.fd)
    }

    func kick() { var one: UInt64 = 1; _ = write(notify, &one, 8) }

    /// Waits for an interrupt (up to `timeout` ms). Not acknowledged: the line above
    /// fires at every signal, as an MSI would, so the driver never takes the
    /// transport's lock while the device serves (virtio-pci with MSI-X, Linux's usual
    /// set-up, needs no acknowledgement either).
    func waitInterrupt(timeout: Int32 = 100) {
        var p = pollfd(fd: irq.fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, timeout) == 1 { var n: UInt64 = 0; _ = read(irq.fd, &n, 8) }
    }

    /// A ring the driver fills: descriptor i is buffer i, one-descriptor chains.
    struct Ring {
        let harness: Harness
        let queue: Int
        var availableIndex: UInt16 = 0
        var seenUsed: UInt16 = 0
        init(_ h: Harness, queue: Int) { harness = h; self.queue = queue }

        mutating func offer(_ slot: UInt16, address: UInt64, length: UInt32, writable: Bool) throws {
            let (desc, avail, _) = Harness.rings(queue)
            let at = desc + UInt64(slot) * 16
            let m = harness.memory
            try m.write(address, at: GuestAddress(at)); try m.write(length, at: GuestAddress(at + 8))
            try m.write(UInt16(writable ? 2 : 0), at: GuestAddress(at + 12)); try m.write(UInt16(0), at: GuestAddress(at + 14))
            try m.write(slot, at: GuestAddress(avail + 4 + 2 * UInt64(availableIndex % Harness.queueSize)))
            availableIndex &+= 1
        }
        func publish() throws { try harness.memory.write(availableIndex, at: GuestAddress(Harness.rings(queue).1 + 2)) }

        /// Used entries since the last call: (slot, bytes written).
        mutating func reap() throws -> [(slot: UInt16, length: UInt32)] {
            let used = Harness.rings(queue).2
            let now = try harness.memory.read(UInt16.self, at: GuestAddress(used + 2))
            var out: [(UInt16, UInt32)] = []
            while seenUsed != now {
                let e = used + 4 + 8 * UInt64(seenUsed % Harness.queueSize)
                out.append((UInt16(truncatingIfNeeded: try harness.memory.read(UInt32.self, at: GuestAddress(e))),
                            try harness.memory.read(UInt32.self, at: GuestAddress(e + 4))))
                seenUsed &+= 1
            }
            return out
        }
    }
}

let memory: GuestMemory
do { memory = try GuestMemory(ranges: [(0, 64 << 20)]) } catch { fail("guest memory: \(error)") }
let buffers: UInt64 = 0x100_0000
let slotSize: UInt64 = 0x1_0000 + 0x1000

func frame(_ size: Int) -> [UInt8] {
    // Header (no offloads), then Ethernet: to a unicast MAC nobody has, IPv4's type.
    var f = [UInt8](repeating: 0, count: TapDevice.headerSize)
    f += [0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]
    f += [UInt8](repeating: 0x5A, count: size - 14)
    return f
}

func elapsed(since start: UInt64) -> Double { Double(monotonicNanoseconds() - start) / 1e9 }

func report(_ test: String, _ size: Int, device: (frames: UInt64, seconds: Double), host: (frames: UInt64, seconds: Double)) {
    func rate(_ r: (frames: UInt64, seconds: Double)) -> Double { Double(r.frames) / r.seconds }
    let line: JSONValue = .object([("test", .string(test)), ("size", .uint(UInt64(size))), ("unit", .string("frames/s")),
                                   ("device", .double(rate(device))), ("host", .double(rate(host))),
                                   ("deviceGbps", .double(rate(device) * Double(size) * 8 / 1e9)),
                                   ("hostGbps", .double(rate(host) * Double(size) * 8 / 1e9))])
    StandardStream.output(line.rendered + "\n")
}

// MARK: virtio-net transmit

func hostTransmit(_ size: Int) throws -> (frames: UInt64, seconds: Double) {
    let tap = try TapDevice.open(name: tapName)
    let f = frame(size)
    var frames: UInt64 = 0
    let start = monotonicNanoseconds(), end = start + UInt64(seconds * 1e9)
    while monotonicNanoseconds() < end {
        for _ in 0..<64 where f.withUnsafeBytes({ write(tap.fd, $0.baseAddress, $0.count) }) == f.count { frames += 1 }
    }
    return (frames, elapsed(since: start))
}

func deviceTransmit(_ size: Int) throws -> (frames: UInt64, seconds: Double) {
    let net = try VirtioNet(backend: try TapDevice.open(name: tapName), mac: MACAddress.random())
    let h = try Harness(device: net, memory: memory)
    defer { h.stop() }
    let f = frame(size)
    var tx = Harness.Ring(h, queue: VirtioNet.transmitQueue)
    for slot in 0..<Harness.queueSize {
        try memory.write(bytes: f, at: GuestAddress(buffers + UInt64(slot) * slotSize))
    }
    let start = monotonicNanoseconds(), end = start + UInt64(seconds * 1e9)
    for slot in 0..<Harness.queueSize { try tx.offer(slot, address: buffers + UInt64(slot) * slotSize, length: UInt32(f.count), writable: false) }
    try tx.publish()
    h.kick()
    var inFlight = Int(Harness.queueSize)
    while inFlight > 0 {
        h.waitInterrupt()
        let done = try tx.reap()
        inFlight -= done.count
        if monotonicNanoseconds() < end, !done.isEmpty {
            for d in done { try tx.offer(d.slot, address: buffers + UInt64(d.slot) * slotSize, length: UInt32(f.count), writable: false) }
            inFlight += done.count
            try tx.publish()
            h.kick()
        }
    }
    return (net.statistics.transmittedFrames, elapsed(since: start))
}

// MARK: virtio-net receive

/// Sends frames on the TAP from the host side until stopped: what the guest receives.
final class Sender {
    let fd: Int32
    let stopped = Shared()
    var thread: pthread_t?
    init(size: Int, tap tapName: String) throws {
        fd = clinux_packet_socket(tapName)
        guard fd >= 0 else { throw Failure("packet socket on \(tapName): \(String(cString: strerror(-fd)))") }
        let f = Array(frame(size).dropFirst(TapDevice.headerSize))
        let (fd, stopped) = (self.fd, self.stopped)
        thread = HostThread.spawn {
            while !stopped.stop.load(ordering: .relaxed) { _ = f.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) } }
        }
    }
    func stop() {
        stopped.stop.store(true, ordering: .relaxed)
        if let thread { HostThread.join(thread) }
        close(fd)
    }
}

func hostReceive(_ size: Int) throws -> (frames: UInt64, seconds: Double) {
    let tap = try TapDevice.open(name: tapName)
    let sender = try Sender(size: size, tap: tapName)
    defer { sender.stop() }
    var buffer = [UInt8](repeating: 0, count: 70_000)
    var frames: UInt64 = 0
    let start = monotonicNanoseconds(), end = start + UInt64(seconds * 1e9)
    while monotonicNanoseconds() < end {
        var p = pollfd(fd: tap.fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&p, 1, 100)
        while buffer.withUnsafeMutableBytes({ read(tap.fd, $0.baseAddress, $0.count) }) > 0 { frames += 1 }
    }
    return (frames, elapsed(since: start))
}

func deviceReceive(_ size: Int) throws -> (frames: UInt64, seconds: Double) {
    let net = try VirtioNet(backend: try TapDevice.open(name: tapName), mac: MACAddress.random())
    let h = try Harness(device: net, memory: memory)
    defer { h.stop() }
    // Mergeable buffers of 4 KiB, as Linux posts them.
    var rx = Harness.Ring(h, queue: VirtioNet.receiveQueue)
    let bufferSize: UInt32 = 4096
    for slot in 0..<Harness.queueSize { try rx.offer(slot, address: buffers + UInt64(slot) * slotSize, length: bufferSize, writable: true) }
    try rx.publish()
    h.kick()
    let sender = try Sender(size: size, tap: tapName)
    let start = monotonicNanoseconds(), end = start + UInt64(seconds * 1e9)
    let before = net.statistics.receivedFrames
    while monotonicNanoseconds() < end {
        h.waitInterrupt()
        let done = try rx.reap()
        for d in done { try rx.offer(d.slot, address: buffers + UInt64(d.slot) * slotSize, length: bufferSize, writable: true) }
        if !done.isEmpty { try rx.publish(); h.kick() }
    }
    let received = net.statistics.receivedFrames - before
    let took = elapsed(since: start)
    sender.stop()
    return (received, took)
}

// MARK: vsock

/// Guest to host through the device (a connection to host port 7000, a Unix listener
/// the reader drains), against a Unix socket pair.
func vsockTransmit(_ size: Int) throws -> (device: (frames: UInt64, seconds: Double), host: (frames: UInt64, seconds: Double)) {
    let folder = "/tmp/swiftvisor-net-bench-\(getpid())"
    mkdir(folder, 0o700)
    defer { unlink(folder + "/v_7000"); rmdir(folder) }
    let listener = clinux_unix_listen(folder + "/v_7000", 4)
    guard listener >= 0 else { throw Failure("listen: \(-listener)") }
    defer { close(listener) }
    let vsock = try VirtioVsock(guestCID: 3, socketPath: folder + "/v")
    let h = try Harness(device: vsock, memory: memory)
    defer { h.stop() }
    var tx = Harness.Ring(h, queue: VirtioVsock.transmitQueue)
    var rx = Harness.Ring(h, queue: VirtioVsock.receiveQueue)
    for slot in 0..<Harness.queueSize { try rx.offer(slot, address: buffers + 0x200_0000 + UInt64(slot) * 0x2000, length: 4096 + 44, writable: true) }
    try rx.publish()
    func packet(_ op: VsockHeader.Operation, length: Int = 0, forward: UInt32 = 0) -> VsockHeader {
        VsockHeader(sourceCID: 3, destinationCID: 2, sourcePort: 1000, destinationPort: 7000, length: UInt32(length), operation: op,
                    bufferAllocation: 1 << 20, forwardCount: forward)
    }
    // Connect.
    try memory.write(bytes: packet(.request).bytes, at: GuestAddress(buffers))
    try tx.offer(0, address: buffers, length: 44, writable: false)
    try tx.publish()
    h.kick()
    let host = clinux_accept_nonblocking(listener)
    var tries = 0
    var accepted = host
    while accepted < 0 && tries < 100 { usleep(1000); accepted = clinux_accept_nonblocking(listener); tries += 1 }
    guard accepted >= 0 else { throw Failure("the device did not connect") }
    // A reader thread drains the host side.
    let reader = accepted
    let shared = Shared()
    let drain = HostThread.spawn {
        var b = [UInt8](repeating: 0, count: 1 << 20)
        while !shared.stop.load(ordering: .relaxed) {
            var p = pollfd(fd: reader, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 50)
            let n = b.withUnsafeMutableBytes { read(reader, $0.baseAddress, $0.count) }
            if n > 0 { shared.count.wrappingAdd(UInt64(n), ordering: .relaxed) }
        }
    }
    defer { shared.stop.store(true, ordering: .relaxed); if let drain { HostThread.join(drain) }; close(reader) }
    _ = try tx.reap()
    let payload = [UInt8](repeating: 0x33, count: size)
    for slot in 0..<Harness.queueSize {
        try memory.write(bytes: packet(.readWrite, length: size).bytes + payload, at: GuestAddress(buffers + UInt64(slot) * slotSize))
    }
    // Credit: the device's 256 KiB per connection; the driver sends while it has some,
    // as Linux does, learning the device's forward count from its packets.
    var sent: UInt64 = 0, deviceForward: UInt32 = 0
    var inFlight = 0, slot: UInt16 = 0
    let start = monotonicNanoseconds(), end = start + UInt64(seconds * 1e9)
    var sending = true
    while sending || inFlight > 0 {
        if sending && monotonicNanoseconds() >= end { sending = false }
        var posted = false
        while sending, inFlight < Int(Harness.queueSize),
              UInt64(UInt32(truncatingIfNeeded: sent) &- deviceForward) + UInt64(size) <= UInt64(VirtioVsock.bufferAllocation) {
            try tx.offer(slot, address: buffers + UInt64(slot) * slotSize, length: UInt32(44 + size), writable: false)
            slot = (slot + 1) % Harness.queueSize
            sent += UInt64(size)
            inFlight += 1
            posted = true
        }
        if posted { try tx.publish(); h.kick() }
        h.waitInterrupt(timeout: 10)
        inFlight -= try tx.reap().count
        for d in try rx.reap() {
            let bytes = try memory.read(bytes: 44, at: GuestAddress(buffers + 0x200_0000 + UInt64(d.slot) * 0x2000))
            if let header = VsockHeader(bytes) { deviceForward = header.forwardCount }
            try rx.offer(d.slot, address: buffers + 0x200_0000 + UInt64(d.slot) * 0x2000, length: 4096 + 44, writable: true)
        }
        try rx.publish()
        h.kick()
    }
    let took = elapsed(since: start)
    let device = (frames: vsock.statistics.bytesToHost / UInt64(size), seconds: took)

    // The same chunks through a Unix socket pair.
    var pair: [Int32] = [0, 0]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0 else { throw Failure("socketpair") }
    let peer = pair[1]
    let t = HostThread.spawn {
        var b = [UInt8](repeating: 0, count: 1 << 20)
        while b.withUnsafeMutableBytes({ read(peer, $0.baseAddress, $0.count) }) > 0 {}
    }
    let hostStart = monotonicNanoseconds(), hostEnd = hostStart + UInt64(seconds * 1e9)
    var written: UInt64 = 0
    while monotonicNanoseconds() < hostEnd {
        let n = payload.withUnsafeBytes { write(pair[0], $0.baseAddress, $0.count) }
        if n > 0 { written += UInt64(n) }
    }
    close(pair[0])
    if let t { HostThread.join(t) }
    close(pair[1])
    return (device, (frames: written / UInt64(size), seconds: elapsed(since: hostStart)))
}

for size in sizes {
    do {
        if wanted("virtio-net transmit") { report("virtio-net transmit", size, device: try deviceTransmit(size), host: try hostTransmit(size)) }
        if wanted("virtio-net receive") { report("virtio-net receive", size, device: try deviceReceive(size), host: try hostReceive(size)) }
    } catch {
        fail("virtio-net, \(size)-byte frames: \(error)")
    }
}
for size in [64, 65_536] where wanted("vsock guest to host") {
    do {
        let r = try vsockTransmit(size)
        report("vsock guest to host", size, device: r.device, host: r.host)
    } catch {
        fail("vsock, \(size)-byte writes: \(error)")
    }
}
