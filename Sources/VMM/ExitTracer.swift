import Devices
import Glibc
import Synchronization

/// `run --trace FILE`: every exit of every vCPU, in a file `swiftvisor trace` reads
/// (`TraceRecord` has the layout). Each vCPU pushes into its own `TraceRing`; the event
/// loop drains the rings into the file every `drainPeriod`, and `finish` drains them a
/// last time after the vCPU threads have ended, so the last exit is in the file, then
/// writes each ring's drop count.
public final class ExitTracer: Sendable {
    static let drainPeriodNanoseconds: UInt64 = 10_000_000
    let rings: [TraceRing]
    /// Exit times are counted from here.
    let start: UInt64
    private let file = Mutex<Int32>(-1)

    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    /// Opens (truncates) `path` and writes the header.
    init(path: String, vcpus: Int) throws(Failure) {
        var rings: [TraceRing] = []
        for _ in 0..<vcpus {
            guard let r = TraceRing() else { throw Failure(description: "cannot map the exit trace's rings") }
            rings.append(r)
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Failure(description: "cannot write the exit trace to \(path): \(String(cString: strerror(errno)))") }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let wall = UInt64(max(0, now.tv_sec)) &* 1_000_000_000 &+ UInt64(max(0, now.tv_nsec))
        guard FileSystem.writeAll(fd, TraceRecord.header(vcpus: vcpus, wallClockNanoseconds: wall)) else {
            close(fd)
            throw Failure(description: "cannot write the exit trace to \(path): \(String(cString: strerror(errno)))")
        }
        self.rings = rings
        self.start = monotonicNanoseconds()
        file.withLock { $0 = fd }
    }

    /// Writes what the rings hold (the event loop's timer, and `finish`).
    func drain() {
        file.withLock { fd in
            guard fd >= 0 else { return }
            var bytes: [UInt8] = []
            for r in rings { r.drain(into: &bytes) }
            if !bytes.isEmpty { FileSystem.writeAll(fd, bytes) }
        }
    }

    /// After the vCPU threads have ended: the last records, the drop counts, close.
    func finish() {
        drain()
        file.withLock { fd in
            guard fd >= 0 else { return }
            var trailer: [UInt8] = []
            for (i, r) in rings.enumerated() {
                trailer += TraceRecord(time: monotonicNanoseconds() &- start, rip: 0, data: r.dropped, vcpu: UInt16(i), kind: TraceRecord.trailerKind).bytes
            }
            FileSystem.writeAll(fd, trailer)
            close(fd)
            fd = -1
        }
    }

    /// Exits dropped so far, all vCPUs.
    public var dropped: UInt64 { rings.reduce(0) { $0 &+ $1.dropped } }
}
