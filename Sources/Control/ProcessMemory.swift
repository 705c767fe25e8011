import VMM
/// This process's resident memory, from `/proc/self/status`.
public enum ProcessMemory {
    /// Resident bytes: now (VmRSS), at the peak (VmHWM), and the anonymous part now
    /// (RssAnon: what this process alone costs the host; code and libraries are shared
    /// page cache). Nil where /proc is absent.
    public static func resident() -> (current: UInt64, peak: UInt64, anonymous: UInt64)? {
        guard let status = FileSystem.readText("/proc/self/status") else { return nil }
        guard let current = field(status, "VmRSS:"), let peak = field(status, "VmHWM:") else { return nil }
        return (current, peak, field(status, "RssAnon:") ?? 0)
    }

    /// Bytes of address space mapped now (VmSize), 0 where /proc is absent.
    public static func addressSpace() -> UInt64 {
        FileSystem.readText("/proc/self/status").flatMap { field($0, "VmSize:") } ?? 0
    }

    /// The "NAME:   1234 kB" line's value in bytes; nil if absent or out of range. Bytes,
    /// not Characters: this runs at the end of every VM whose report is shown, and
    /// grapheme breaking a 1.5 KiB file cost more than the rest of the report.
    static func field(_ status: String, _ name: String) -> UInt64? {
        let text = Array(status.utf8), key = Array(name.utf8)
        var lineStart = 0
        while lineStart < text.count {
            var end = lineStart
            while end < text.count && text[end] != UInt8(ascii: "\n") { end += 1 }
            if end - lineStart > key.count && text[lineStart..<lineStart + key.count].elementsEqual(key) {
                var value: UInt64 = 0
                for b in text[(lineStart + key.count)..<end] where b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") {
                    let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times10.addingReportingOverflow(UInt64(b - UInt8(ascii: "0")))
                    guard !o1 && !o2 else { return nil }
                    value = sum
                }
                let (bytes, overflow) = value.multipliedReportingOverflow(by: 1024)
                return overflow ? nil : bytes
            }
            lineStart = end + 1
        }
        return nil
    }
}
