import Glibc
import VMM

/// What the CLI knows about a named VM: asked of its VMM when that answers, else read
/// from what it left in the state directory.
public struct VMStatus: Sendable {
    public enum State: String, Sendable {
        case created, running, paused, stopped
        /// In ACPI S3 (suspend to RAM): woken by its RTC alarm, `resume` or the power button.
        case suspended
        /// The VMM died without recording a result (killed, or a VMM bug).
        case crashed
        /// The VMM is alive but its API does not answer.
        case unresponsive
    }

    public let name: String
    public let state: State
    public let pid: pid_t?
    /// `GET /vm` from a live VMM.
    public let live: JSONValue?
    /// config.json: the description the VM was started with.
    public let config: JSONValue?
    /// result.json, once it has ended.
    public let result: JSONValue?

    public var isAlive: Bool { state == .created || state == .running || state == .paused || state == .suspended || state == .unresponsive }

    public static func read(_ name: String, in dir: StateDirectory) throws(StateDirectory.Failure) -> VMStatus {
        try dir.require(name)
        let config = dir.read(name, "config.json").flatMap { try? JSONValue.parse($0) }
        let result = dir.read(name, "result.json").flatMap { try? JSONValue.parse($0) }
        let pid = dir.pid(name)
        let alive = pid.map(StateDirectory.isVMM) ?? false
        if alive, let live = try? APIClient.request(dir.path(name, "api.sock"), "GET", "/vm", timeoutSeconds: 2),
           live.status == 200, let s = live.body["state"]?.string {
            return VMStatus(name: name, state: State(rawValue: s) ?? .running, pid: pid, live: live.body, config: config, result: result)
        }
        if result != nil {
            return VMStatus(name: name, state: .stopped, pid: pid, live: nil, config: config, result: result)
        }
        if alive {
            return VMStatus(name: name, state: .unresponsive, pid: pid, live: nil, config: config, result: nil)
        }
        if pid == nil && isStarting(name, in: dir) {
            return VMStatus(name: name, state: .created, pid: nil, live: nil, config: config, result: nil)
        }
        return VMStatus(name: name, state: .crashed, pid: pid, live: nil, config: config, result: nil)
    }

    /// Whether the VM's VMM process is alive (or still starting), without reading its
    /// files or asking its API: what `wait` and `logs --follow` poll.
    public static func isProcessAlive(_ name: String, in dir: StateDirectory) -> Bool {
        if let pid = dir.pid(name) { return StateDirectory.isVMM(pid) }
        return isStarting(name, in: dir)
    }

    /// No pid yet, but registered less than 10 s ago: the VMM is still starting, unless
    /// it never will.
    static func isStarting(_ name: String, in dir: StateDirectory) -> Bool {
        guard let started = dir.read(name, "started").flatMap({ Double($0.filter { !$0.isWhitespace }) }) else { return false }
        return Double(time(nil)) - started < 10
    }

    /// The guest's exit code once stopped (the VMM's exit status), if known.
    public var exitCode: Int32? { result?["exitCode"]?.int.map { Int32(truncatingIfNeeded: $0) } }

    public var json: JSONValue {
        var o: [(String, JSONValue)] = [("name", .string(name)), ("state", .string(state.rawValue))]
        o.append(("pid", pid.map { .int(Int64($0)) } ?? .null))
        o.append(("config", live?["config"] ?? config ?? .null))
        if let live {
            o.append(("uptimeSeconds", live["uptimeSeconds"] ?? .null))
            o.append(("statistics", live["statistics"] ?? .null))
            if let devices = live["devices"] { o.append(("devices", devices)) }
        }
        if let result {
            o.append(("exitCode", result["exitCode"] ?? .null))
            o.append(("stop", result["stop"] ?? .object([("error", result["error"] ?? .null)])))
            if let exits = result["exits"] { o.append(("statistics", .object([("exits", exits)]))) }
        }
        return .object(o)
    }
}
