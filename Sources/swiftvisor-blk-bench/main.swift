// swiftvisor-blk-bench: virtio-blk's device model measured against its own I/O engine,
// for `scripts/bench --virtio-blk`. Guest kernel mode is emulated on this project's
// hosts, so a guest cannot measure a device here; instead this program is the guest
// driver: it lays descriptors out in guest memory, notifies through an eventfd (what
// KVM's ioeventfd would signal), and waits for the interrupt on another eventfd (what
// an irqfd would carry: an MSI-X vector of the virtio-pci transport, the default), while
// the device runs exactly as in the VMM: served by an
// event loop on its own thread, its I/O on io_uring or the thread pool. The same
// pattern is then issued to the same engine directly, without the device, and both
// figures are printed as JSON lines.
//
//     swiftvisor-blk-bench IMAGE [--engine io_uring|threads] [--seconds S] [--only NAME]
import CLinux
import Devices
import Glibc
import GuestMemory
import Synchronization
import Control
import VMM

func fail(_ message: String) -> Never {
    StandardStream.error("swiftvisor-blk-bench: \(message)\n")
    exit(1)
}

struct Settings: Sendable {
    var image = ""
    var engine = "io_uring"
    var seconds = 2.0
    /// Only the patterns whose name contains this.
    var only: String?
}

let settings: Settings = {
    var s = Settings()
    var arguments = Array(CommandLine.arguments.dropFirst())
    guard let image = arguments.first else { fail("usage: swiftvisor-blk-bench IMAGE [--engine io_uring|threads] [--seconds S]") }
    s.image = image
    arguments.removeFirst()
    while let flag = arguments.first {
        arguments.removeFirst()
        guard let value = arguments.first else { fail("\(flag) needs a value") }
        arguments.removeFirst()
        switch flag {
        case "--engine": s.engine = value
        case "--seconds": s.seconds = Double(value) ?? s.seconds
        case "--only": s.only = value
        default: fail("unknown option \(flag)")
        }
    }
    return s
}()
let image = settings.image
let engineName = settings.engine
let seconds = settings.seconds

func makeEngine() -> any BlockBackend {
    switch engineName {
    case "io_uring": if let r = IOURingBlockBackend(entries: 256) { return r }; fail("io_uring is not available here")
    case "threads": if let t = ThreadPoolBlockBackend(workers: 4) { return t }; fail("cannot start the thread pool")
    default: fail("--engine: io_uring or threads")
    }
}

/// MSI-X vectors delivered to an eventfd, as KVM's irqfd carries them to a vCPU.
final class EventFDVectors: MSIVectorSink {
    let fd = eventfd(0, Int32(EFD_CLOEXEC))
    func send(vector: Int, address: UInt64, data: UInt32) { var one: UInt64 = 1; _ = write(fd, &one, 8) }
}

struct Pattern {
    let name: String
    let write: Bool
    let size: Int
    let depth: Int
    let random: Bool
}

let patterns = [
    Pattern(name: "sequential 1 MiB reads", write: false, size: 1 << 20, depth: 8, random: false),
    Pattern(name: "sequential 1 MiB writes", write: true, size: 1 << 20, depth: 8, random: false),
    Pattern(name: "random 4 KiB reads, queue depth 1", write: false, size: 4096, depth: 1, random: true),
    Pattern(name: "random 4 KiB reads, queue depth 32", write: false, size: 4096, depth: 32, random: true),
]

let memory: GuestMemory
do { memory = try GuestMemory(ranges: [(0, 64 << 20)]) } catch { fail("guest memory: \(error)") }
let descriptors: UInt64 = 0x10000, available: UInt64 = 0x11000, used: UInt64 = 0x12000
let headers: UInt64 = 0x20000, statuses: UInt64 = 0x30000, data: UInt64 = 0x100_0000
let queueSize: UInt16 = 256
let diskBytes: UInt64 = {
    let fd = open(image, O_RDONLY)
    defer { close(fd) }
    return fd < 0 ? 0 : UInt64(max(lseek(fd, 0, SEEK_END), 0))
}()
guard diskBytes >= 64 << 20 else { fail("\(image): needs an image of at least 64 MiB") }

/// Where request `n` of a pattern goes: sequential, or a pseudo-random aligned offset.
func offset(_ p: Pattern, _ n: UInt64) -> UInt64 {
    let slots = diskBytes / UInt64(p.size)
    if !p.random { return (n % slots) * UInt64(p.size) }
    var x = n &* 0x9E37_79B9_7F4A_7C15
    x ^= x >> 29
    return (x % slots) * UInt64(p.size)
}

// MARK: Through the device

func throughDevice(_ p: Pattern) throws -> (bytes: UInt64, seconds: Double) {
    let block = try VirtioBlock(path: image, memory: memory, backend: makeEngine())
    let irq = EventFDVectors()
    // The default transport, as Linux drives it: virtio-pci with MSI-X, so an interrupt
    // needs no register access (no acknowledgement, no ISR read).
    let transport = VirtioPCI(device: block, memory: memory, bar: 0xD000_0000, intx: nil, intxLine: 0, vectors: irq)
    func set(_ o: UInt64, _ size: Int, _ v: UInt64) { transport.write(region: 0, offset: o, data: AccessData(size: size, value: v)) }
    func get(_ o: UInt64, _ size: Int) -> UInt64 { var d = AccessData(size: size); transport.read(region: 0, offset: o, data: &d); return d.value }
    // MSI-X on, vector 1 (queue 0) unmasked; then VERSION_1, queue 0, DRIVER_OK.
    let msix = Int(transport.readConfig(offset: 0x34, size: 1))
    transport.writeConfig(offset: msix + 2, size: 2, value: 0x8000)
    set(VirtioPCI.msixTableOffset + 16, 4, 0xFEE0_0000)
    set(VirtioPCI.msixTableOffset + 24, 4, 0x41)
    set(VirtioPCI.msixTableOffset + 28, 4, 0)
    set(0x14, 1, 1); set(0x14, 1, 3)
    set(0x08, 4, 1); set(0x0C, 4, 1)
    set(0x14, 1, 11)
    set(0x16, 2, 0); set(0x18, 2, UInt64(queueSize)); set(0x1A, 2, 1)
    set(0x20, 8, descriptors); set(0x28, 8, available); set(0x30, 8, used)
    set(0x1C, 2, 1); set(0x14, 1, 15)
    guard get(0x14, 1) == 15 else { throw Failure("the device refused the driver (status \(get(0x14, 1)))") }

    // The device's side: an event loop on its own thread, as in the VMM.
    let loop = try EventLoop()
    let notify = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
    let done = Atomic<Bool>(false)
    loop.add(notify) { _ in var n: UInt64 = 0; _ = read(notify, &n, 8); transport.notifyAll() }
    for fd in block.eventFDs { loop.add(fd) { _ in block.eventReady(fd) } }
    guard let thread = HostThread.spawn({ loop.run(until: { done.load(ordering: .acquiring) }) }) else { throw Failure("no thread") }
    defer {
        done.store(true, ordering: .releasing)
        loop.wake()
        HostThread.join(thread)
        close(notify)
        close(irq.fd)
    }

    var availableIndex: UInt16 = 0, seenUsed: UInt16 = 0, issued: UInt64 = 0, bytes: UInt64 = 0
    func submit(slot: Int) throws {
        let h = headers + UInt64(slot) * 16, s = statuses + UInt64(slot), d = data + UInt64(slot * p.size)
        try memory.write(p.write ? UInt32(1) : 0, at: GuestAddress(h))
        try memory.write(UInt32(0), at: GuestAddress(h + 4))
        try memory.write(offset(p, issued) / 512, at: GuestAddress(h + 8))
        let first = UInt16(slot * 3)
        for (i, (a, n, flags)) in [(h, UInt32(16), UInt16(1)), (d, UInt32(p.size), UInt16(1 | (p.write ? 0 : 2))), (s, UInt32(1), UInt16(2))].enumerated() {
            let at = descriptors + UInt64(first + UInt16(i)) * 16
            try memory.write(a, at: GuestAddress(at)); try memory.write(n, at: GuestAddress(at + 8))
            try memory.write(flags, at: GuestAddress(at + 12)); try memory.write(first + UInt16(i) + 1, at: GuestAddress(at + 14))
        }
        try memory.write(first, at: GuestAddress(available + 4 + 2 * UInt64(availableIndex % queueSize)))
        availableIndex &+= 1
        issued += 1
    }
    let start = monotonicNanoseconds(), end = start + UInt64(seconds * 1e9)
    for slot in 0..<p.depth { try submit(slot: slot) }
    try memory.write(availableIndex, at: GuestAddress(available + 2))
    var one: UInt64 = 1
    _ = write(notify, &one, 8)
    var inFlight = p.depth
    while inFlight > 0 {
        var n: UInt64 = 0
        _ = read(irq.fd, &n, 8) // the "interrupt"
        let now = try memory.read(UInt16.self, at: GuestAddress(used + 2))
        var resubmitted = false
        while seenUsed != now {
            let head = try memory.read(UInt32.self, at: GuestAddress(used + 4 + 8 * UInt64(seenUsed % queueSize)))
            seenUsed &+= 1
            let slot = Int(head) / 3
            guard try memory.read(UInt8.self, at: GuestAddress(statuses + UInt64(slot))) == 0 else { throw Failure("an I/O error") }
            bytes += UInt64(p.size)
            inFlight -= 1
            if monotonicNanoseconds() < end {
                try submit(slot: slot)
                inFlight += 1
                resubmitted = true
            }
        }
        if resubmitted {
            try memory.write(availableIndex, at: GuestAddress(available + 2))
            _ = write(notify, &one, 8)
        }
    }
    return (bytes, Double(monotonicNanoseconds() - start) / 1e9)
}

// MARK: The engine alone

func direct(_ p: Pattern) throws -> (bytes: UInt64, seconds: Double) {
    let engine = makeEngine()
    let fd = open(image, O_RDWR | O_CLOEXEC)
    guard fd >= 0 else { throw Failure("cannot open \(image)") }
    defer { close(fd) }
    var issued: UInt64 = 0, bytes: UInt64 = 0
    func submit(slot: Int) throws {
        let v = try memory.ioVectors([(GuestAddress(data + UInt64(slot * p.size)), UInt64(p.size))])
        let o = offset(p, issued)
        guard engine.submit(p.write ? .write(offset: o) : .read(offset: o), fd: fd, vectors: v, token: UInt64(slot)) else { throw Failure("submit") }
        issued += 1
    }
    let start = monotonicNanoseconds(), end = start + UInt64(seconds * 1e9)
    for slot in 0..<p.depth { try submit(slot: slot) }
    engine.flush()
    var inFlight = p.depth
    while inFlight > 0 {
        var pfd = pollfd(fd: engine.completionFD, events: Int16(POLLIN), revents: 0)
        _ = poll(&pfd, 1, -1)
        for c in engine.reap() {
            guard c.result == p.size else { throw Failure("an I/O error (\(c.result))") }
            bytes += UInt64(p.size)
            inFlight -= 1
            if monotonicNanoseconds() < end { try submit(slot: Int(c.token)); inFlight += 1 }
        }
        engine.flush()
    }
    return (bytes, Double(monotonicNanoseconds() - start) / 1e9)
}

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

for p in patterns where settings.only.map({ p.name.contains($0) }) ?? true {
    do {
        _ = try direct(Pattern(name: p.name, write: p.write, size: p.size, depth: p.depth, random: p.random)) // warm the page cache
        let host = try direct(p)
        let device = try throughDevice(p)
        let perSecond = { (r: (bytes: UInt64, seconds: Double)) -> Double in
            p.size >= 1 << 20 ? Double(r.bytes) / r.seconds / 1e6 : Double(r.bytes) / Double(p.size) / r.seconds
        }
        let unit = p.size >= 1 << 20 ? "MB/s" : "IOPS"
        let line: JSONValue = .object([("pattern", .string(p.name)), ("engine", .string(engineName)), ("unit", .string(unit)),
                                       ("device", .double(perSecond(device))), ("host", .double(perSecond(host)))])
        StandardStream.output(line.rendered + "\n")
    } catch {
        fail("\(p.name): \(error)")
    }
}
