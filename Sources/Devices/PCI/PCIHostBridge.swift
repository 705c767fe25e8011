import Synchronization

/// The PCI host bridge of bus 0 (as QEMU's generic `gpex` bridge): the configuration
/// mechanism #1 ports (address at 0xCF8, data at 0xCFC-0xCFF) and the memory-mapped
/// ECAM window an ACPI MCFG table describes, both leading to the functions plugged in
/// (device 0 is the bridge itself). Only bus 0 and function 0 exist; every other
/// address reads as all ones, as an empty slot does.
public final class PCIHostBridge: BusDevice, PCIFunction {
    public enum Region: Int { case address = 0, data = 1, ecam = 2 }
    public static let slotCount = 32
    /// ECAM: 4 KiB of configuration space per function, 8 functions, 32 devices.
    public static let ecamSize: UInt64 = 1 << 20

    private struct State {
        var address: UInt32 = 0
        var slots: [(any PCIFunction)?] = Array(repeating: nil, count: PCIHostBridge.slotCount)
    }
    private let state = Mutex(State())
    private let header = Mutex(PCIConfigSpace(vendor: 0x1B36, device: 0x0008, revision: 0, classCode: 0x06_0000))

    public init() {}

    /// Plugs `function` into the next free slot (from 1) and returns the slot.
    public func plug(_ function: any PCIFunction) -> Int? {
        state.withLock { s in
            guard let slot = (1..<PCIHostBridge.slotCount).first(where: { s.slots[$0] == nil }) else { return nil }
            s.slots[slot] = function
            function.plugged(slot: slot)
            return slot
        }
    }

    func function(slot: Int) -> (any PCIFunction)? {
        guard slot >= 0, slot < PCIHostBridge.slotCount else { return nil }
        if slot == 0 { return self }
        return state.withLock { $0.slots[slot] }
    }

    public func readConfig(offset: Int, size: Int) -> UInt32 { header.withLock { $0.read(offset: offset, size: size) } }
    public func writeConfig(offset: Int, size: Int, value: UInt32) { header.withLock { $0.write(offset: offset, size: size, value: value) } }

    /// (function, register offset) for a mechanism #1 address plus the data port's byte.
    func decode(_ address: UInt32, byte: Int) -> (any PCIFunction, Int)? {
        guard address & 0x8000_0000 != 0, (address >> 16) & 0xFF == 0, (address >> 8) & 0x7 == 0 else { return nil }
        guard let f = function(slot: Int((address >> 11) & 0x1F)) else { return nil }
        return (f, Int(address & 0xFC) + byte)
    }

    /// (function, register offset) for an ECAM offset: bus 20-27, device 15-19,
    /// function 12-14, register 0-11.
    func decode(ecam offset: UInt64) -> (any PCIFunction, Int)? {
        guard offset < PCIHostBridge.ecamSize, (offset >> 12) & 0x7 == 0,
              let f = function(slot: Int((offset >> 15) & 0x1F)) else { return nil }
        return (f, Int(offset & 0xFFF))
    }

    public func read(region: Int, offset: UInt64, data: inout AccessData) {
        switch Region(rawValue: region) {
        case .address:
            // Only the whole register: 0xCF9 (a byte) is the reset-control port.
            guard offset == 0, data.size == 4 else { data = .allOnes(size: data.size); return }
            data.value = UInt64(state.withLock { $0.address })
        case .data:
            let address = state.withLock { $0.address }
            guard let (f, reg) = decode(address, byte: Int(offset & 3)) else { data = .allOnes(size: data.size); return }
            data.value = UInt64(reg < PCIConfigSpace.size ? f.readConfig(offset: reg, size: data.size) : 0)
        case .ecam:
            guard let (f, reg) = decode(ecam: offset), data.size <= 4 else { data = .allOnes(size: data.size); return }
            data.value = UInt64(f.readConfig(offset: reg, size: data.size))
        case nil:
            data = .allOnes(size: data.size)
        }
    }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        switch Region(rawValue: region) {
        case .address:
            guard offset == 0, data.size == 4 else { return }
            state.withLock { $0.address = UInt32(truncatingIfNeeded: data.value) }
        case .data:
            let address = state.withLock { $0.address }
            guard let (f, reg) = decode(address, byte: Int(offset & 3)), reg < PCIConfigSpace.size else { return }
            f.writeConfig(offset: reg, size: data.size, value: UInt32(truncatingIfNeeded: data.value))
        case .ecam:
            guard let (f, reg) = decode(ecam: offset), data.size <= 4 else { return }
            f.writeConfig(offset: reg, size: data.size, value: UInt32(truncatingIfNeeded: data.value))
        case nil:
            break
        }
    }
}

extension PCIHostBridge: StatefulDevice {
    /// The configuration-address latch (0xCF8) and the bridge's own header; the
    /// functions behind it are devices of their own.
    public func saveState(into w: inout StateWriter) {
        w.put(state.withLock { $0.address })
        w.put(bytes: header.withLock { $0.bytes })
    }

    public func restoreState(from r: inout StateReader) throws(StateError) {
        let address: UInt32 = try r.get()
        let bytes = try r.getBytes(exactly: PCIConfigSpace.size, "PCI configuration space")
        state.withLock { $0.address = address }
        header.withLock { $0.set(offset: 0, bytes: bytes) }
    }
}
