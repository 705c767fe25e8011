import Control
import Foundation
import Glibc
import TestSupport
import XCTest

/// `swiftvisor top NAME` and the rates and vCPU states `GET /vm/stats` gained for it.
final class TopTests: XCTestCase {
    func testTopShowsRatesTheBusiestPortAndWhereEachVCPUIs() throws {
        try KVMTestHost.skipUnlessUsable()
        let stateDir = "/tmp/sv-top-\(getpid())-\(UInt32.random(in: 0...0xFFFFFF))"
        defer { LifecycleTests.removeAll(stateDir) }
        let image = TemporaryFile(bytes: LifecycleTests.looping) // out 0x80, al; jmp back
        let map = TemporaryFile(bytes: Array("0000000000007c00 T spin\n".utf8))
        let started = try LifecycleTests.sv(["run", "--detach", "--name", "busy", "--image", image.path, "--mode", "real", "--symbols", map.path], stateDir: stateDir)
        XCTAssertEqual(started.status, 0, started.stderr)
        usleep(1_500_000) // rates cover a whole second once the VM has run one
        let top = try LifecycleTests.sv(["top", "busy", "--count", "2", "--interval", "0.5"], stateDir: stateDir)
        XCTAssertEqual(top.status, 0, top.stderr)
        let blocks = top.stdout.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        XCTAssertEqual(blocks.count, 2, top.stdout)
        for b in blocks {
            XCTAssertTrue(b.hasPrefix("busy: running, "), b)
            XCTAssertTrue(b.contains("exits a second: total "), b)
            XCTAssertTrue(b.contains("busiest ports: 0x80 "), b)
            XCTAssertTrue(b.range(of: #"vCPU 0: running at 0x7c0[0-9a-f] \(CPL 0\) in spin"#, options: .regularExpression) != nil, b)
        }
        let json = try LifecycleTests.sv(["top", "busy", "--count", "1", "--json"], stateDir: stateDir)
        let line = try JSONValue.parse(json.stdout.trimmingCharacters(in: .newlines))
        XCTAssertGreaterThan(line["stats"]?["rates"]?["exitsPerSecond"]?["io-out"]?.number ?? 0, 100, json.stdout)
        guard case let .array(vcpus)? = line["stats"]?["vcpus"] else { return XCTFail(json.stdout) }
        XCTAssertEqual(vcpus.first?["state"]?.string, "running")
        XCTAssertEqual(try LifecycleTests.sv(["top", "busy", "--interval", "0"], stateDir: stateDir).status, 64)
        XCTAssertEqual(try LifecycleTests.sv(["kill", "busy"], stateDir: stateDir).status, 0)
        XCTAssertEqual(try LifecycleTests.sv(["top", "busy", "--count", "1"], stateDir: stateDir).status, 73, "a stopped VM has nothing to watch")
    }
}
