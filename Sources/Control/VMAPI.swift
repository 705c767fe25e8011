import Glibc
import VMM

/// The control API a running VM serves (documented in Sources/Control/openapi.json):
///
///     GET  /vm           its description, state, pid, uptime and statistics
///     GET  /vm/stats     the statistics alone
///     PUT  /vm/state     {"state": "paused" | "running" | "stopped"}
///     POST /vm/actions   {"action": "power-button"}: ask the guest to shut down
///
/// The handler only translates: the machine does the work.
public struct VMAPI: Sendable {
    public let name: String
    public let description: VMDescription
    public let machine: Machine

    public init(name: String, description: VMDescription, machine: Machine) {
        self.name = name
        self.description = description
        self.machine = machine
    }

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        do {
            return try route(request)
        } catch {
            return .error(error)
        }
    }

    func route(_ r: HTTPRequest) throws(HTTPError) -> HTTPResponse {
        let path = r.path.split(separator: "?").first.map(String.init) ?? r.path
        switch (r.method, path) {
        case ("GET", "/vm"):
            return HTTPResponse(status: 200, body: describe())
        case ("GET", "/vm/stats"):
            return HTTPResponse(status: 200, body: VMAPI.statistics(machine.currentStatistics()))
        case ("PUT", "/vm/state"):
            return try changeState(r.json())
        case ("POST", "/vm/actions"):
            return try act(r.json())
        case (_, "/vm"), (_, "/vm/stats"), (_, "/vm/state"), (_, "/vm/actions"):
            throw HTTPError(status: 405, message: "\(r.method) is not allowed on \(path)")
        default:
            throw HTTPError(status: 404, message: "no such resource \(path) (try GET /vm)")
        }
    }

    func describe() -> JSONValue {
        .object([
            ("name", .string(name)),
            ("state", .string(machine.state.rawValue)),
            ("pid", .int(Int64(getpid()))),
            ("uptimeSeconds", .double(Double(machine.uptimeNanoseconds / 1_000_000) / 1000)),
            ("config", description.json),
            ("statistics", VMAPI.statistics(machine.currentStatistics())),
        ])
    }

    public static func statistics(_ s: ExitStatistics) -> JSONValue {
        var exits: [(String, JSONValue)] = [("total", .uint(s.totalExits))]
        for kind in ExitKind.allCases { exits.append((kind.name, .uint(s[kind]))) }
        return .object([("exits", .object(exits)), ("entries", .uint(s.entries)),
                        ("guestNanoseconds", .uint(s.guestNanoseconds)), ("vmmNanoseconds", .uint(s.vmmNanoseconds))])
    }

    func changeState(_ body: JSONValue) throws(HTTPError) -> HTTPResponse {
        guard let fields = body.fields, fields.count == 1, let wanted = body["state"]?.string else {
            throw HTTPError(status: 400, message: "expected {\"state\": \"paused\" | \"running\" | \"stopped\"}")
        }
        let now = machine.state
        switch wanted {
        case "paused":
            guard now == .running || now == .paused else { throw HTTPError(status: 409, message: "cannot pause a VM that is \(now.rawValue)") }
            guard machine.pause() else { throw HTTPError(status: 500, message: "the vCPUs did not stop in time") }
        case "running":
            guard now == .paused || now == .running else { throw HTTPError(status: 409, message: "cannot resume a VM that is \(now.rawValue)") }
            machine.resume()
        case "stopped":
            guard now != .stopped else { throw HTTPError(status: 409, message: "the VM is already stopped") }
            machine.requestStop(.hostStop)
        default:
            throw HTTPError(status: 400, message: "unknown state \"\(wanted)\" (paused, running or stopped)")
        }
        return HTTPResponse(status: 200, body: .object([("state", .string(machine.state.rawValue))]))
    }

    func act(_ body: JSONValue) throws(HTTPError) -> HTTPResponse {
        guard let fields = body.fields, fields.count == 1, let action = body["action"]?.string else {
            throw HTTPError(status: 400, message: "expected {\"action\": \"power-button\"}")
        }
        guard action == "power-button" else { throw HTTPError(status: 400, message: "unknown action \"\(action)\" (power-button)") }
        guard machine.state == .running else { throw HTTPError(status: 409, message: "the VM is \(machine.state.rawValue)") }
        let listening = machine.pressPowerButton()
        return HTTPResponse(status: 200, body: .object([("action", .string(action)), ("guestListening", .bool(listening))]))
    }
}
