import Boot
import GuestMemory
import TestSupport
import XCTest

/// Crafted Multiboot images: valid ones load where they say; broken ones are one clear
/// error each.
final class MultibootTests: XCTestCase {
    static func elfImage(entry: UInt32 = 0x10_0010, paddr: UInt32 = 0x10_0000, code: [UInt8] = [0xF4],
                         fileSize: UInt32? = nil, memSize: UInt32? = nil, segments: Int = 1) -> [UInt8] {
        CraftedImage.multibootELF(entry: entry, paddr: paddr, code: code, fileSize: fileSize, memSize: memSize, segments: segments)
    }

    func testLoadsELFSegmentsAndWritesTheInformation() throws {
        let memory = try GuestMemory(ranges: [(0, 32 << 20)])
        let kernel = try Multiboot(Self.elfImage())
        XCTAssertEqual(kernel.entry, 0x10_0010)
        XCTAssertEqual(kernel.imageEnd, 0x10_2000)
        let map = PlatformMemoryMap.entries(ramRanges: [(0, 32 << 20)])
        let state = try kernel.load(into: memory, commandLine: "kernel.flat cpuid", modules: [(Array("A=1\n".utf8), "env")], memoryMap: map)
        XCTAssertEqual(state.mode, .protected)
        XCTAssertEqual(state.rip, 0x10_0010)
        XCTAssertEqual(state.rax, 0x2BAD_B002)
        XCTAssertEqual(try memory.read(UInt8.self, at: GuestAddress(0x10_0010)), 0xF4)
        XCTAssertEqual(try memory.read(UInt32.self, at: GuestAddress(0x10_1000)), 0, "BSS is zeroed")

        let info = GuestAddress(state.rbx)
        XCTAssertGreaterThanOrEqual(state.rbx, 0x10_2000, "information goes after the image")
        let flags: UInt32 = try memory.read(at: info)
        XCTAssertEqual(flags & 0x4F, 0x4D, "memory, cmdline, modules and memory map present")
        XCTAssertEqual(try memory.read(UInt32.self, at: info.adding(4)!), 639, "mem_lower in KiB")
        XCTAssertEqual(try memory.read(UInt32.self, at: info.adding(8)!), 31 * 1024, "mem_upper in KiB above 1 MiB")
        let cmdline: UInt32 = try memory.read(at: info.adding(16)!)
        XCTAssertEqual(try memory.readCString(at: GuestAddress(UInt64(cmdline)), maxLength: 100), "kernel.flat cpuid")
        XCTAssertEqual(try memory.read(UInt32.self, at: info.adding(20)!), 1)
        let mods: UInt32 = try memory.read(at: info.adding(24)!)
        let modStart: UInt32 = try memory.read(at: GuestAddress(UInt64(mods)))
        let modEnd: UInt32 = try memory.read(at: GuestAddress(UInt64(mods) + 4))
        XCTAssertEqual(modStart % 0x1000, 0, "modules are page-aligned")
        XCTAssertEqual(try memory.read(bytes: Int(modEnd - modStart), at: GuestAddress(UInt64(modStart))), Array("A=1\n".utf8))
        let mapLength: UInt32 = try memory.read(at: info.adding(44)!)
        XCTAssertEqual(Int(mapLength), map.count * 24)
    }

    func testAOutKludgeAddressesWinOverELF() throws {
        var b = [UInt8](repeating: 0x90, count: 0x200)
        func put32(_ v: UInt32, _ o: Int) { for i in 0..<4 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
        let flags: UInt32 = 1 << 16
        put32(Multiboot.headerMagic, 0x40); put32(flags, 0x44); put32(0 &- (Multiboot.headerMagic &+ flags), 0x48)
        put32(0x20_0040, 0x4C)  // header_addr
        put32(0x20_0000, 0x50)  // load_addr
        put32(0x20_0200, 0x54)  // load_end_addr
        put32(0x20_1000, 0x58)  // bss_end_addr
        put32(0x20_0100, 0x5C)  // entry_addr
        let kernel = try Multiboot(b)
        XCTAssertEqual(kernel.entry, 0x20_0100)
        XCTAssertEqual(kernel.pieces.first?.address, 0x20_0000)
        XCTAssertEqual(kernel.pieces.first?.memorySize, 0x1000)
    }

    func testMalformedImagesAreClearErrors() {
        func message(_ bytes: [UInt8]) -> String {
            do { _ = try Multiboot(bytes); return "loaded" } catch { return error.description }
        }
        XCTAssertEqual(message([UInt8](repeating: 0, count: 100)), "no Multiboot header in the first 8 KiB")
        var badChecksum = Self.elfImage()
        badChecksum[0x108] ^= 1
        XCTAssertEqual(message(badChecksum), "Multiboot header magic found, but its checksum is wrong")
        XCTAssertTrue(message(Array(Self.elfImage(fileSize: 0x100).prefix(0x180))).contains("past the end of the file"), "truncated")
        XCTAssertTrue(message(Self.elfImage(entry: 0x50_0000)).contains("outside every loaded segment"))
        XCTAssertTrue(message(Self.elfImage(fileSize: 0x3000, memSize: 0x100)).contains("past the end") || message(Self.elfImage(fileSize: 0x3000, memSize: 0x100)).contains("larger in the file"))
        XCTAssertTrue(message(Self.elfImage(memSize: 0x4000, segments: 2)).contains("overlap"))
        var noELF = Self.elfImage()
        noELF[1] = 0
        XCTAssertTrue(message(noELF).contains("not an ELF file"))
        var unknownFlag = Self.elfImage()
        let flags: UInt32 = 1 << 5
        for i in 0..<4 { unknownFlag[0x104 + i] = UInt8(truncatingIfNeeded: flags >> (8 * UInt32(i))) }
        let sum = 0 &- (Multiboot.headerMagic &+ flags)
        for i in 0..<4 { unknownFlag[0x108 + i] = UInt8(truncatingIfNeeded: sum >> (8 * UInt32(i))) }
        XCTAssertTrue(message(unknownFlag).contains("requires features"))
    }

    func testSegmentsBeyondGuestMemoryAreRefused() throws {
        let small = try GuestMemory(ranges: [(0, 1 << 20)])
        let kernel = try Multiboot(Self.elfImage())
        XCTAssertThrowsError(try kernel.load(into: small, commandLine: "", modules: [], memoryMap: [])) { e in
            XCTAssertTrue("\(e)".contains("does not fit in guest memory"), "\(e)")
        }
    }
}

final class ACPITablesTests: XCTestCase {
    func checksumOK(_ m: GuestMemory, _ at: UInt64, _ length: Int) throws -> Bool {
        try m.read(bytes: length, at: GuestAddress(at)).reduce(UInt8(0), &+) == 0
    }

    /// The tables the RSDT lists, by signature, each checksum checked.
    func tables(_ m: GuestMemory, rsdp: UInt64) throws -> [String: UInt64] {
        let rsdt = UInt64(try m.read(UInt32.self, at: GuestAddress(rsdp + 16)))
        let rsdtLength = Int(try m.read(UInt32.self, at: GuestAddress(rsdt + 4)))
        XCTAssertTrue(try checksumOK(m, rsdt, rsdtLength))
        var found: [String: UInt64] = [:]
        for i in 0..<(rsdtLength - 36) / 4 {
            let t = UInt64(try m.read(UInt32.self, at: GuestAddress(rsdt + 36 + UInt64(i) * 4)))
            let sig = String(decoding: try m.read(bytes: 4, at: GuestAddress(t)), as: UTF8.self)
            XCTAssertTrue(try checksumOK(m, t, Int(try m.read(UInt32.self, at: GuestAddress(t + 4)))), sig)
            found[sig] = t
        }
        return found
    }

    func testTablesAreFoundTheWayGuestsLookAndChecksumsHold() throws {
        let m = try GuestMemory(ranges: [(0, 16 << 20)])
        let rsdp = try ACPITables.write(into: m, cpus: 3)
        XCTAssertTrue(rsdp >= 0xE_0000 && rsdp < 0x10_0000 && rsdp % 16 == 0)
        XCTAssertEqual(try m.read(bytes: 8, at: GuestAddress(rsdp)), Array("RSD PTR ".utf8))
        XCTAssertTrue(try checksumOK(m, rsdp, 20))
        XCTAssertTrue(try checksumOK(m, rsdp, 36))
        let found = try tables(m, rsdp: rsdp)
        let fadt = try XCTUnwrap(found["FACP"])
        XCTAssertEqual(try m.read(UInt32.self, at: GuestAddress(fadt + 76)), UInt32(ACPITables.pmTimerPort))
        XCTAssertEqual(try m.read(UInt32.self, at: GuestAddress(fadt + 64)), UInt32(ACPITables.pm1ControlPort))
        let dsdt = UInt64(try m.read(UInt32.self, at: GuestAddress(fadt + 40)))
        XCTAssertEqual(try m.read(bytes: 4, at: GuestAddress(dsdt)), Array("DSDT".utf8))
        let aml = try m.read(bytes: 64, at: GuestAddress(dsdt))
        XCTAssertTrue((0..<60).contains { Array(aml[$0..<($0 + 4)]) == Array("_S5_".utf8) }, "DSDT declares \\_S5")
        let facs = UInt64(try m.read(UInt32.self, at: GuestAddress(fadt + 36)))
        XCTAssertEqual(try m.read(bytes: 4, at: GuestAddress(facs)), Array("FACS".utf8))
        XCTAssertEqual(facs % 64, 0)
        // MADT: one enabled local APIC per vCPU, and the IOAPIC.
        let madt = try XCTUnwrap(found["APIC"])
        let length = UInt64(try m.read(UInt32.self, at: GuestAddress(madt + 4)))
        var offset = madt + 44, apics = 0, ioapics = 0
        while offset < madt + length {
            let type: UInt8 = try m.read(at: GuestAddress(offset)), len: UInt8 = try m.read(at: GuestAddress(offset + 1))
            if type == 0 { apics += 1 }
            if type == 1 { ioapics += 1 }
            offset += UInt64(max(len, 1))
        }
        XCTAssertEqual(apics, 3)
        XCTAssertEqual(ioapics, 1)
    }

    /// With devices: MCFG in both root tables, and the DSDT's device objects (virtio-mmio
    /// windows, the PCI host bridge with _CRS and _PRT) well-formed AML.
    func testDevicesGoIntoTheDSDTAndMCFG() throws {
        let m = try GuestMemory(ranges: [(0, 16 << 20)])
        let devices = ACPIDevices(virtioMMIO: [.init(base: 0xD000_0000, size: 0x1000, irq: 5), .init(base: 0xD000_1000, size: 0x1000, irq: 6)],
                                  pci: .init(ecam: 0xE000_0000, ecamSize: 1 << 20, memoryWindow: 0xD000_0000...0xDFFF_FFFF,
                                             interrupts: [(1, 10), (2, 11)]))
        let found = try tables(m, rsdp: ACPITables.write(into: m, cpus: 2, devices: devices))
        let mcfg = try XCTUnwrap(found["MCFG"])
        XCTAssertEqual(try m.read(UInt64.self, at: GuestAddress(mcfg + 44)), 0xE000_0000, "ECAM base")
        XCTAssertEqual(try m.read(UInt8.self, at: GuestAddress(mcfg + 55)), 0, "buses 0 to 0")
        let fadt = try XCTUnwrap(found["FACP"])
        let dsdt = UInt64(try m.read(UInt32.self, at: GuestAddress(fadt + 40)))
        let length = Int(try m.read(UInt32.self, at: GuestAddress(dsdt + 4)))
        XCTAssertTrue(try checksumOK(m, dsdt, length))
        let aml = try m.read(bytes: length, at: GuestAddress(dsdt))
        func contains(_ s: [UInt8]) -> Bool { (0...(aml.count - s.count)).contains { Array(aml[$0..<($0 + s.count)]) == s } }
        for name in ["_SB_", "PCI0", "_PRT", "_CRS", "VR00", "VR01", "LNRO0005"] { XCTAssertTrue(contains(Array(name.utf8)), name) }
        XCTAssertTrue(contains([0x0C, 0x41, 0xD0, 0x0A, 0x03]), "EISAID(PNP0A03)")
        // The \_SB scope's package length spans exactly to the end of the table.
        let scope = try XCTUnwrap((0..<aml.count).first { aml[$0] == 0x10 && aml[$0 + 1] & 0xC0 != 0 })
        let lead = aml[scope + 1], extra = Int(lead >> 6)
        var pkg = Int(lead & 0x0F)
        for i in 0..<extra { pkg |= Int(aml[scope + 2 + i]) << (4 + 8 * i) }
        XCTAssertEqual(scope + 1 + pkg, aml.count, "Scope (\\_SB) runs to the end of the DSDT")
        // Memory32Fixed for the first window, Extended Interrupt 5, edge, active high.
        XCTAssertTrue(contains([0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xD0, 0x00, 0x10, 0x00, 0x00]))
        XCTAssertTrue(contains([0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00]))
        let map = PlatformMemoryMap.entries(ramRanges: [(0, 16 << 20)], reserved: [(0xE000_0000, 1 << 20)])
        XCTAssertTrue(map.contains { $0.base == 0xE000_0000 && $0.length == 1 << 20 && $0.type == PlatformMemoryMap.reserved })
    }

    func testAMLPackageLengthsUseAsManyBytesAsNeeded() {
        XCTAssertEqual(AML.buffer([1, 2]).prefix(3), [0x11, 0x05, 0x0A])
        let big = AML.device("BIGD", [UInt8](repeating: 0xA3, count: 100))
        // 4 name bytes + 100 = 104 of body; 2 length bytes: 106 = 0x6A -> 0x4A, 0x06.
        XCTAssertEqual(Array(big.prefix(4)), [0x5B, 0x82, 0x4A, 0x06])
        let huge = AML.scope("_SB_", [UInt8](repeating: 0xA3, count: 5000))
        XCTAssertEqual(huge[1] >> 6, 2, "three length bytes past 4 KiB")
        XCTAssertEqual(AML.integer(0x1234), [0x0B, 0x34, 0x12])
        XCTAssertEqual(AML.integer(0x1_0000_0000).first, 0x0E)
    }

    func testMemoryMapDescribesRAMAndTheBIOSArea() {
        let map = PlatformMemoryMap.entries(ramRanges: [(0, 0xC000_0000), (0x1_0000_0000, 1 << 30)])
        XCTAssertEqual(map.first?.base, 0)
        XCTAssertEqual(map.first?.type, PlatformMemoryMap.ram)
        XCTAssertTrue(map.contains { $0.base == ACPITables.base && $0.type == PlatformMemoryMap.acpi })
        XCTAssertTrue(map.contains { $0.base == 0x10_0000 && $0.length == 0xC000_0000 - 0x10_0000 })
        XCTAssertTrue(map.contains { $0.base == 0x1_0000_0000 && $0.length == 1 << 30 })
    }
}

final class LegacyFirmwareTests: XCTestCase {
    func testFirmwareStartsInRealModeAndHandsOverTheMultibootRegisters() throws {
        let memory = try GuestMemory(ranges: [(0, 32 << 20)])
        let kernel = try Multiboot(MultibootTests.elfImage())
        let entry = try kernel.load(into: memory, commandLine: "", modules: [], memoryMap: PlatformMemoryMap.entries(ramRanges: [(0, 32 << 20)]))
        let state = try LegacyFirmware.wrap(entry, memory: memory)
        XCTAssertEqual(state.mode, .real)
        XCTAssertEqual(state.code.selector, 0xF000)
        XCTAssertEqual(state.rip, 0)
        XCTAssertEqual(state.rbx, entry.rbx, "EBX: the Multiboot information")
        XCTAssertEqual(state.rsi, 0x10_0010, "ESI: the kernel entry the firmware jumps to")
        XCTAssertEqual(try memory.read(bytes: FirmwareImage.bytes.count, at: GuestAddress(FirmwareImage.loadAddress)), FirmwareImage.bytes)
    }

    func testFirmwareUsesTheBootGDTTheVMMWrites() {
        let d = FirmwareImage.bytes[FirmwareImage.gdtDescriptorOffset..<(FirmwareImage.gdtDescriptorOffset + 6)]
        let limit = UInt16(d[d.startIndex]) | UInt16(d[d.startIndex + 1]) << 8
        let base = d.dropFirst(2).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        XCTAssertEqual(base, BootLayout.gdt)
        XCTAssertEqual(limit, 6 * 8 - 1)
    }
}
