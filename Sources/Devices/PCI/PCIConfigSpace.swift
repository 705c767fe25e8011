/// A type-0 PCI configuration header (PCI Local Bus 3.0, 6.1) with its capability
/// list: 256 bytes with a write mask per byte, so that read-only fields stay what the
/// device set, BAR sizing works as hardware does (all ones written, the size read back)
/// and a guest can only change what it may. Devices keep one under their lock and
/// compare `barAddress`/`memoryEnabled` before and after a write to see BAR moves.
public struct PCIConfigSpace: Sendable, Equatable {
    public static let size = 256
    public static let vendorID = 0x00, command = 0x04, status = 0x06, bar0 = 0x10
    public static let subsystemVendorID = 0x2C, capabilitiesPointer = 0x34, interruptLine = 0x3C, interruptPin = 0x3D
    public static let commandIO: UInt16 = 1, commandMemory: UInt16 = 2, commandBusMaster: UInt16 = 4
    public static let commandINTxDisable: UInt16 = 1 << 10
    static let statusCapabilities: UInt16 = 1 << 4

    public private(set) var bytes: [UInt8]
    private var writable: [UInt8]
    /// Each BAR's size (0: unused). Memory BARs are 32-bit, non-prefetchable.
    public private(set) var barSizes: [UInt32] = Array(repeating: 0, count: 6)
    private var lastCapability = 0
    private var nextFree = 0x40

    public init(vendor: UInt16, device: UInt16, revision: UInt8, classCode: UInt32,
                subsystemVendor: UInt16 = 0, subsystem: UInt16 = 0, headerType: UInt8 = 0) {
        bytes = Array(repeating: 0, count: PCIConfigSpace.size)
        writable = Array(repeating: 0, count: PCIConfigSpace.size)
        put16(PCIConfigSpace.vendorID, vendor)
        put16(0x02, device)
        bytes[0x08] = revision
        bytes[0x09] = UInt8(truncatingIfNeeded: classCode)
        bytes[0x0A] = UInt8(truncatingIfNeeded: classCode >> 8)
        bytes[0x0B] = UInt8(truncatingIfNeeded: classCode >> 16)
        bytes[0x0E] = headerType
        put16(PCIConfigSpace.subsystemVendorID, subsystemVendor)
        put16(0x2E, subsystem)
        // Command: I/O and memory decoding, bus mastering, INTx disable.
        let commandMask = PCIConfigSpace.commandIO | PCIConfigSpace.commandMemory | PCIConfigSpace.commandBusMaster | PCIConfigSpace.commandINTxDisable
        writable[0x04] = UInt8(truncatingIfNeeded: commandMask)
        writable[0x05] = UInt8(truncatingIfNeeded: commandMask >> 8)
        writable[PCIConfigSpace.interruptLine] = 0xFF
    }

    mutating func put16(_ offset: Int, _ v: UInt16) {
        bytes[offset] = UInt8(truncatingIfNeeded: v)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: v >> 8)
    }

    mutating func put32(_ offset: Int, _ v: UInt32) {
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }

    func get32(_ offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }

    /// A 32-bit memory BAR of `size` bytes (a power of two, at least 16) at `address`.
    public mutating func setMemoryBAR(_ index: Int, size: UInt32, address: UInt32) {
        precondition(index >= 0 && index < 6 && size >= 16 && size & (size - 1) == 0, "a BAR is a power of two of at least 16 bytes")
        barSizes[index] = size
        let offset = PCIConfigSpace.bar0 + 4 * index
        put32(offset, address & ~(size - 1))
        let mask = ~(size - 1) & 0xFFFF_FFF0
        for i in 0..<4 { writable[offset + i] = UInt8(truncatingIfNeeded: mask >> (8 * UInt32(i))) }
    }

    /// Where memory BAR `index` points now.
    public func barAddress(_ index: Int) -> UInt32 { get32(PCIConfigSpace.bar0 + 4 * index) & 0xFFFF_FFF0 }

    public var commandRegister: UInt16 { UInt16(bytes[0x04]) | UInt16(bytes[0x05]) << 8 }
    public var memoryEnabled: Bool { commandRegister & PCIConfigSpace.commandMemory != 0 }

    /// INTx: the pin (1 = INTA#) and the line the firmware routed it to.
    public mutating func setInterrupt(pin: UInt8, line: UInt8) {
        bytes[PCIConfigSpace.interruptPin] = pin
        bytes[PCIConfigSpace.interruptLine] = line
    }

    /// Appends a capability (`id`, then `body`) to the list; `writableMask` marks the
    /// bytes of the body the guest may change. Returns its offset.
    @discardableResult
    public mutating func addCapability(id: UInt8, body: [UInt8], writableMask: [UInt8] = []) -> Int {
        let offset = nextFree
        let length = 2 + body.count
        precondition(offset + length <= PCIConfigSpace.size, "capabilities overflow the configuration space")
        bytes[offset] = id
        bytes[offset + 1] = 0
        for (i, b) in body.enumerated() { bytes[offset + 2 + i] = b }
        for (i, m) in writableMask.prefix(body.count).enumerated() { writable[offset + 2 + i] = m }
        if lastCapability == 0 {
            bytes[PCIConfigSpace.capabilitiesPointer] = UInt8(offset)
            put16(PCIConfigSpace.status, UInt16(bytes[PCIConfigSpace.status]) | PCIConfigSpace.statusCapabilities)
        } else {
            bytes[lastCapability + 1] = UInt8(offset)
        }
        lastCapability = offset
        nextFree = (offset + length + 3) & ~3
        return offset
    }

    /// `size` (1, 2 or 4) bytes at `offset`, little-endian. Beyond the 256 bytes (the
    /// extended space ECAM reaches) or misaligned: zeros, as a conventional PCI device
    /// answers (no extended capabilities).
    public func read(offset: Int, size: Int) -> UInt32 {
        guard PCIConfigSpace.valid(offset: offset, size: size) else { return 0 }
        var v: UInt32 = 0
        for i in 0..<size { v |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
        return v
    }

    /// Writes through the write masks; read-only bits keep their value.
    public mutating func write(offset: Int, size: Int, value: UInt32) {
        guard PCIConfigSpace.valid(offset: offset, size: size) else { return }
        for i in 0..<size {
            let b = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i)))
            let m = writable[offset + i]
            bytes[offset + i] = (bytes[offset + i] & ~m) | (b & m)
        }
    }

    /// Sets bytes the device owns (capability fields it updates itself).
    public mutating func set(offset: Int, bytes new: [UInt8]) {
        for (i, b) in new.enumerated() where offset + i < PCIConfigSpace.size { bytes[offset + i] = b }
    }

    static func valid(offset: Int, size: Int) -> Bool {
        (size == 1 || size == 2 || size == 4) && offset >= 0 && offset % size == 0 && offset + size <= PCIConfigSpace.size
    }
}

/// A PCI function on the host bridge's bus: its configuration space, reached through
/// ports 0xCF8/0xCFC or ECAM. Its BARs are bus ranges it registers itself.
public protocol PCIFunction: AnyObject, Sendable {
    func readConfig(offset: Int, size: Int) -> UInt32
    func writeConfig(offset: Int, size: Int, value: UInt32)
    /// The host bridge put the function in `slot` of bus 0.
    func plugged(slot: Int)
}

extension PCIFunction {
    public func plugged(slot: Int) {}
}
