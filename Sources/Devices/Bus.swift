import Synchronization

/// Which device answers which I/O port or MMIO address.
///
/// The map is an immutable table of sorted, non-overlapping ranges. Changing it (a
/// device added, a PCI BAR moved by the guest) publishes a new table and bumps a
/// generation number; each vCPU thread reads through its own `Reader`, which keeps the
/// table it last saw and re-reads it only when the generation moved. So the exit path
/// costs one atomic load and a binary search, never a lock, while the map can still
/// change under a running guest; a table nobody reads any more is freed by reference
/// counting.
///
/// Accesses nobody claims are answered the way an empty ISA/PCI bus answers (reads of
/// all ones, writes dropped) and counted, so a guest probing for hardware never crashes
/// the VMM.
public final class Bus: Sendable {
    /// One registered range.
    public struct Mapping: Sendable {
        public let space: AddressSpace
        public let start: UInt64
        public let length: UInt64
        public let device: any BusDevice
        /// The device's number for this range (see `BusDevice`).
        public let region: Int
        /// The owner's stable id (`DeviceManager`), e.g. "com1".
        public let id: String
        /// What reports call it, e.g. "COM1 8250 UART".
        public let name: String
        public var end: UInt64 { start &+ length }
    }

    /// A frozen map: what one generation of the bus looks like.
    final class Table: Sendable {
        let ports: [Mapping]
        let mmio: [Mapping]
        let generation: UInt64

        init(_ mappings: [Mapping], generation: UInt64) {
            ports = mappings.filter { $0.space == .port }.sorted { $0.start < $1.start }
            mmio = mappings.filter { $0.space == .mmio }.sorted { $0.start < $1.start }
            self.generation = generation
        }

        var all: [Mapping] { ports + mmio }

        @inline(__always)
        func find(_ space: AddressSpace, _ address: UInt64) -> Mapping? {
            let table = space == .port ? ports : mmio
            var lo = 0, hi = table.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if table[mid].end <= address { lo = mid + 1 } else { hi = mid }
            }
            guard lo < table.count, table[lo].start <= address else { return nil }
            return table[lo]
        }
    }

    private let current: Mutex<Table>
    private let generation = Atomic<UInt64>(0)
    private let unclaimed = Atomic<UInt64>(0)

    public struct OverlapError: Error, CustomStringConvertible, Sendable {
        public let space: AddressSpace
        public let start: UInt64
        public let length: UInt64
        public let other: String?
        public var description: String {
            let kind = space == .port ? "I/O port" : "MMIO"
            let range = "\(kind) range 0x\(String(start, radix: 16)) (+\(length))"
            if let other { return "\(range) overlaps \(other)" }
            return "\(range) is empty or wraps around the address space"
        }
    }

    public init() { current = Mutex(Table([], generation: 0)) }

    /// The highest address each space has (ports are 16-bit).
    static func limit(_ space: AddressSpace) -> UInt64 { space == .port ? 0x1_0000 : .max }

    /// Adds `device` at `[start, start + length)`, refusing empty, wrapping or
    /// overlapping ranges.
    public func register(_ device: any BusDevice, space: AddressSpace, start: UInt64, length: UInt64,
                         region: Int = 0, id: String, name: String? = nil) throws(OverlapError) {
        let m = Mapping(space: space, start: start, length: length, device: device, region: region, id: id, name: name ?? id)
        try publish { mappings throws(OverlapError) in
            try Bus.check(m, against: mappings)
            mappings.append(m)
        }
    }

    /// Moves region `region` of device `id` to `newStart` (a guest re-programming a PCI
    /// BAR), while vCPUs run. Moving onto another device's range is refused.
    public func move(id: String, region: Int, space: AddressSpace, to newStart: UInt64) throws(OverlapError) {
        try publish { mappings throws(OverlapError) in
            guard let i = mappings.firstIndex(where: { $0.id == id && $0.region == region && $0.space == space }) else { return }
            let old = mappings.remove(at: i)
            let moved = Mapping(space: space, start: newStart, length: old.length, device: old.device,
                                region: region, id: id, name: old.name)
            do throws(OverlapError) { try Bus.check(moved, against: mappings) } catch { mappings.insert(old, at: i); throw error }
            mappings.append(moved)
        }
    }

    /// Removes every range of device `id` (a PCI BAR whose decoding the guest turned off).
    public func unregister(id: String, region: Int? = nil) {
        publish { mappings in mappings.removeAll { $0.id == id && (region == nil || $0.region == region) } }
    }

    private static func check(_ m: Mapping, against mappings: [Mapping]) throws(OverlapError) {
        guard m.length > 0, m.start.addingReportingOverflow(m.length).overflow == false,
              m.start + m.length <= limit(m.space) || m.space == .mmio else {
            throw OverlapError(space: m.space, start: m.start, length: m.length, other: nil)
        }
        if let other = mappings.first(where: { $0.space == m.space && $0.start < m.end && m.start < $0.end }) {
            throw OverlapError(space: m.space, start: m.start, length: m.length, other: "\(other.name) (\(other.id))")
        }
    }

    private func publish<E: Error>(_ change: (inout [Mapping]) throws(E) -> Void) throws(E) {
        try current.withLock { (table: inout Table) throws(E) in
            var mappings = table.all
            try change(&mappings)
            table = Table(mappings, generation: table.generation + 1)
            generation.store(table.generation, ordering: .releasing)
        }
    }

    /// The current map, for one reader.
    func snapshot() -> Table { current.withLock { $0 } }

    /// Every registered range, ports first, each space in address order.
    public var mappings: [Mapping] { snapshot().all }

    /// A vCPU thread's view of the bus: the table it last saw, refreshed when the map
    /// changes. Not shared between threads.
    public struct Reader {
        let bus: Bus
        var table: Table

        /// The access `data.size` bytes wide at `address` in `space`. Reads fill `data`.
        @inline(__always)
        public mutating func access(_ space: AddressSpace, _ address: UInt64, write: Bool, data: inout AccessData) {
            if bus.generation.load(ordering: .acquiring) != table.generation { table = bus.snapshot() }
            guard let m = table.find(space, address) else {
                bus.unclaimed.add(1, ordering: .relaxed)
                if !write { data = .allOnes(size: data.size) }
                return
            }
            if write {
                m.device.write(region: m.region, offset: address - m.start, data: data)
            } else {
                m.device.read(region: m.region, offset: address - m.start, data: &data)
            }
        }
    }

    public func reader() -> Reader { Reader(bus: self, table: snapshot()) }

    // Convenience for tests and slow paths (each takes a fresh view).

    /// An IN of `size` bytes from `port`.
    public func readPort(_ port: UInt16, size: Int) -> UInt32 {
        var r = reader(), d = AccessData(size: size)
        r.access(.port, UInt64(port), write: false, data: &d)
        return UInt32(truncatingIfNeeded: d.value)
    }

    /// An OUT of `size` bytes to `port`.
    public func writePort(_ port: UInt16, size: Int, value: UInt32) {
        var r = reader(), d = AccessData(size: size, value: UInt64(value))
        r.access(.port, UInt64(port), write: true, data: &d)
    }

    /// An MMIO read of `size` bytes at `address`.
    public func readMMIO(_ address: UInt64, size: Int) -> UInt64 {
        var r = reader(), d = AccessData(size: size)
        r.access(.mmio, address, write: false, data: &d)
        return d.value
    }

    /// An MMIO write of `size` bytes at `address`.
    public func writeMMIO(_ address: UInt64, size: Int, value: UInt64) {
        var r = reader(), d = AccessData(size: size, value: value)
        r.access(.mmio, address, write: true, data: &d)
    }

    /// The name a device was registered under at `address`, or "unclaimed".
    public func name(_ space: AddressSpace, _ address: UInt64) -> String { snapshot().find(space, address)?.name ?? "unclaimed" }

    public func portName(_ port: UInt16) -> String { name(.port, UInt64(port)) }

    /// Accesses that no device claimed, since the bus was made.
    public var unclaimedAccesses: UInt64 { unclaimed.load(ordering: .relaxed) }
}
