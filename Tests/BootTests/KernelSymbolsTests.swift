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

    func testKallsymsTablesOfAStrippedKernelAreFoundAndRead() throws {
        var symbols: [(type: Character, name: String, address: UInt64)] = (0..<300).map { ("T", "function_\($0)", 0xFFFF_FFFF_8100_0000 + UInt64($0) * 0x40) }
        symbols.append(("t", "tab_" + String(repeating: "x", count: 200), 0xFFFF_FFFF_8200_0000)) // a "big" (two-byte length) name
        symbols.append(("D", "some_data", 0xFFFF_FFFF_8300_0000))                                    // not code: left out
        for seqs in [false, true] {
            let bytes = CraftedImage.kallsyms(symbols, seqsOfNames: seqs)
            let table = try XCTUnwrap(KernelSymbols(kallsymsIn: bytes), "seqs_of_names: \(seqs)")
            XCTAssertEqual(table.count, 301)
            XCTAssertEqual(table.name(for: 0xFFFF_FFFF_8100_0000 + 299 * 0x40 + 5), "function_299+0x5")
            XCTAssertEqual(table.name(for: 0xFFFF_FFFF_8200_0010), "tab_" + String(repeating: "x", count: 200) + "+0x10")
        }
    }

    func testAnythingThatOnlyLooksLikeKallsymsIsNotBelieved() {
        let good = CraftedImage.kallsyms((0..<300).map { ("T", "f\($0)", 0xFFFF_FFFF_8100_0000 + UInt64($0) * 16) }, seqsOfNames: true, padding: 4096)
        XCTAssertNotNil(KernelSymbols(kallsymsIn: good))
        var badIndex = good
        badIndex[good.count - 4096 - 2] &+= 1 // the last token's offset
        XCTAssertNil(KernelSymbols(kallsymsIn: badIndex), "a token index that disagrees with the table")
        XCTAssertNil(KernelSymbols(kallsymsIn: Array(good.prefix(good.count / 2))), "cut in half: no token table")
        XCTAssertNil(KernelSymbols(kallsymsIn: Array(good.suffix(good.count / 2 + 4096))), "the token table without the names before it")
        XCTAssertNil(KernelSymbols(kallsymsIn: [UInt8](repeating: 0, count: 10000)))
    }
}
