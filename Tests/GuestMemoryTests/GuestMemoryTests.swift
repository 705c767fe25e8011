import GuestMemory
import XCTest

final class GuestMemoryTests: XCTestCase {
    func testTypedReadsAndWritesAreLittleEndian() throws {
        let m = try GuestMemory(ranges: [(0, 0x10000)])
        try m.write(UInt32(0x1122_3344), at: GuestAddress(0x100))
        XCTAssertEqual(try m.read(UInt8.self, at: GuestAddress(0x100)), 0x44)
        XCTAssertEqual(try m.read(UInt16.self, at: GuestAddress(0x102)), 0x1122)
        try m.write(UInt64.max, at: GuestAddress(0x1001)) // unaligned
        XCTAssertEqual(try m.read(UInt64.self, at: GuestAddress(0x1001)), .max)
    }

    func testAccessesOutsideRAMAreRefused() throws {
        let m = try GuestMemory(ranges: [(0, 0x1000)])
        XCTAssertThrowsError(try m.read(UInt32.self, at: GuestAddress(0xFFE))) { e in
            XCTAssertEqual(e as? GuestMemoryError, .outOfBounds(address: GuestAddress(0xFFE), length: 4))
        }
        XCTAssertThrowsError(try m.write(UInt8(1), at: GuestAddress(0x1000)))
        XCTAssertThrowsError(try m.read(bytes: 0x1001, at: GuestAddress(0)))
        XCTAssertThrowsError(try m.read(bytes: -1, at: GuestAddress(0)))
        XCTAssertNoThrow(try m.read(bytes: 0x1000, at: GuestAddress(0)))
        XCTAssertNoThrow(try m.read(bytes: 0, at: GuestAddress(0x1000)))
    }

    func testHostileAddressesAndLengthsCannotWrap() throws {
        let m = try GuestMemory(ranges: [(0x1000, 0x1000)])
        // start + length overflowing 64 bits must not wrap into the region.
        XCTAssertThrowsError(try m.fill(0, count: UInt64.max, at: GuestAddress(0x1800)))
        XCTAssertThrowsError(try m.fill(0, count: 0x1000, at: GuestAddress(UInt64.max - 0x10)))
        XCTAssertFalse(m.isValid(GuestAddress(0x1800), length: UInt64.max - 0x1000))
        XCTAssertNil(GuestAddress(UInt64.max).adding(1))
        XCTAssertFalse(m.isValid(GuestAddress(0xFFF), length: 2)) // straddles the start
    }

    func testAccessMustStayInsideOneRegion() throws {
        let m = try GuestMemory(ranges: [(0, 0x1000), (0x1000, 0x1000)])
        XCTAssertEqual(m.regions.count, 2)
        XCTAssertEqual(m.size, 0x2000)
        // Adjacent regions are separate host mappings: one access may not span both.
        XCTAssertThrowsError(try m.read(UInt32.self, at: GuestAddress(0xFFE)))
        XCTAssertNoThrow(try m.read(UInt32.self, at: GuestAddress(0x1000)))
    }

    func testOverlappingOrEmptyRegionsAreRejected() {
        XCTAssertThrowsError(try GuestMemory(ranges: [(0, 0x2000), (0x1000, 0x1000)]))
        XCTAssertThrowsError(try MemoryRegion(start: GuestAddress(0), size: 0))
        XCTAssertThrowsError(try MemoryRegion(start: GuestAddress(UInt64.max - 10), size: 0x1000))
    }

    func testBulkCopyFillAndStrings() throws {
        let m = try GuestMemory(ranges: [(0, 0x4000)])
        try m.write(bytes: Array("hello\0world".utf8), at: GuestAddress(0x10))
        XCTAssertEqual(try m.readCString(at: GuestAddress(0x10), maxLength: 64), "hello")
        XCTAssertEqual(try m.readCString(at: GuestAddress(0x10), maxLength: 3), "hel")
        try m.copy(from: GuestAddress(0x10), to: GuestAddress(0x2000), count: 11)
        XCTAssertEqual(try m.read(bytes: 11, at: GuestAddress(0x2000)), Array("hello\0world".utf8))
        try m.fill(0xAB, count: 0x100, at: GuestAddress(0x3000))
        XCTAssertEqual(Set(try m.read(bytes: 0x100, at: GuestAddress(0x3000))), [0xAB])
        // A string running off the end of RAM is an error, not a read past it.
        try m.fill(0x41, count: 0x10, at: GuestAddress(0x3FF0))
        XCTAssertThrowsError(try m.readCString(at: GuestAddress(0x3FF0), maxLength: 64))
    }

    func testFreshMemoryIsZeroAndLazilyBacked() throws {
        let m = try GuestMemory(ranges: [(0, 256 << 20)])
        XCTAssertEqual(try m.read(UInt64.self, at: GuestAddress(128 << 20)), 0)
        XCTAssertLessThan(m.residentBytes, 1 << 20, "untouched guest RAM should not be resident")
        try m.fill(1, count: 4 << 20, at: GuestAddress(0))
        XCTAssertGreaterThanOrEqual(m.residentBytes, 4 << 20)
    }

    /// residentBytes asks 256 MiB at a time: pages in every window, and in a last
    /// window shorter than the others, are all counted, and only they.
    func testResidentBytesCountsAcrossWindows() throws {
        let m = try GuestMemory(ranges: [(0, 600 << 20)])
        XCTAssertEqual(m.residentBytes, 0)
        for address: UInt64 in [0, (256 << 20) - 1, 300 << 20, (600 << 20) - 1] { try m.write(UInt8(1), at: GuestAddress(address)) }
        // Four pages, or four huge pages where transparent huge pages back them.
        XCTAssertGreaterThanOrEqual(m.residentBytes, 4 * 4096)
        XCTAssertLessThanOrEqual(m.residentBytes, 4 * (2 << 20))
        if m.residentBytes < 2 << 20 { XCTAssertEqual(m.residentBytes, 4 * 4096) }
    }

    func testWithBytesLendsExactlyTheRange() throws {
        let m = try GuestMemory(ranges: [(0, 0x1000)])
        try m.withMutableBytes(at: GuestAddress(0x800), count: 4) { $0.copyBytes(from: [1, 2, 3, 4]) }
        let sum = try m.withBytes(at: GuestAddress(0x800), count: 4) { $0.reduce(0) { $0 + Int($1) } }
        XCTAssertEqual(sum, 10)
        XCTAssertThrowsError(try m.withBytes(at: GuestAddress(0xFFF), count: 2) { _ in })
    }

    func testFileBackedRegionWritesReachTheFile() throws {
        var name = Array("/tmp/swiftvisor-mem-XXXXXX".utf8CString)
        let fd = mkstemp(&name)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let path = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { close(fd); unlink(path) }
        XCTAssertEqual(ftruncate(fd, 0x2000), 0)
        let region = try MemoryRegion(start: GuestAddress(0x10000), size: 0x2000, backing: .file(fd: fd, offset: 0))
        let m = try GuestMemory(regions: [region])
        try m.write(UInt32(0xCAFE_F00D), at: GuestAddress(0x10004))
        var value: UInt32 = 0
        XCTAssertEqual(pread(fd, &value, 4, 4), 4)
        XCTAssertEqual(value, 0xCAFE_F00D)
    }
}
