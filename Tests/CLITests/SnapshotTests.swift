import Boot
import Control
import Devices
import Foundation
import Glibc
import Synchronization
import TestSupport
import VMM
import XCTest

/// Snapshots taken of real guests and restored in new VMM processes (`swiftvisor
/// restore`), and damaged snapshots refused with exit code 65.
final class SnapshotTests: XCTestCase {
    var work = ""
    var stateDir: String { work + "/state" }

    override func setUpWithError() throws {
        try KVMTestHost.skipUnlessUsable()
        work = "/tmp/sv-snap-\(getpid())-\(UInt32.random(in: 0...0xFFFFFF))"
        XCTAssertEqual(mkdir(work, 0o700), 0)
    }

    override func tearDown() {
        LifecycleTests.removeAll(stateDir)
        try? FileManager.default.removeItem(atPath: work)
    }

    final class Console: SerialOutput {
        let bytes = Mutex<[UInt8]>([])
        func write(_ byte: UInt8) { bytes.withLock { $0.append(byte) } }
        var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
    }

    /// The demo guest paused in the middle of its ring-3 computation (between two
    /// hashing passes, at the port write that reports each: on hosts like this
    /// project's, ring 3 runs without exits and a kick cannot stop it anywhere else),
    /// snapshotted, stopped; a new process restores it, and it finishes the computation
    /// with the right checksum, printing only what comes after the snapshot.
    func testTheDemoGuestSnapshottedInRing3FinishesItsChecksumInANewProcess() throws {
        let console = Console()
        let config = MachineConfig(memorySize: 64 << 20, vcpuCount: 1, boot: .demo)
        let machine = try Machine.build(config, console: console)
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { _ = machine.run(); done.signal() }
        var collected = false
        defer { if !collected { machine.requestStop(.hostStop); _ = done.wait(timeout: .now() + 30) } }
        // Once the guest announces ring 3, pause until the vCPU stops in it.
        var cpl: UInt16 = 0
        while machine.state != .stopped && !console.text.contains("a dot a pass: ") { usleep(20) }
        while machine.state != .stopped && machine.pause() {
            cpl = machine.vcpuState(0).map { $0.special.cs.selector & 3 } ?? 0
            if cpl == 3 { break }
            machine.resume()
        }
        XCTAssertEqual(cpl, 3, "paused in ring 3: \(console.text)")
        XCTAssertEqual(machine.state, .paused)
        let dots = console.text.filter { $0 == "." }.count
        let path = work + "/demo"
        let summary = try SnapshotFolder.write(machine, description: VMDescription(config: config), to: path)
        XCTAssertEqual(summary.memoryBytes, 64 << 20)
        XCTAssertLessThan(summary.memoryWritten, 8 << 20, "only the pages the guest touched are written")
        machine.requestStop(.hostStop)
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        collected = true
        XCTAssertTrue(console.text.contains("ring 3: filling"), console.text)
        XCTAssertFalse(console.text.contains("checksum"), "stopped before ring 3 finished")
        XCTAssertLessThan(dots, 4, "mid-computation: not every pass had reported")

        let restored = try CLITests.launch(["restore", path])
        XCTAssertEqual(restored.status, 0, restored.stderr)
        XCTAssertTrue(restored.stdout.contains("back in ring 0 through #GP, checksum 0x84c10aa6cf21cd25 ok"), restored.stdout)
        XCTAssertTrue(restored.stdout.hasPrefix("."), "the restored guest goes on with the next pass's dot: \(restored.stdout)")
        XCTAssertFalse(restored.stdout.contains("Swiftvisor demo guest"), "the restored VM's console starts after the snapshot")
    }

    /// Named VMs through the CLI: a running guest snapshotted (and left running),
    /// restored twice beside it as clones with their own names; then every kind of
    /// damage refused with one line and exit code 65, before any VM is made.
    func testSnapshotRestoreClonesAndDamagedSnapshots() throws {
        let image = TemporaryFile(bytes: LifecycleTests.looping)
        func sv(_ args: [String]) throws -> CLITests.Outcome { try LifecycleTests.sv(args, stateDir: stateDir) }
        XCTAssertEqual(try sv(["run", "--detach", "--name", "web", "--image", image.path, "--mode", "real"]).status, 0)
        let snap = work + "/web-1"
        let taken = try sv(["snapshot", "web", snap, "--json"])
        XCTAssertEqual(taken.status, 0, taken.stderr)
        let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(taken.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(summary["path"] as? String, snap)
        XCTAssertTrue(try sv(["ls"]).stdout.contains("web   running"), "a snapshot resumes the VM")
        XCTAssertNotEqual(try sv(["snapshot", "web", snap]).status, 0, "a snapshot never replaces another")

        for clone in ["web-a", "web-b"] {
            let r = try sv(["restore", snap, "--name", clone, "--detach"])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        usleep(300_000)
        let list = try sv(["ls"]).stdout
        for name in ["web ", "web-a", "web-b"] { XCTAssertTrue(list.contains(name) && list.contains("running"), list) }
        let inspect = try sv(["inspect", "web-a"])
        let vm = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any])
        let exits = ((vm["statistics"] as? [String: Any])?["exits"] as? [String: Any])?["io-out"] as? Int ?? 0
        XCTAssertGreaterThan(exits, 0, "the clone runs the guest's loop")
        XCTAssertEqual(try sv(["restore", snap, "--name", "web-a", "--detach"]).status, ProcessExitCode.conflict, "names stay unique")

        // Created from the snapshot, restored when started.
        let created = try sv(["create", "web-c", "--from-snapshot", snap])
        XCTAssertEqual(created.status, 0, created.stderr)
        let listed = try sv(["ls"]).stdout
        XCTAssertTrue(listed.contains("web-c  created"), listed)
        XCTAssertNotEqual(try sv(["create", "web-d", "--from-snapshot", snap, "--memory", "1G"]).status, 0, "the snapshot's description is whole")
        let start = try sv(["start", "web-c"])
        XCTAssertEqual(start.status, 0, start.stderr)
        usleep(200_000)
        let c = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try sv(["inspect", "web-c"]).stdout.utf8)) as? [String: Any])
        XCTAssertEqual(c["state"] as? String, "running")
        XCTAssertGreaterThan(((c["statistics"] as? [String: Any])?["exits"] as? [String: Any])?["io-out"] as? Int ?? 0, 0)

        // Damage, each in a copy of its own.
        func damaged(_ name: String, _ change: (String) throws -> Void) throws -> CLITests.Outcome {
            let copy = work + "/" + name
            try FileManager.default.copyItem(atPath: snap, toPath: copy)
            try change(copy)
            return try sv(["restore", copy, "--name", name])
        }
        func rewriteHeader(_ folder: String, _ edit: (inout [String: Any]) -> Void, version: String = "1") throws {
            let text = try String(contentsOfFile: folder + "/header", encoding: .utf8)
            let body = String(text.drop { $0 != "\n" }.dropFirst())
            var header = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
            edit(&header)
            let newBody = String(decoding: try JSONSerialization.data(withJSONObject: header), as: UTF8.self) + "\n"
            let crc = String(format: "%08x", CRC32.checksum(Array(newBody.utf8)))
            try ("SWIFTVISOR-SNAPSHOT \(version) crc32=\(crc)\n" + newBody).write(toFile: folder + "/header", atomically: true, encoding: .utf8)
        }
        let cases: [(String, String, (String) throws -> Void)] = [
            ("flipped", "checksum mismatch", { f in
                var b = try Data(contentsOf: URL(fileURLWithPath: f + "/vcpu-0")); b[100] ^= 0xFF
                try b.write(to: URL(fileURLWithPath: f + "/vcpu-0")) }),
            ("truncated-memory", "truncated", { f in XCTAssertEqual(truncate(f + "/memory", 4096), 0) }),
            ("truncated-part", "truncated", { f in XCTAssertEqual(truncate(f + "/devices", 3), 0) }),
            ("header-edited", "checksum mismatch", { f in
                var t = try String(contentsOfFile: f + "/header", encoding: .utf8)
                t = t.replacingOccurrences(of: "\"cpus\":1", with: "\"cpus\":2")
                try t.write(toFile: f + "/header", atomically: true, encoding: .utf8) }),
            ("no-header", "not a snapshot", { f in try FileManager.default.removeItem(atPath: f + "/header") }),
            ("future-format", "format 2", { f in try rewriteHeader(f, { _ in }, version: "2") }),
            ("other-vendor", "CPU; this host's is", { f in try rewriteHeader(f, { h in
                var cpu = h["cpu"] as? [String: Any] ?? [:]
                let mine = cpu["vendor"] as? String
                cpu["vendor"] = mine == "GenuineIntel" ? "AuthenticAMD" : "GenuineIntel"
                h["cpu"] = cpu }) }),
            ("other-features", "CPU features", { f in try rewriteHeader(f, { h in
                var cpu = h["cpu"] as? [String: Any] ?? [:]
                cpu["features"] = ["7.ebx": 0xFFFF_FFFF]
                h["cpu"] = cpu }) }),
        ]
        for (name, message, change) in cases {
            let r = try damaged(name, change)
            XCTAssertEqual(r.status, ProcessExitCode.badImage, "\(name): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(name): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "\(name): one line: \(r.stderr)")
        }
        let missing = try sv(["restore", work + "/nothing-here"])
        XCTAssertEqual(missing.status, ProcessExitCode.badImage, missing.stderr)
    }

    /// A Multiboot kvm-unit-tests image (msr: ~1,900 checks, seconds of guest kernel
    /// mode here) snapshotted and stopped mid-run; restored in a new process, it
    /// finishes: the summary counts every check, those before the snapshot included,
    /// so the irqchip, LAPIC, MSRs and test devices came back whole.
    func testAKvmUnitTestsImageSnapshottedMidRunFinishesAfterRestore() throws {
        let image = ConformanceRunnerTests.root.appendingPathComponent("../shared/kvm-unit-tests/msr.flat").standardized.path
        guard FileManager.default.fileExists(atPath: image) else { throw XCTSkip("\(image) is absent (../shared/kvm-unit-tests)") }
        func sv(_ args: [String]) throws -> CLITests.Outcome { try LifecycleTests.sv(args, stateDir: stateDir) }
        XCTAssertEqual(try sv(["run", "--detach", "--name", "msr", "--kernel", image, "--memory", "128M", "--test-devices", "--timeout", "120"]).status, 0)
        // Until it has printed some results, not all.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, try sv(["logs", "msr"]).stdout.components(separatedBy: "PASS").count < 20 { usleep(100_000) }
        let snap = work + "/msr"
        let taken = try sv(["snapshot", "msr", snap, "--stop"])
        XCTAssertEqual(taken.status, 0, taken.stderr)
        XCTAssertEqual(try sv(["wait", "msr"]).status, 0, "a VM stopped after its snapshot ends with 0")
        let before = try sv(["logs", "msr"]).stdout
        XCTAssertFalse(before.contains("SUMMARY"), "snapshotted before the end: \(before.suffix(300))")

        let restored = try sv(["restore", snap, "--name", "msr-restored"])
        XCTAssertTrue(restored.stdout.contains("SUMMARY: 1904 tests"), restored.stdout.suffix(500) + restored.stderr)
        XCTAssertFalse(restored.stdout.contains("enabling apic"), "the restored console starts after the snapshot")
    }
}
