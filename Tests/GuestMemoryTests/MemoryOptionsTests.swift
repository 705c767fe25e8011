import Glibc
import GuestMemory
import XCTest

/// `--hugepages` and `--mergeable`: the backing changes, the interface does not.
final class MemoryOptionsTests: XCTestCase {
    func roundTrip(_ m: GuestMemory) throws {
        try m.write(UInt64(0x1122_3344_5566_7788), at: GuestAddress(m.size - 8))
        XCTAssertEqual(try m.read(at: GuestAddress(m.size - 8)) as UInt64, 0x1122_3344_5566_7788)
    }

    func testHugePagesFallBackToOrdinaryPages() throws {
        // Not a multiple of 2 MiB: ordinary pages, whatever the host has.
        let odd = try GuestMemory(ranges: [(0, 3 << 20)], options: .init(hugePages: true, mergeable: true))
        XCTAssertFalse(odd.hugeTLB)
        try roundTrip(odd)
    }

    /// With huge pages reserved (root may reserve two for the test), the mapping is
    /// made of them; the reservation is put back as it was.
    func testReservedHugePagesBackGuestRAM() throws {
        let path = "/proc/sys/vm/nr_hugepages"
        guard let before = try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
              let count = Int(before) else { throw XCTSkip("no \(path) here") }
        if count < 2 {
            guard getuid() == 0, (try? "\(count + 2)\n".write(toFile: path, atomically: false, encoding: .utf8)) != nil else {
                throw XCTSkip("no huge pages reserved, and reserving them needs root")
            }
        }
        defer { if count < 2 { try? "\(before)\n".write(toFile: path, atomically: false, encoding: .utf8) } }
        let m = try GuestMemory(ranges: [(0, 4 << 20)], options: .init(hugePages: true))
        XCTAssertTrue(m.hugeTLB, "free huge pages: \((try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8))?.split(separator: "\n").first { $0.hasPrefix("HugePages_Free") } ?? "?")")
        try roundTrip(m)
    }
}
