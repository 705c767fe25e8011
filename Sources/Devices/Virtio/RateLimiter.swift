import CLinux
import Glibc
import Synchronization

/// A token bucket (Firecracker's rate limiter): `capacity` tokens, refilled evenly over
/// each second; an operation takes tokens if there are enough. An operation larger than
/// the whole bucket goes through when the bucket is full (and empties it), so a limit
/// below a guest's request size slows it down instead of stalling it forever. An
/// amount known only afterwards (a received frame's size) is `charge`d: what the bucket
/// lacks becomes a debt that refills pay before anything else may go.
public struct TokenBucket: Sendable, Equatable {
    public let capacity: UInt64
    private var tokens: UInt64
    private var debt: UInt64 = 0
    private var lastRefill: UInt64

    /// `perSecond` tokens a second, starting full.
    public init(perSecond: UInt64, now: UInt64) {
        capacity = max(perSecond, 1)
        tokens = capacity
        lastRefill = now
    }

    private mutating func refill(_ now: UInt64) {
        guard now > lastRefill else { return }
        let elapsed = now - lastRefill
        // tokens per nanosecond = capacity / 1e9, in 128 bits (saturating): a debt may
        // take more than a second's tokens to pay.
        let product = capacity.multipliedFullWidth(by: elapsed)
        let added = product.high < 1_000_000_000 ? UInt64(1_000_000_000).dividingFullWidth(product).quotient : UInt64.max
        if added > 0 {
            let paid = min(added, debt)
            debt -= paid
            let rest = added - paid
            tokens = rest >= capacity - tokens ? capacity : tokens + rest
            lastRefill = now
        }
    }

    /// Takes `amount` tokens if it can (see above for amounts beyond the capacity).
    public mutating func take(_ amount: UInt64, now: UInt64) -> Bool {
        refill(now)
        guard debt == 0 else { return false }
        if amount <= tokens { tokens -= amount; return true }
        if amount > capacity && tokens == capacity { tokens = 0; return true }
        return false
    }

    /// Takes `amount` tokens whether or not they are there (what is missing is owed).
    public mutating func charge(_ amount: UInt64, now: UInt64) {
        refill(now)
        if amount <= tokens { tokens -= amount; return }
        let (d, overflow) = debt.addingReportingOverflow(amount - tokens)
        debt = overflow ? UInt64.max : d
        tokens = 0
    }

    /// Nanoseconds until `amount` tokens (or a full bucket, for more) are there.
    public func wait(for amount: UInt64, now: UInt64) -> UInt64 {
        let (owed, owedOverflow) = min(amount, capacity).addingReportingOverflow(debt)
        let target = owedOverflow ? UInt64.max : owed
        guard target > tokens else { return 0 }
        let missing = target - tokens
        let (q, overflow) = missing.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? 1_000_000_000 : max(q / capacity, 1_000)
    }
}

/// A device's limits: bytes and operations a second, either optional.
public struct RateLimit: Sendable, Equatable {
    public var bytesPerSecond: UInt64?
    public var operationsPerSecond: UInt64?
    public init(bytesPerSecond: UInt64? = nil, operationsPerSecond: UInt64? = nil) {
        self.bytesPerSecond = bytesPerSecond
        self.operationsPerSecond = operationsPerSecond
    }
    public var isLimited: Bool { bytesPerSecond != nil || operationsPerSecond != nil }
}

/// Both buckets of a `RateLimit`, taken together: an operation goes when both allow it.
public struct RateLimiter: Sendable {
    private var bytes: TokenBucket?
    private var operations: TokenBucket?

    public init(_ limit: RateLimit, now: UInt64) {
        bytes = limit.bytesPerSecond.map { TokenBucket(perSecond: $0, now: now) }
        operations = limit.operationsPerSecond.map { TokenBucket(perSecond: $0, now: now) }
    }

    /// Takes one operation of `byteCount` bytes, or returns how many nanoseconds to wait.
    public mutating func admit(bytes byteCount: UInt64, now: UInt64) -> UInt64? {
        var probeBytes = bytes, probeOps = operations
        let bytesOK = probeBytes?.take(byteCount, now: now) ?? true
        let opsOK = probeOps?.take(1, now: now) ?? true
        if bytesOK && opsOK {
            bytes = probeBytes
            operations = probeOps
            return nil
        }
        return max(bytes?.wait(for: byteCount, now: now) ?? 0, operations?.wait(for: 1, now: now) ?? 0)
    }

    /// Bytes an admitted operation turned out to carry (see `TokenBucket.charge`).
    public mutating func charge(bytes byteCount: UInt64, now: UInt64) {
        bytes?.charge(byteCount, now: now)
    }
}

/// A virtio device's rate limiting as the event loop sees it: the buckets, and a timerfd
/// armed for when a refused request will fit. While it waits the device takes nothing
/// from its rings; when the timer fires the device serves its queues again.
public final class RateLimitTimer: Sendable {
    public let limit: RateLimit
    /// -1 when nothing is limited.
    public let fd: Int32
    private struct State {
        var limiter: RateLimiter
        var waiting = false
        var throttled: UInt64 = 0
    }
    private let state: Mutex<State>

    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    public init(_ limit: RateLimit) throws(Failure) {
        self.limit = limit
        state = Mutex(State(limiter: RateLimiter(limit, now: monotonicNanoseconds())))
        fd = limit.isLimited ? timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC | TFD_NONBLOCK)) : -1
        guard !limit.isLimited || fd >= 0 else {
            throw Failure(description: "cannot create a rate limiter's timer: \(String(cString: strerror(errno)))")
        }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Times a request had to wait.
    public var throttled: UInt64 { state.withLock { $0.throttled } }

    /// Whether a request of `bytes` may go now; if not, the timer is armed.
    public func admit(bytes: UInt64) -> Bool {
        guard limit.isLimited else { return true }
        return state.withLock { s in
            if s.waiting { return false }
            guard let wait = s.limiter.admit(bytes: bytes, now: monotonicNanoseconds()) else { return true }
            s.waiting = true
            s.throttled &+= 1
            var spec = itimerspec()
            spec.it_value.tv_sec = Int(wait / 1_000_000_000)
            spec.it_value.tv_nsec = Int(wait % 1_000_000_000)
            timerfd_settime(fd, 0, &spec, nil)
            return false
        }
    }

    /// Charges `bytes` to an operation admitted before its size was known.
    public func charge(bytes: UInt64) {
        guard limit.bytesPerSecond != nil else { return }
        state.withLock { $0.limiter.charge(bytes: bytes, now: monotonicNanoseconds()) }
    }

    /// The timer fired: requests may go again.
    public func fired() {
        var expirations: UInt64 = 0
        _ = read(fd, &expirations, 8)
        state.withLock { $0.waiting = false }
    }
}

