/// A code or data segment as both the GDT and the vCPU's hidden segment registers
/// describe it. `Boot` writes the GDT entry with `encoded`; the VMM copies the same
/// fields into KVM's segment registers, so the two always agree.
public struct SegmentDescriptor: Equatable, Sendable {
    public var selector: UInt16
    public var base: UInt32
    /// In units of `granularity4K ? 4 KiB : 1 byte`, 20 bits.
    public var limit: UInt32
    /// Type field: 0xB code execute/read accessed, 0x3 data read/write accessed, 0xB busy TSS.
    public var type: UInt8
    /// S bit: code/data (true) or system (TSS, LDT).
    public var isCodeOrData: Bool
    public var dpl: UInt8
    public var present: Bool
    /// L bit: 64-bit code.
    public var long: Bool
    /// D/B bit: 32-bit default operand size.
    public var defaultBig: Bool
    public var granularity4K: Bool

    public init(selector: UInt16, base: UInt32, limit: UInt32, type: UInt8, isCodeOrData: Bool = true,
                dpl: UInt8 = 0, present: Bool = true, long: Bool = false, defaultBig: Bool = false,
                granularity4K: Bool = false) {
        self.selector = selector; self.base = base; self.limit = limit; self.type = type
        self.isCodeOrData = isCodeOrData; self.dpl = dpl; self.present = present; self.long = long
        self.defaultBig = defaultBig; self.granularity4K = granularity4K
    }

    /// The 8-byte GDT entry (Intel SDM vol. 3, 3.4.5).
    public var encoded: UInt64 {
        var d = UInt64(limit & 0xFFFF)
        d |= UInt64(base & 0xFF_FFFF) << 16
        d |= UInt64(type & 0xF) << 40
        d |= (isCodeOrData ? 1 : 0) << 44
        d |= UInt64(dpl & 3) << 45
        d |= (present ? 1 : 0) << 47
        d |= UInt64((limit >> 16) & 0xF) << 48
        d |= (long ? 1 : 0) << 53
        d |= (defaultBig ? 1 : 0) << 54
        d |= (granularity4K ? 1 : 0) << 55
        d |= UInt64(base >> 24) << 56
        return d
    }

    /// The limit in bytes, as KVM's segment registers want it.
    public var byteLimit: UInt32 { granularity4K ? (limit << 12) | 0xFFF : limit }

    /// A real-mode segment: base = selector * 16, 64 KiB limit.
    public static func real(selector: UInt16, code: Bool) -> SegmentDescriptor {
        SegmentDescriptor(selector: selector, base: UInt32(selector) << 4, limit: 0xFFFF, type: code ? 0xB : 0x3)
    }
}
