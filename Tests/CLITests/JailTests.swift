import Control
import Devices
import Foundation
import Glibc
import TestSupport
import VMM
import XCTest

/// `--jail`: the jailed VMM sees only the files its VM uses, lives in namespaces of its
/// own, holds no capabilities, and its exit status and pid are what they would be
/// without the jail.
final class JailTests: XCTestCase {
    var stateDir = ""

    override func setUpWithError() throws {
        stateDir = "/tmp/sv-jail-\(getpid())-\(UInt32.random(in: 0...0xFFFFFF))"
    }

    override func tearDown() { LifecycleTests.removeAll(stateDir) }

    func skipUnlessJailable() throws {
        try KVMTestHost.skipUnlessUsable()
        if geteuid() != 0 {
            print("SKIP: the jail makes namespaces and mounts, which needs root; this test runs as uid \(geteuid())")
            throw XCTSkip("the jail needs root; this test runs as uid \(geteuid())")
        }
    }

    @discardableResult
    func sv(_ args: [String]) throws -> CLITests.Outcome { try LifecycleTests.sv(args, stateDir: stateDir) }

    func api(_ name: String, _ method: String, _ path: String, _ body: String? = nil) throws -> (status: Int, body: JSONValue) {
        try APIClient.request("\(stateDir)/\(name)/api.sock", method, path, body: body.map { try JSONValue.parse($0) })
    }

    func status(_ pid: String) throws -> [String: String] {
        let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return fields
    }

    func testTheJailedVMMSeesOnlyItsOwnFilesAndHoldsNoPrivileges() throws {
        try skipUnlessJailable()
        let image = TemporaryFile(bytes: LifecycleTests.looping)
        let started = try sv(["run", "--detach", "--jail", "--name", "jailed", "--image", image.path, "--mode", "real", "--memory", "16M"])
        XCTAssertEqual(started.status, 0, started.stderr)
        let pid = try String(contentsOfFile: "\(stateDir)/jailed/pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let s = try status(pid)
        // The pid file holds the host's number for the VMM, which is PID 1 inside.
        XCTAssertEqual(s["NSpid"], "\(pid)\t1")
        XCTAssertEqual(s["CapEff"], "0000000000000000")
        XCTAssertEqual(s["CapPrm"], "0000000000000000")
        XCTAssertEqual(s["CapBnd"], "0000000000000000")
        XCTAssertEqual(s["NoNewPrivs"], "1")
        XCTAssertEqual(s["Seccomp"], "2")
        for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
            let theirs = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(ns)")
            let ours = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/\(ns)")
            XCTAssertNotEqual(theirs, ours, "a \(ns) namespace of its own")
        }
        // Its root: the image, the KVM device, its state folder and its own /proc.
        let root = "/proc/\(pid)/root"
        XCTAssertTrue(FileManager.default.fileExists(atPath: "/etc/passwd"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/etc/passwd"), "the host's files are not there")
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/usr"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root + "/dev"), ["kvm"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + image.path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "\(stateDir)/jailed/config.json"))
        // (and the working directory, empty, so relative paths in the description work)
        let cwd = FileManager.default.currentDirectoryPath.split(separator: "/").first.map(String.init)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: root + "/")), Set(["dev", "proc", "tmp"] + (cwd.map { [$0] } ?? [])))
        // Its files are read-only, its state folder is not (it writes its console log).
        XCTAssertEqual(access(root + image.path, W_OK), -1)
        XCTAssertEqual(errno, EROFS, "read-only inside, even for root outside looking in")
        XCTAssertEqual(access(root + "\(stateDir)/jailed", W_OK), 0)
        let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
        XCTAssertTrue(limits.contains("Max open files            4096"), limits)
        XCTAssertTrue(limits.contains("Max core file size        0"), limits)
        // What it mapped on entering the jail, plus guest RAM and 4 GiB.
        let space = limits.split(separator: "\n").first { $0.hasPrefix("Max address space") }?.split(separator: " ").dropFirst(3).first.flatMap { UInt64($0) }
        XCTAssertGreaterThanOrEqual(space ?? 0, (16 << 20) + (4 << 30), limits)
        // The lifecycle verbs work as without the jail; the supervisor ends with it.
        XCTAssertEqual(try api("jailed", "GET", "/vm").body["state"]?.string, "running")
        let supervisor = try XCTUnwrap(s["PPid"])
        XCTAssertTrue(try String(contentsOfFile: "/proc/\(supervisor)/cmdline", encoding: .utf8).contains("swiftvisor\0--config"))
        XCTAssertEqual(try sv(["stop", "jailed"]).status, 0)
        var supervisorGone = false
        for _ in 0..<100 where !supervisorGone {
            let state = (try? self.status(supervisor))?["State"]
            supervisorGone = state == nil || state!.hasPrefix("Z")
            if !supervisorGone { usleep(20_000) }
        }
        XCTAssertTrue(supervisorGone, "the supervisor ended with the VMM")
        XCTAssertEqual(try sv(["ls"]).stdout.contains("stopped"), true)
    }

    func testAFileNamedAfterTheJailWasMadeIsOutOfReach() throws {
        try skipUnlessJailable()
        XCTAssertEqual(try sv(["create", "late", "--jail"]).status, 0)
        // The same change that boots an unjailed VM (PreBootTests): here the file is a
        // host file the jail never held.
        let image = TemporaryFile(bytes: [0xB0, 7, 0x66, 0xBA, 0x01, 0x05, 0xEE])
        let set = try api("late", "PUT", "/vm/config", #"{"jail": true, "boot": {"image": "\#(image.path)", "mode": "long"}}"#)
        XCTAssertEqual(set.status, 200, set.body.rendered)
        let start = try api("late", "PUT", "/vm/state", #"{"state": "running"}"#)
        XCTAssertEqual(start.status / 100, 4, start.body.rendered)
        XCTAssertTrue(start.body.rendered.contains("No such file"), start.body.rendered)
        // The jail is the process's: the API cannot take it away.
        XCTAssertEqual(try api("late", "PUT", "/vm/config", #"{"boot": {"demo": true}}"#).status, 409)
        XCTAssertEqual(try sv(["kill", "late"]).status, 0)
    }

    func testAJailedRunEndsWithTheGuestsExitCodeAndJoinsANamedNetworkNamespace() throws {
        try skipUnlessJailable()
        // Prints "jail" and exits with 7 through the exit port.
        var code: [UInt8] = [0x66, 0xBA, 0xF8, 0x03]
        for c in "jail\n".utf8 { code += [0xB0, c, 0xEE] }
        code += [0xB0, 7, 0x66, 0xBA, 0x01, 0x05, 0xEE]
        let image = TemporaryFile(bytes: code)
        let r = try sv(["run", "--jail", "--image", image.path])
        XCTAssertEqual(r.status, 7, r.stderr)
        XCTAssertEqual(r.stdout, "jail\n")

        // A network namespace file (what `ip netns add` makes): a bind mount of one.
        let nsFile = "/tmp/sv-netns-\(getpid())"
        XCTAssertTrue(FileManager.default.createFile(atPath: nsFile, contents: nil))
        defer { umount2(nsFile, Int32(MNT_DETACH)); unlink(nsFile) }
        let made = try CLITests.launch(["--net=" + nsFile, "true"], executable: "/usr/bin/unshare")
        guard made.status == 0 else { throw XCTSkip("cannot make a network namespace here: \(made.stderr)") }
        let looping = TemporaryFile(bytes: LifecycleTests.looping)
        let joined = try sv(["run", "--detach", "--name", "netj", "--netns", nsFile, "--image", looping.path, "--mode", "real"])
        XCTAssertEqual(joined.status, 0, joined.stderr)
        let pid = try String(contentsOfFile: "\(stateDir)/netj/pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        var file = stat(), theirs = stat()
        XCTAssertEqual(stat(nsFile, &file), 0)
        XCTAssertEqual(stat("/proc/\(pid)/ns/net", &theirs), 0)
        XCTAssertEqual(theirs.st_ino, file.st_ino, "in the namespace --netns named")
        XCTAssertEqual(try sv(["kill", "netj"]).status, 0)
        XCTAssertEqual(try sv(["run", "--netns", "/tmp/no-such-netns", "--image", image.path]).stderr,
                       "swiftvisor: error: jail: cannot open the network namespace /tmp/no-such-netns: No such file or directory\n")
    }

    func testJailSettingsDecodeValidateAndPlan() throws {
        func decode(_ text: String) throws -> VMDescription { try VMDescription.parse(text) }
        XCTAssertEqual(try decode(#"{"jail": true}"#).jail, JailSettings())
        XCTAssertEqual(try decode(#"{"jail": {"netns": "/run/netns/a", "memoryLimit": "1G", "cpuLimit": 1.5}}"#).jail,
                       JailSettings(networkNamespace: "/run/netns/a", memoryLimit: 1 << 30, cpuLimit: 1.5))
        XCTAssertNil(try decode("{}").jail)
        for bad in [#"{"jail": false}"#, #"{"jail": {"netnz": "x"}}"#, #"{"jail": {"openFiles": 3}}"#, #"{"jail": {"cpuLimit": 0}}"#,
                    #"{"memory": "1G", "jail": {"memoryLimit": "512M"}}"#, #"{"jail": {"addressSpace": 1}}"#, #"{"jail": {"netns": ""}}"#,
                    #"{"jail": {"processes": 18446744073709551615}}"#] {
            XCTAssertThrowsError(try decode(bad), bad)
        }
        let d = try decode(#"{"jail": true}"#)
        XCTAssertEqual(d.json.rendered, #"{"memory":67108864,"cpus":1,"boot":{"demo":true},"testDevices":false,"pit":true,"hostQuirks":false,"jail":true}"#)
        XCTAssertEqual(try decode(d.json.rendered), d, "round trip")

        var kernel = VMDescription(name: "k", jail: JailSettings())
        kernel.config.memorySize = 256 << 20
        kernel.config.vcpuCount = 2
        kernel.config.boot = .kernel(path: "/k/vmlinux", commandLine: "", initrd: "initrd.cpio")
        kernel.config.disks = [DiskConfig(path: "root.img"), DiskConfig(path: "/k/vmlinux", readOnly: true), DiskConfig(path: "ro.img", readOnly: true)]
        let plan = try XCTUnwrap(kernel.jail).plan(for: kernel, stateFolder: "/run/swiftvisor/k", workingDirectory: "/home/u", cgroupName: "k")
        XCTAssertEqual(plan.mounts, [.init(path: "/dev/kvm", writable: true), .init(path: "/k/vmlinux", writable: false),
                                     .init(path: "initrd.cpio", writable: false), .init(path: "root.img", writable: true),
                                     .init(path: "ro.img", writable: false), .init(path: "/run/swiftvisor/k", writable: true)])
        XCTAssertEqual(plan.absolute("initrd.cpio"), "/home/u/initrd.cpio")
        XCTAssertEqual(plan.addressSpace, (256 << 20) + (4 << 30))
        XCTAssertEqual(plan.cgroup, .init(name: "k", memoryBytes: (256 << 20) + (256 << 20), cpus: 3, tasks: 512))
    }
}
