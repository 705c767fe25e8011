import Boot
import GuestMemory
import TestSupport
import XCTest

final class LinuxKernelTests: XCTestCase {
    let map = PlatformMemoryMap.entries(ramRanges: [(0, 256 << 20)])

    func testVmlinuxLoadsAtPhysicalAddressesWithAZeroPage() throws {
        let memory = try GuestMemory(ranges: [(0, 256 << 20)])
        let kernel = try LinuxKernel(CraftedImage.elf64(code: [0xF4], entryOffset: 0))
        XCTAssertEqual(kernel.format, .vmlinux)
        XCTAssertEqual(kernel.entry, 0x100_0000, "the virtual entry translated to its physical address")
        let state = try kernel.load(into: memory, commandLine: "console=ttyS0 quiet", initrd: Array("initrd!".utf8), memoryMap: map, rsdp: 0xE_0000)
        XCTAssertEqual(state.mode, .long)
        XCTAssertEqual(state.rip, 0x100_0000)
        XCTAssertEqual(state.rsi, LinuxKernel.zeroPage)
        let zp = GuestAddress(LinuxKernel.zeroPage)
        XCTAssertEqual(try memory.read(UInt16.self, at: zp.adding(0x1FE)!), 0xAA55)
        XCTAssertEqual(try memory.read(UInt32.self, at: zp.adding(0x202)!), 0x5372_6448)
        XCTAssertEqual(try memory.read(UInt8.self, at: zp.adding(0x210)!), 0xFF, "type_of_loader")
        let cmdline = try memory.read(UInt32.self, at: zp.adding(0x228)!)
        XCTAssertEqual(try memory.readCString(at: GuestAddress(UInt64(cmdline)), maxLength: 100), "console=ttyS0 quiet")
        XCTAssertEqual(try memory.read(UInt8.self, at: zp.adding(0x1E8)!), UInt8(map.count))
        XCTAssertEqual(try memory.read(UInt64.self, at: zp.adding(0x70)!), 0xE_0000, "acpi_rsdp_addr")
        let initrd = UInt64(try memory.read(UInt32.self, at: zp.adding(0x218)!))
        XCTAssertEqual(try memory.read(UInt32.self, at: zp.adding(0x21C)!), 7)
        XCTAssertEqual(initrd % 0x1000, 0)
        XCTAssertGreaterThan(initrd, 0x100_1000, "above the kernel")
        XCTAssertLessThan(initrd + 7, 256 << 20)
        XCTAssertEqual(try memory.read(bytes: 7, at: GuestAddress(initrd)), Array("initrd!".utf8))
    }

    func testBzImageEntersAtItsSixtyFourBitEntry() throws {
        let memory = try GuestMemory(ranges: [(0, 256 << 20)])
        let kernel = try LinuxKernel(CraftedImage.bzImage())
        XCTAssertEqual(kernel.format, .bzImage)
        XCTAssertEqual(kernel.protocolVersion, 0x020F)
        let state = try kernel.load(into: memory, commandLine: "x", initrd: nil, memoryMap: map, rsdp: nil)
        XCTAssertEqual(state.rip, 0x10_0200)
        XCTAssertEqual(try memory.read(UInt8.self, at: GuestAddress(0x10_0000)), 0x90, "protected-mode code at 1 MiB")
        XCTAssertEqual(try memory.read(UInt16.self, at: GuestAddress(LinuxKernel.zeroPage + 0x236)), 0x3, "setup header copied")
        XCTAssertEqual(try memory.read(UInt8.self, at: GuestAddress(LinuxKernel.zeroPage + 0x211)) & 0x81, 0x81)
    }

    func testMalformedKernelsAreClearErrors() {
        func message(_ b: [UInt8]) -> String {
            do { _ = try LinuxKernel(b); return "loaded" } catch { return error.description }
        }
        XCTAssertTrue(message([UInt8](repeating: 0, count: 100)).contains("too short"))
        XCTAssertTrue(message([UInt8](repeating: 0, count: 0x1000)).contains("no boot signature"))
        var noHdrS = CraftedImage.bzImage(); noHdrS[0x202] = 0
        XCTAssertTrue(message(noHdrS).contains("no \"HdrS\""))
        XCTAssertTrue(message(CraftedImage.bzImage(version: 0x020A)).contains("too old"))
        XCTAssertTrue(message(CraftedImage.bzImage(kernel64: false)).contains("no 64-bit entry"))
        XCTAssertTrue(message(CraftedImage.bzImage(syssizeBytes: 0x10000)).contains("truncated"))
        XCTAssertTrue(message(Array(CraftedImage.bzImage().prefix(0x300))).contains("truncated"))
        XCTAssertTrue(message(CraftedImage.multibootELF()).contains("not a 64-bit x86 kernel"))
        XCTAssertTrue(message(Array(CraftedImage.elf64(code: [0xF4]).prefix(0x800))).contains("past the end of the file"))
        // Found by the kernel-images fuzz target: an entry in a segment whose virtual range
        // wraps past 2^64 trapped on the sum (now: the entry is simply outside).
        let wrapping = CraftedImage.elf64(code: [0xF4], virtualAddress: 0xFFFF_FFFF_FFFF_F000, entryOffset: 0x800)
        XCTAssertTrue(message(wrapping).contains("outside its segments") || message(wrapping) == "loaded", message(wrapping))
    }

    /// Found by the kernel-images fuzz target: a setup header's cmdline_size of 0 made
    /// the command-line error message itself overflow.
    func testAZeroCommandLineSizeIsAClearError() throws {
        var image = CraftedImage.bzImage()
        for i in 0..<4 { image[0x238 + i] = 0 }
        let kernel = try LinuxKernel(image)
        let memory = try GuestMemory(ranges: [(0, 64 << 20)])
        XCTAssertThrowsError(try kernel.load(into: memory, commandLine: "", initrd: nil, memoryMap: map, rsdp: nil)) { e in
            XCTAssertTrue("\(e)".contains("takes at most 0"), "\(e)")
        }
    }

    func testCommandLineAndInitrdLimits() throws {
        let memory = try GuestMemory(ranges: [(0, 64 << 20)])
        let kernel = try LinuxKernel(CraftedImage.bzImage())
        XCTAssertThrowsError(try kernel.load(into: memory, commandLine: String(repeating: "a", count: 2048), initrd: nil, memoryMap: map, rsdp: nil)) { e in
            XCTAssertTrue("\(e)".contains("at most 2047"), "\(e)")
        }
        let small = PlatformMemoryMap.entries(ramRanges: [(0, 64 << 20)])
        XCTAssertThrowsError(try kernel.load(into: memory, commandLine: "", initrd: [UInt8](repeating: 1, count: 63 << 20), memoryMap: small, rsdp: nil)) { e in
            XCTAssertTrue("\(e)".contains("the initrd"), "\(e)")
        }
    }
}

extension LinuxKernelTests {
    func testPVHEntryFromTheXenNoteAndStartInfo() throws {
        let kernel = try LinuxKernel(CraftedImage.elf64PVH(code: [0xF4]))
        XCTAssertEqual(kernel.pvhEntry, 0x100_0000)
        XCTAssertNil(try LinuxKernel(CraftedImage.elf64(code: [0xF4])).pvhEntry, "no note, no PVH")
        let memory = try GuestMemory(ranges: [(0, 256 << 20)])
        let state = try kernel.loadPVH(into: memory, commandLine: "console=ttyS0", initrd: Array("rd".utf8), memoryMap: map, rsdp: 0xE_0000)
        XCTAssertEqual(state.mode, .protected)
        XCTAssertEqual(state.rip, 0x100_0000)
        XCTAssertEqual(state.rbx, LinuxKernel.pvhStartInfo)
        let info = GuestAddress(LinuxKernel.pvhStartInfo)
        XCTAssertEqual(try memory.read(UInt32.self, at: info), 0x336E_C578)
        XCTAssertEqual(try memory.read(UInt32.self, at: info.adding(4)!), 1)
        XCTAssertEqual(try memory.read(UInt32.self, at: info.adding(12)!), 1, "the initrd is module 0")
        let cmdline = try memory.read(UInt64.self, at: info.adding(24)!)
        XCTAssertEqual(try memory.readCString(at: GuestAddress(cmdline), maxLength: 64), "console=ttyS0")
        XCTAssertEqual(try memory.read(UInt64.self, at: info.adding(32)!), 0xE_0000)
        XCTAssertEqual(try memory.read(UInt32.self, at: info.adding(48)!), UInt32(map.count))
        let module = try memory.read(UInt64.self, at: info.adding(16)!)
        let rd = try memory.read(UInt64.self, at: GuestAddress(module))
        XCTAssertEqual(try memory.read(bytes: 2, at: GuestAddress(rd)), Array("rd".utf8))
        XCTAssertThrowsError(try LinuxKernel(CraftedImage.elf64(code: [0xF4])).loadPVH(into: memory, commandLine: "", initrd: nil, memoryMap: map, rsdp: nil)) { e in
            XCTAssertTrue("\(e)".contains("no PVH entry"), "\(e)")
        }
    }
}
