/// Where guest RAM goes in the guest-physical address space.
///
/// RAM starts at 0. Above 3 GiB it is split around the 32-bit PCI/MMIO hole (3 GiB to
/// 4 GiB: where the local APIC, IOAPIC and PCI BARs of a PC live) and continues at 4 GiB,
/// as on real PCs and in every x86 VMM.
public enum RAMLayout {
    public static let mmioHoleStart: UInt64 = 0xC000_0000
    public static let mmioHoleEnd: UInt64 = 0x1_0000_0000
    /// Three pages KVM needs for real-mode emulation on Intel (`KVM_SET_TSS_ADDR`) and one
    /// for its identity map, placed just below the BIOS ROM at the top of the hole.
    public static let tssAddress: UInt64 = 0xFFFB_D000
    public static let identityMapAddress: UInt64 = 0xFFFB_C000

    /// `(start, size)` of each RAM range for `memorySize` bytes.
    public static func ranges(memorySize: UInt64) -> [(start: UInt64, size: UInt64)] {
        if memorySize <= mmioHoleStart { return [(0, memorySize)] }
        return [(0, mmioHoleStart), (mmioHoleEnd, memorySize - mmioHoleStart)]
    }
}
