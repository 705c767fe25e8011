import VMM
/// This process's resident memory, from `/proc/self/status`.
public enum ProcessMemory {
    /// Resident bytes: now (VmRSS), at the peak (VmHWM), and the anonymous part now
    /// (RssAnon: what this process alone costs the host; code and libraries are shared
    /// page cache). Nil where /proc is absent.
    public static func resident() -> (current: UInt64, peak: UInt64, anonymous: UInt64)? {
        guard let status = FileSystem.readText("/proc/self/status") else { return nil }
        var current: UInt64? = nil, peak: UInt64? = nil, anonymous: UInt64 = 0
        for s in status.split(separator: "\n") {
            if s.hasPrefix("VmRSS:") { current = kilobytes(s) }
            if s.hasPrefix("VmHWM:") { peak = kilobytes(s) }
            if s.hasPrefix("RssAnon:") { anonymous = kilobytes(s) ?? 0 }
        }
        guard let current, let peak else { return nil }
        return (current, peak, anonymous)
    }

    /// Bytes of address space mapped now (VmSize), 0 where /proc is absent.
    public static func addressSpace() -> UInt64 {
        for s in (FileSystem.readText("/proc/self/status") ?? "").split(separator: "\n") where s.hasPrefix("VmSize:") {
            return kilobytes(s) ?? 0
        }
        return 0
    }

    private static func kilobytes(_ line: Substring) -> UInt64? {
        let digits = line.filter { $0.isNumber }
        return UInt64(digits).flatMap { $0.multipliedReportingOverflow(by: 1024).overflow ? nil : $0 * 1024 }
    }
}
