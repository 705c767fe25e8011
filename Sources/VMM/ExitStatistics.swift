/// What one vCPU (or, summed, a machine) spent its time on: exits by kind, the busiest
/// I/O ports and MMIO pages, and time inside the guest against time in the VMM.
public struct ExitStatistics: Sendable, Equatable {
    public var counts = [UInt64](repeating: 0, count: ExitKind.allCases.count)
    /// Nanoseconds inside `KVM_RUN` (the guest running, plus the exit round trip).
    public var guestNanoseconds: UInt64 = 0
    /// Nanoseconds between exits, handling them in the VMM.
    public var vmmNanoseconds: UInt64 = 0
    /// Times `KVM_RUN` was entered.
    public var entries: UInt64 = 0
    /// The busiest port-I/O and MMIO addresses (bounded; see `HotSpots`).
    public var ports = HotSpots()
    public var mmio = HotSpots()
    /// Where the vCPU was when its run loop ended (per-vCPU statistics only): what a
    /// report on a hung or stopped guest needs.
    public var finalRIP: UInt64?

    public init() {}

    public subscript(kind: ExitKind) -> UInt64 {
        get { counts[kind.rawValue] }
        set { counts[kind.rawValue] = newValue }
    }

    public var totalExits: UInt64 { counts.reduce(0, +) }

    public mutating func add(_ other: ExitStatistics) {
        for i in counts.indices { counts[i] += other.counts[i] }
        guestNanoseconds += other.guestNanoseconds
        vmmNanoseconds += other.vmmNanoseconds
        entries += other.entries
        ports.add(other.ports)
        mmio.add(other.mmio)
    }
}

/// Counts per address for a few dozen addresses, in fixed storage so that counting on
/// the exit path never allocates. Addresses beyond capacity are summed in `others`.
public struct HotSpots: Sendable, Equatable {
    public static let capacity = 32
    public private(set) var addresses = [UInt64](repeating: 0, count: HotSpots.capacity)
    public private(set) var counts = [UInt64](repeating: 0, count: HotSpots.capacity)
    public private(set) var used = 0
    public private(set) var others: UInt64 = 0

    public init() {}

    public mutating func count(_ address: UInt64, by n: UInt64 = 1) {
        for i in 0..<used where addresses[i] == address {
            counts[i] &+= n
            return
        }
        if used < HotSpots.capacity {
            addresses[used] = address
            counts[used] = n
            used += 1
        } else {
            others &+= n
        }
    }

    mutating func add(_ other: HotSpots) {
        for i in 0..<other.used { count(other.addresses[i], by: other.counts[i]) }
        others &+= other.others
    }

    /// `(address, count)`, busiest first.
    public var sorted: [(address: UInt64, count: UInt64)] {
        (0..<used).map { (addresses[$0], counts[$0]) }.sorted { $0.1 > $1.1 }
    }
}
