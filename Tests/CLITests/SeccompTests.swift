import Devices
import Foundation
import Glibc
import TestSupport
import XCTest

/// The VMM's per-thread seccomp filters: a refused call stops the VMM with a report
/// naming it, each thread kind has its own list, and a running VM is filtered.
final class SeccompTests: XCTestCase {
    func check(_ kind: String, _ call: String, _ mode: String? = nil) throws -> CLITests.Outcome {
        try CLITests.launch(["--seccomp-check", kind, call] + (mode.map { [$0] } ?? []))
    }

    func testAVCPUThreadCannotOpenAFileAndTheReportNamesTheCall() throws {
        let refused = try check("vcpu", "openat")
        XCTAssertEqual(refused.status, 71, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("the vCPU thread made the system call openat (257), which its filter does not allow"), refused.stderr)
        let socket = try check("vcpu", "socket")
        XCTAssertEqual(socket.status, 71, socket.stderr)
        let disk = try check("block-worker", "execve")
        XCTAssertEqual(disk.status, 71, disk.stderr)
        XCTAssertTrue(disk.stderr.contains("disk worker thread made the system call execve"), disk.stderr)
        // The main thread opens disks and sockets after set-up (pre-boot API, restarts).
        XCTAssertEqual(try check("main", "openat").status, 0)
        // log lets it through (the kernel logs it); off installs nothing.
        XCTAssertEqual(try check("vcpu", "openat", "log").status, 0)
        XCTAssertEqual(try check("vcpu", "openat", "off").status, 0)
        XCTAssertEqual(try check("vcpu", "no-such-call").status, 64)
    }

    func testMainIncludesTheThreadsItStartsAndNoThreadMayExec() {
        let main = Set(SeccompPolicy.allowed(.main))
        for kind in ThreadKind.allCases { XCTAssertTrue(Set(SeccompPolicy.allowed(kind)).isSubset(of: main), "\(kind)") }
        XCTAssertFalse(SeccompPolicy.allowed(.vcpu).contains(.openat))
        XCTAssertFalse(SeccompPolicy.allowed(.vcpu).contains(.socket))
        XCTAssertFalse(main.contains(.execve))
        XCTAssertFalse(main.contains(.ptrace))
        XCTAssertEqual(Seccomp.name(257), "openat")
        XCTAssertEqual(Seccomp.name(9999), "syscall 9999")
        XCTAssertEqual(Seccomp.number("openat"), 257)
    }

    func testARunningVMIsFilteredOnEveryThread() throws {
        try KVMTestHost.skipUnlessUsable()
        let dir = "/tmp/sv-seccomp-\(getpid())-\(UInt32.random(in: 0...0xFFFFFF))"
        defer { LifecycleTests.removeAll(dir) }
        let image = dir + ".bin"
        FileManager.default.createFile(atPath: image, contents: Data(LifecycleTests.looping))
        defer { unlink(image) }
        for (mode, filtered) in [("kill", true), ("off", false)] {
            let name = "sc-\(mode)"
            let r = try LifecycleTests.sv(["run", "--detach", "--name", name, "--image", image, "--mode", "real", "--seccomp", mode], stateDir: dir)
            XCTAssertEqual(r.status, 0, r.stderr)
            let pid = try String(contentsOfFile: "\(dir)/\(name)/pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            XCTAssertTrue(status.contains("Seccomp:\t\(filtered ? 2 : 0)"), status)
            // The vCPU thread names itself as it starts, which may be just after `run
            // --detach` has returned on a busy machine.
            var vcpu: String?
            for _ in 0..<100 where vcpu == nil {
                vcpu = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").first {
                    (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/comm", encoding: .utf8))?.hasPrefix("sv-vcpu") ?? false
                }
                if vcpu == nil { usleep(20_000) }
            }
            XCTAssertNotNil(vcpu, "a thread named sv-vcpu")
            if let vcpu {
                let s = try String(contentsOfFile: "/proc/\(pid)/task/\(vcpu)/status", encoding: .utf8)
                XCTAssertTrue(s.contains("Seccomp:\t\(filtered ? 2 : 0)"), s)
            }
            XCTAssertEqual(try LifecycleTests.sv(["kill", name], stateDir: dir).status, 0)
        }
    }
}
