import Glibc

/// Monotonic nanoseconds (vDSO `clock_gettime`: no system call on the exit path). In
/// Devices, the lowest module that keeps time (rate limiters), for every module above.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
