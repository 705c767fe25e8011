/// A trace file read back: its records and what the trailer says was dropped.
public struct TraceFile: Sendable {
    public let vcpus: Int
    public let wallClockStart: UInt64
    public let records: [TraceRecord]
    /// Exits each vCPU's ring could not keep; nil when the file has no trailer (the
    /// VMM did not end cleanly: what was written before is still good).
    public let dropped: [UInt64]?

    public struct Invalid: Error, CustomStringConvertible, Sendable { public let description: String }

    /// Parses a whole file. Every field is checked before use; a file cut short in a
    /// record keeps the whole records before it.
    public static func parse(_ bytes: [UInt8]) throws(Invalid) -> TraceFile {
        guard bytes.count >= TraceRecord.headerSize, Array(bytes[0..<8]) == TraceRecord.magic else {
            throw Invalid(description: "not a Swiftvisor exit trace (no SVTRACE header)")
        }
        let slice = bytes[...]
        func get(_ at: Int, _ n: Int) -> UInt64 { (0..<n).reduce(UInt64(0)) { $0 | UInt64(slice[at + $1]) << (8 * UInt64($1)) } }
        guard get(8, 4) == UInt64(TraceRecord.version) else {
            throw Invalid(description: "trace format version \(get(8, 4)); this swiftvisor reads version \(TraceRecord.version)")
        }
        guard get(12, 4) == UInt64(TraceRecord.size) else { throw Invalid(description: "trace records of \(get(12, 4)) bytes; version 1 has 48") }
        let vcpus = Int(get(16, 4))
        guard vcpus >= 1 && vcpus <= 255 else { throw Invalid(description: "a trace of \(vcpus) vCPUs") }
        var records: [TraceRecord] = []
        records.reserveCapacity((bytes.count - TraceRecord.headerSize) / TraceRecord.size)
        var dropped: [UInt64]? = nil
        var offset = TraceRecord.headerSize
        while bytes.count - offset >= TraceRecord.size {
            let r = TraceRecord(slice, at: offset)
            offset += TraceRecord.size
            if r.kind == TraceRecord.trailerKind {
                if dropped == nil { dropped = [UInt64](repeating: 0, count: vcpus) }
                if Int(r.vcpu) < vcpus { dropped?[Int(r.vcpu)] = r.data }
                continue
            }
            records.append(r)
        }
        return TraceFile(vcpus: vcpus, wallClockStart: get(24, 8), records: records, dropped: dropped)
    }
}

/// Which records `swiftvisor trace` shows.
public struct TraceFilter: Sendable {
    public var vcpu: Int?
    public var kinds: Set<UInt8>?
    public var port: UInt64?
    /// Nanoseconds since the trace started, inclusive.
    public var from: UInt64?
    public var to: UInt64?
    public init(vcpu: Int? = nil, kinds: Set<UInt8>? = nil, port: UInt64? = nil, from: UInt64? = nil, to: UInt64? = nil) {
        self.vcpu = vcpu
        self.kinds = kinds
        self.port = port
        self.from = from
        self.to = to
    }

    public func matches(_ r: TraceRecord) -> Bool {
        if let vcpu, Int(r.vcpu) != vcpu { return false }
        if let kinds, !kinds.contains(r.kind) { return false }
        if let port, !(r.isPortIO && r.address == port) { return false }
        if let from, r.time < from { return false }
        if let to, r.time > to { return false }
        return true
    }
}

extension TraceRecord {
    /// One line: when (seconds), vCPU, kind, port or address, size and data, RIP and
    /// the VMM's time on it.
    public var line: String {
        let name = exitKind?.name ?? "kind-\(kind)"
        var text = TraceSummary.seconds(time, places: 6) + "  vCPU \(vcpu)  " + name.padding(12)
        if isPortIO { text += "  port " + TraceSummary.hex(address).padding(7) }
        if isMMIO { text += "  addr " + TraceSummary.hex(address).padding(12) }
        if flags & TraceRecord.hasAccess != 0 { text += "  size \(size)  data " + TraceSummary.hex(data).padding(10) }
        return text + "  rip " + TraceSummary.hex(rip) + "  vmm " + TraceSummary.micro(UInt64(handlingNanoseconds))
    }
}

/// What a trace says in aggregate: exits by kind, the busiest ports and MMIO pages,
/// exits per second over time, and how long the VMM took per exit.
public struct TraceSummary: Sendable {
    public let total: Int
    public let perVCPU: [Int]
    public let dropped: [UInt64]?
    public let byKind: [(name: String, count: Int)]
    public let ports: [(port: UInt64, count: Int)]
    public let pages: [(page: UInt64, count: Int)]
    /// Exits in each `bucket` of time from the first record's.
    public let timeline: [Int]
    public let bucketNanoseconds: UInt64
    public let span: UInt64
    /// p50, p90, p99 and the maximum of the VMM's time per exit, in ns.
    public let handling: (p50: UInt64, p90: UInt64, p99: UInt64, max: UInt64)

    public init(_ records: [TraceRecord], vcpus: Int, dropped: [UInt64]?, top: Int = 10) {
        total = records.count
        var perVCPU = [Int](repeating: 0, count: max(vcpus, 1))
        var kinds: [UInt8: Int] = [:], ports: [UInt64: Int] = [:], pages: [UInt64: Int] = [:]
        var first = UInt64.max, last: UInt64 = 0
        for r in records {
            if Int(r.vcpu) < perVCPU.count { perVCPU[Int(r.vcpu)] += 1 }
            kinds[r.kind, default: 0] += 1
            if r.isPortIO { ports[r.address, default: 0] += 1 }
            if r.isMMIO { pages[r.address & ~0xFFF, default: 0] += 1 }
            first = min(first, r.time)
            last = max(last, r.time)
        }
        self.perVCPU = perVCPU
        self.dropped = dropped
        byKind = kinds.map { (ExitKind(rawValue: Int($0.key))?.name ?? "kind-\($0.key)", $0.value) }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        self.ports = Array(ports.map { ($0.key, $0.value) }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }.prefix(top))
        self.pages = Array(pages.map { ($0.key, $0.value) }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }.prefix(top))
        span = records.isEmpty ? 0 : last - first
        // One-second buckets, or wider so that at most 60 are shown.
        var bucket: UInt64 = 1_000_000_000
        while span / bucket >= 60 { bucket *= 2 }
        bucketNanoseconds = bucket
        var timeline = [Int](repeating: 0, count: records.isEmpty ? 0 : Int(span / bucket) + 1)
        for r in records { timeline[Int((r.time - first) / bucket)] += 1 }
        self.timeline = timeline
        let sorted = records.map { UInt64($0.handlingNanoseconds) }.sorted()
        func percentile(_ p: Int) -> UInt64 { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, sorted.count * p / 100)] }
        handling = (percentile(50), percentile(90), percentile(99), sorted.last ?? 0)
    }

    public var text: String {
        var t = "exits: \(total) over \(TraceSummary.seconds(span, places: 3)) s ("
            + perVCPU.enumerated().map { "vCPU \($0.offset): \($0.element)" }.joined(separator: ", ") + ")"
        if let dropped { t += "; dropped: \(dropped.reduce(0, &+))" } else { t += "; no trailer (the VMM did not end cleanly)" }
        t += "\nby kind: " + byKind.map { "\($0.name) \($0.count)" }.joined(separator: ", ")
        if !ports.isEmpty { t += "\nbusiest ports: " + ports.map { "\(TraceSummary.hex($0.port)) \($0.count)" }.joined(separator: ", ") }
        if !pages.isEmpty { t += "\nbusiest MMIO pages: " + pages.map { "\(TraceSummary.hex($0.page)) \($0.count)" }.joined(separator: ", ") }
        if !timeline.isEmpty {
            t += "\nexits per \(bucketNanoseconds == 1_000_000_000 ? "second" : TraceSummary.seconds(bucketNanoseconds, places: 0) + " s"):"
            for (i, n) in timeline.enumerated() {
                t += "\n  " + TraceSummary.seconds(UInt64(i) * bucketNanoseconds, places: 0).padding(6, left: true) + " s  \(n)"
            }
        }
        t += "\ntime in the VMM per exit: p50 \(TraceSummary.micro(handling.p50)), p90 \(TraceSummary.micro(handling.p90)), "
            + "p99 \(TraceSummary.micro(handling.p99)), max \(TraceSummary.micro(handling.max))\n"
        return t
    }

    public static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    /// `ns` as seconds with `places` decimals, without Foundation's formatting.
    public static func seconds(_ ns: UInt64, places: Int) -> String {
        let whole = ns / 1_000_000_000
        guard places > 0 else { return String(whole) }
        var scale: UInt64 = 1
        for _ in 0..<min(places, 9) { scale *= 10 }
        let fraction = String((ns % 1_000_000_000) / (1_000_000_000 / scale))
        return "\(whole)." + String(repeating: "0", count: max(0, min(places, 9) - fraction.count)) + fraction
    }

    /// `ns` in microseconds with one decimal.
    public static func micro(_ ns: UInt64) -> String { "\(ns / 1000).\((ns % 1000) / 100) µs" }
}

extension String {
    /// Padded with spaces to `width` (on the left for numbers).
    func padding(_ width: Int, left: Bool = false) -> String {
        let pad = String(repeating: " ", count: max(0, width - count))
        return left ? pad + self : self + pad
    }
}
