import Synchronization

/// Owns a machine's devices by a stable id, puts them on the bus, and hands out MMIO
/// windows and interrupt lines from one place (Firecracker's device managers), so two
/// devices can never be given the same address or line and a snapshot can find each
/// device again by its id.
///
/// Where things go is the VMM's address map (`AddressMap`): the manager is told the
/// window it may allocate MMIO from and the lines it may hand out.
public final class DeviceManager: Sendable {
    public let bus: Bus

    /// One device and where it sits.
    public struct Entry: Sendable {
        public let id: String
        public let name: String
        public let device: any BusDevice
        public let ranges: [Range]
        public let interrupts: [UInt32]
    }

    /// One range of a device: `region` is the device's own number for it.
    public struct Range: Sendable, Equatable {
        public let space: AddressSpace
        public let start: UInt64
        public let length: UInt64
        public let region: Int
        /// What reports call this range, when it differs from the device's name.
        public let name: String?

        public init(_ space: AddressSpace, _ start: UInt64, _ length: UInt64, region: Int = 0, name: String? = nil) {
            self.space = space
            self.start = start
            self.length = length
            self.region = region
            self.name = name
        }

        public static func ports(_ start: UInt16, _ count: UInt16, region: Int = 0, name: String? = nil) -> Range {
            Range(.port, UInt64(start), UInt64(count), region: region, name: name)
        }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    private struct State {
        var entries: [Entry] = []
        var nextMMIO: UInt64
        var freeIRQs: [UInt32]
    }
    private let state: Mutex<State>
    private let mmioWindow: (start: UInt64, end: UInt64)

    /// `mmioWindow`: where `allocateMMIO` may place windows; `irqs`: the interrupt
    /// lines (GSIs) `allocateIRQ` may hand out, lowest first.
    public init(mmioWindow: (start: UInt64, end: UInt64), irqs: [UInt32]) {
        bus = Bus()
        self.mmioWindow = mmioWindow
        state = Mutex(State(nextMMIO: mmioWindow.start, freeIRQs: irqs))
    }

    /// Adds `device` under `id` at `ranges` (each put on the bus), noting the
    /// interrupt lines it uses.
    public func add(_ device: any BusDevice, id: String, name: String, ranges: [Range], interrupts: [UInt32] = []) throws(Failure) {
        try state.withLock { (s: inout State) throws(Failure) in
            guard !s.entries.contains(where: { $0.id == id }) else { throw Failure(description: "a device with id '\(id)' exists already") }
            for (i, r) in ranges.enumerated() {
                do throws(Bus.OverlapError) { try bus.register(device, space: r.space, start: r.start, length: r.length, region: r.region, id: id, name: r.name ?? name) }
                catch {
                    for r in ranges.prefix(i) { bus.unregister(id: id, region: r.region) }
                    throw Failure(description: "\(name): \(error.description)")
                }
            }
            s.entries.append(Entry(id: id, name: name, device: device, ranges: ranges, interrupts: interrupts))
        }
    }

    /// A window of `size` bytes (rounded up to `alignment`, a power of two) inside the
    /// MMIO window, never handed out twice.
    public func allocateMMIO(size: UInt64, alignment: UInt64 = 0x1000) throws(Failure) -> UInt64 {
        guard size > 0, alignment > 0, alignment & (alignment - 1) == 0 else {
            throw Failure(description: "MMIO window of \(size) bytes with alignment \(alignment) is not allocatable")
        }
        return try state.withLock { (s: inout State) throws(Failure) in
            let (aligned, o1) = s.nextMMIO.addingReportingOverflow(alignment - 1)
            let start = aligned & ~(alignment - 1)
            let (end, o2) = start.addingReportingOverflow(size)
            guard !o1, !o2, end <= mmioWindow.end else {
                throw Failure(description: "no room for a \(size)-byte MMIO window (0x\(String(mmioWindow.start, radix: 16))-0x\(String(mmioWindow.end, radix: 16)) is full)")
            }
            s.nextMMIO = end
            return start
        }
    }

    /// The lowest free interrupt line.
    public func allocateIRQ() throws(Failure) -> UInt32 {
        try state.withLock { (s: inout State) throws(Failure) in
            guard !s.freeIRQs.isEmpty else { throw Failure(description: "no free interrupt line left") }
            return s.freeIRQs.removeFirst()
        }
    }

    /// Moves region `region` of device `id` to `newStart` while the guest runs (a PCI
    /// BAR the guest re-programmed); vCPUs see the new map at their next access.
    public func move(id: String, region: Int, to newStart: UInt64) throws(Failure) {
        try state.withLock { (s: inout State) throws(Failure) in
            guard let i = s.entries.firstIndex(where: { $0.id == id }),
                  let r = s.entries[i].ranges.firstIndex(where: { $0.region == region }) else {
                throw Failure(description: "no region \(region) of a device '\(id)'")
            }
            let old = s.entries[i].ranges[r]
            do throws(Bus.OverlapError) { try bus.move(id: id, region: region, space: old.space, to: newStart) }
            catch { throw Failure(description: "\(s.entries[i].name): \(error.description)") }
            var ranges = s.entries[i].ranges
            ranges[r] = Range(old.space, newStart, old.length, region: region, name: old.name)
            let e = s.entries[i]
            s.entries[i] = Entry(id: e.id, name: e.name, device: e.device, ranges: ranges, interrupts: e.interrupts)
        }
    }

    /// The device registered under `id`.
    public func device(_ id: String) -> (any BusDevice)? { state.withLock { s in s.entries.first { $0.id == id }?.device } }

    /// Every device, in the order they were added.
    public var entries: [Entry] { state.withLock { $0.entries } }
}
