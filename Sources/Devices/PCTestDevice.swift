import GuestMemory
import Synchronization

/// QEMU's `pc-testdev`, which kvm-unit-tests uses to poke at the VMM:
/// - 0xE0..0xE3: a 32-bit scratch register, readable and writable at any width and
///   offset (each byte lands in its lane);
/// - 0xE4: write a guest-physical address to make the host drop and re-fault its page;
/// - 0xE8..0xEB: the same scratch register through byte-wide ports;
/// - 0x2000..0x2017: write to port 0x2000 + n to set ISA IRQ line n to the value's truth;
/// - MMIO 0xFF000000, 64 KiB: scratch memory that is not RAM (every access exits).
/// Behaviour follows QEMU's hw/misc/pc-testdev.c. The object itself is the MMIO
/// window; each port window is a `window(_:)` registered at its port.
public final class PCTestDevice: MMIODevice {
    public static let scratchPort: UInt16 = 0xE0
    public static let flushPort: UInt16 = 0xE4
    public static let bytePort: UInt16 = 0xE8
    public static let irqPort: UInt16 = 0x2000
    public static let irqCount: UInt16 = 24
    public static let mmioBase: UInt64 = 0xFF00_0000
    public static let mmioSize: UInt64 = 0x1_0000

    struct State {
        var scratch: UInt32 = 0
        var memory = [UInt8](repeating: 0, count: Int(PCTestDevice.mmioSize))
    }
    private let state = Mutex(State())
    private let guestMemory: GuestMemory
    private let irqLines: [any InterruptLine]

    /// `irqLines[n]` is ISA IRQ n; lines beyond the array are ignored.
    public init(memory: GuestMemory, irqLines: [any InterruptLine]) {
        self.guestMemory = memory
        self.irqLines = irqLines
    }

    /// Which of its port windows a port offset belongs to (the device is registered once
    /// per window; the bus gives offsets relative to each registration).
    public enum Window: Sendable { case scratch, flush, bytes, irq }

    /// Port-I/O view of one window.
    public func window(_ w: Window) -> any PortIODevice { PortWindow(device: self, window: w) }

    final class PortWindow: PortIODevice {
        let device: PCTestDevice
        let window: Window
        init(device: PCTestDevice, window: Window) { self.device = device; self.window = window }
        func read(offset: UInt16, size: Int) -> UInt32 { device.portRead(window, offset: offset, size: size) }
        func write(offset: UInt16, size: Int, value: UInt32) { device.portWrite(window, offset: offset, size: size, value: value) }
    }

    func portRead(_ w: Window, offset: UInt16, size: Int) -> UInt32 {
        switch w {
        case .scratch, .bytes:
            let shift = UInt32(offset & 3) * 8
            let mask: UInt32 = size >= 4 ? ~0 : (1 << (8 * UInt32(size))) - 1
            return state.withLock { ($0.scratch >> shift) & mask }
        case .flush, .irq:
            return 0
        }
    }

    func portWrite(_ w: Window, offset: UInt16, size: Int, value: UInt32) {
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
        }
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { s in
            var v: UInt64 = 0
            for i in 0..<size where Int(offset) + i < s.memory.count { v |= UInt64(s.memory[Int(offset) + i]) << (8 * UInt64(i)) }
            return v
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        state.withLock { s in
            for i in 0..<size where Int(offset) + i < s.memory.count { s.memory[Int(offset) + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
    }
}
