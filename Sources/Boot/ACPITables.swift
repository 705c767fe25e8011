import GuestMemory

/// What the DSDT describes beyond sleep states: virtio-mmio windows (so kernels find
/// them without a command-line announcement) and the PCI host bridge (its bus, ports,
/// memory window and each slot's INTx line), with the MCFG table for its ECAM.
public struct ACPIDevices: Sendable, Equatable {
    public struct MMIODevice: Sendable, Equatable {
        public var base: UInt64, size: UInt64, irq: UInt32
        public init(base: UInt64, size: UInt64, irq: UInt32) { self.base = base; self.size = size; self.irq = irq }
    }
    public struct PCIRoot: Sendable, Equatable {
        public var ecam: UInt64, ecamSize: UInt64
        public var memoryWindow: ClosedRange<UInt64>
        /// Each occupied slot's INTA# line (a GSI; level-triggered, active-low, as PCI).
        public var interrupts: [(slot: Int, gsi: UInt32)]
        public init(ecam: UInt64, ecamSize: UInt64, memoryWindow: ClosedRange<UInt64>, interrupts: [(slot: Int, gsi: UInt32)]) {
            self.ecam = ecam; self.ecamSize = ecamSize; self.memoryWindow = memoryWindow; self.interrupts = interrupts
        }
        public static func == (a: PCIRoot, b: PCIRoot) -> Bool {
            a.ecam == b.ecam && a.ecamSize == b.ecamSize && a.memoryWindow == b.memoryWindow
                && a.interrupts.map(\.slot) == b.interrupts.map(\.slot) && a.interrupts.map(\.gsi) == b.interrupts.map(\.gsi)
        }
    }
    public var virtioMMIO: [MMIODevice]
    public var pci: PCIRoot?
    public init(virtioMMIO: [MMIODevice] = [], pci: PCIRoot? = nil) { self.virtioMMIO = virtioMMIO; self.pci = pci }
}

/// The ACPI tables a PC guest looks for: RSDP in the BIOS area, RSDT and XSDT, FADT
/// (with the PM timer and PM1 control ports, so a guest can read time and power off
/// through S5), FACS, a DSDT holding `\_S3`, `\_S5` and the devices of `ACPIDevices`,
/// a MADT listing one local APIC per vCPU, the IOAPIC and the usual ISA overrides, and
/// with a PCI host bridge the MCFG. ACPI 6.x, section 5.2.
public enum ACPITables {
    /// Where the tables go (`AddressMap`).
    public static let base: UInt64 = AddressMap.acpiTables
    public static let areaSize: UInt64 = AddressMap.acpiTablesSize

    /// The PIIX-style power-management block the FADT describes (as in QEMU's PC).
    public static let pmBase: UInt16 = AddressMap.pmBlock
    public static let pm1EventPort: UInt16 = pmBase
    public static let pm1ControlPort: UInt16 = pmBase + 4
    public static let pmTimerPort: UInt16 = pmBase + 8
    /// The SLP_TYP value `\_S5` declares: writing it with SLP_EN to PM1 control powers off.
    public static let s5SleepType: UInt16 = 5
    /// The SLP_TYP value `\_S3` declares (suspend to RAM). 1, as QEMU's PIIX4 has it:
    /// kvm-unit-tests' `s3` writes it without reading `\_S3`.
    public static let s3SleepType: UInt16 = 1
    /// The FACS, and in it the 32-bit and 64-bit firmware waking vectors a guest sets
    /// before it suspends (ACPI 6.x, 5.2.10).
    public static let facsAddress: UInt64 = AddressMap.acpiTables + 0xC0
    public static let facsWakingVector: UInt64 = facsAddress + 12
    public static let facsXWakingVector: UInt64 = facsAddress + 24
    public static let sciIRQ = UInt16(AddressMap.sciIRQ)
    public static let localAPICAddress = UInt32(AddressMap.localAPIC)
    public static let ioAPICAddress = UInt32(AddressMap.ioAPIC)

    static let oem = "SWIFTV"
    static let oemTable = "SWIFTVSR"

    /// Writes the tables for `cpus` vCPUs and returns the RSDP's address.
    @discardableResult
    public static func write(into memory: GuestMemory, cpus: Int, devices: ACPIDevices = ACPIDevices()) throws(BootError) -> UInt64 {
        guard memory.isValid(GuestAddress(base), length: areaSize) else {
            throw .doesNotFit(what: "ACPI tables", address: base, size: areaSize, memorySize: memory.size)
        }
        let rsdp = base, rsdt = base + 0x40, xsdt = base + 0x80, facs = facsAddress, fadt = base + 0x100,
            mcfg = base + 0x240, madt = base + 0x300, dsdt = base + 0x1000 // FADT: 268 bytes from +0x100

        var w = ByteWriter()
        // DSDT: Name (_S3, Package (4) { 1, 1, 0, 0 }), Name (_S5, Package (4) { 5, 5, 0, 0 })
        func sleepState(_ n: UInt8, _ type: UInt16) -> [UInt8] {
            [0x08, 0x5F, 0x53, 0x30 + n, 0x5F, 0x12, 0x08, 0x04, 0x0A, UInt8(type), 0x0A, UInt8(type), 0x00, 0x00]
        }
        let aml = sleepState(3, s3SleepType) + sleepState(5, s5SleepType) + deviceAML(devices)
        let dsdtBytes = table("DSDT", revision: 2, body: aml)
        // MCFG (PCI Firmware 3.0, 4.1.2): one ECAM allocation, segment 0, bus 0.
        var mcfgBytes: [UInt8] = []
        if let pci = devices.pci {
            var c = ByteWriter()
            c.u64(0); c.u64(pci.ecam); c.u16(0); c.u8(0); c.u8(UInt8(truncatingIfNeeded: pci.ecamSize >> 20 &- 1)); c.u32(0)
            mcfgBytes = table("MCFG", revision: 1, body: c.bytes)
        }

        // FACS: 64 bytes, no checksum.
        w = ByteWriter()
        w.ascii("FACS", length: 4); w.u32(64); w.u32(0); w.u32(0); w.u32(0); w.u32(0); w.u64(0); w.u8(2)
        w.raw([UInt8](repeating: 0, count: 64 - w.bytes.count))
        let facsBytes = w.bytes

        // FADT, revision 5 layout (ACPI 5.0: 268 bytes) without SLEEP registers in use.
        var f = ByteWriter()
        f.u32(UInt32(facs))               // FIRMWARE_CTRL
        f.u32(UInt32(dsdt))               // DSDT
        f.u8(0)                           // reserved
        f.u8(0)                           // preferred PM profile: unspecified
        f.u16(sciIRQ)                     // SCI_INT
        f.u32(0)                          // SMI_CMD: none, ACPI is always on
        f.u8(0); f.u8(0); f.u8(0); f.u8(0) // ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
        f.u32(UInt32(pm1EventPort)); f.u32(0) // PM1a/b event
        f.u32(UInt32(pm1ControlPort)); f.u32(0) // PM1a/b control
        f.u32(0)                          // PM2 control
        f.u32(UInt32(pmTimerPort))        // PM timer
        f.u32(0); f.u32(0)                // GPE0, GPE1
        f.u8(4); f.u8(2); f.u8(0); f.u8(4) // PM1 event length, PM1 control length, PM2, PM timer
        f.u8(0); f.u8(0); f.u8(0); f.u8(0) // GPE0/1 lengths, GPE1 base, CST_CNT
        f.u16(101); f.u16(1001)           // C2/C3 latency: not supported
        f.u16(0); f.u16(0)                // flush size, stride
        f.u8(0); f.u8(0); f.u8(0); f.u8(0); f.u8(0x32) // duty offset/width, day/month alarm, century
        f.u16(0x3)                        // IAPC_BOOT_ARCH: legacy devices, 8042
        f.u8(0)
        f.u32(1 | 1 << 2 | 1 << 4 | 1 << 5 | 1 << 8) // WBINVD, PROC_C1, no fixed power/sleep buttons, 32-bit PM timer
        f.raw(gas(space: 1, bits: 8, address: 0xCF9)) // RESET_REG: the PCI reset port
        f.u8(0x6)                         // RESET_VALUE
        f.u16(0); f.u8(0)                 // ARM boot flags, FADT minor version
        f.u64(0)                          // X_FIRMWARE_CTRL (FIRMWARE_CTRL is used)
        f.u64(dsdt)                       // X_DSDT
        f.raw(gas(space: 1, bits: 32, address: UInt64(pm1EventPort)))
        f.raw(gas(space: 0, bits: 0, address: 0))
        f.raw(gas(space: 1, bits: 16, address: UInt64(pm1ControlPort)))
        f.raw(gas(space: 0, bits: 0, address: 0))
        f.raw(gas(space: 0, bits: 0, address: 0))
        f.raw(gas(space: 1, bits: 32, address: UInt64(pmTimerPort)))
        f.raw(gas(space: 0, bits: 0, address: 0))
        f.raw(gas(space: 0, bits: 0, address: 0))
        f.raw(gas(space: 0, bits: 0, address: 0)) // sleep control
        f.raw(gas(space: 0, bits: 0, address: 0)) // sleep status
        let fadtBytes = table("FACP", revision: 5, body: f.bytes)

        // MADT.
        var m = ByteWriter()
        m.u32(localAPICAddress)
        m.u32(1)                          // PCAT_COMPAT: there are 8259s too
        for cpu in 0..<cpus {
            m.u8(0); m.u8(8); m.u8(UInt8(truncatingIfNeeded: cpu)); m.u8(UInt8(truncatingIfNeeded: cpu)); m.u32(1)
        }
        m.u8(1); m.u8(12); m.u8(UInt8(truncatingIfNeeded: cpus)); m.u8(0); m.u32(ioAPICAddress); m.u32(0)
        m.u8(2); m.u8(10); m.u8(0); m.u8(0); m.u32(2); m.u16(0)           // IRQ0 -> GSI 2
        m.u8(2); m.u8(10); m.u8(0); m.u8(UInt8(sciIRQ)); m.u32(UInt32(sciIRQ)); m.u16(0xD) // SCI: level, active high
        m.u8(4); m.u8(6); m.u8(0xFF); m.u16(0); m.u8(1)                   // NMI on LINT1 of every CPU
        let madtBytes = table("APIC", revision: 3, body: m.bytes)

        var r = ByteWriter()
        r.u32(UInt32(fadt)); r.u32(UInt32(madt))
        if !mcfgBytes.isEmpty { r.u32(UInt32(mcfg)) }
        let rsdtBytes = table("RSDT", revision: 1, body: r.bytes)
        var x = ByteWriter()
        x.u64(fadt); x.u64(madt)
        if !mcfgBytes.isEmpty { x.u64(mcfg) }
        let xsdtBytes = table("XSDT", revision: 1, body: x.bytes)

        var p = ByteWriter()
        p.ascii("RSD PTR ", length: 8); p.u8(0); p.ascii(oem, length: 6); p.u8(2); p.u32(UInt32(rsdt))
        p.u32(36); p.u64(xsdt); p.u8(0); p.raw([0, 0, 0])
        p.bytes[8] = checksum(p.bytes[0..<20])
        p.bytes[32] = checksum(p.bytes[0..<36])

        // Each table must end before the next begins.
        let layout: [(UInt64, Int)] = [(rsdp, p.bytes.count), (rsdt, rsdtBytes.count), (xsdt, xsdtBytes.count), (facs, facsBytes.count),
                                       (fadt, fadtBytes.count), (mcfg, mcfgBytes.count), (madt, madtBytes.count),
                                       (dsdt, dsdtBytes.count), (base + areaSize, 0)]
        for (a, b) in zip(layout, layout.dropFirst()) where a.0 + UInt64(a.1) > b.0 {
            throw .malformed("ACPI table at 0x\(String(a.0, radix: 16)) (\(a.1) bytes) runs into the next one (too many vCPUs or devices?)")
        }
        try ModeSetup.wrap { () throws(GuestMemoryError) in
            try memory.fill(0, count: dsdt - base + UInt64(dsdtBytes.count), at: GuestAddress(base))
            for (address, bytes) in [(rsdp, p.bytes), (rsdt, rsdtBytes), (xsdt, xsdtBytes), (facs, facsBytes),
                                     (fadt, fadtBytes), (mcfg, mcfgBytes), (dsdt, dsdtBytes), (madt, madtBytes)] {
                try memory.write(bytes: bytes, at: GuestAddress(address))
            }
        }
        return rsdp
    }

    /// `Scope (\_SB) { ... }` with a `LNRO0005` device per virtio-mmio window (the id
    /// Linux's virtio_mmio driver matches) and the PCI host bridge `PCI0`: its bus
    /// number, the configuration ports, all other I/O ports and the BAR memory window in
    /// `_CRS`, and a `_PRT` routing each slot's INTA# to its GSI.
    static func deviceAML(_ devices: ACPIDevices) -> [UInt8] {
        var body: [UInt8] = []
        for (i, d) in devices.virtioMMIO.enumerated() {
            let crs = AML.memory32Fixed(base: UInt32(truncatingIfNeeded: d.base), length: UInt32(truncatingIfNeeded: d.size))
                + AML.interrupt(d.irq, edge: true) + AML.endTag
            body += AML.device("VR" + (i < 10 ? "0" : "") + String(i, radix: 16).uppercased(),
                               AML.named("_HID", AML.string("LNRO0005")) + AML.named("_UID", AML.integer(UInt64(i)))
                                   + AML.named("_CRS", AML.buffer(crs)))
        }
        if let pci = devices.pci {
            let crs = AML.wordRange(kind: 2, min: 0, max: 0) + AML.io(0xCF8, length: 8)
                + AML.wordRange(kind: 1, min: 0x0000, max: 0x0CF7) + AML.wordRange(kind: 1, min: 0x0D00, max: 0xFFFF)
                + AML.dwordMemory(min: UInt32(truncatingIfNeeded: pci.memoryWindow.lowerBound),
                                  max: UInt32(truncatingIfNeeded: pci.memoryWindow.upperBound))
                + AML.endTag
            let prt = AML.package(pci.interrupts.map { r in
                AML.package([AML.integer(UInt64(r.slot) << 16 | 0xFFFF), AML.integer(0), AML.integer(0), AML.integer(UInt64(r.gsi))])
            })
            body += AML.device("PCI0", AML.named("_HID", AML.eisaID("PNP0A03")) + AML.named("_UID", AML.integer(0))
                                   + AML.named("_SEG", AML.integer(0)) + AML.named("_BBN", AML.integer(0))
                                   + AML.named("_CRS", AML.buffer(crs)) + AML.named("_PRT", prt))
        }
        return body.isEmpty ? [] : AML.scope("_SB_", body)
    }

    /// A table: the 36-byte header, then `body`, with the checksum making the sum 0.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var w = ByteWriter()
        w.ascii(signature, length: 4); w.u32(UInt32(36 + body.count)); w.u8(revision); w.u8(0)
        w.ascii(oem, length: 6); w.ascii(oemTable, length: 8); w.u32(1); w.ascii("SWFT", length: 4); w.u32(1)
        w.raw(body)
        w.bytes[9] = checksum(w.bytes[...])
        return w.bytes
    }

    /// Generic Address Structure (ACPI 5.2.3.2): 1 = system I/O space.
    static func gas(space: UInt8, bits: UInt8, address: UInt64) -> [UInt8] {
        var w = ByteWriter()
        w.u8(space); w.u8(bits); w.u8(0); w.u8(space == 0 ? 0 : (bits <= 8 ? 1 : bits <= 16 ? 2 : 3)); w.u64(address)
        return w.bytes
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt8 {
        0 &- bytes.reduce(UInt8(0)) { $0 &+ $1 }
    }
}

/// The guest-physical memory map (e820 types) a firmware would report: RAM below
/// 640 KiB, the BIOS area (ACPI tables) reserved, RAM from 1 MiB, and RAM above 4 GiB.
public enum PlatformMemoryMap {
    public static let ram: UInt32 = 1
    public static let reserved: UInt32 = 2
    public static let acpi: UInt32 = 3

    /// Entries for the RAM `ranges` (as `AddressMap.ramRanges` lays them out), and
    /// `reserved` ranges in the hole (a PCI ECAM window: Linux ignores an MCFG whose
    /// window is not reserved).
    public static func entries(ramRanges: [(start: UInt64, size: UInt64)],
                               reserved extra: [(start: UInt64, size: UInt64)] = []) -> [(base: UInt64, length: UInt64, type: UInt32)] {
        var out: [(UInt64, UInt64, UInt32)] = []
        for r in ramRanges {
            if r.start == 0 {
                out.append((0, min(r.size, 0x9_FC00), ram))
                out.append((0x9_FC00, 0x400, reserved))            // EBDA
                out.append((ACPITables.base, ACPITables.areaSize, acpi))
                if r.size > 0x10_0000 { out.append((0x10_0000, r.size - 0x10_0000, ram)) }
            } else {
                out.append((r.start, r.size, ram))
            }
        }
        return out + extra.map { ($0.start, $0.size, reserved) }
    }
}
