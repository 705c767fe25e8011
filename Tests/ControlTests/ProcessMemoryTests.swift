@testable import Control
import XCTest

final class ProcessMemoryTests: XCTestCase {
    func testReadsThisProcess() throws {
        let r = try XCTUnwrap(ProcessMemory.resident())
        XCTAssertGreaterThan(r.current, 0)
        XCTAssertGreaterThanOrEqual(r.peak, r.current)
        XCTAssertGreaterThan(ProcessMemory.addressSpace(), r.current)
    }

    func testFieldsOfAStatusFile() {
        let status = "Name:\tswiftvisor\nVmHWM:\t    6012 kB\nVmRSS:\t    5120 kB\nRssAnon:\t 512 kB\nHuge:\t99999999999999999999 kB\n"
        XCTAssertEqual(ProcessMemory.field(status, "VmHWM:"), 6012 * 1024)
        XCTAssertEqual(ProcessMemory.field(status, "VmRSS:"), 5120 * 1024)
        XCTAssertEqual(ProcessMemory.field(status, "RssAnon:"), 512 * 1024)
        XCTAssertNil(ProcessMemory.field(status, "VmSize:"), "absent")
        XCTAssertNil(ProcessMemory.field(status, "Huge:"), "out of range is nil, not a trap")
        XCTAssertNil(ProcessMemory.field("VmRSS:", "VmRSS:"), "no value")
    }
}
