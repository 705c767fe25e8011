/// Distribution kernels are stripped of their ELF symbol table, but keep the one the
/// kernel itself prints in oopses: the compressed `kallsyms` tables in .rodata. This
/// finds them by their shape, as `vmlinux-to-elf` does, and reads them the way the
/// kernel's `kernel/kallsyms.c` does (the layout `scripts/kallsyms.c` writes for
/// 64-bit kernels with base-relative offsets, 4.6 and later, long names 6.1 and later):
///
///     kallsyms_offsets       n x int32           each label 8-byte aligned
///     kallsyms_relative_base u64
///     kallsyms_num_syms      u32                 n
///     kallsyms_names         n x (length, token bytes)
///     kallsyms_markers       ceil(n/256) x u32   offset of every 256th name
///     kallsyms_token_table   256 NUL-terminated tokens
///     kallsyms_token_index   256 x u16           offset of each token
///
/// Every step is checked against the next (markers against names, the count against
/// both), so a table that only looks right is not believed.
extension KernelSymbols {
    public init?(kallsymsIn bytes: [UInt8]) {
        guard let table = KallsymsTables.locate(in: bytes) else { return nil }
        self.init(table.symbols(bytes))
    }
}

struct KallsymsTables {
    var tokenTable: Int
    var tokenIndex: [Int]
    var names: Int
    var count: Int
    var offsets: Int
    var relativeBase: UInt64

    /// Digits are never merged into longer tokens' slots (symbol names use them), so
    /// the token table holds "0", "1", ... "9" back to back.
    static let digits: [UInt8] = Array("0\u{0}1\u{0}2\u{0}3\u{0}4\u{0}5\u{0}6\u{0}7\u{0}8\u{0}9\u{0}".utf8)

    static func locate(in b: [UInt8]) -> KallsymsTables? {
        var from = 0
        while let at = find(digits, in: b, from: from) {
            from = at + 1
            if let t = tables(around: at, in: b) { return t }
        }
        return nil
    }

    private static func find(_ pattern: [UInt8], in b: [UInt8], from: Int) -> Int? {
        guard b.count >= pattern.count else { return nil }
        var i = from
        let last = b.count - pattern.count
        while i <= last {
            if b[i] == pattern[0] {
                var j = 1
                while j < pattern.count && b[i + j] == pattern[j] { j += 1 }
                if j == pattern.count { return i }
            }
            i += 1
        }
        return nil
    }

    private static func u16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
    private static func u32(_ b: [UInt8], _ o: Int) -> UInt32 {
        UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
    }
    private static func u64(_ b: [UInt8], _ o: Int) -> UInt64 { UInt64(u32(b, o)) | UInt64(u32(b, o + 4)) << 32 }

    /// The tables around a "0\01\0...9\0" found at `digitsAt`, if they check out.
    private static func tables(around digitsAt: Int, in b: [UInt8]) -> KallsymsTables? {
        // Back 0x30 tokens to the table's start (tokens are never empty).
        var start = digitsAt
        for _ in 0..<0x30 {
            guard start >= 2, b[start - 1] == 0, b[start - 2] != 0 else { return nil }
            var s = start - 2
            while s > 0 && b[s - 1] != 0 { s -= 1 }
            start = s
        }
        // Forward 256 tokens, noting where each starts: the index must say the same.
        var starts: [Int] = []
        var o = start
        for _ in 0..<256 {
            guard o < b.count, b[o] != 0 else { return nil }
            starts.append(o - start)
            while o < b.count && b[o] != 0 { o += 1 }
            o += 1
        }
        let indexAt = (o + 7) & ~7
        guard indexAt + 512 <= b.count else { return nil }
        for i in 0..<256 where u16(b, indexAt + 2 * i) != starts[i] { return nil }

        return numberOfSymbols(tokenTable: start, tokenIndex: starts, in: b)
    }

    /// Finds kallsyms_num_syms (8-aligned, somewhere before the token table) by what
    /// must follow it: n names, then ceil(n/256) markers ending at the token table, or
    /// at the `kallsyms_seqs_of_names` (3 bytes a symbol) that 6.2 put in between and
    /// distributions backported into 6.1.
    private static func numberOfSymbols(tokenTable: Int, tokenIndex: [Int], in b: [UInt8]) -> KallsymsTables? {
        func roundUp8(_ x: Int) -> Int { (x + 7) & ~7 }
        var p = (tokenTable - 16) & ~7
        // Names take about 20 bytes a symbol (1.6 MiB for 80,000); 16 MiB bounds the
        // scan, and so the work a file that only looks like kallsyms can cause.
        let limit = max(8, tokenTable - (16 << 20))
        while p >= limit {
            let n = Int(u32(b, p))
            p -= 8
            guard n > 0 && n < 1 << 22 else { continue }
            let m = (n + 255) / 256
            for between in [0, roundUp8(3 * n)] {
                let markersAt = tokenTable - between - roundUp8(4 * m)
                guard markersAt > p + 16 else { continue }
                var markers: [UInt32] = []
                markers.reserveCapacity(m)
                for i in 0..<m {
                    let v = u32(b, markersAt + 4 * i)
                    if i == 0 ? v != 0 : v <= markers[i - 1] { break }
                    markers.append(v)
                }
                guard markers.count == m, checkNames(at: p + 16, count: n, markers: markers, markersAt: markersAt, in: b) != nil else { continue }
                // kallsyms_relative_base just before the count, the offsets before that.
                let baseAt = p
                let offsetsAt = baseAt - roundUp8(4 * n)
                guard offsetsAt >= 0 else { return nil }
                return KallsymsTables(tokenTable: tokenTable, tokenIndex: tokenIndex, names: p + 16, count: n,
                                      offsets: offsetsAt, relativeBase: u64(b, baseAt))
            }
        }
        return nil
    }

    private static func checkNames(at names: Int, count: Int, markers: [UInt32], markersAt: Int, in b: [UInt8]) -> Int? {
        var o = names
        for i in 0..<count {
            if i % 256 == 0 { guard Int(markers[i / 256]) == o - names else { return nil } }
            guard o < markersAt else { return nil }
            var length = Int(b[o])
            o += 1
            if length & 0x80 != 0 { // two-byte length (6.1's "big" symbols)
                guard o < markersAt else { return nil }
                length = length & 0x7F | Int(b[o]) << 7
                o += 1
            }
            guard length > 0 else { return nil }
            o += length
        }
        return o <= markersAt && markersAt - o < 8 ? count : nil
    }

    func symbols(_ b: [UInt8]) -> [KernelSymbols.Symbol] {
        let tokens: [[UInt8]] = tokenIndex.map { start in
            var e = tokenTable + start
            while b[e] != 0 { e += 1 }
            return Array(b[(tokenTable + start)..<e])
        }
        // Offsets are absolute where non-negative (per-CPU variables) and count down
        // from the base where negative (KALLSYMS_ABSOLUTE_PERCPU, as x86-64 has);
        // kernels without it count up from the base.
        var negative = 0
        for i in 0..<count where Int32(bitPattern: KallsymsTables.u32(b, offsets + 4 * i)) < 0 { negative += 1 }
        let absolutePerCPU = negative > count / 2
        var result: [KernelSymbols.Symbol] = []
        result.reserveCapacity(count)
        var o = names
        for i in 0..<count {
            var length = Int(b[o])
            o += 1
            if length & 0x80 != 0 { length = length & 0x7F | Int(b[o]) << 7; o += 1 }
            var text: [UInt8] = []
            for t in b[o..<(o + length)] { text += tokens[Int(t)] }
            o += length
            guard let type = text.first, "tTwW".utf8.contains(type) else { continue } // code: what a RIP points at
            let raw = Int32(bitPattern: KallsymsTables.u32(b, offsets + 4 * i))
            let address = absolutePerCPU
                ? (raw >= 0 ? UInt64(raw) : relativeBase &- 1 &- UInt64(bitPattern: Int64(raw)))
                : relativeBase &+ UInt64(UInt32(bitPattern: raw))
            result.append(KernelSymbols.Symbol(address: address, size: 0, name: String(decoding: text.dropFirst(), as: UTF8.self)))
        }
        return result
    }
}
