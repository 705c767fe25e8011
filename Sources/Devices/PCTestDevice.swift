import GuestMemory
import Synchronization

/// QEMU's `pc-testdev`, which kvm-unit-tests uses to poke at the VMM:
/// - 0xE0..0xE3: a 32-bit scratch register, readable and writable at any width and
///   offset (each byte lands in its lane);
/// - 0xE4: write a guest-physical address to make the host drop and re-fault its page;
/// - 0xE8..0xEB: the same scratch register through byte-wide ports;
/// - 0x2000..0x2017: write to port 0x2000 + n to set ISA IRQ line n to the value's truth;
/// - MMIO 0xFF000000, 64 KiB: scratch memory that is not RAM (every access exits).
/// Behaviour follows QEMU's hw/misc/pc-testdev.c. One device behind five ranges
/// (`Region`); the addresses above are QEMU's, placed by `AddressMap`.
public final class PCTestDevice: BusDevice {
    public static let irqCount: UInt16 = 24
    public static let mmioSize: UInt64 = 0x1_0000

    struct State {
        var scratch: UInt32 = 0
        var memory = [UInt8](repeating: 0, count: Int(PCTestDevice.mmioSize))
    }
    private let state = Mutex(State())
    private let guestMemory: GuestMemory
    private let irqLines: [any InterruptSource]

    /// `irqLines[n]` is ISA IRQ n; lines beyond the array are ignored.
    public init(memory: GuestMemory, irqLines: [any InterruptSource]) {
        self.guestMemory = memory
        self.irqLines = irqLines
    }

    /// Its ranges: four port windows and the MMIO scratch memory.
    public enum Region: Int, Sendable, CaseIterable { case scratch = 0, flush, bytes, irq, memory }

    public func read(region: Int, offset: UInt64, data: inout AccessData) {
        guard let r = Region(rawValue: region) else { return }
        if r == .memory {
            data.value = memoryRead(offset: offset, size: data.size)
        } else {
            data.value = UInt64(portRead(r, offset: UInt16(truncatingIfNeeded: offset), size: data.size))
        }
    }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        guard let r = Region(rawValue: region) else { return }
        if r == .memory {
            memoryWrite(offset: offset, size: data.size, value: data.value)
        } else {
            portWrite(r, offset: UInt16(truncatingIfNeeded: offset), size: data.size, value: UInt32(truncatingIfNeeded: data.value))
        }
    }

    func portRead(_ w: Region, offset: UInt16, size: Int) -> UInt32 {
        switch w {
        case .scratch, .bytes:
            let shift = UInt32(offset & 3) * 8
            let mask: UInt32 = size >= 4 ? ~0 : (1 << (8 * UInt32(size))) - 1
            return state.withLock { ($0.scratch >> shift) & mask }
        case .flush, .irq, .memory:
            return 0
        }
    }

    func portWrite(_ w: Region, offset: UInt16, size: Int, value: UInt32) {
        switch w {
        case .scratch, .bytes:
            let shift = UInt32(offset & 3) * 8
            let width: UInt32 = size >= 4 ? ~0 : (1 << (8 * UInt32(size))) - 1
            let mask = width << shift
            state.withLock { $0.scratch = ($0.scratch & ~mask) | ((value << shift) & mask) }
        case .flush:
            try? guestMemory.refaultPage(at: GuestAddress(UInt64(value)))
        case .irq:
            if Int(offset) < irqLines.count { irqLines[Int(offset)].setLevel(value != 0) }
        case .memory:
            break
        }
    }

    func memoryRead(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { s in
            var v: UInt64 = 0
            for i in 0..<size where Int(offset) + i < s.memory.count { v |= UInt64(s.memory[Int(offset) + i]) << (8 * UInt64(i)) }
            return v
        }
    }

    func memoryWrite(offset: UInt64, size: Int, value: UInt64) {
        state.withLock { s in
            for i in 0..<size where Int(offset) + i < s.memory.count { s.memory[Int(offset) + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
    }
}

extension PCTestDevice: StatefulDevice {
    public func saveState(into w: inout StateWriter) {
        let s = state.withLock { $0 }
        w.put(s.scratch)
        w.put(bytes: s.memory)
    }

    public func restoreState(from r: inout StateReader) throws(StateError) {
        let scratch: UInt32 = try r.get()
        let memory = try r.getBytes(exactly: Int(PCTestDevice.mmioSize), "pc-testdev memory")
        state.withLock { $0 = State(scratch: scratch, memory: memory) }
    }
}
