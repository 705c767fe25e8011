import Control
import Foundation
import Glibc
import TestSupport
import VMM
import Synchronization
import XCTest

/// Named VMs driven from the shell side, as a script would: the real binaries, a state
/// directory of the test's own, and the control API over its Unix socket.
final class LifecycleTests: XCTestCase {
    var stateDir = ""

    /// out 0x80 forever: a guest whose exit counters keep moving.
    static let looping: [UInt8] = [0xE6, 0x80, 0xEB, 0xFC]
    /// Real mode: echoes COM1 input back; 'q' exits with code 5.
    static let echo: [UInt8] = [0xBA, 0xFD, 0x03, 0xEC, 0xA8, 0x01, 0x74, 0xFB, 0xBA, 0xF8, 0x03, 0xEC, 0x3C, 0x71,
                                0x74, 0x03, 0xEE, 0xEB, 0xED, 0xBA, 0x01, 0x05, 0xB0, 0x05, 0xEE]

    override func setUpWithError() throws {
        try KVMTestHost.skipUnlessUsable()
        stateDir = "/tmp/sv-\(getpid())-\(UInt32.random(in: 0...0xFFFFFF))"
    }

    override func tearDown() { Self.removeAll(stateDir) }

    /// Leaves no VM running behind a test, failed or not, and removes its state.
    static func removeAll(_ stateDir: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: stateDir)) ?? [] {
            if let pid = try? String(contentsOfFile: "\(stateDir)/\(name)/pid", encoding: .utf8), let p = Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines)) {
                kill(p, SIGKILL)
            }
        }
        try? FileManager.default.removeItem(atPath: stateDir)
    }

    @discardableResult
    func sv(_ args: [String], input: Data? = nil) throws -> CLITests.Outcome {
        try Self.sv(args, stateDir: stateDir, input: input)
    }

    static func sv(_ args: [String], stateDir: String, input: Data? = nil) throws -> CLITests.Outcome {
        try CLITests.launch(args, environment: ["SWIFTVISOR_STATE_DIR": stateDir], input: input ?? Data())
    }

    func inspect(_ name: String) throws -> [String: Any] {
        let r = try sv(["inspect", name])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
    }

    func exits(_ vm: [String: Any]) -> Int { ((vm["statistics"] as? [String: Any])?["exits"] as? [String: Any])?["total"] as? Int ?? -1 }

    func testWholeLifecycle() throws {
        let image = TemporaryFile(bytes: Self.looping)
        let started = try sv(["run", "--detach", "--name", "web", "--image", image.path])
        XCTAssertEqual(started.status, 0, started.stderr)
        XCTAssertEqual(started.stdout, "web\n")
        XCTAssertTrue(try sv(["ls"]).stdout.contains("web   running"))

        XCTAssertEqual(try sv(["pause", "web"]).status, 0)
        let paused = try inspect("web")
        XCTAssertEqual(paused["state"] as? String, "paused")
        usleep(300_000)
        XCTAssertEqual(exits(try inspect("web")), exits(paused), "a paused VM's counters do not move")

        XCTAssertEqual(try sv(["resume", "web"]).status, 0)
        usleep(200_000)
        let resumed = try inspect("web")
        XCTAssertEqual(resumed["state"] as? String, "running")
        XCTAssertGreaterThan(exits(resumed), exits(paused))
        XCTAssertNotNil(resumed["pid"] as? Int)
        XCTAssertEqual(((resumed["config"] as? [String: Any])?["boot"] as? [String: Any])?["image"] as? String, image.path)

        // A flat binary has no power button: stop stops it after asking.
        let stop = try sv(["stop", "web", "--timeout", "1"])
        XCTAssertEqual(stop.status, 0, stop.stderr)
        XCTAssertEqual(try sv(["wait", "web"]).status, 137, "stopped from the host")
        let stopped = try inspect("web")
        XCTAssertEqual(stopped["state"] as? String, "stopped")
        XCTAssertEqual(stopped["exitCode"] as? Int, 137)
        XCTAssertEqual(try sv(["pause", "web"]).status, 73, "cannot pause a stopped VM")
        XCTAssertEqual(try sv(["rm", "web"]).status, 0)
        XCTAssertEqual(try sv(["inspect", "web"]).status, 67)
    }

    /// A verb the small `swiftvisor` hands to swiftvisor-cli still dies on Ctrl-C: the
    /// hand-off must not pass on the VMM's blocked stop signals.
    func testCtrlCStopsAHandedOnVerb() throws {
        let image = TemporaryFile(bytes: Self.looping)
        XCTAssertEqual(try sv(["run", "--detach", "--name", "ctrlc", "--image", image.path]).status, 0)
        // Should SIGINT be ignored, the VM is killed after 5 s so that `wait` ends anyway.
        let stateDir = self.stateDir
        let killer = Thread { sleep(5); _ = try? LifecycleTests.sv(["kill", "ctrlc"], stateDir: stateDir) }
        killer.start()
        let r = try CLITests.launch(["wait", "ctrlc"], environment: ["SWIFTVISOR_STATE_DIR": stateDir], signalAfter: 0.5)
        XCTAssertEqual(r.status, SIGINT, "ended by the SIGINT, not by the VM's end (137): \(r.stderr)")
        _ = try sv(["kill", "ctrlc"])
    }

    func testWaitReturnsTheGuestsExitCodeAndLogsHoldItsOutput() throws {
        var code: [UInt8] = [0x66, 0xBA, 0xF8, 0x03]          // mov dx, 0x3f8
        for c in "hello\n".utf8 { code += [0xB0, c, 0xEE] }    // mov al, c; out dx, al
        code += [0xB0, 9, 0x66, 0xBA, 0x01, 0x05, 0xEE]        // exit 9
        let image = TemporaryFile(bytes: code)
        XCTAssertEqual(try sv(["run", "--detach", "--name", "hi", "--image", image.path]).status, 0)
        XCTAssertEqual(try sv(["wait", "hi"]).status, 9)
        XCTAssertEqual(try sv(["logs", "hi"]).stdout, "hello\n")
        XCTAssertEqual(try sv(["logs", "hi", "--follow"]).stdout, "hello\n", "follow ends with the VM")
        let ls = try sv(["ls", "--json"])
        let list = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(list.first?["state"] as? String, "stopped")
        XCTAssertEqual(list.first?["exitCode"] as? Int, 9)
    }

    func testTenVMsAtOnce() throws {
        let image = TemporaryFile(bytes: Self.looping)
        let group = DispatchGroup()
        let statuses = Mutex<[Int32]>([])
        let dir = stateDir, path = image.path
        for i in 0..<10 {
            group.enter()
            DispatchQueue.global().async {
                let r = try? Self.sv(["run", "--detach", "--name", "vm\(i)", "--image", path], stateDir: dir)
                statuses.withLock { $0.append(r?.status ?? -1) }
                group.leave()
            }
        }
        group.wait()
        XCTAssertEqual(statuses.withLock { $0 }, [Int32](repeating: 0, count: 10))
        let list = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try sv(["ls", "--json"]).stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(list.count, 10)
        XCTAssertEqual(Set(list.compactMap { $0["state"] as? String }), ["running"])
        XCTAssertEqual(Set(list.compactMap { $0["pid"] as? Int }).count, 10, "one VMM process per VM")
        for i in 0..<10 { XCTAssertEqual(try sv(["kill", "vm\(i)"]).status, 0) }
        for i in 0..<10 {
            XCTAssertEqual(try sv(["wait", "vm\(i)"]).status, 137)
            XCTAssertEqual(try sv(["rm", "vm\(i)"]).status, 0)
        }
    }

    func testTheExampleScriptRunsTenDemos() throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/ten-vms").path
        let r = try CLITests.launch([script], environment: ["SWIFTVISOR_STATE_DIR": stateDir,
                                                            "SWIFTVISOR": CLITests.binDirectory.appendingPathComponent("swiftvisor").path],
                                    executable: "/bin/bash")
        let text = r.stdout
        XCTAssertEqual(r.status, 0, text)
        XCTAssertTrue(text.contains("10 of 10 VMs exited with 0"), text)
        XCTAssertEqual(text.components(separatedBy: "exit code 0, 722 VM exits").count - 1, 10, text)
    }

    func testAKilledVMMShowsAsCrashedAndRmCleansIt() throws {
        let image = TemporaryFile(bytes: Self.looping)
        XCTAssertEqual(try sv(["run", "--detach", "--name", "doomed", "--image", image.path]).status, 0)
        let pid = try XCTUnwrap(try inspect("doomed")["pid"] as? Int)
        kill(Int32(pid), SIGKILL)
        usleep(200_000)
        XCTAssertEqual(try inspect("doomed")["state"] as? String, "crashed")
        XCTAssertTrue(try sv(["ls"]).stdout.contains("crashed"))
        XCTAssertEqual(try sv(["wait", "doomed"]).status, ProcessExitCode.vmmFailure)
        XCTAssertEqual(try sv(["rm", "doomed"]).status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(stateDir)/doomed"))
    }

    func testDuplicateAndUnknownNamesAndBadNames() throws {
        let image = TemporaryFile(bytes: Self.looping)
        XCTAssertEqual(try sv(["run", "--detach", "--name", "one", "--image", image.path]).status, 0)
        let again = try sv(["run", "--detach", "--name", "one", "--image", image.path])
        XCTAssertEqual(again.status, ProcessExitCode.conflict)
        XCTAssertEqual(again.stderr, "swiftvisor: error: a VM named 'one' already exists (see `swiftvisor ls`; `swiftvisor rm one` removes a stopped one)\n")
        XCTAssertEqual(try sv(["rm", "one"]).status, ProcessExitCode.conflict, "a running VM is not removed")
        XCTAssertEqual(try sv(["rm", "--force", "one"]).status, 0)
        for verb in ["inspect", "pause", "resume", "stop", "kill", "wait", "logs", "rm"] {
            let r = try sv([verb, "ghost"])
            XCTAssertEqual(r.status, ProcessExitCode.notFound, verb)
            XCTAssertEqual(r.stderr, "swiftvisor: error: no VM named 'ghost' (see `swiftvisor ls`)\n", verb)
        }
        let json = try sv(["pause", "ghost", "--json"])
        let error = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stderr.utf8)) as? [String: Any])
        XCTAssertEqual(error["error"] as? String, "no VM named 'ghost' (see `swiftvisor ls`)")
        XCTAssertEqual(error["exitCode"] as? Int, 67)
        XCTAssertEqual(try sv(["run", "--detach", "--name", "../evil", "--image", image.path]).status, ProcessExitCode.usage)
    }

    func testMalformedAPIRequestsGet4xxAndTheVMKeepsRunning() throws {
        let image = TemporaryFile(bytes: Self.looping)
        XCTAssertEqual(try sv(["run", "--detach", "--name", "api", "--image", image.path]).status, 0)
        let socket = "\(stateDir)/api/api.sock"
        let mode = try FileManager.default.attributesOfItem(atPath: socket)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)
        func raw(_ request: [UInt8]) -> String {
            let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in socket.utf8.enumerated() { raw[i] = b } }
            let ok = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            guard ok == 0 else { return "connect failed" }
            _ = request.withUnsafeBytes { send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            shutdown(fd, Int32(SHUT_WR))
            var data: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
                if n <= 0 { break }
                data += buffer.prefix(n)
            }
            return String(decoding: data, as: UTF8.self)
        }
        func request(_ method: String, _ path: String, _ body: String = "", headers: String = "") -> String {
            raw(Array("\(method) \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\(headers)\r\n\(body)".utf8))
        }
        XCTAssertTrue(raw(Array("NONSENSE\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 400"))
        XCTAssertTrue(request("PUT", "/vm/state", "{\"state\":").hasPrefix("HTTP/1.1 400"))
        XCTAssertTrue(request("PUT", "/vm/state", "[1,2]").hasPrefix("HTTP/1.1 400"))
        XCTAssertTrue(request("PUT", "/vm/state", "{\"state\":\"flying\"}").contains("unknown state"))
        XCTAssertTrue(request("POST", "/vm/actions", "{\"action\":\"explode\"}").hasPrefix("HTTP/1.1 400"))
        XCTAssertTrue(request("DELETE", "/vm").hasPrefix("HTTP/1.1 405"))
        XCTAssertTrue(request("GET", "/etc/passwd").hasPrefix("HTTP/1.1 404"))
        XCTAssertTrue(raw(Array("POST /vm/actions HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 413"))
        XCTAssertTrue(raw(Array(("GET /vm HTTP/1.1\r\nX: " + String(repeating: "a", count: 20000) + "\r\n\r\n").utf8)).hasPrefix("HTTP/1.1 431"))
        XCTAssertTrue(raw([0xFF, 0xFE, 0x00, 0x0D, 0x0A, 0x0D, 0x0A]).hasPrefix("HTTP/1.1 400"))
        let duplicate = request("PUT", "/vm/state", "{\"state\":\"paused\",\"state\":\"running\"}")
        XCTAssertTrue(duplicate.hasPrefix("HTTP/1.1 400"), "duplicate keys: \(duplicate)")
        // After all that, it still answers properly.
        let ok = request("GET", "/vm")
        XCTAssertTrue(ok.hasPrefix("HTTP/1.1 200"), ok)
        XCTAssertTrue(ok.contains("\"state\":\"running\""), ok)
        XCTAssertEqual(try sv(["kill", "api"]).status, 0)
    }

    func testConsoleAttachTypesIntoTheGuestAndDetaches() throws {
        let image = TemporaryFile(bytes: Self.echo)
        XCTAssertEqual(try sv(["run", "--detach", "--name", "tty", "--image", image.path, "--mode", "real", "--memory", "1M"]).status, 0)
        // Type "hi", then Ctrl-] to detach: the guest echoes, the VM keeps running.
        let attached = try sv(["console", "tty"], input: Data("hi".utf8) + Data([0x1D]))
        XCTAssertEqual(attached.status, 0, attached.stderr)
        XCTAssertTrue(attached.stderr.contains("Ctrl-] detaches"), attached.stderr)
        XCTAssertEqual(try inspect("tty")["state"] as? String, "running")
        var logged = ""
        for _ in 0..<50 where !logged.contains("hi") { usleep(50_000); logged = try sv(["logs", "tty"]).stdout }
        XCTAssertEqual(logged, "hi")
        // 'q' makes the guest exit with 5.
        _ = try sv(["console", "tty"], input: Data("q".utf8))
        XCTAssertEqual(try sv(["wait", "tty"]).status, 5)
    }

    func testConfigFileAndFlagsOnTop() throws {
        let image = TemporaryFile(bytes: [0xB0, 3, 0x66, 0xBA, 0x01, 0x05, 0xEE])
        let config = TemporaryFile(bytes: Array("""
            {"name": "fromfile", "memory": "32M", "cpus": 1, "boot": {"image": "\(image.path)", "mode": "long"}}
            """.utf8), suffix: ".json")
        XCTAssertEqual(try sv(["run", "--config", config.path, "--detach", "--memory", "48M"]).status, 0)
        XCTAssertEqual(try sv(["wait", "fromfile"]).status, 3)
        let vm = try inspect("fromfile")
        XCTAssertEqual((vm["config"] as? [String: Any])?["memory"] as? Int, 48 << 20, "the flag wins over the file")
        let bad = TemporaryFile(bytes: Array("{\"memory\": \"64M\", \"colour\": \"blue\"}".utf8), suffix: ".json")
        let r = try sv(["run", "--config", bad.path])
        XCTAssertEqual(r.status, 64)
        XCTAssertTrue(r.stderr.contains("unknown field \"colour\""), r.stderr)
    }
}

/// A VM that exists before it boots: created, configured only through its API socket,
/// then started.
final class PreBootTests: XCTestCase {
    var stateDir = ""

    override func setUpWithError() throws {
        try KVMTestHost.skipUnlessUsable()
        stateDir = "/tmp/sv-pre-\(getpid())-\(UInt32.random(in: 0...0xFFFFFF))"
    }

    override func tearDown() { LifecycleTests.removeAll(stateDir) }

    @discardableResult
    func sv(_ args: [String]) throws -> CLITests.Outcome { try LifecycleTests.sv(args, stateDir: stateDir) }

    func api(_ name: String, _ method: String, _ path: String, _ body: String? = nil) throws -> (status: Int, body: JSONValue) {
        try APIClient.request("\(stateDir)/\(name)/api.sock", method, path, body: body.map { try JSONValue.parse($0) })
    }

    func testCreateConfigureThroughTheAPIAndStart() throws {
        // Created with the demo (the default); the API then swaps in a guest that prints
        // and exits with 7, which is what runs.
        let created = try sv(["create", "later"])
        XCTAssertEqual(created.status, 0, created.stderr)
        XCTAssertEqual(created.stdout, "later\n")
        let listed = try sv(["ls"]).stdout
        XCTAssertTrue(listed.contains("later  created"), listed)
        let before = try api("later", "GET", "/vm")
        XCTAssertEqual(before.status, 200)
        XCTAssertEqual(before.body["state"]?.string, "created")
        XCTAssertEqual(try sv(["resume", "later"]).status, 73, "resume only un-pauses")
        XCTAssertEqual(try sv(["pause", "later"]).status, 73)

        var code: [UInt8] = [0x66, 0xBA, 0xF8, 0x03]
        for c in "api\n".utf8 { code += [0xB0, c, 0xEE] }
        code += [0xB0, 7, 0x66, 0xBA, 0x01, 0x05, 0xEE]
        let image = TemporaryFile(bytes: code)
        XCTAssertEqual(try api("later", "PUT", "/vm/config", #"{"cpus": 0}"#).status, 400, "validated like a config file")
        XCTAssertEqual(try api("later", "PUT", "/vm/config", #"{"memroy": "1G"}"#).status, 400)
        XCTAssertEqual(try api("later", "PUT", "/vm/config", #"{"name": "other"}"#).status, 400, "a name cannot change")
        let set = try api("later", "PUT", "/vm/config", #"{"memory": "32M", "boot": {"image": "\#(image.path)", "mode": "long"}}"#)
        XCTAssertEqual(set.status, 200, set.body.rendered)
        XCTAssertEqual(try api("later", "GET", "/vm/config").body["memory"]?.int, 32 << 20)
        let started = try api("later", "PUT", "/vm/state", #"{"state": "running"}"#)
        XCTAssertEqual(started.status, 200, started.body.rendered)
        XCTAssertEqual(try sv(["wait", "later"]).status, 7)
        XCTAssertEqual(try sv(["logs", "later"]).stdout, "api\n")
        XCTAssertEqual(try sv(["inspect", "later"]).stdout.contains("\"memory\":33554432"), true)
    }

    func testStartVerbBootsAndConfigIsFixedAfterwards() throws {
        let image = TemporaryFile(bytes: LifecycleTests.looping)
        XCTAssertEqual(try sv(["create", "svc", "--image", image.path, "--memory", "16M"]).status, 0)
        XCTAssertEqual(try sv(["start", "svc"]).status, 0)
        XCTAssertEqual(try api("svc", "GET", "/vm").body["state"]?.string, "running")
        XCTAssertEqual(try api("svc", "PUT", "/vm/config", "{}").status, 409)
        XCTAssertEqual(try api("svc", "POST", "/vm/actions", #"{"action": "start"}"#).status, 409)
        let again = try sv(["start", "svc"])
        XCTAssertEqual(again.status, 73, "start boots a created VM only")
        XCTAssertTrue(again.stderr.contains("is running, not created"), again.stderr)
        XCTAssertEqual(try sv(["kill", "svc"]).status, 0)
        // A created VM that is stopped never boots, and says so.
        XCTAssertEqual(try sv(["create", "never"]).status, 0)
        XCTAssertEqual(try sv(["kill", "never"]).status, 0)
        XCTAssertEqual(try sv(["wait", "never"]).status, 0)
        XCTAssertEqual(try sv(["create", "bad", "--cpus", "0"]).status, 64, "the same validation as run")
        XCTAssertEqual(try sv(["create", "--detach", "x"]).status, 64)
    }

    /// A client that sends half a request and waits, or never reads its answer, holds
    /// up nobody: another client is answered at once, and the stalled one is cut off at
    /// its deadline.
    func testAStalledAPIClientDelaysNobody() throws {
        let image = TemporaryFile(bytes: LifecycleTests.looping)
        XCTAssertEqual(try sv(["run", "--detach", "--name", "busy", "--image", image.path, "--memory", "16M"]).status, 0)
        let socket = "\(stateDir)/busy/api.sock"
        var stalled: [Int32] = []
        for _ in 0..<5 {
            let fd = try UnixSocket.connect(to: socket, timeoutSeconds: 5)
            _ = Array("GET /vm HTTP/1.1\r\nHo".utf8).withUnsafeBytes { send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            stalled.append(fd)
        }
        let t0 = Date()
        let r = try api("busy", "GET", "/vm")
        XCTAssertEqual(r.status, 200)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1.0, "answered while five clients stall")
        // The stalled ones are closed by the VMM at their deadline (2 s).
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { recv(stalled[0], $0.baseAddress!, $0.count, 0) }
        XCTAssertEqual(n, 0, "closed by the VMM, not timed out here")
        for fd in stalled { close(fd) }
        XCTAssertEqual(try sv(["kill", "busy"]).status, 0)
    }
}
