import Boot

/// The one JSON form of a VM's description, shared by config files
/// (`swiftvisor run --config`) and the control API (`GET /vm`):
///
///     {"name": "web", "memory": "64M", "cpus": 1, "testDevices": false, "pit": true,
///      "boot": {"demo": true}
///            | {"image": "guest.bin", "mode": "long", "loadAddress": "0x100000", "entry": "0x100000"}
///            | {"kernel": "vmlinux", "cmdline": "console=ttyS0", "initrd": "initrd.cpio"},
///      "timeout": 30}
///
/// Sizes are numbers of bytes or strings like "64M"; addresses numbers or "0x..." strings.
/// Every field is optional (defaults as for `swiftvisor run`); unknown fields are errors,
/// named in the message.
public struct VMDescription: Equatable, Sendable {
    public var name: String?
    public var options: RunOptions

    public init(name: String?, options: RunOptions) {
        self.name = name
        self.options = options
    }

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static func parse(_ json: JSONValue, base: RunOptions = RunOptions(config: MachineConfig())) throws(Invalid) -> VMDescription {
        guard let fields = json.fields else { throw Invalid(description: "a VM description is a JSON object") }
        var options = base
        var name: String? = nil
        for (key, value) in fields {
            switch key {
            case "name":
                guard let s = value.string else { throw Invalid(description: "\"name\" must be a string") }
                name = s
            case "memory":
                guard let n = size(value) else { throw Invalid(description: "\"memory\" must be a size like \"64M\" or a number of bytes") }
                options.config.memorySize = n
            case "cpus":
                guard let n = value.int, n > 0, n <= 255 else { throw Invalid(description: "\"cpus\" must be a number from 1 to 255") }
                options.config.vcpuCount = Int(n)
            case "testDevices":
                guard let b = value.bool else { throw Invalid(description: "\"testDevices\" must be true or false") }
                options.config.testDevices = b
            case "pit":
                guard let b = value.bool else { throw Invalid(description: "\"pit\" must be true or false") }
                options.config.pit = b
            case "hostQuirks":
                guard let b = value.bool else { throw Invalid(description: "\"hostQuirks\" must be true or false") }
                options.config.hostQuirks = b
            case "timeout":
                guard let t = value.number, t > 0 else { throw Invalid(description: "\"timeout\" must be a positive number of seconds") }
                options.timeoutSeconds = t
            case "boot":
                options.config.boot = try boot(value)
            default:
                throw Invalid(description: "unknown field \"\(key)\" (known: name, memory, cpus, boot, testDevices, pit, hostQuirks, timeout)")
            }
        }
        return VMDescription(name: name, options: options)
    }

    static func boot(_ value: JSONValue) throws(Invalid) -> BootSource {
        guard let fields = value.fields else { throw Invalid(description: "\"boot\" must be an object") }
        let keys = Set(fields.map { $0.0 })
        func str(_ k: String) throws(Invalid) -> String? {
            guard let v = value[k] else { return nil }
            guard let s = v.string else { throw Invalid(description: "\"boot.\(k)\" must be a string") }
            return s
        }
        func address(_ k: String) throws(Invalid) -> UInt64? {
            guard let v = value[k] else { return nil }
            if let n = v.int, n >= 0 { return UInt64(n) }
            if let s = v.string, let n = RunOptions.parseAddress(s) { return n }
            throw Invalid(description: "\"boot.\(k)\" must be an address like \"0x100000\"")
        }
        if keys == ["demo"] || keys.isEmpty {
            guard value["demo"]?.bool != false else { throw Invalid(description: "\"boot.demo\" must be true") }
            return .demo
        }
        if keys.contains("image") {
            let unknown = keys.subtracting(["image", "mode", "loadAddress", "entry"])
            guard unknown.isEmpty else { throw Invalid(description: "unknown field \"boot.\(unknown.sorted()[0])\" for an image") }
            var mode = CPUMode.long
            if let m = try str("mode") {
                guard let parsed = CPUMode(rawValue: m) else { throw Invalid(description: "\"boot.mode\" must be real, protected or long") }
                mode = parsed
            }
            return .flat(path: try str("image")!, mode: mode, loadAddress: try address("loadAddress"), entry: try address("entry"))
        }
        if keys.contains("kernel") {
            let unknown = keys.subtracting(["kernel", "cmdline", "initrd"])
            guard unknown.isEmpty else { throw Invalid(description: "unknown field \"boot.\(unknown.sorted()[0])\" for a kernel") }
            return .kernel(path: try str("kernel")!, commandLine: try str("cmdline") ?? "", initrd: try str("initrd"))
        }
        throw Invalid(description: "\"boot\" needs one of \"demo\", \"image\" or \"kernel\"")
    }

    static func size(_ value: JSONValue) -> UInt64? {
        if let n = value.int, n > 0 { return UInt64(n) }
        if let s = value.string { return ByteSize.parse(s) }
        return nil
    }

    /// The description as JSON (what `GET /vm` returns under "config").
    public var json: JSONValue {
        var o: [(String, JSONValue)] = []
        if let name { o.append(("name", .string(name))) }
        let c = options.config
        o.append(("memory", .uint(c.memorySize)))
        o.append(("cpus", .int(Int64(c.vcpuCount))))
        let boot: JSONValue
        switch c.boot {
        case .demo, .flatImage:
            boot = .object([("demo", .bool(true))])
        case let .flat(path, mode, load, entry):
            var b: [(String, JSONValue)] = [("image", .string(path)), ("mode", .string(mode.rawValue))]
            if let load { b.append(("loadAddress", .string(RunOptions.hex(load)))) }
            if let entry { b.append(("entry", .string(RunOptions.hex(entry)))) }
            boot = .object(b)
        case let .kernel(path, cmdline, initrd):
            var b: [(String, JSONValue)] = [("kernel", .string(path)), ("cmdline", .string(cmdline))]
            if let initrd { b.append(("initrd", .string(initrd))) }
            boot = .object(b)
        }
        o.append(("boot", boot))
        o.append(("testDevices", .bool(c.testDevices)))
        o.append(("pit", .bool(c.pit)))
        o.append(("hostQuirks", .bool(c.hostQuirks)))
        if let t = options.timeoutSeconds { o.append(("timeout", .double(t))) }
        return .object(o)
    }
}
