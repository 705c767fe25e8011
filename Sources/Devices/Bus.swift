import Synchronization

/// Which device answers which I/O port or MMIO address.
///
/// Built once with `register` calls, then read concurrently by every vCPU thread
/// without locks: lookups are a binary search over sorted, non-overlapping ranges.
/// Accesses nobody claims are answered the way an empty ISA/PCI bus answers (reads of
/// all ones, writes dropped) and counted, so a guest probing for hardware never
/// crashes the VMM.
public final class Bus: Sendable {
    struct Mapping<Device>: Sendable where Device: Sendable {
        let start: UInt64
        let length: UInt64
        let device: Device
        let name: String
        var end: UInt64 { start + length }
    }

    private let ports: [Mapping<any PortIODevice>]
    private let mmio: [Mapping<any MMIODevice>]
    private let unclaimed = Atomic<UInt64>(0)

    public struct OverlapError: Error, CustomStringConvertible, Sendable {
        public let kind: String
        public let start: UInt64
        public let length: UInt64
        public var description: String {
            "\(kind) range 0x\(String(start, radix: 16)) (+\(length)) overlaps a device already registered"
        }
    }

    /// Collects registrations, refusing overlaps, before the bus is frozen.
    public struct Builder {
        var ports: [Mapping<any PortIODevice>] = []
        var mmio: [Mapping<any MMIODevice>] = []
        public init() {}

        public mutating func register(_ device: any PortIODevice, port: UInt16, count: UInt16, name: String = "device") throws(OverlapError) {
            let m = Mapping(start: UInt64(port), length: UInt64(count), device: device, name: name)
            guard count > 0, !ports.contains(where: { $0.start < m.end && m.start < $0.end }) else {
                throw OverlapError(kind: "I/O port", start: m.start, length: m.length)
            }
            ports.append(m)
        }

        public mutating func register(_ device: any MMIODevice, address: UInt64, length: UInt64, name: String = "device") throws(OverlapError) {
            let m = Mapping(start: address, length: length, device: device, name: name)
            guard length > 0, address.addingReportingOverflow(length).overflow == false,
                  !mmio.contains(where: { $0.start < m.end && m.start < $0.end }) else {
                throw OverlapError(kind: "MMIO", start: address, length: length)
            }
            mmio.append(m)
        }

        public func build() -> Bus { Bus(ports: ports, mmio: mmio) }
    }

    init(ports: [Mapping<any PortIODevice>], mmio: [Mapping<any MMIODevice>]) {
        self.ports = ports.sorted { $0.start < $1.start }
        self.mmio = mmio.sorted { $0.start < $1.start }
    }

    @inline(__always)
    private static func find<D>(_ table: [Mapping<D>], _ address: UInt64) -> Mapping<D>? {
        var lo = 0, hi = table.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if table[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo < table.count, table[lo].start <= address else { return nil }
        return table[lo]
    }

    private static func allOnes(_ size: Int) -> UInt64 { size >= 8 ? ~0 : (1 << (8 * UInt64(size))) - 1 }

    /// An IN of `size` bytes from `port`.
    public func readPort(_ port: UInt16, size: Int) -> UInt32 {
        guard let m = Bus.find(ports, UInt64(port)) else {
            unclaimed.add(1, ordering: .relaxed)
            return UInt32(truncatingIfNeeded: Bus.allOnes(size))
        }
        return m.device.read(offset: UInt16(UInt64(port) - m.start), size: size)
    }

    /// An OUT of `size` bytes to `port`.
    public func writePort(_ port: UInt16, size: Int, value: UInt32) {
        guard let m = Bus.find(ports, UInt64(port)) else {
            unclaimed.add(1, ordering: .relaxed)
            return
        }
        m.device.write(offset: UInt16(UInt64(port) - m.start), size: size, value: value)
    }

    /// An MMIO read of `size` bytes at `address`.
    public func readMMIO(_ address: UInt64, size: Int) -> UInt64 {
        guard let m = Bus.find(mmio, address) else {
            unclaimed.add(1, ordering: .relaxed)
            return Bus.allOnes(size)
        }
        return m.device.read(offset: address - m.start, size: size)
    }

    /// An MMIO write of `size` bytes at `address`.
    public func writeMMIO(_ address: UInt64, size: Int, value: UInt64) {
        guard let m = Bus.find(mmio, address) else {
            unclaimed.add(1, ordering: .relaxed)
            return
        }
        m.device.write(offset: address - m.start, size: size, value: value)
    }

    /// The name a device was registered under at `port`, or "unclaimed".
    public func portName(_ port: UInt16) -> String { Bus.find(ports, UInt64(port))?.name ?? "unclaimed" }

    /// The name of the MMIO device at `address`, or "unclaimed".
    public func mmioName(_ address: UInt64) -> String { Bus.find(mmio, address)?.name ?? "unclaimed" }

    /// Accesses that no device claimed, since the machine started.
    public var unclaimedAccesses: UInt64 { unclaimed.load(ordering: .relaxed) }
}
