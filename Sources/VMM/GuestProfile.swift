import Boot

/// A finished profile: every vCPU's samples, and how to show them.
public struct GuestProfile: Sendable {
    public let samples: [ProfileSample: UInt64]
    /// Per vCPU, how many samples it gave.
    public let perVCPU: [UInt64]
    /// Samples not kept (more distinct stacks than `ProfileRecorder.maximumStacks`).
    public let dropped: UInt64
    public let hz: Int

    public init(samples: [ProfileSample: UInt64], perVCPU: [UInt64], dropped: UInt64, hz: Int) {
        self.samples = samples
        self.perVCPU = perVCPU
        self.dropped = dropped
        self.hz = hz
    }

    public var total: UInt64 { perVCPU.reduce(0, &+) }

    /// A frame's name: the function (no offset, so a flame graph merges a function's
    /// samples), else the address in hex.
    static func name(_ address: UInt64, _ symbols: KernelSymbols?) -> String {
        if let n = symbols?.name(for: address) {
            return n.firstIndex(of: "+").map { String(n[..<$0]) } ?? n
        }
        return "0x" + String(address, radix: 16)
    }

    /// Folded stacks, one line each, root first: `cpl0;outer;...;leaf COUNT` (the
    /// input of flamegraph.pl and speedscope), sorted by count.
    public func folded(symbols: KernelSymbols?) -> String {
        var lines: [String: UInt64] = [:]
        for (s, n) in samples {
            let key = (["cpl\(s.cpl)"] + s.frames.reversed().map { GuestProfile.name($0, symbols) }).joined(separator: ";")
            lines[key, default: 0] &+= n
        }
        return lines.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .map { "\($0.key) \($0.value)\n" }.joined()
    }

    /// The `top` functions by samples at the leaf, with their share: what stderr shows.
    public func table(symbols: KernelSymbols?, top: Int = 15) -> String {
        var leaves: [String: (cpl: UInt8, count: UInt64)] = [:]
        for (s, n) in samples {
            let key = GuestProfile.name(s.frames.first ?? 0, symbols)
            leaves[key] = (s.cpl, (leaves[key]?.count ?? 0) &+ n)
        }
        let total = max(self.total, 1)
        var text = "profile: \(self.total) samples at \(hz) Hz (" + perVCPU.enumerated().map { "vCPU \($0.offset): \($0.element)" }.joined(separator: ", ") + ")"
        if dropped > 0 { text += ", \(dropped) not kept (too many distinct stacks)" }
        text += "\n   share  samples  cpl  function\n"
        for (name, v) in leaves.sorted(by: { $0.value.count != $1.value.count ? $0.value.count > $1.value.count : $0.key < $1.key }).prefix(top) {
            let share = Double(v.count) * 100 / Double(total)
            let shareText = String(Int(share * 10) / 10) + "." + String(Int(share * 10) % 10)
            text += String(repeating: " ", count: max(0, 7 - shareText.count)) + shareText + "%"
            let count = String(v.count)
            text += String(repeating: " ", count: max(1, 9 - count.count)) + count + "    \(v.cpl)  \(name)\n"
        }
        return text
    }
}

/// One sample: the privilege level the vCPU ran at and where (leaf first: RIP, then
/// the return addresses the frame-pointer chain gives).
public struct ProfileSample: Hashable, Sendable {
    public let cpl: UInt8
    public let frames: [UInt64]
    public init(cpl: UInt8, frames: [UInt64]) {
        self.cpl = cpl
        self.frames = frames
    }
}
