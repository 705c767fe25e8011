import Devices
import Glibc
import VMM

/// The control API a VM serves (documented in Sources/Control/openapi.json), before
/// and after it boots:
///
///     GET  /vm           its description, state, pid, uptime and statistics
///     GET  /vm/stats     the statistics alone, with rates and each vCPU's state and function
///     PUT  /vm/config    the whole description (before boot only; 409 after)
///     PUT  /vm/state     {"state": "running" | "paused" | "stopped"}: running boots a
///                        created VM, resumes a paused one and wakes a suspended one
///     POST /vm/actions   {"action": "start"}: boot a created VM (InstanceStart);
///                        {"action": "power-button"}: ask the guest to shut down
///     PUT  /vm/snapshot  {"path": DIR, "stop": false}: pause, save the VM into the new
///                        folder DIR (SnapshotFolder), then resume it (or stop it)
///
/// The handler only translates: the VM instance and its machine do the work.
public struct VMAPI: Sendable {
    public let vm: VMInstance
    /// Asks the process to end (a created VM told to stop has no machine to stop).
    public let endProcess: @Sendable () -> Void

    public init(vm: VMInstance, endProcess: @escaping @Sendable () -> Void) {
        self.vm = vm
        self.endProcess = endProcess
    }

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        do {
            return try route(request)
        } catch {
            return .error(error)
        }
    }

    static let resources = ["/vm", "/vm/stats", "/vm/config", "/vm/state", "/vm/actions", "/vm/snapshot"]

    func route(_ r: HTTPRequest) throws(HTTPError) -> HTTPResponse {
        let path = r.path.split(separator: "?").first.map(String.init) ?? r.path
        switch (r.method, path) {
        case ("GET", "/vm"):
            return HTTPResponse(status: 200, body: describe())
        case ("GET", "/vm/stats"):
            return HTTPResponse(status: 200, body: liveStatistics())
        case ("GET", "/vm/config"):
            return HTTPResponse(status: 200, body: vm.description.json)
        case ("PUT", "/vm/config"):
            return try configure(r.json())
        case ("PUT", "/vm/state"):
            return try changeState(r.json())
        case ("POST", "/vm/actions"), ("PUT", "/vm/actions"):
            return try act(r.json())
        case ("PUT", "/vm/snapshot"):
            return try snapshot(r.json())
        case (_, _) where VMAPI.resources.contains(path):
            throw HTTPError(status: 405, message: "\(r.method) is not allowed on \(path)")
        default:
            throw HTTPError(status: 404, message: "no such resource \(path) (try GET /vm)")
        }
    }

    func describe() -> JSONValue {
        let machine = vm.machine
        return .object([
            ("name", .string(vm.name)),
            ("state", .string(vm.stateName)),
            ("pid", .int(Int64(getpid()))),
            ("uptimeSeconds", .double(Double((machine?.uptimeNanoseconds ?? 0) / 1_000_000) / 1000)),
            ("config", vm.description.json),
            ("statistics", VMAPI.statistics(machine?.currentStatistics() ?? ExitStatistics())),
            ("devices", .array((machine?.devices.entries ?? []).map(VMAPI.device))),
        ])
    }

    /// One device as `inspect` shows it: id, name, where it sits, its interrupts, and for
    /// virtio devices the negotiated features, status and counters.
    static func device(_ e: DeviceManager.Entry) -> JSONValue {
        func hex(_ v: UInt64) -> JSONValue { .string("0x" + String(v, radix: 16)) }
        var o: [(String, JSONValue)] = [("id", .string(e.id)), ("name", .string(e.name))]
        o.append(("ranges", .array(e.ranges.map { r in
            .object([("space", .string(r.space.rawValue)), ("start", hex(r.start)), ("length", .uint(r.length))])
        })))
        o.append(("interrupts", .array(e.interrupts.map { .uint(UInt64($0)) })))
        if let v = e.device as? any VirtioTransport {
            let c = v.statistics
            var virtio: [(String, JSONValue)] = [("transport", .string(v.transportName)), ("deviceType", .uint(UInt64(v.device.deviceType))),
                                                 ("status", .uint(UInt64(v.status))), ("features", hex(v.negotiatedFeatures)),
                                                 ("queueSizes", .array(v.device.queueSizes.map { .uint(UInt64($0)) })),
                                                 ("completed", .uint(c.completed)), ("notifications", .uint(c.notifications)),
                                                 ("malformed", .uint(c.malformed))]
            if let e = c.lastError { virtio.append(("lastError", .string(e))) }
            if let r = v.device as? VirtioRNG, let l = r.rateLimit.bytesPerSecond {
                virtio.append(("rateLimit", .object([("bytesPerSecond", .uint(l)), ("throttled", .uint(r.throttled))])))
            }
            if let b = v.device as? VirtioBlock {
                virtio.append(("block", .object([("engine", .string(b.engine)), ("direct", .bool(b.direct)),
                                                 ("capacitySectors", .uint(b.capacity)), ("inFlight", .uint(UInt64(b.inFlight))),
                                                 ("throttled", .uint(b.throttled))])))
            }
            if let n = v.device as? VirtioNet {
                let st = n.statistics
                var net: [(String, JSONValue)] = [("mac", .string(n.mac.description)), ("receivedFrames", .uint(st.receivedFrames)),
                                                  ("receivedBytes", .uint(st.receivedBytes)), ("transmittedFrames", .uint(st.transmittedFrames)),
                                                  ("transmittedBytes", .uint(st.transmittedBytes)), ("malformedFrames", .uint(st.malformedFrames)),
                                                  ("droppedFrames", .uint(st.droppedFrames)), ("receiveStalls", .uint(st.receiveStalls)),
                                                  ("copiedFrames", .uint(st.copiedFrames)), ("throttled", .uint(n.throttled))]
                if let t = n.backend as? TapDevice { net.insert(("tap", .string(t.name)), at: 0) }
                virtio.append(("net", .object(net)))
            }
            if let x = v.device as? VirtioVsock {
                let st = x.statistics
                virtio.append(("vsock", .object([("cid", .uint(x.guestCID)), ("socket", .string(x.socketPath)), ("open", .uint(st.open)),
                                                 ("opened", .uint(st.opened)), ("resets", .uint(st.resets)), ("bytesToHost", .uint(st.bytesToHost)),
                                                 ("bytesToGuest", .uint(st.bytesToGuest)), ("malformedPackets", .uint(st.malformedPackets)),
                                                 ("refusedHostConnections", .uint(st.refusedHostConnections)),
                                                 ("droppedControlPackets", .uint(st.droppedControlPackets))])))
            }
            if let p = v as? VirtioPCI {
                virtio.append(("pci", .object([("address", .string(p.pciAddress ?? "")), ("bar0", hex(p.barAddress)),
                                               ("msix", .bool(p.msixEnabled))])))
            }
            o.append(("virtio", .object(virtio)))
        }
        return .object(o)
    }

    /// One device in a line, for `run --verbose`: what `device(_:)` says in JSON.
    public static func deviceLine(_ e: DeviceManager.Entry) -> String {
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        var line = "\(e.id): \(e.name) at " + e.ranges.map { r in
            "\(r.space == .port ? "ports" : "mmio") \(hex(r.start))-\(hex(r.start + r.length - 1))"
        }.joined(separator: ", ")
        if !e.interrupts.isEmpty { line += "; irq " + e.interrupts.map { String($0) }.joined(separator: ", ") }
        if let v = e.device as? any VirtioTransport {
            line += "; virtio-\(v.transportName) type \(v.device.deviceType), queues " + v.device.queueSizes.map { String($0) }.joined(separator: ",")
            if let p = v as? VirtioPCI, let a = p.pciAddress { line += ", PCI \(a), MSI-X vectors \(p.queueCount + 1)" }
            if let b = v.device as? VirtioBlock { line += ", \(b.engine)" + (b.direct ? ", O_DIRECT" : "") }
        }
        return line
    }

    /// The totals, and for a running machine the rates over the last second and each
    /// vCPU's phase and where it was (`swiftvisor top`).
    func liveStatistics() -> JSONValue {
        let machine = vm.machine
        guard case var .object(fields) = VMAPI.statistics(machine?.currentStatistics() ?? ExitStatistics()) else { return .null }
        guard let machine else { return .object(fields) }
        func hex(_ v: UInt64) -> JSONValue { .string("0x" + String(v, radix: 16)) }
        if let r = machine.rates {
            var kinds: [(String, JSONValue)] = [("total", .double(r.total))]
            for k in ExitKind.allCases { kinds.append((k.name, .double(r.perKind[k.rawValue]))) }
            fields.append(("rates", .object([
                ("intervalSeconds", .double(Double(r.intervalNanoseconds) / 1e9)),
                ("exitsPerSecond", .object(kinds)),
                ("ports", .array(r.ports.map { .object([("port", hex($0.address)), ("perSecond", .double($0.perSecond))]) })),
                ("mmioPages", .array(r.pages.map { .object([("page", hex($0.address)), ("perSecond", .double($0.perSecond))]) })),
            ])))
        }
        let symbols = machine.symbols
        fields.append(("vcpus", .array(machine.vcpuSnapshots().map { v in
            var o: [(String, JSONValue)] = [("index", .int(Int64(v.index))), ("state", .string(v.phase))]
            if let rip = v.rip {
                o.append(("rip", hex(rip)))
                if let cpl = v.cpl { o.append(("cpl", .int(Int64(cpl)))) }
                if let name = symbols?.name(for: rip) { o.append(("function", .string(name))) }
            }
            return .object(o)
        })))
        return .object(fields)
    }

    public static func statistics(_ s: ExitStatistics) -> JSONValue {
        var exits: [(String, JSONValue)] = [("total", .uint(s.totalExits))]
        for kind in ExitKind.allCases { exits.append((kind.name, .uint(s[kind]))) }
        return .object([("exits", .object(exits)), ("entries", .uint(s.entries)),
                        ("guestNanoseconds", .uint(s.guestNanoseconds)), ("vmmNanoseconds", .uint(s.vmmNanoseconds))])
    }

    func configure(_ body: JSONValue) throws(HTTPError) -> HTTPResponse {
        var d: VMDescription
        do { d = try VMDescription.from(body) } catch { throw HTTPError(status: 400, message: error.description) }
        if let n = d.name, n != vm.name { throw HTTPError(status: 400, message: "\"name\": the VM is '\(vm.name)'; a name cannot change") }
        d.name = vm.name
        do { try vm.configure(d) } catch { throw HTTPError(status: error.status, message: error.message) }
        return HTTPResponse(status: 200, body: .object([("state", .string(vm.stateName)), ("config", d.json)]))
    }

    func boot() throws(HTTPError) {
        do { try vm.start() } catch { throw HTTPError(status: error.status, message: error.message) }
    }

    func changeState(_ body: JSONValue) throws(HTTPError) -> HTTPResponse {
        guard let fields = body.fields, fields.count == 1, let wanted = body["state"]?.string else {
            throw HTTPError(status: 400, message: "expected {\"state\": \"running\" | \"paused\" | \"stopped\"}")
        }
        let now = vm.stateName
        switch wanted {
        case "paused":
            guard let machine = vm.machine, now == "running" || now == "paused" else { throw HTTPError(status: 409, message: "cannot pause a VM that is \(now)") }
            if now == "paused" { break }
            guard machine.pause() else { throw HTTPError(status: 503, message: "the vCPUs did not stop in time") }
        case "running":
            if now == "created" { try boot(); break }
            guard let machine = vm.machine, now == "paused" || now == "running" || now == "suspended" else {
                throw HTTPError(status: 409, message: "cannot run a VM that is \(now)")
            }
            machine.resume() // a suspended one wakes at its ACPI waking vector
        case "stopped":
            guard now != "stopped" else { throw HTTPError(status: 409, message: "the VM is already stopped") }
            if let machine = vm.machine { machine.requestStop(.hostStop) } else { endProcess() }
        default:
            throw HTTPError(status: 400, message: "unknown state \"\(wanted)\" (running, paused or stopped)")
        }
        return HTTPResponse(status: 200, body: .object([("state", .string(vm.stateName))]))
    }

    /// Takes a snapshot: the VM is paused for it (a paused one stays paused), and
    /// resumed after unless `stop` asks to end it there.
    func snapshot(_ body: JSONValue) throws(HTTPError) -> HTTPResponse {
        guard let fields = body.fields, let path = body["path"]?.string, fields.allSatisfy({ $0.0 == "path" || $0.0 == "stop" }) else {
            throw HTTPError(status: 400, message: "expected {\"path\": \"/absolute/new/folder\", \"stop\": false}")
        }
        let stop: Bool
        switch body["stop"] {
        case nil: stop = false
        case let v?:
            guard let b = v.bool else { throw HTTPError(status: 400, message: "\"stop\" must be true or false") }
            stop = b
        }
        let now = vm.stateName
        guard let machine = vm.machine, now == "running" || now == "paused" else {
            throw HTTPError(status: 409, message: "cannot snapshot a VM that is \(now)")
        }
        let wasPaused = now == "paused"
        if !wasPaused { guard machine.pause() else { throw HTTPError(status: 503, message: "the vCPUs did not stop in time") } }
        // The guest has its network devices' MACs: a restore (under another name, which
        // would derive others, or of an unnamed VM, whose were random) gives it the same.
        var description = vm.description
        for i in description.config.nets.indices where description.config.nets[i].mac == nil {
            let id = description.config.nets[i].id(index: i)
            if let t = machine.devices.device(id) as? any VirtioTransport, let n = t.device as? VirtioNet {
                description.config.nets[i].mac = n.mac
            }
        }
        let summary: SnapshotFolder.Summary
        do { summary = try SnapshotFolder.write(machine, description: description, to: path) }
        catch {
            if !wasPaused { machine.resume() }
            throw HTTPError(status: error.kind == .unsupported ? 409 : 400, message: error.description)
        }
        if stop { machine.requestStop(.snapshotted) } else if !wasPaused { machine.resume() }
        return HTTPResponse(status: 200, body: summary.json)
    }

    func act(_ body: JSONValue) throws(HTTPError) -> HTTPResponse {
        guard let fields = body.fields, fields.count == 1, let action = body["action"]?.string else {
            throw HTTPError(status: 400, message: "expected {\"action\": \"start\" | \"power-button\"}")
        }
        switch action {
        case "start", "InstanceStart":
            try boot()
            return HTTPResponse(status: 200, body: .object([("action", .string("start")), ("state", .string(vm.stateName))]))
        case "power-button":
            guard let machine = vm.machine, vm.stateName == "running" || vm.stateName == "suspended" else {
                throw HTTPError(status: 409, message: "the VM is \(vm.stateName)")
            }
            let listening = machine.pressPowerButton()
            return HTTPResponse(status: 200, body: .object([("action", .string(action)), ("guestListening", .bool(listening))]))
        default:
            throw HTTPError(status: 400, message: "unknown action \"\(action)\" (start, power-button)")
        }
    }
}
