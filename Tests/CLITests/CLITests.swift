import Control
import Foundation
import Glibc
import TestSupport
import Boot
import VMM
@testable import swiftvisor_cli
import XCTest

/// Runs the built `swiftvisor` as a user would and checks what they would see.
final class CLITests: XCTestCase {
    struct Outcome {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// The build directory holding this test bundle also holds the executables.
    static let binDirectory: URL = {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let exe = String(decoding: buffer.prefix(max(n, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return URL(fileURLWithPath: exe).deletingLastPathComponent()
    }()

    /// Runs the built `swiftvisor` (or `executable`) with `args`: extra environment
    /// variables, bytes on stdin (else /dev/null), and a SIGINT after `signalAfter` seconds.
    static func launch(_ args: [String], environment: [String: String] = [:], input: Data? = nil,
                       signalAfter: Double? = nil, executable: String = "swiftvisor") throws -> Outcome {
        let p = Process()
        p.executableURL = executable.hasPrefix("/") ? URL(fileURLWithPath: executable) : binDirectory.appendingPathComponent(executable)
        p.arguments = args
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = input == nil ? FileHandle.nullDevice : inp
        try p.run()
        if let input {
            inp.fileHandleForWriting.write(input)
        }
        if let signalAfter {
            Thread.sleep(forTimeInterval: signalAfter)
            kill(p.processIdentifier, SIGINT)
        }
        if input != nil { try inp.fileHandleForWriting.close() }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Outcome(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    func swiftvisor(_ args: [String], signalAfter: Double? = nil) throws -> Outcome {
        try CLITests.launch(args, signalAfter: signalAfter)
    }

    func testBothExecutablesAreBuiltSideBySide() {
        for name in ["swiftvisor", "swiftvisor-cli"] {
            XCTAssertTrue(FileManager.default.isExecutableFile(atPath: CLITests.binDirectory.appendingPathComponent(name).path), name)
        }
    }

    func testRunWithNoArgumentsBootsTheDemoAndExplainsTheExits() throws {
        try KVMTestHost.skipUnlessUsable()
        let r = try swiftvisor(["run"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("Swiftvisor demo guest"), r.stdout)
        XCTAssertTrue(r.stdout.contains("checksum 0x" + String(DemoGuest.expectedChecksum, radix: 16) + " ok"), r.stdout)
        XCTAssertTrue(r.stderr.contains("guest exited with code 0"), r.stderr)
        XCTAssertTrue(r.stderr.contains("VM exits that reached the VMM"), r.stderr)
        XCTAssertTrue(r.stderr.contains("COM1 8250 UART"), r.stderr)
    }

    func testGuestExitCodeBecomesTheProcessStatus() throws {
        try KVMTestHost.skipUnlessUsable()
        let image = TemporaryFile(bytes: [0xB0, 42, 0x66, 0xBA, 0x01, 0x05, 0xEE]) // exit 42 (long mode)
        let r = try swiftvisor(["run", "--image", image.path])
        XCTAssertEqual(r.status, 42, r.stderr)
        XCTAssertEqual(r.stderr, "", "a guest that exits on its own gets no extra output")
        let real = TemporaryFile(bytes: [0xB0, 3, 0xBA, 0x01, 0x05, 0xEE])
        XCTAssertEqual(try swiftvisor(["run", "--image", real.path, "--mode", "real", "--memory", "1M"]).status, 3)
    }

    func testMissingImageIsOneClearLine() throws {
        let r = try swiftvisor(["run", "--image", "/nonexistent/guest.bin"])
        XCTAssertEqual(r.status, ProcessExitCode.fileNotFound)
        XCTAssertEqual(r.stderr, "swiftvisor: error: cannot read /nonexistent/guest.bin: No such file or directory\n")
        XCTAssertEqual(r.stdout, "")
    }

    func testJSONReportIsTheOnlyThingOnStdout() throws {
        try KVMTestHost.skipUnlessUsable()
        var code: [UInt8] = [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x41, 0xEE] // print 'A'
        code += [0xB0, 4, 0x66, 0xBA, 0x01, 0x05, 0xEE]                 // exit 4
        let image = TemporaryFile(bytes: code)
        let r = try swiftvisor(["run", "--image", image.path, "--json"])
        XCTAssertEqual(r.status, 4)
        XCTAssertEqual(r.stderr, "A", "the guest console moves to stderr")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(json["exitCode"] as? Int, 4)
        XCTAssertEqual((json["stop"] as? [String: Any])?["kind"] as? String, "exit-port")
        XCTAssertEqual((json["stop"] as? [String: Any])?["guestExitCode"] as? Int, 4)
        XCTAssertEqual((json["exits"] as? [String: Any])?["io-out"] as? Int, 2)
        XCTAssertNotNil((json["memory"] as? [String: Any])?["vmmResidentBytes"])
    }

    func testStatsFlagPrintsTheSummaryForAnyGuest() throws {
        try KVMTestHost.skipUnlessUsable()
        let image = TemporaryFile(bytes: [0xB0, 0, 0x66, 0xBA, 0x01, 0x05, 0xEE])
        let r = try swiftvisor(["run", "--image", image.path, "--stats"])
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("io-out"), r.stderr)
        XCTAssertTrue(r.stderr.contains("0x501"), r.stderr)
    }

    func testCtrlCStopsASpinningGuestCleanly() throws {
        try KVMTestHost.skipUnlessUsable()
        let image = TemporaryFile(bytes: [0xEB, 0xFE]) // jmp $
        let r = try swiftvisor(["run", "--image", image.path, "--stats"], signalAfter: 0.5)
        XCTAssertEqual(r.status, 130, r.stderr)
        XCTAssertTrue(r.stderr.contains("stopped by signal 2 (SIGINT)"), r.stderr)
    }

    func testAHungKernelStoppedFromOutsideSaysWhereItHung() throws {
        try KVMTestHost.skipUnlessUsable()
        // A vmlinux whose startup_64 calls wait_forever: jmp $.
        let code: [UInt8] = [0x90, 0x90, 0x90, 0x90, 0xEB, 0xFE]
        let kernel = TemporaryFile(bytes: CraftedImage.addingSymbols(CraftedImage.elf64(code: code), [
            ("startup_64", 0xFFFF_FFFF_8100_0000, 4), ("wait_forever", 0xFFFF_FFFF_8100_0004, 2),
        ]))
        let timedOut = try swiftvisor(["run", "--kernel", kernel.path, "--quirks", "off", "--timeout", "1"])
        XCTAssertEqual(timedOut.status, 124, timedOut.stderr)
        XCTAssertTrue(timedOut.stderr.contains("<wait_forever>"), timedOut.stderr)
        let signalled = try swiftvisor(["run", "--kernel", kernel.path, "--quirks", "off"], signalAfter: 1)
        XCTAssertEqual(signalled.status, 130, signalled.stderr)
        XCTAssertTrue(signalled.stderr.contains("stopped by signal 2 (SIGINT)"), signalled.stderr)
        XCTAssertTrue(signalled.stderr.contains("vCPU 0 at RIP 0x1000004 <wait_forever>"), signalled.stderr)
    }

    func testGuestFailureIsReportedWithItsInstruction() throws {
        try KVMTestHost.skipUnlessUsable()
        let image = TemporaryFile(bytes: [0x48, 0xBB, 0x00, 0x00, 0x00, 0xD0, 0, 0, 0, 0, 0xF3, 0x48, 0x0F, 0xB8, 0x03])
        let r = try swiftvisor(["run", "--image", image.path])
        XCTAssertEqual(r.status, ProcessExitCode.guestFailure)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("RIP 0x10000a"), r.stderr)
        XCTAssertTrue(r.stderr.contains("f3 48 0f b8 03"), r.stderr)
    }

    func testUsageErrorsExit64() throws {
        XCTAssertEqual(try swiftvisor(["run", "--cpus", "many"]).status, 64)
        XCTAssertEqual(try swiftvisor(["run", "--mode", "v86", "--image", "x"]).status, 64)
        XCTAssertEqual(try swiftvisor(["run", "--entry", "0x1000"]).status, 64)
        XCTAssertEqual(try swiftvisor(["run", "--mode", "real"]).status, 64)
        XCTAssertEqual(try swiftvisor(["run", "--entry=0x1000"]).status, 64)
        XCTAssertEqual(try swiftvisor(["run", "--memory", "0"]).status, 64)
        XCTAssertEqual(try swiftvisor(["frobnicate"]).status, 64)
        // Network and vsock devices: malformed, or on a guest that cannot have them.
        let image = TemporaryFile(bytes: [0xF4])
        let cases: [([String], String)] = [(["--net", "tap0"], "is not a network device"),
                                           (["--net", "tap=t0,mac=01:00:5e:00:00:01"], "is not a network device"),
                                           (["--net", "tap=t0"], "virtio devices need a kernel"),
                                           (["--vsock", "socket=/tmp/x"], "is not a vsock device"),
                                           (["--vsock", "cid=3,socket=/tmp/x"], "virtio devices need a kernel")]
        for (arguments, says) in cases {
            let r = try swiftvisor(["run", "--image", image.path] + arguments)
            XCTAssertEqual(r.status, 64, "\(arguments): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(says), "\(arguments): \(r.stderr)")
        }
    }

    func testHelpExplainsRunAndExitCodes() throws {
        let r = try swiftvisor(["run", "--help"])
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.stdout.contains("--image"), r.stdout)
        XCTAssertTrue(r.stdout.contains("port 0x501"), r.stdout)
        XCTAssertTrue(try swiftvisor(["--help"]).stdout.contains("69 KVM unavailable"))
    }
}

extension CLITests {
    func testFastPathAndArgumentParserAgree() throws {
        try KVMTestHost.skipUnlessUsable()
        let image = TemporaryFile(bytes: [0xB0, 6, 0xBA, 0x01, 0x05, 0xEE])
        // The same options through the fast path and through ArgumentParser's
        // `--flag=value` spelling (which the fast path leaves to ArgumentParser).
        let fast = try swiftvisor(["run", "--image", image.path, "--mode", "real", "--memory", "1M", "--cpus", "1", "--load-address", "0x8000", "--entry", "0x8000"])
        let parsed = try swiftvisor(["run", "--image=\(image.path)", "--mode=real", "--memory=1M", "--cpus=1", "--load-address=0x8000", "--entry=0x8000"])
        XCTAssertEqual(fast.status, 6, fast.stderr)
        XCTAssertEqual(parsed.status, 6, parsed.stderr)
    }

    /// A flat binary loaded over the boot structures' usual place runs in every mode
    /// (it uses the stack), and `--verbose` says where the structures went instead.
    func testFlatBinaryAtAnyLoadAddress() throws {
        try KVMTestHost.skipUnlessUsable()
        // push 42; pop rcx/ecx; mov al, cl; mov dx, 0x501; out dx, al; hlt: the same bytes in both modes.
        let image = TemporaryFile(bytes: [0x6A, 0x2A, 0x59, 0x88, 0xC8, 0x66, 0xBA, 0x01, 0x05, 0xEE, 0xF4])
        for mode in ["protected", "long"] {
            let r = try swiftvisor(["run", "--image", image.path, "--mode", mode, "--load-address", "0x1000", "--memory", "1M", "--verbose"])
            XCTAssertEqual(r.status, 42, r.stderr)
            XCTAssertTrue(r.stderr.contains("boot: flat binary at 0x1000-0x100a, \(mode) mode, entry 0x1000; boot GDT at 0x2500"), r.stderr)
        }
    }

    /// One option table: ArgumentParser declares exactly the flags `RunFlags` knows,
    /// taking a value exactly where the table says, so the fast path and the full
    /// parser can never drift apart.
    func testArgumentParserDeclaresExactlyTheOptionTable() {
        let help = RunCommand.helpMessage(for: RunCommand.self, includeHidden: true, columns: 400)
        var declared: [String: Bool] = [:]
        for line in help.split(separator: "\n") {
            let words = line.split(separator: " ")
            guard let first = words.first, first.hasPrefix("--"), first != "--help", first != "--version" else { continue }
            declared[String(first)] = words.count > 1 && words[1].hasPrefix("<")
        }
        let table = Dictionary(uniqueKeysWithValues: RunFlags.table.map { ($0.name, $0.takesValue) })
        XCTAssertEqual(declared, table, help)
    }

    func testAValueThatLooksLikeAnOptionIsAValue() throws {
        try KVMTestHost.skipUnlessUsable()
        // kvm-unit-tests passes arguments like this; the guest gets its command line.
        let kernel = TemporaryFile(bytes: CraftedImage.elf64(code: [0xB0, 0x00, 0x66, 0xBA, 0x01, 0x05, 0xEE]))
        let r = try swiftvisor(["run", "--kernel", kernel.path, "--cmdline", "-pause_filter_test", "--memory", "64M", "--quirks", "off"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let s = try RunFlags.parse(["--cmdline", "-x", "--memory=2M"])
        XCTAssertEqual(s.cmdline, "-x")
        XCTAssertEqual(s.memory, 2 << 20)
        XCTAssertThrowsError(try RunFlags.parse(["--cmdline"]), "a value is still required")
        XCTAssertThrowsError(try RunFlags.parse(["--stats=yes"]))
        XCTAssertThrowsError(try RunFlags.parse(["--detached"]), "no VMM-internal flag is public")
        XCTAssertThrowsError(try RunFlags.parse(["--host-quirks"]))
    }

    func testAMissingKernelIsFileNotFound() throws {
        let r = try swiftvisor(["run", "--kernel", "/nonexistent/vmlinux"])
        XCTAssertEqual(r.status, 66, r.stderr)
        XCTAssertEqual(r.stderr, "swiftvisor: error: cannot read /nonexistent/vmlinux: No such file or directory\n")
        let created = try swiftvisor(["create", "x", "--kernel", "/nonexistent/vmlinux"])
        XCTAssertEqual(created.status, 66, created.stderr)
        let config = TemporaryFile(bytes: Array(#"{"boot": {"kernel": "/nonexistent/bzImage"}}"#.utf8), suffix: ".json")
        XCTAssertEqual(try swiftvisor(["run", "--config", config.path]).status, 66, "a config file's kernel too")
        XCTAssertEqual(try swiftvisor(["run", "--config", "/nonexistent.json"]).status, 66)
    }

    func testTheVMMTakesOnlyItsJSON() throws {
        let r = try swiftvisor(["--config-fd"])
        XCTAssertEqual(r.status, 64)
        XCTAssertTrue(r.stderr.contains("usage: swiftvisor --config FILE | --config-fd N"), r.stderr)
        let bad = TemporaryFile(bytes: Array(#"{"vm": {"cpus": 0}}"#.utf8), suffix: ".json")
        let b = try swiftvisor(["--config", bad.path])
        XCTAssertEqual(b.status, 64, b.stderr)
        XCTAssertTrue(b.stderr.contains("invalid --cpus"), b.stderr)
    }
}

extension CLITests {
    func testDoctorOnThisMachine() throws {
        try KVMTestHost.skipUnlessUsable()
        let r = try swiftvisor(["doctor"])
        XCTAssertEqual(r.status, 0, r.stdout)
        XCTAssertTrue(r.stdout.contains("PASS  KVM API"), r.stdout)
        XCTAssertTrue(r.stdout.contains("this host can run VMs"), r.stdout)
        XCTAssertFalse(r.stdout.contains("\u{1B}["), "no colour when stdout is not a terminal")
        let quiet = try swiftvisor(["doctor", "--quiet", "--no-probe"])
        XCTAssertEqual(quiet.status, 0)
        XCTAssertEqual(quiet.stdout, "")
        let json = try swiftvisor(["doctor", "--json"])
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(o["canRunVMs"] as? Bool, true)
        XCTAssertNotNil((o["probe"] as? [String: Any])?["exitNanoseconds"])
    }

    func testDoctorWithoutTheDeviceSaysWhatToDo() throws {
        let r = try swiftvisor(["doctor", "--device", "/nonexistent/kvm", "--json"])
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(o["canRunVMs"] as? Bool, false)
        XCTAssertEqual(r.status, o["exitCode"] as? Int32)
        XCTAssertTrue([10, 11, 12].contains(r.status), "\(r.status)")
        let checks = try XCTUnwrap(o["checks"] as? [[String: Any]])
        XCTAssertTrue(checks.contains { $0["id"] as? String == "device.exists" && $0["status"] as? String == "fail" && $0["fix"] is String })
    }
}

extension CLITests {
    /// `run --trace` is not the fast path's: swiftvisor-cli describes the VM and execs
    /// the VMM, which it must find.
    func testMissingVMMExecutableIsOneLine() throws {
        let r = try CLITests.launch(["run", "--trace", NSTemporaryDirectory() + "/never-written.trace"], environment: ["SWIFTVISOR_VMM": "/nonexistent/swiftvisor"])
        XCTAssertEqual(r.status, ProcessExitCode.vmmFailure)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("set SWIFTVISOR_VMM"), r.stderr)
    }

    /// Every verb but a fast-path `run` is swiftvisor-cli's; without it, one line.
    func testMissingCLIExecutableIsOneLine() throws {
        for args in [["list"], ["--help"], ["run", "--bogus"]] {
            let r = try CLITests.launch(args, environment: ["SWIFTVISOR_CLI": "/nonexistent/swiftvisor-cli"])
            XCTAssertEqual(r.status, ProcessExitCode.vmmFailure, "\(args)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("set SWIFTVISOR_CLI"), r.stderr)
        }
    }

    /// The fast path runs the VM in the process the user started: no second program
    /// (neither swiftvisor-cli nor another VMM) is started on the way.
    func testFastPathRunsInTheProcessUsersStart() throws {
        try KVMTestHost.skipUnlessUsable()
        let r = try CLITests.launch(["run", "--stats", "--memory", "16M"],
                                    environment: ["SWIFTVISOR_CLI": "/nonexistent/swiftvisor-cli", "SWIFTVISOR_VMM": "/nonexistent/swiftvisor"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("checksum 0x" + String(DemoGuest.expectedChecksum, radix: 16) + " ok"), r.stdout)
    }
}

extension CLITests {
    func run(_ args: [String], input: Data, signalAfter: Double? = nil) throws -> Outcome {
        try CLITests.launch(args, input: input, signalAfter: signalAfter)
    }

    func testStdinReachesTheGuestsSerialPort() throws {
        try KVMTestHost.skipUnlessUsable()
        // Real mode: echo COM1 input; 'q' exits with 5.
        let echo = TemporaryFile(bytes: [0xBA, 0xFD, 0x03, 0xEC, 0xA8, 0x01, 0x74, 0xFB, 0xBA, 0xF8, 0x03, 0xEC, 0x3C, 0x71,
                                         0x74, 0x03, 0xEE, 0xEB, 0xED, 0xBA, 0x01, 0x05, 0xB0, 0x05, 0xEE])
        let r = try run(["run", "--image", echo.path, "--mode", "real", "--memory", "1M"], input: Data("abcq".utf8))
        XCTAssertEqual(r.status, 5, r.stderr)
        XCTAssertEqual(r.stdout, "abc")
    }

    func testOnRebootRestartBootsTheGuestAgain() throws {
        try KVMTestHost.skipUnlessUsable()
        // A 64-bit kernel that resets the machine through the i8042 at once.
        let kernel = TemporaryFile(bytes: CraftedImage.elf64(code: [0xB0, 0xFE, 0xE6, 0x64, 0xF4]))
        let once = try run(["run", "--kernel", kernel.path, "--memory", "64M"], input: Data())
        XCTAssertEqual(once.status, 0, "a reboot ends the VM by default")
        // With devices that hold host resources across the restart: a writable disk
        // (locked), a vsock (its listening socket) and, as root, a TAP made in a network
        // namespace of its own. Each new machine must get them again.
        let disk = TemporaryFile(bytes: [UInt8](repeating: 0, count: 4096))
        let socket = disk.path + ".vsock"
        defer { unlink(socket) }
        var arguments = ["run", "--kernel", kernel.path, "--memory", "64M", "--on-reboot", "restart",
                         "--disk", disk.path, "--vsock", "cid=3,socket=\(socket)"]
        var executable = "swiftvisor"
        if geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") {
            // unshare execs the VMM in a new network namespace (same process: SIGINT reaches it).
            arguments = ["--net", CLITests.binDirectory.appendingPathComponent("swiftvisor").path] + arguments + ["--net", "tap=auto"]
            executable = "/usr/bin/unshare"
        }
        let again = try CLITests.launch(arguments, input: Data(), signalAfter: 1.5, executable: executable)
        XCTAssertEqual(again.status, 130, again.stderr)
        XCTAssertGreaterThanOrEqual(again.stderr.components(separatedBy: "starting it again").count - 1, 2, again.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: socket), "the vsock's socket is removed at the end")
    }
}

/// scripts/kvm-unit-tests with a QEMU that refuses to start: its exit status 1 is what
/// QEMU also returns for a guest that passed (isa-debug-exit's (0 << 1) | 1), and the
/// runner must tell the two apart by QEMU's error output.
final class ConformanceRunnerTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testAQEMUThatNeverStartedIsASkipWithItsReasonNotAPass() throws {
        try KVMTestHost.skipUnlessUsable()
        let suite = Self.root.appendingPathComponent("../shared/kvm-unit-tests").standardized.path
        guard FileManager.default.fileExists(atPath: suite + "/setjmp.flat") else { throw XCTSkip("\(suite) has no setjmp.flat") }
        let fakes = FileManager.default.temporaryDirectory.appendingPathComponent("fake-qemu-\(getpid())")
        try FileManager.default.createDirectory(at: fakes, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: fakes) }
        let qemu = fakes.appendingPathComponent("qemu-system-x86_64")
        try """
            #!/bin/sh
            # A stand-in for QEMU: refuses to start, or runs a guest that passes.
            if [ "$FAKE_QEMU" = refuse ]; then
                echo "qemu-system-x86_64: warning: host doesn't support requested feature" >&2
                echo "qemu-system-x86_64: Property 'max-x86_64-cpu.vmx-mbec' not found" >&2
                exit 1
            fi
            echo "PASS: everything"; echo "SUMMARY: 1 tests"; exit 1

            """.write(to: qemu, atomically: true, encoding: .utf8)
        chmod(qemu.path, 0o755)
        func run(_ mode: String) throws -> [String: Any] {
            let p = Process()
            p.executableURL = Self.root.appendingPathComponent("scripts/kvm-unit-tests")
            p.arguments = [suite, "--only", "setjmp", "--compare", "qemu", "--json",
                           "--swiftvisor", CLITests.binDirectory.appendingPathComponent("swiftvisor").path]
            var env = ProcessInfo.processInfo.environment
            env["PATH"] = fakes.path + ":" + (env["PATH"] ?? "/usr/bin:/bin")
            env["FAKE_QEMU"] = mode
            p.environment = env
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            let doc = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            return try XCTUnwrap((doc["results"] as? [[String: Any]])?.first)
        }
        let refused = try run("refuse")
        XCTAssertEqual(refused["status"] as? String, "PASS", "Swiftvisor's own verdict")
        let kvm = try XCTUnwrap(refused["qemu-kvm"] as? [String: Any])
        XCTAssertEqual(kvm["status"] as? String, "SKIP")
        XCTAssertEqual(kvm["reason"] as? String, "QEMU did not start: qemu-system-x86_64: Property 'max-x86_64-cpu.vmx-mbec' not found")
        let passed = try XCTUnwrap(try run("pass")["qemu-tcg"] as? [String: Any])
        XCTAssertEqual(passed["status"] as? String, "PASS", "status 1 with the guest's output is the guest's 0")
    }
}
