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
        var linux = MachineConfig(memorySize: 512 << 20, vcpuCount: 2, boot: .kernel(path: "/k/vmlinux", commandLine: "console=ttyS0 quiet", initrd: "/k/initrd"))
        linux.hostQuirks = true
        linux.pvh = true
        linux.symbolFile = "/boot/System.map-6.1"
        for c in configs + [RunOptions(config: linux, timeoutSeconds: 30)] { XCTAssertEqual(try RunOptions(arguments: c.arguments), c) }
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

final class JSONParserTests: XCTestCase {
    func testParsesWhatItWritesAndStandardJSON() throws {
        let text = #"{"a": [1, -2, 3.5, 1e3, true, false, null], "s": "tab\there \u00e9 \ud83d\ude00 \"q\" \\ \/", "n": {"deep": {}}, "big": 18446744073709551615}"#
        let v = try JSONValue.parse(text)
        XCTAssertEqual(v["s"]?.string, "tab\there é 😀 \"q\" \\ /")
        XCTAssertEqual(v["a"], .array([.int(1), .int(-2), .double(3.5), .double(1000), .bool(true), .bool(false), .null]))
        XCTAssertEqual(v["big"], .uint(UInt64.max))
        XCTAssertEqual(try JSONValue.parse(v.rendered), v, "round trip")
    }

    func testMalformedDocumentsAreOneLineErrors() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "\"unterminated", "tru", "01x", "[1] 2", "{\"a\":1,\"a\":2}",
                    "\"\\ud800\"", "\"\\q\"", "\"a\u{01}b\"", "-", "1e999", String(repeating: "[", count: 100) + String(repeating: "]", count: 100)] {
            XCTAssertThrowsError(try JSONValue.parse(bad), bad) { e in
                XCTAssertTrue("\(e)".hasPrefix("invalid JSON at byte"), "\(e)")
                XCTAssertFalse("\(e)".contains("\n"))
            }
        }
    }

    func testVMDescriptionSchema() throws {
        let d = try VMDescription.parse(try JSONValue.parse("""
            {"name": "k", "memory": "128M", "cpus": 2, "testDevices": true, "pit": false, "timeout": 30,
             "boot": {"kernel": "/k.flat", "cmdline": "cpuid", "initrd": "/env"}}
            """))
        XCTAssertEqual(d.name, "k")
        XCTAssertEqual(d.options.config.memorySize, 128 << 20)
        XCTAssertEqual(d.options.config.vcpuCount, 2)
        XCTAssertTrue(d.options.config.testDevices)
        XCTAssertFalse(d.options.config.pit)
        XCTAssertEqual(d.options.timeoutSeconds, 30)
        XCTAssertEqual(d.options.config.boot, .kernel(path: "/k.flat", commandLine: "cpuid", initrd: "/env"))
        // What the API shows parses back to the same VM.
        XCTAssertEqual(try VMDescription.parse(d.json), d)
        let flat = try VMDescription.parse(try JSONValue.parse(#"{"boot": {"image": "x.bin", "mode": "real", "loadAddress": "0x8000", "entry": 32784}}"#))
        XCTAssertEqual(flat.options.config.boot, .flat(path: "x.bin", mode: .real, loadAddress: 0x8000, entry: 0x8010))
        XCTAssertEqual(try VMDescription.parse(try JSONValue.parse("{}")).options.config, MachineConfig())

        for (bad, message) in [(#"{"colour": 1}"#, "unknown field \"colour\""), (#"{"cpus": 0}"#, "\"cpus\""),
                               (#"{"memory": "lots"}"#, "\"memory\""), (#"{"boot": {"image": "x", "kernel": "y"}}"#, "boot.kernel"),
                               (#"{"boot": {"floppy": "a"}}"#, "needs one of"), (#"{"boot": {"image": "x", "mode": "v86"}}"#, "boot.mode"),
                               ("[]", "JSON object")] {
            XCTAssertThrowsError(try VMDescription.parse(try JSONValue.parse(bad)), bad) { e in
                XCTAssertTrue("\(e)".contains(message), "\(bad): \(e)")
            }
        }
    }
}
