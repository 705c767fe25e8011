import ArgumentParser
import CLinux
import Control
import Devices
import Glibc
import VMM

/// What every verb on named VMs shares: where they live, and the output format.
struct StateOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Where named VMs live (default: $SWIFTVISOR_STATE_DIR, $XDG_RUNTIME_DIR/swiftvisor, /run/swiftvisor for root).", valueName: "dir"))
    var stateDir: String?

    @Flag(name: .long, help: "Machine-readable output; errors become one JSON line on stderr.")
    var json = false

    var directory: StateDirectory { StateDirectory.resolve(stateDir) }
}

/// A failure with its documented exit code, printed as one line.
struct CLIFailure: Error {
    let message: String
    let code: Int32

    static func from(_ e: StateDirectory.Failure) -> CLIFailure {
        switch e.kind {
        case .notFound: CLIFailure(message: e.description, code: ProcessExitCode.notFound)
        case .exists: CLIFailure(message: e.description, code: ProcessExitCode.conflict)
        case .invalidName: CLIFailure(message: e.description, code: ProcessExitCode.usage)
        case .io: CLIFailure(message: e.description, code: ProcessExitCode.vmmFailure)
        }
    }
}

/// Runs a verb's body, turning failures into one line and their exit code.
func verb(_ json: Bool, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let f as CLIFailure {
        StandardStream.failure(f.message, code: f.code, json: json)
        throw ExitCode(f.code)
    } catch let f as StateDirectory.Failure {
        let c = CLIFailure.from(f)
        StandardStream.failure(c.message, code: c.code, json: json)
        throw ExitCode(c.code)
    } catch let f as RunFlags.Failure {
        StandardStream.failure(f.description, code: f.code, json: json)
        throw ExitCode(f.code)
    }
}

func status(_ name: String, _ options: StateOptions) throws -> VMStatus {
    do { return try VMStatus.read(name, in: options.directory) } catch { throw CLIFailure.from(error) }
}

func requireAlive(_ s: VMStatus) throws {
    guard s.isAlive else { throw CLIFailure(message: "VM '\(s.name)' is \(s.state.rawValue), not running", code: ProcessExitCode.conflict) }
    guard s.state != .unresponsive else {
        throw CLIFailure(message: "VM '\(s.name)' (pid \(s.pid.map(String.init) ?? "?")) does not answer on its API; `swiftvisor kill \(s.name)` ends it", code: ProcessExitCode.unresponsive)
    }
}

/// One API call; 4xx/5xx become failures with the API's own message.
@discardableResult
func call(_ name: String, _ options: StateOptions, _ method: String, _ path: String, _ body: JSONValue? = nil) throws -> JSONValue {
    let r: (status: Int, body: JSONValue)
    do { r = try APIClient.request(options.directory.path(name, "api.sock"), method, path, body: body) }
    catch { throw CLIFailure(message: "VM '\(name)': \(error.description)", code: ProcessExitCode.unresponsive) }
    guard (200..<300).contains(r.status) else {
        let message = r.body["error"]?.string ?? "HTTP \(r.status)"
        throw CLIFailure(message: "VM '\(name)': \(message)", code: r.status == 409 ? ProcessExitCode.conflict : ProcessExitCode.vmmFailure)
    }
    return r.body
}

/// Waits until the VMM is gone; false on time-out. On its pidfd where the kernel has
/// them (the exit wakes it at once), polling its pid every 50 ms where not or while the
/// VMM is still starting (no pid yet).
func waitForExit(_ name: String, _ options: StateOptions, timeoutSeconds: Double?) -> Bool {
    let deadline: UInt64? = timeoutSeconds.map { seconds in
        let bounded: Double = max(0, min(seconds, 1e9))
        return monotonicNanoseconds() &+ UInt64(bounded * 1e9)
    }
    while true {
        guard let pid = options.directory.pid(name) else {
            // No pid yet: still starting (registered moments ago), or it never will.
            guard VMStatus.isProcessAlive(name, in: options.directory) else { return true }
            if let deadline, monotonicNanoseconds() >= deadline { return false }
            usleep(50_000)
            continue
        }
        // Opened before the check, so that the pid checked is the pid watched (a pidfd
        // pins its process; without one the check is as good as it gets).
        let fd = clinux_pidfd_open(pid)
        defer { if fd >= 0 { close(fd) } }
        guard StateDirectory.isVMM(pid) else { return true }
        let now = monotonicNanoseconds()
        if let deadline, now >= deadline { return false }
        guard fd >= 0 else {
            usleep(50_000)
            continue
        }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var wait: Int32 = 60_000
        if let deadline { wait = Int32(min((deadline - now) / 1_000_000 + 1, 60_000)) }
        _ = poll(&p, 1, wait)
    }
}

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List named VMs and their states.", aliases: ["list"])
    @OptionGroup var state: StateOptions

    func run() throws {
        try verb(state.json) {
            let all = state.directory.names().compactMap { try? VMStatus.read($0, in: state.directory) }
            if state.json {
                StandardStream.output(JSONValue.array(all.map { $0.json }).rendered + "\n")
                return
            }
            var rows = [["NAME", "STATE", "PID", "UPTIME", "CPUS", "MEMORY", "BOOT", "EXIT"]]
            for s in all {
                let config = s.live?["config"] ?? s.config
                let boot = config?["boot"].map { b in b["image"]?.string ?? b["kernel"]?.string ?? "demo" } ?? "?"
                let uptime = s.live?["uptimeSeconds"]?.number.flatMap { Int(exactly: $0.rounded(.down)) }.map { "\($0)s" } ?? "-"
                rows.append([s.name, s.state.rawValue, s.pid.map(String.init) ?? "-", uptime,
                             config?["cpus"]?.int.map(String.init) ?? "?",
                             config?["memory"]?.int.flatMap { UInt64(exactly: $0) }.map(ByteSize.format) ?? "?",
                             String(boot.split(separator: "/").last ?? "?"), s.exitCode.map(String.init) ?? "-"])
            }
            let widths = (0..<rows[0].count).map { c in rows.map { $0[c].count }.max()! }
            for r in rows {
                StandardStream.output(r.enumerated().map { $1 + String(repeating: " ", count: widths[$0] - $1.count) }.joined(separator: "  ").trimmingTrailingSpaces + "\n")
            }
        }
    }
}

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Print a VM's configuration, state, pid, uptime and exit statistics as JSON.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String

    func run() throws {
        try verb(state.json) { StandardStream.output(try status(name, state).json.rendered + "\n") }
    }
}

struct PauseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Stop a VM's vCPUs until `resume`; its memory and devices stay.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String

    func run() throws { try setState(name, state, to: "paused") }
}

/// `PUT /vm/state` on a live VM, printing its name as the other verbs do.
func setState(_ name: String, _ state: StateOptions, to target: String) throws {
    try verb(state.json) {
        try requireAlive(try status(name, state))
        try call(name, state, "PUT", "/vm/state", .object([("state", .string(target))]))
        StandardStream.output(name + "\n")
    }
}

struct ResumeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Let a paused VM's vCPUs run again, or wake a suspended (ACPI S3) one.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String

    func run() throws {
        try verb(state.json) {
            let s = try status(name, state)
            if s.state == .created {
                throw CLIFailure(message: "VM '\(name)' has not booted; `swiftvisor start \(name)` boots it", code: ProcessExitCode.conflict)
            }
        }
        try setState(name, state, to: "running")
    }
}

struct StopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop", abstract: "Ask a VM's guest to power off; stop it after --timeout if it has not.",
        discussion: "Presses the ACPI power button of guests that have one (kernels); a guest without ACPI (a flat binary) cannot be asked, so it is stopped at once.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String
    @Option(name: .long, help: "Seconds to wait for the guest to power off.") var timeout: Double = 10

    func run() throws {
        try verb(state.json) {
            var s = try status(name, state)
            try requireAlive(s)
            if s.state == .paused || s.state == .suspended { try call(name, state, "PUT", "/vm/state", .object([("state", .string("running"))])) }
            let answer = try call(name, state, "POST", "/vm/actions", .object([("action", .string("power-button"))]))
            if answer["guestListening"]?.bool != true || !waitForExit(name, state, timeoutSeconds: timeout) {
                s = try status(name, state)
                if s.isAlive { _ = try? call(name, state, "PUT", "/vm/state", .object([("state", .string("stopped"))])) }
                guard waitForExit(name, state, timeoutSeconds: 10) else {
                    throw CLIFailure(message: "VM '\(name)' did not stop; `swiftvisor kill \(name)` ends it", code: ProcessExitCode.unresponsive)
                }
            }
            StandardStream.output(name + "\n")
        }
    }
}

struct KillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "Stop a VM at once (its VMM is killed if it does not answer).")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String

    func run() throws {
        try verb(state.json) {
            let s = try status(name, state)
            guard s.isAlive else { throw CLIFailure(message: "VM '\(name)' is \(s.state.rawValue), not running", code: ProcessExitCode.conflict) }
            if s.state != .unresponsive {
                _ = try? call(name, state, "PUT", "/vm/state", .object([("state", .string("stopped"))]))
            }
            if !waitForExit(name, state, timeoutSeconds: 3), let pid = s.pid, StateDirectory.isVMM(pid) {
                kill(pid, SIGKILL)
                _ = waitForExit(name, state, timeoutSeconds: 3)
            }
            StandardStream.output(name + "\n")
        }
    }
}

struct WaitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wait", abstract: "Block until a VM ends, then exit with the guest's exit code.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String
    @Option(name: .long, help: "Give up after this many seconds (exit code 124).") var timeout: Double?

    func run() throws {
        var code: Int32 = 0
        try verb(state.json) {
            _ = try status(name, state)
            guard waitForExit(name, state, timeoutSeconds: timeout) else {
                throw CLIFailure(message: "VM '\(name)' is still running after \(timeout ?? 0) s", code: ProcessExitCode.timeLimit)
            }
            let s = try status(name, state)
            if state.json { StandardStream.output(s.json.rendered + "\n") }
            guard s.state != .crashed else { throw CLIFailure(message: "VM '\(name)' crashed: its VMM died without a result", code: ProcessExitCode.vmmFailure) }
            code = s.exitCode ?? ProcessExitCode.vmmFailure
        }
        if code != 0 { throw ExitCode(code) }
    }
}

struct LogsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print what a VM's guest wrote to its serial console.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String
    @Flag(name: .shortAndLong, help: "Keep printing as the guest writes, until the VM ends.") var follow = false

    func run() throws {
        try verb(state.json) {
            _ = try status(name, state)
            // The rotated half first (a full log moves to console.log.1), then the live one.
            let path = state.directory.path(name, "console.log")
            let old = open(ConsoleHub.rotatedPath(path), O_RDONLY | O_CLOEXEC)
            if old >= 0 {
                _ = copyToOutput(old)
                close(old)
            }
            var fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return } // nothing printed yet
            defer { close(fd) }
            var finishing = !follow // once the VM has ended, read what is left and stop
            while true {
                if copyToOutput(fd) { continue }
                // At the end: a rotation replaced the file under us? Then go on in the new one.
                var here = stat(), there = stat()
                if fstat(fd, &here) == 0, stat(path, &there) == 0, here.st_ino != there.st_ino {
                    let next = open(path, O_RDONLY | O_CLOEXEC)
                    if next >= 0 { close(fd); fd = next; continue }
                }
                if finishing { return }
                if VMStatus.isProcessAlive(name, in: state.directory) {
                    usleep(100_000)
                } else {
                    finishing = true
                }
            }
        }
    }

    /// Copies what `fd` has now to standard output; false when it had nothing.
    private func copyToOutput(_ fd: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var any = false
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            guard n > 0 else { return any }
            StandardStream.write(bytes: Array(buffer.prefix(n)))
            any = true
        }
    }
}

struct RemoveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a stopped or crashed VM's state.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String
    @Flag(name: .shortAndLong, help: "Kill it first if it is running.") var force = false

    func run() throws {
        try verb(state.json) {
            let s = try status(name, state)
            if s.isAlive {
                guard force else { throw CLIFailure(message: "VM '\(name)' is \(s.state.rawValue); stop it first or use rm --force", code: ProcessExitCode.conflict) }
                var k = KillCommand()
                k.state = state
                k.name = name
                try k.run()
            }
            do { try state.directory.remove(name) } catch let e as StateDirectory.Failure { throw CLIFailure.from(e) }
            StandardStream.output(name + "\n")
        }
    }
}

extension String {
    var trimmingTrailingSpaces: String { String(reversed().drop { $0 == " " }.reversed()) }
}
