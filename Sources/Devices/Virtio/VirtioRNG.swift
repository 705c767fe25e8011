import CLinux
import Glibc
import GuestMemory
import Synchronization

/// virtio-rng (entropy device, type 4; virtio 1.2, 5.4): one queue of device-writable
/// buffers, each filled from the host kernel's random pool with `getrandom(2)` (no file
/// to open, and it works inside a jail without /dev). A request is capped at 64 KiB, so
/// a guest asking for gigabytes gets them a piece at a time and cannot stall the VMM.
public final class VirtioRNG: VirtioDevice {
    public static let maximumRequest = 64 * 1024
    public let deviceType: UInt32 = 4
    public let offeredFeatures: UInt64 = 0
    public let queueSizes: [UInt16] = [256]

    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    /// Bytes a second (`--rng-limit`): a guest draining the host's entropy is slowed, its
    /// requests left on the ring until the limiter's timer fires.
    private let limiter: RateLimitTimer
    private let completer = Mutex<VirtioCompleter?>(nil)

    /// Checks once that the host's getrandom works, so that a broken host is an error at
    /// start rather than empty buffers later.
    public init(bytesPerSecond: UInt64? = nil) throws(Failure) {
        var probe: UInt8 = 0
        guard getrandom(&probe, 1, 0) == 1 else { throw Failure(description: "getrandom: \(String(cString: strerror(errno)))") }
        do { limiter = try RateLimitTimer(RateLimit(bytesPerSecond: bytesPerSecond)) } catch { throw Failure(description: "virtio-rng: \(error.description)") }
    }

    public var rateLimit: RateLimit { limiter.limit }
    public var throttled: UInt64 { limiter.throttled }
    public var eventFDs: [Int32] { limiter.fd >= 0 ? [limiter.fd] : [] }
    public func attach(_ completer: VirtioCompleter) { self.completer.withLock { $0 = completer } }
    public func eventReady(_ fd: Int32) {
        limiter.fired()
        completer.withLock { $0 }?.serve(queue: 0)
    }

    public func readConfig(offset: Int, size: Int) -> UInt64 { 0 }
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}
    public func reset() {}

    public func process(queue index: Int, _ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int {
        var done = 0
        while let chain = try queue.pop(memory) {
            let wanted = Int(min(chain.writableLength, UInt64(VirtioRNG.maximumRequest)))
            guard limiter.admit(bytes: UInt64(wanted)) else {
                queue.undoPop()
                break
            }
            var bytes = [UInt8](repeating: 0, count: wanted)
            var filled = 0
            while filled < wanted {
                let n = bytes.withUnsafeMutableBytes { b in getrandom(b.baseAddress.map { $0 + filled }, wanted - filled, 0) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                filled += n
            }
            let written = try chain.write(bytes.prefix(filled), to: memory)
            try queue.push(memory, head: chain.head, written: UInt32(written))
            done += 1
        }
        return done
    }
}
