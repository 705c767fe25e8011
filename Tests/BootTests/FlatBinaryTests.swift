@testable import Boot
import GuestMemory
import XCTest

final class FlatBinaryTests: XCTestCase {
    func memory(_ size: UInt64 = 4 << 20) throws -> GuestMemory { try GuestMemory(ranges: [(0, size)]) }

    func testRealModeSplitsTheEntryIntoSegmentAndOffset() throws {
        let m = try memory()
        let s = try FlatBinary(bytes: [0xF4], mode: .real).load(into: m)
        XCTAssertEqual(s.mode, .real)
        XCTAssertEqual(s.code.selector, 0)
        XCTAssertEqual(s.rip, 0x7C00)
        XCTAssertEqual(s.cr0 & ControlBits.cr0PE, 0)
        XCTAssertEqual(try m.read(UInt8.self, at: GuestAddress(0x7C00)), 0xF4)

        let high = try FlatBinary(bytes: [0xF4], mode: .real, loadAddress: 0x9_0000, entry: 0x9_1234).load(into: m)
        XCTAssertEqual(high.code.selector, 0x9000)
        XCTAssertEqual(high.code.base, 0x9_0000)
        XCTAssertEqual(high.rip, 0x1234)
    }

    func testProtectedModeGetsAFlatGDT() throws {
        let m = try memory()
        let s = try FlatBinary(bytes: [0xF4], mode: .protected).load(into: m)
        XCTAssertEqual(s.rip, 0x10_0000)
        XCTAssertEqual(s.cr0 & ControlBits.cr0PE, ControlBits.cr0PE)
        XCTAssertEqual(s.cr0 & ControlBits.cr0PG, 0)
        XCTAssertEqual(s.code.selector, BootLayout.codeSelector32)
        XCTAssertTrue(s.code.defaultBig)
        XCTAssertEqual(s.code.byteLimit, 0xFFFF_FFFF)
        XCTAssertEqual(s.gdtBase, BootLayout.gdt)
        // The GDT in memory holds what the segment registers hold.
        let entry: UInt64 = try m.read(at: GuestAddress(BootLayout.gdt + UInt64(BootLayout.codeSelector32)))
        XCTAssertEqual(entry, s.code.encoded)
        XCTAssertEqual(entry, 0x00CF_9B00_0000_FFFF)
    }

    func testLongModeGetsIdentityPageTablesFor4GiB() throws {
        let m = try memory()
        let s = try FlatBinary(bytes: [0xF4], mode: .long).load(into: m)
        XCTAssertEqual(s.efer & (ControlBits.eferLME | ControlBits.eferLMA), ControlBits.eferLME | ControlBits.eferLMA)
        XCTAssertEqual(s.cr4 & ControlBits.cr4PAE, ControlBits.cr4PAE)
        XCTAssertEqual(s.cr3, BootLayout.pml4)
        XCTAssertTrue(s.code.long)
        XCTAssertEqual(s.code.encoded, 0x00AF_9B00_0000_FFFF)
        // Walk the tables by hand for a few addresses: each maps to itself.
        for address: UInt64 in [0, 0x10_0000, 0x3FFF_FFFF, 0xD000_0000, 0xFFFF_FFFF] {
            let pml4e: UInt64 = try m.read(at: GuestAddress(BootLayout.pml4 + ((address >> 39) & 0x1FF) * 8))
            let pdpte: UInt64 = try m.read(at: GuestAddress((pml4e & ~0xFFF) + ((address >> 30) & 0x1FF) * 8))
            let pde: UInt64 = try m.read(at: GuestAddress((pdpte & ~0xFFF) + ((address >> 21) & 0x1FF) * 8))
            XCTAssertEqual(pde & 0x81, 0x81, "present 2 MiB page")
            XCTAssertEqual((pde & ~0x1F_FFFF & 0xF_FFFF_FFFF_F000) | (address & 0x1F_FFFF), address)
        }
        let above: UInt64 = try m.read(at: GuestAddress(BootLayout.pdpt + 4 * 8))
        XCTAssertEqual(above, 0, "nothing mapped above 4 GiB")
    }

    func testBadImagesAreClearErrors() throws {
        let m = try memory(1 << 20)
        XCTAssertThrowsError(try FlatBinary(bytes: [], mode: .long).load(into: m)) { XCTAssertEqual($0 as? BootError, .emptyImage) }
        XCTAssertThrowsError(try FlatBinary(bytes: [0xF4], mode: .long).load(into: m)) { e in
            // 1 MiB of RAM ends where the default long-mode load address begins.
            XCTAssertTrue("\(e)".contains("does not fit"), "\(e)")
        }
        XCTAssertThrowsError(try FlatBinary(bytes: [UInt8](repeating: 0, count: 0x10_0000), mode: .real, loadAddress: 0x1_0000).load(into: try memory())) { e in
            XCTAssertTrue("\(e)".contains("real mode reaches the first 1 MiB only"), "\(e)")
        }
        // Over the boot structures' usual place, with no room after it either.
        let filling = [UInt8](repeating: 0xF4, count: 0x10_0000 - 0x1000 - 0x8000)
        XCTAssertThrowsError(try FlatBinary(bytes: filling, mode: .long, loadAddress: 0x1000).load(into: m)) { e in
            XCTAssertTrue("\(e)".contains("no 60 KiB of RAM below 4 GiB follows it"), "\(e)")
        }
        XCTAssertThrowsError(try FlatBinary(bytes: [0xF4], mode: .protected, loadAddress: 0x10000, entry: 0x1_0000_0000).load(into: m)) { e in
            guard case .unreachable = e as? BootError else { return XCTFail("\(e)") }
        }
    }

    /// An image over the standard block moves the block to the first page after it;
    /// anywhere else the block stays where kernels expect it.
    func testBootStructuresMoveOutOfTheImagesWay() throws {
        let m = try memory()
        for mode in [CPUMode.protected, .long] {
            let image = FlatBinary(bytes: [UInt8](repeating: 0x90, count: 0x2345), mode: mode, loadAddress: 0x1000)
            XCTAssertEqual(try image.bootStructures(in: m), BootStructures(base: 0x4000))
            let s = try image.load(into: m)
            XCTAssertEqual(s.gdtBase, 0x4500)
            XCTAssertEqual(s.rsp, 0x4000 + BootLayout.stackTop)
            let code: UInt64 = try m.read(at: GuestAddress(0x4500 + 8))
            XCTAssertEqual(code, ModeSetup.gdtEntries[1], "the GDT is written where it is announced")
            XCTAssertEqual(try m.read(at: GuestAddress(0x1000)) as UInt8, 0x90, "the image is intact")
            XCTAssertEqual(try m.read(at: GuestAddress(0x1000 + 0x2344)) as UInt8, 0x90)
            if mode == .long {
                XCTAssertEqual(s.cr3, 0x4000 + BootLayout.pml4)
                let pml4: UInt64 = try m.read(at: GuestAddress(s.cr3))
                XCTAssertEqual(pml4 & ~0xFFF, 0x4000 + BootLayout.pdpt)
            }
        }
        // Just past the block's end, or in real mode: the standard block.
        XCTAssertEqual(try FlatBinary(bytes: [0xF4], mode: .long, loadAddress: BootLayout.firstFree).bootStructures(in: m), .standard)
        XCTAssertEqual(try FlatBinary(bytes: [0xF4], mode: .long, loadAddress: 0x400).bootStructures(in: m), .standard,
                       "below the GDT at 0x500")
        XCTAssertEqual(try FlatBinary(bytes: [0xF4], mode: .real, loadAddress: 0x1000).bootStructures(in: m), .standard)
    }

    func testDemoGuestIsAFlatRealModeImage() {
        XCTAssertGreaterThan(DemoGuest.bytes.count, 512)
        XCTAssertEqual(DemoGuest.bytes.first, 0xFA, "starts with cli")
        XCTAssertEqual(DemoGuest.loadAddress, 0x7C00)
    }
}

extension FlatBinaryTests {
    func testUserAccessibleIdentityMapAndUserSegments() throws {
        let m = try memory()
        let s = try FlatBinary(bytes: [0xF4], mode: .long, userAccessible: true).load(into: m)
        XCTAssertEqual(s.gdtLimit, 6 * 8 - 1, "null, three ring-0 and two ring-3 descriptors")
        let pml4e: UInt64 = try m.read(at: GuestAddress(BootLayout.pml4))
        let pde: UInt64 = try m.read(at: GuestAddress(BootLayout.pageDirectories))
        XCTAssertEqual(pml4e & 4, 4, "U/S on every level")
        XCTAssertEqual(pde & 4, 4)
        let userCode: UInt64 = try m.read(at: GuestAddress(BootLayout.gdt + UInt64(BootLayout.userCodeSelector64)))
        XCTAssertEqual(userCode, 0x00AF_FB00_0000_FFFF, "64-bit code, DPL 3")
        let kernelOnly = try memory()
        _ = try FlatBinary(bytes: [0xF4], mode: .long).load(into: kernelOnly)
        let plain: UInt64 = try kernelOnly.read(at: GuestAddress(BootLayout.pageDirectories))
        XCTAssertEqual(plain & 4, 0, "supervisor-only by default")
    }
}
