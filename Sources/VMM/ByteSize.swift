/// Sizes as people write them: `64M`, `1G`, `512K`, `4096`, `2GiB`.
public enum ByteSize {
    /// Parses a size with an optional binary suffix (K, M, G, T; "iB"/"B" allowed).
    public static func parse(_ text: String) -> UInt64? {
        var s = Substring(text.uppercased())
        if s.hasSuffix("IB") { s = s.dropLast(2) } else if s.hasSuffix("B") { s = s.dropLast() }
        var shift: UInt64 = 0
        switch s.last {
        case "K": shift = 10
        case "M": shift = 20
        case "G": shift = 30
        case "T": shift = 40
        default: break
        }
        if shift > 0 { s = s.dropLast() }
        guard !s.isEmpty, let n = UInt64(s) else { return nil }
        let (r, o) = n.multipliedReportingOverflow(by: 1 << shift)
        return o ? nil : r
    }

    /// `67108864` -> `64 MiB`; exact where possible.
    public static func format(_ bytes: UInt64) -> String {
        for (shift, unit) in [(UInt64(40), "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes >= (1 << shift) {
            if bytes % (1 << shift) == 0 { return "\(bytes >> shift) \(unit)" }
            // Whole units and the remainder's tenths apart: `bytes * 10` overflows above
            // 1.8 EB, and any size a user types reaches this through an error message.
            let whole = bytes >> shift, tenth = ((bytes & ((1 << shift) - 1)) * 10) >> shift
            return "\(whole).\(tenth) \(unit)"
        }
        return "\(bytes) bytes"
    }
}
