import Boot
import TestSupport
import XCTest

final class KernelSymbolsTests: XCTestCase {
    let elf = CraftedImage.addingSymbols(CraftedImage.elf64(code: [UInt8](repeating: 0x90, count: 0x200)), [
        ("startup_64", 0xFFFF_FFFF_8100_0000, 0x40),
        ("rtc_cmos_init", 0xFFFF_FFFF_8100_0100, 0x80),
    ])

    func testNamesAnAddressByItsSymbolAndOffset() throws {
        let symbols = try XCTUnwrap(KernelSymbols.read(elf))
        XCTAssertEqual(symbols.count, 2)
        XCTAssertEqual(symbols.name(for: 0xFFFF_FFFF_8100_0000), "startup_64")
        XCTAssertEqual(symbols.name(for: 0xFFFF_FFFF_8100_0137), "rtc_cmos_init+0x37")
        XCTAssertNil(symbols.name(for: 0xFFFF_FFFF_8100_0040), "past startup_64's 0x40 bytes: padding, nobody's code")
        XCTAssertNil(symbols.name(for: 0xFFFF_FFFF_80FF_FFFF), "below the first symbol")
    }

    func testEarlyBootRIPsAtThePhysicalLoadAddressAreNamedToo() throws {
        // The kernel's first instructions run at 0x1000000 before its page tables map
        // it at 0xffffffff81000000.
        XCTAssertEqual(try XCTUnwrap(KernelSymbols.read(elf)).name(for: 0x100_0105), "rtc_cmos_init+0x5")
    }

    func testSystemMapLinesAndDebiansPlaceholder() throws {
        let map = KernelSymbols(systemMap: """
            0000000000000000 A VDSO32_PRELINK
            ffffffff81000000 T _stext
            ffffffff81000000 T startup_64
            ffffffff81001000 t early_idt_handler_common
            ffffffff82a00000 D init_task
            this line is not a symbol
            """)
        XCTAssertEqual(map.count, 4)
        XCTAssertEqual(map.name(for: 0xFFFF_FFFF_8100_1010), "early_idt_handler_common+0x10")
        XCTAssertNil(KernelSymbols.read(Array("ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n".utf8)))
    }

    func testAStrippedOrBrokenSymbolTableIsNoSymbolsOrAClearError() {
        XCTAssertNil(KernelSymbols.read(CraftedImage.elf64(code: [0xF4])), "no section headers: stripped")
        var broken = elf
        broken[40] = 0xF0; broken[41] = 0xFF // e_shoff far beyond the file
        XCTAssertThrowsError(try KernelSymbols(elf: broken)) { XCTAssertTrue("\($0)".contains("outside the file"), "\($0)") }
        XCTAssertNil(KernelSymbols.read(broken))
        XCTAssertThrowsError(try KernelSymbols(elf: Array(elf.prefix(30))))
    }
}
