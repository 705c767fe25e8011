import Foundation
import Glibc
import TestSupport
import VMM
import XCTest

/// `run --trace FILE` and `swiftvisor trace FILE`: a known exit sequence reads back exactly.
final class TraceTests: XCTestCase {
    /// Real mode at 0x7c00: "ab" to COM1, then exit code 3 through port 0x501.
    static let guest: [UInt8] = [0xBA, 0xF8, 0x03, 0xB0, 0x61, 0xEE, 0xB0, 0x62, 0xEE, 0xBA, 0x01, 0x05, 0xB0, 0x03, 0xEE]

    func testAKnownExitSequenceReadsBackExactly() throws {
        try KVMTestHost.skipUnlessUsable()
        let image = TemporaryFile(bytes: Self.guest)
        let out = TemporaryFile(bytes: [])
        let r = try CLITests.launch(["run", "--image", image.path, "--mode", "real", "--trace", out.path])
        XCTAssertEqual(r.status, 3, r.stderr)
        XCTAssertEqual(r.stdout, "ab")
        let trace = try TraceFile.parse(Array(try Data(contentsOf: URL(fileURLWithPath: out.path))))
        XCTAssertEqual(trace.vcpus, 1)
        XCTAssertEqual(trace.dropped, [0], "the trailer: nothing dropped")
        let expected: [(port: UInt64, data: UInt64)] = [(0x3F8, 0x61), (0x3F8, 0x62), (0x501, 3)]
        XCTAssertEqual(trace.records.count, expected.count, "\(trace.records)")
        for (r, e) in zip(trace.records, expected) {
            XCTAssertEqual(r.exitKind, .ioOut)
            XCTAssertEqual(r.address, e.port)
            XCTAssertEqual(r.data, e.data)
            XCTAssertEqual(r.size, 1)
            XCTAssertEqual(r.flags, TraceRecord.hasAccess | TraceRecord.isWrite)
            XCTAssertEqual(r.vcpu, 0)
            // RIP is inside the image (KVM reports it at the OUT or just past it).
            XCTAssertTrue(r.rip >= 0x7C00 && r.rip <= 0x7C00 + UInt64(Self.guest.count), "rip \(r.rip)")
        }
        XCTAssertTrue(zip(trace.records, trace.records.dropFirst()).allSatisfy { $0.time <= $1.time && $0.rip < $1.rip })

        let printed = try CLITests.launch(["trace", out.path, "--port", "0x3f8"])
        XCTAssertEqual(printed.status, 0, printed.stderr)
        let lines = printed.stdout.split(separator: "\n")
        XCTAssertTrue(lines[0].contains("vCPU 0  io-out        port 0x3f8    size 1  data 0x61"), printed.stdout)
        XCTAssertTrue(lines[1].contains("data 0x62"), printed.stdout)
        XCTAssertTrue(printed.stdout.contains("exits: 2 over"), printed.stdout)
        XCTAssertTrue(printed.stdout.contains("busiest ports: 0x3f8 2\n"), printed.stdout)
        let json = try CLITests.launch(["trace", out.path, "--summary", "--json"])
        XCTAssertTrue(json.stdout.hasPrefix(#"{"summary":{"exits":3,"#), json.stdout)
        XCTAssertEqual(try CLITests.launch(["trace", out.path, "--kind", "nonsense"]).status, 64)
        XCTAssertEqual(try CLITests.launch(["trace", image.path]).status, 65, "not a trace")
        XCTAssertEqual(try CLITests.launch(["trace", "/no/such/trace"]).status, 66)
    }

    func testRecordsRoundTripAndAFileCutShortKeepsItsWholeRecords() throws {
        let records = (0..<5).map { TraceRecord(time: UInt64($0) * 1000, rip: 0x1000 + UInt64($0), address: 0x3F8, data: UInt64($0),
                                                handlingNanoseconds: 1500, vcpu: 1, kind: UInt8(ExitKind.ioIn.rawValue), size: 1,
                                                flags: TraceRecord.hasAccess) }
        var file = TraceRecord.header(vcpus: 2, wallClockNanoseconds: 42)
        for r in records { file += r.bytes }
        let whole = try TraceFile.parse(file + TraceRecord(time: 9, rip: 0, data: 7, vcpu: 1, kind: TraceRecord.trailerKind).bytes)
        XCTAssertEqual(whole.records, records)
        XCTAssertEqual(whole.dropped, [0, 7])
        XCTAssertEqual(whole.wallClockStart, 42)
        let cut = try TraceFile.parse(Array(file.dropLast(20)))
        XCTAssertEqual(cut.records, Array(records.prefix(4)))
        XCTAssertNil(cut.dropped)
        XCTAssertThrowsError(try TraceFile.parse(Array(file.prefix(40))))
        var badVersion = file
        badVersion[8] = 9
        XCTAssertThrowsError(try TraceFile.parse(badVersion))
        let summary = TraceSummary(records, vcpus: 2, dropped: nil)
        XCTAssertEqual(summary.perVCPU, [0, 5])
        XCTAssertEqual(summary.handling.p50, 1500)
        XCTAssertTrue(summary.text.contains("by kind: io-in 5\nbusiest ports: 0x3f8 5\n"), summary.text)
        XCTAssertTrue(summary.text.contains("no trailer"), summary.text)
    }
}
