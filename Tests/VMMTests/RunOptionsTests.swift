import Boot
import Foundation
import VMM
import XCTest

final class RunOptionsTests: XCTestCase {
    func testArgumentsRoundTrip() throws {
        let configs = [
            RunOptions(config: MachineConfig(), stats: false, json: false),
            RunOptions(config: MachineConfig(memorySize: 256 << 20, vcpuCount: 4,
                                             boot: .flat(path: "/tmp/a b.bin", mode: .real, loadAddress: 0x8000, entry: 0x8010)),
                       stats: true, json: true),
            RunOptions(config: MachineConfig(boot: .flat(path: "k", mode: .protected, loadAddress: nil, entry: nil), kvmPath: "/dev/kvm2")),
        ]
        for c in configs { XCTAssertEqual(try RunOptions(arguments: c.arguments), c) }
    }

    func testBadArgumentsAreOneLineErrors() {
        for args in [["--memory"], ["--memory", "lots"], ["--mode", "v86", "--image", "x"], ["--frobnicate"],
                     ["--cpus", "two"], ["--demo", "--image", "x"], ["--entry", "0xZZ"], ["--entry", "0x1000"], ["--mode", "real"]] {
            XCTAssertThrowsError(try RunOptions(arguments: args)) { e in
                XCTAssertFalse("\(e)".contains("\n"), "\(e)")
            }
        }
    }

    func testSizesAndAddresses() {
        XCTAssertEqual(ByteSize.parse("64M"), 64 << 20)
        XCTAssertEqual(ByteSize.parse("2GiB"), 2 << 30)
        XCTAssertEqual(ByteSize.parse("512k"), 512 << 10)
        XCTAssertEqual(ByteSize.parse("4096"), 4096)
        XCTAssertNil(ByteSize.parse("M"))
        XCTAssertNil(ByteSize.parse("-1M"))
        XCTAssertNil(ByteSize.parse("99999999999T"), "overflow")
        XCTAssertEqual(ByteSize.format(64 << 20), "64 MiB")
        XCTAssertEqual(ByteSize.format(1536 << 20), "1.5 GiB")
        XCTAssertEqual(RunOptions.parseAddress("0x7c00"), 0x7C00)
        XCTAssertEqual(RunOptions.parseAddress("0x10_0000"), 0x10_0000)
        XCTAssertEqual(RunOptions.parseAddress("7c00h"), 0x7C00)
        XCTAssertEqual(RunOptions.parseAddress("31744"), 31744)
        XCTAssertNil(RunOptions.parseAddress("zz"))
    }

    func testConfigValidation() {
        XCTAssertThrowsError(try MachineConfig(memorySize: 2 << 40).validate())
        XCTAssertThrowsError(try MachineConfig(memorySize: (64 << 20) + 1).validate())
        XCTAssertThrowsError(try MachineConfig(memorySize: 2 << 20).validate(), "the demo needs 4 MiB")
        XCTAssertThrowsError(try MachineConfig(boot: .flat(path: "x", mode: .real, loadAddress: 0x20_0000, entry: nil)).validate())
        XCTAssertNoThrow(try MachineConfig(memorySize: 4 << 20).validate())
    }

    func testJSONWriterEscapesAndParses() throws {
        let v = JSONValue.object([("a\"b", .string("line\nbreak\u{1}é")), ("n", .int(-3)), ("u", .uint(UInt64.max)),
                                  ("list", .array([.bool(true), .null, .double(1.5)]))])
        let parsed = try JSONSerialization.jsonObject(with: Data(v.rendered.utf8)) as? [String: Any]
        XCTAssertEqual(parsed?["a\"b"] as? String, "line\nbreak\u{1}é")
        XCTAssertEqual(parsed?["n"] as? Int, -3)
        XCTAssertEqual((parsed?["list"] as? [Any])?.count, 3)
    }
}
