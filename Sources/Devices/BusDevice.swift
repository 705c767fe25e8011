/// A device the guest reaches through I/O ports, MMIO or a PCI BAR: one protocol for
/// all three (like Cloud Hypervisor's `BusDevice`), so a device does not care how the
/// guest gets to it and can sit behind several ranges at once.
///
/// `region` is the device's own number for the range the access fell in, chosen when it
/// was registered (the i8042's data and command ports, a PCI function's BARs); it stays
/// the same when the range moves. `offset` is from the start of that range. Called from
/// vCPU threads: implementations guard their own state.
public protocol BusDevice: AnyObject, Sendable {
    func read(region: Int, offset: UInt64, data: inout AccessData)
    func write(region: Int, offset: UInt64, data: AccessData)
}

/// The bytes of one access: 1 to 8 of them, little-endian, as the processor moved them.
/// A value, not a buffer, so the exit path allocates nothing and a device cannot write
/// past what the guest asked for.
public struct AccessData: Sendable, Equatable {
    /// 1 to 8.
    public let size: Int
    private var storage: UInt64

    /// `value` truncated to `size` bytes (clamped to 1...8).
    public init(size: Int, value: UInt64 = 0) {
        self.size = min(max(size, 1), 8)
        self.storage = value & AccessData.mask(self.size)
    }

    static func mask(_ size: Int) -> UInt64 { size >= 8 ? .max : (1 << (8 * UInt64(size))) - 1 }

    /// The bytes as one little-endian number (zero-extended).
    public var value: UInt64 {
        get { storage }
        set { storage = newValue & AccessData.mask(size) }
    }

    /// The low byte: what byte-wide registers read and write.
    public var byte: UInt8 { UInt8(truncatingIfNeeded: storage) }

    /// Byte `i` of the access; out-of-range indexes read 0 and write nothing.
    public subscript(i: Int) -> UInt8 {
        get { i >= 0 && i < size ? UInt8(truncatingIfNeeded: storage >> (8 * UInt64(i))) : 0 }
        set {
            guard i >= 0 && i < size else { return }
            let shift = 8 * UInt64(i)
            storage = (storage & ~(0xFF << shift)) | UInt64(newValue) << shift
        }
    }

    /// Every bit set: what an empty bus answers.
    public static func allOnes(size: Int) -> AccessData { AccessData(size: size, value: .max) }
}

/// The two address spaces a device can be mapped into. PCI BARs are one or the other.
public enum AddressSpace: String, Sendable, CaseIterable {
    case port, mmio
}
