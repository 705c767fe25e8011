/// Exits a second over the last interval: by kind, and for the busiest ports and MMIO
/// pages. What `GET /vm/stats` adds to the totals and `swiftvisor top` shows; computed
/// from two snapshots of the statistics the machine takes a second apart.
public struct ExitRates: Sendable {
    public let intervalNanoseconds: UInt64
    /// Per `ExitKind`, indexed by its raw value.
    public let perKind: [Double]
    public let ports: [(address: UInt64, perSecond: Double)]
    public let pages: [(address: UInt64, perSecond: Double)]

    public var total: Double { perKind.reduce(0, +) }

    public init(from a: ExitStatistics, at t0: UInt64, to b: ExitStatistics, at t1: UInt64, top: Int = 8) {
        let interval = t1 > t0 ? t1 - t0 : 1
        intervalNanoseconds = interval
        let seconds = Double(interval) / 1e9
        func rate(_ later: UInt64, _ earlier: UInt64) -> Double { later >= earlier ? Double(later - earlier) / seconds : 0 }
        perKind = ExitKind.allCases.map { rate(b[$0], a[$0]) }
        func spots(_ later: HotSpots, _ earlier: HotSpots) -> [(address: UInt64, perSecond: Double)] {
            var before: [UInt64: UInt64] = [:]
            for e in earlier.sorted { before[e.address] = e.count }
            var out: [(address: UInt64, perSecond: Double)] = []
            for e in later.sorted {
                let r = rate(e.count, before[e.address] ?? 0)
                if r > 0 { out.append((e.address, r)) }
            }
            out.sort { x, y in x.perSecond != y.perSecond ? x.perSecond > y.perSecond : x.address < y.address }
            return Array(out.prefix(top))
        }
        ports = spots(b.ports, a.ports)
        pages = spots(b.mmio, a.mmio)
    }
}
