/// The machine's guest-physical and I/O-port map, in one place: where RAM goes, the
/// 32-bit hole, what the firmware area holds, and where every device sits. Builders
/// (ACPI, e820) describe this map to the guest; the VMM places devices by it; devices
/// themselves are position-independent.
///
/// Guest-physical (low to high):
///
///     0x0000_0000  RAM (boot structures below 0x1_0000: see BootLayout)
///     0x000E_0000  ACPI tables (RSDP...; 128 KiB, in the BIOS area guests scan)
///     0x0010_0000  RAM, where kernels load
///     0xC000_0000  the 32-bit hole: no RAM up to 4 GiB
///       0xD000_0000  virtio-mmio windows, PCI BARs, other allocated MMIO (256 MiB)
///       0xE000_0000  PCI ECAM for bus 0 (1 MiB; reserved in the e820 map, in MCFG)
///       0xFEC0_0000  IOAPIC (in-kernel)
///       0xFEE0_0000  local APICs (in-kernel)
///       0xFF00_0000  pc-testdev memory (test devices only; 64 KiB)
///       0xFFFB_C000  KVM's identity-map page, then its three TSS pages (Intel)
///     0x1_0000_0000 RAM above 3 GiB continues here
///
/// I/O ports: 0x60/0x64 i8042, 0x70 CMOS/RTC, 0xE0-0xEB pc-testdev, 0xF4 isa-debug-exit,
/// 0x3F8 COM1, 0x501 the exit port, 0x510 fw_cfg, 0xCF8/0xCFC PCI configuration,
/// 0x2000 pc-testdev IRQ lines, 0xB000 the ACPI PM block.
///
/// Interrupt lines (GSIs): 0-15 ISA (4 COM1, 8 RTC, 9 SCI; the free ones handed out to
/// virtio devices), 16-23 IOAPIC-only, then MSI routes from 24.
public enum AddressMap {
    // MARK: Guest-physical

    /// The 32-bit PCI/MMIO hole: RAM above 3 GiB continues at 4 GiB, as on every PC.
    public static let mmioHoleStart: UInt64 = 0xC000_0000
    public static let mmioHoleEnd: UInt64 = 0x1_0000_0000
    /// ACPI tables: in the BIOS area, where guests scan for "RSD PTR ".
    public static let acpiTables: UInt64 = 0xE_0000
    public static let acpiTablesSize: UInt64 = 0x2_0000
    /// Where the device manager allocates MMIO windows (virtio devices).
    public static let deviceMMIOStart: UInt64 = 0xD000_0000
    public static let deviceMMIOEnd: UInt64 = 0xE000_0000
    /// The PCI host bridge's memory-mapped configuration space (bus 0 only).
    public static let pciECAM: UInt64 = 0xE000_0000
    public static let ioAPIC: UInt64 = 0xFEC0_0000
    public static let localAPIC: UInt64 = 0xFEE0_0000
    /// QEMU's pc-testdev scratch memory (test devices only).
    public static let testDeviceMemory: UInt64 = 0xFF00_0000
    public static let testDeviceMemorySize: UInt64 = 0x1_0000
    /// Three pages KVM needs for real-mode emulation on Intel (`KVM_SET_TSS_ADDR`) and
    /// one for its identity map, just below the BIOS ROM at the top of the hole.
    public static let tss: UInt64 = 0xFFFB_D000
    public static let identityMap: UInt64 = 0xFFFB_C000

    /// `(start, size)` of each RAM range for `memorySize` bytes.
    public static func ramRanges(memorySize: UInt64) -> [(start: UInt64, size: UInt64)] {
        if memorySize <= mmioHoleStart { return [(0, memorySize)] }
        return [(0, mmioHoleStart), (mmioHoleEnd, memorySize - mmioHoleStart)]
    }

    // MARK: I/O ports

    public static let i8042Data: UInt16 = 0x60
    public static let i8042Command: UInt16 = 0x64
    public static let cmos: UInt16 = 0x70
    public static let testDeviceScratch: UInt16 = 0xE0
    public static let testDeviceFlush: UInt16 = 0xE4
    public static let testDeviceBytes: UInt16 = 0xE8
    public static let debugExit: UInt16 = 0xF4
    public static let com1: UInt16 = 0x3F8
    /// Swiftvisor's own: a byte written here ends the VM with that exit code.
    public static let exitPort: UInt16 = 0x501
    public static let firmwareConfig: UInt16 = 0x510
    /// PCI configuration mechanism #1: the address register and the data window.
    public static let pciConfigAddress: UInt16 = 0xCF8
    public static let pciConfigData: UInt16 = 0xCFC
    public static let testDeviceIRQs: UInt16 = 0x2000
    /// The PIIX-style ACPI power-management block (PM1 event, PM1 control, PM timer).
    public static let pmBlock: UInt16 = 0xB000

    // MARK: Interrupt lines

    public static let com1IRQ: UInt32 = 4
    public static let rtcIRQ: UInt32 = 8
    public static let sciIRQ: UInt32 = 9
    /// Lines the device manager may hand out (virtio devices): the ISA lines no device
    /// here uses, edge-triggered and active-high by default as Linux sets them up for a
    /// `virtio_mmio.device=` announcement (Firecracker hands out the same kind).
    public static let allocatableIRQs: [UInt32] = [5, 6, 7, 10, 11, 12, 14, 15]
    /// The first GSI above the irqchip pins, for MSI routes.
    public static let firstMSIRoute: UInt32 = 24
}
