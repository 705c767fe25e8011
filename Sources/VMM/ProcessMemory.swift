import Glibc

/// This process's resident memory, from `/proc/self/status`.
public enum ProcessMemory {
    /// `(current, peak)` resident bytes (VmRSS, VmHWM), or nil where /proc is absent.
    public static func resident() -> (current: UInt64, peak: UInt64)? {
        guard let f = fopen("/proc/self/status", "r") else { return nil }
        defer { fclose(f) }
        var current: UInt64? = nil, peak: UInt64? = nil
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), f) != nil {
            let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if s.hasPrefix("VmRSS:") { current = kilobytes(s) }
            if s.hasPrefix("VmHWM:") { peak = kilobytes(s) }
        }
        guard let current, let peak else { return nil }
        return (current, peak)
    }

    private static func kilobytes(_ line: String) -> UInt64? {
        let digits = line.filter { $0.isNumber }
        return UInt64(digits).map { $0 * 1024 }
    }
}
