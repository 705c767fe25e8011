import Boot
import Devices
import VMM

/// The one JSON description of a VM: what config files (`swiftvisor run --config`),
/// the control API (`PUT /vm/config`, `GET /vm`) and the command line (which builds
/// it from its flags) all produce, and what the VMM process is handed.
///
///     {"name": "web", "memory": "64M", "cpus": 1, "testDevices": false, "pit": true,
///      "hostQuirks": false, "pvh": false, "symbols": "System.map", "timeout": 30,
///      "onReboot": "exit" | "restart", "rng": false, "rngLimit": "64K", "virtioConsole": false,
///      "virtioTransport": "pci" | "mmio", "seccomp": "kill" | "log" | "off",
///      "jail": true | {"netns": "/run/netns/NAME", "memoryLimit": "1G", "cpuLimit": 1.5, ...},
///      "profile": {"path": "boot.folded", "hz": 99, "stacks": false}, "trace": "exits.trace",
///      "disks": [{"path": "disk.img", "readonly": false, "id": "vda", "serial": "...", "direct": false,
///                 "bandwidth": "10M", "iops": 1000}],
///      "boot": {"demo": true}
///            | {"image": "guest.bin", "mode": "long", "loadAddress": "0x100000", "entry": "0x100000"}
///            | {"kernel": "vmlinux", "cmdline": "console=ttyS0", "initrd": "initrd.cpio"}}
///
/// Sizes are numbers of bytes or strings like "64M"; addresses numbers or "0x..."
/// strings. Every field is optional and takes the default `swiftvisor run` uses;
/// unknown fields are errors, named in the message. Decoding checks each field's type;
/// `validate()` checks what the values mean, in one place.
public struct VMDescription: Equatable, Sendable, Decodable {
    /// The machine's own (`MachineConfig.name`: what network devices derive from it).
    public var name: String? {
        get { config.name }
        set { config.name = newValue }
    }
    public var config: MachineConfig
    /// Stop a guest still running after this many seconds (exit code 124).
    public var timeoutSeconds: Double?
    /// A guest that resets (reboots) is started again instead of ending the VM.
    public var restartOnReboot: Bool
    /// The VMM process's per-thread system-call filters (kill unless asked otherwise).
    public var seccomp: SeccompMode
    /// Run the VMM jailed (namespaces, a private root, limits, no capabilities).
    public var jail: JailSettings?

    public init(name: String? = nil, config: MachineConfig = MachineConfig(), timeoutSeconds: Double? = nil, restartOnReboot: Bool = false,
                seccomp: SeccompMode = .kill, jail: JailSettings? = nil) {
        self.config = config
        self.config.name = name ?? config.name
        self.timeoutSeconds = timeoutSeconds
        self.restartOnReboot = restartOnReboot
        self.seccomp = seccomp
        self.jail = jail
    }

    enum Keys: String, CodingKey, CaseIterable {
        case name, memory, cpus, boot, testDevices, pit, hostQuirks, pvh, symbols, timeout, onReboot, kvmDevice, disks, nets, vsock, rng, rngLimit, virtioConsole, virtioTransport, seccomp, jail, profile, trace, hugePages, mergeable
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        var config = MachineConfig()
        config.name = try c.decodeIfPresent(String.self, forKey: .name)
        if let m = try c.decodeIfPresent(SizeValue.self, forKey: .memory) { config.memorySize = m.bytes }
        if let n = try c.decodeIfPresent(Int.self, forKey: .cpus) { config.vcpuCount = n }
        if let b = try c.decodeIfPresent(BootValue.self, forKey: .boot) { config.boot = b.source }
        config.testDevices = try c.decodeIfPresent(Bool.self, forKey: .testDevices) ?? false
        config.pit = try c.decodeIfPresent(Bool.self, forKey: .pit) ?? true
        config.hostQuirks = try c.decodeIfPresent(Bool.self, forKey: .hostQuirks) ?? false
        config.pvh = try c.decodeIfPresent(Bool.self, forKey: .pvh) ?? false
        config.symbolFile = try c.decodeIfPresent(String.self, forKey: .symbols)
        if let k = try c.decodeIfPresent(String.self, forKey: .kvmDevice) { config.kvmPath = k }
        config.disks = try c.decodeIfPresent([DiskValue].self, forKey: .disks)?.map(\.disk) ?? []
        config.nets = try c.decodeIfPresent([NetValue].self, forKey: .nets)?.map(\.net) ?? []
        config.vsock = try c.decodeIfPresent(VsockValue.self, forKey: .vsock)?.vsock
        config.rng = try c.decodeIfPresent(Bool.self, forKey: .rng) ?? false
        config.rngBytesPerSecond = try c.decodeIfPresent(SizeValue.self, forKey: .rngLimit)?.bytes
        config.virtioConsole = try c.decodeIfPresent(Bool.self, forKey: .virtioConsole) ?? false
        config.memoryOptions.hugePages = try c.decodeIfPresent(Bool.self, forKey: .hugePages) ?? false
        config.memoryOptions.mergeable = try c.decodeIfPresent(Bool.self, forKey: .mergeable) ?? false
        if let t = try c.decodeIfPresent(String.self, forKey: .virtioTransport) {
            guard let kind = VirtioTransportKind(rawValue: t) else {
                throw JSONValueDecoder.Failure(path: "virtioTransport", message: "must be \"pci\" or \"mmio\"")
            }
            config.virtioTransport = kind
        }
        timeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .timeout)
        switch try c.decodeIfPresent(String.self, forKey: .onReboot) ?? "exit" {
        case "exit": restartOnReboot = false
        case "restart": restartOnReboot = true
        default: throw JSONValueDecoder.Failure(path: "onReboot", message: "must be \"exit\" or \"restart\"")
        }
        if let m = try c.decodeIfPresent(String.self, forKey: .seccomp) {
            guard let mode = SeccompMode(rawValue: m) else {
                throw JSONValueDecoder.Failure(path: "seccomp", message: "must be \"kill\", \"log\" or \"off\"")
            }
            seccomp = mode
        } else {
            seccomp = .kill
        }
        jail = try c.decodeIfPresent(JailSettings.self, forKey: .jail)
        config.profile = try c.decodeIfPresent(ProfileValue.self, forKey: .profile)?.settings
        config.tracePath = try c.decodeIfPresent(String.self, forKey: .trace)
        self.config = config
    }

    /// The longest time limit: what nanoseconds in a UInt64 can count, with room.
    public static let maximumTimeoutSeconds: Double = 1e9

    /// Every rule about what the values mean: the machine's (`MachineConfig.validate`)
    /// and the process's own.
    public func validate() throws(ConfigError) {
        try config.validate()
        if let t = timeoutSeconds {
            guard t.isFinite, t > 0, t <= VMDescription.maximumTimeoutSeconds else {
                throw .invalid("timeout", "\(t) is not a number of seconds from 0 to \(Int(VMDescription.maximumTimeoutSeconds))")
            }
        }
        try jail?.validate(for: config)
    }

    /// The time limit in nanoseconds (validated: it fits).
    public var timeoutNanoseconds: UInt64? { timeoutSeconds.map { UInt64(($0 * 1e9).rounded()) } }

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Parses, decodes and validates a description from JSON text.
    public static func parse(_ text: String) throws(Invalid) -> VMDescription {
        let json: JSONValue
        do { json = try JSONValue.parse(text) } catch { throw Invalid(description: error.description) }
        return try from(json)
    }

    /// The same from a parsed value.
    public static func from(_ json: JSONValue) throws(Invalid) -> VMDescription {
        let d: VMDescription
        do { d = try JSONValueDecoder().decode(VMDescription.self, from: json) }
        catch { throw Invalid(description: error.description) }
        do { try d.validate() } catch { throw Invalid(description: error.description) }
        return d
    }

    /// The description as JSON: what `decode` reads back.
    public var json: JSONValue {
        var o: [(String, JSONValue)] = []
        if let name { o.append(("name", .string(name))) }
        let c = config
        o.append(("memory", .uint(c.memorySize)))
        o.append(("cpus", .int(Int64(c.vcpuCount))))
        let boot: JSONValue
        switch c.boot {
        case .demo, .flatImage:
            boot = .object([("demo", .bool(true))])
        case let .flat(path, mode, load, entry):
            var b: [(String, JSONValue)] = [("image", .string(path)), ("mode", .string(mode.rawValue))]
            if let load { b.append(("loadAddress", .string(AddressValue.hex(load)))) }
            if let entry { b.append(("entry", .string(AddressValue.hex(entry)))) }
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
        if c.pvh { o.append(("pvh", .bool(true))) }
        if let s = c.symbolFile { o.append(("symbols", .string(s))) }
        if c.kvmPath != "/dev/kvm" { o.append(("kvmDevice", .string(c.kvmPath))) }
        if !c.disks.isEmpty {
            o.append(("disks", .array(c.disks.map { d in
                var f: [(String, JSONValue)] = [("path", .string(d.path)), ("readonly", .bool(d.readOnly))]
                if let id = d.id { f.append(("id", .string(id))) }
                if let s = d.serial { f.append(("serial", .string(s))) }
                if d.direct { f.append(("direct", .bool(true))) }
                if let b = d.bytesPerSecond { f.append(("bandwidth", .uint(b))) }
                if let o = d.operationsPerSecond { f.append(("iops", .uint(o))) }
                return .object(f)
            })))
        }
        if !c.nets.isEmpty {
            o.append(("nets", .array(c.nets.map { n in
                var f: [(String, JSONValue)] = [("tap", .string(n.tap))]
                if let m = n.mac { f.append(("mac", .string(m.description))) }
                if let id = n.id { f.append(("id", .string(id))) }
                if let v = n.receive.bytesPerSecond { f.append(("rxBandwidth", .uint(v))) }
                if let v = n.receive.operationsPerSecond { f.append(("rxPackets", .uint(v))) }
                if let v = n.transmit.bytesPerSecond { f.append(("txBandwidth", .uint(v))) }
                if let v = n.transmit.operationsPerSecond { f.append(("txPackets", .uint(v))) }
                return .object(f)
            })))
        }
        if let v = c.vsock { o.append(("vsock", .object([("cid", .uint(v.cid)), ("socket", .string(v.socketPath))]))) }
        if c.rng { o.append(("rng", .bool(true))) }
        if let l = c.rngBytesPerSecond { o.append(("rngLimit", .uint(l))) }
        if c.virtioConsole { o.append(("virtioConsole", .bool(true))) }
        if c.memoryOptions.hugePages { o.append(("hugePages", .bool(true))) }
        if c.memoryOptions.mergeable { o.append(("mergeable", .bool(true))) }
        if c.virtioTransport != .pci { o.append(("virtioTransport", .string(c.virtioTransport.rawValue))) }
        if let t = timeoutSeconds { o.append(("timeout", .double(t))) }
        if restartOnReboot { o.append(("onReboot", .string("restart"))) }
        if seccomp != .kill { o.append(("seccomp", .string(seccomp.rawValue))) }
        if let jail { o.append(("jail", jail.json)) }
        if let t = c.tracePath { o.append(("trace", .string(t))) }
        if let p = c.profile {
            o.append(("profile", .object([("path", .string(p.path)), ("hz", .int(Int64(p.hz))), ("stacks", .bool(p.stacks))])))
        }
        return .object(o)
    }
}

/// One disk: `{"path": "disk.img", "readonly": false, "id": "vda", "serial": "...",
/// "direct": false, "cache": "writeback" | "none"}`.
public struct DiskValue: Decodable {
    public let disk: DiskConfig
    enum Keys: String, CodingKey, CaseIterable { case path, readonly, id, serial, direct, cache, bandwidth, iops }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        var d = DiskConfig(path: try c.decode(String.self, forKey: .path), readOnly: try c.decodeIfPresent(Bool.self, forKey: .readonly) ?? false,
                           id: try c.decodeIfPresent(String.self, forKey: .id), serial: try c.decodeIfPresent(String.self, forKey: .serial))
        d.direct = try c.decodeIfPresent(Bool.self, forKey: .direct) ?? false
        d.bytesPerSecond = try c.decodeIfPresent(SizeValue.self, forKey: .bandwidth)?.bytes
        d.operationsPerSecond = try c.decodeIfPresent(UInt64.self, forKey: .iops)
        switch try c.decodeIfPresent(String.self, forKey: .cache) {
        case nil, "writeback": break
        case "none": d.direct = true
        default: throw JSONValueDecoder.Failure(path: JSONValueDecoder.pathText(decoder.codingPath + [Keys.cache]), message: "must be \"none\" or \"writeback\"")
        }
        disk = d
    }

    /// `--disk PATH[,readonly][,id=NAME][,serial=S][,direct][,cache=none|writeback][,bw=SIZE][,iops=N]`.
    public static func parse(_ text: String) -> DiskConfig? {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let path = parts.first, !path.isEmpty else { return nil }
        var d = DiskConfig(path: path)
        for p in parts.dropFirst() {
            if p == "readonly" || p == "ro" { d.readOnly = true }
            else if p.hasPrefix("id="), p.count > 3 { d.id = String(p.dropFirst(3)) }
            else if p.hasPrefix("serial=") { d.serial = String(p.dropFirst(7)) }
            else if p == "direct" || p == "cache=none" { d.direct = true }
            else if p == "cache=writeback" { continue }
            else if p.hasPrefix("bw="), let n = ByteSize.parse(String(p.dropFirst(3))) { d.bytesPerSecond = n }
            else if p.hasPrefix("iops="), let n = UInt64(p.dropFirst(5)) { d.operationsPerSecond = n }
            else { return nil }
        }
        return d
    }
}

/// One network device: `{"tap": "tap0" | "auto", "mac": "52:54:00:12:34:56", "id": "eth0",
/// "rxBandwidth": "10M", "rxPackets": 1000, "txBandwidth": ..., "txPackets": ...}`.
public struct NetValue: Decodable {
    public let net: NetConfig
    enum Keys: String, CodingKey, CaseIterable { case tap, mac, id, rxBandwidth, rxPackets, txBandwidth, txPackets }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        var n = NetConfig(tap: try c.decode(String.self, forKey: .tap), id: try c.decodeIfPresent(String.self, forKey: .id))
        if let m = try c.decodeIfPresent(String.self, forKey: .mac) {
            guard let mac = MACAddress(m) else {
                throw JSONValueDecoder.Failure(path: JSONValueDecoder.pathText(decoder.codingPath + [Keys.mac]), message: "must be a unicast MAC like \"52:54:00:12:34:56\"")
            }
            n.mac = mac
        }
        n.receive = RateLimit(bytesPerSecond: try c.decodeIfPresent(SizeValue.self, forKey: .rxBandwidth)?.bytes,
                              operationsPerSecond: try c.decodeIfPresent(UInt64.self, forKey: .rxPackets))
        n.transmit = RateLimit(bytesPerSecond: try c.decodeIfPresent(SizeValue.self, forKey: .txBandwidth)?.bytes,
                               operationsPerSecond: try c.decodeIfPresent(UInt64.self, forKey: .txPackets))
        net = n
    }

    /// `--net tap=NAME|auto[,mac=MAC][,id=NAME][,bw=SIZE][,pps=N][,rx-bw=SIZE][,rx-pps=N][,tx-bw=SIZE][,tx-pps=N]`
    /// (`bw`/`rate` and `pps` limit both directions).
    public static func parse(_ text: String) -> NetConfig? {
        var n = NetConfig(tap: "")
        for p in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let eq = p.firstIndex(of: "=") else { return nil }
            let key = p[..<eq], value = String(p[p.index(after: eq)...])
            switch key {
            case "tap": n.tap = value
            case "mac": guard let m = MACAddress(value) else { return nil }; n.mac = m
            case "id": guard !value.isEmpty else { return nil }; n.id = value
            case "bw", "rate", "rx-bw", "tx-bw":
                guard let b = ByteSize.parse(value) else { return nil }
                if key != "tx-bw" { n.receive.bytesPerSecond = b }
                if key != "rx-bw" { n.transmit.bytesPerSecond = b }
            case "pps", "rx-pps", "tx-pps":
                guard let v = UInt64(value) else { return nil }
                if key != "tx-pps" { n.receive.operationsPerSecond = v }
                if key != "rx-pps" { n.transmit.operationsPerSecond = v }
            default: return nil
            }
        }
        return n.tap.isEmpty ? nil : n
    }
}

/// The vsock device: `{"cid": 3, "socket": "/run/vm.vsock"}`.
public struct VsockValue: Decodable {
    public let vsock: VsockConfig
    enum Keys: String, CodingKey, CaseIterable { case cid, socket }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        vsock = VsockConfig(cid: try c.decode(UInt64.self, forKey: .cid), socketPath: try c.decode(String.self, forKey: .socket))
    }

    /// `--vsock cid=N,socket=PATH`.
    public static func parse(_ text: String) -> VsockConfig? {
        var cid: UInt64?, socket: String?
        for p in text.split(separator: ",", omittingEmptySubsequences: false) {
            if p.hasPrefix("cid="), let n = UInt64(p.dropFirst(4)) { cid = n }
            else if p.hasPrefix("socket=") { socket = String(p.dropFirst(7)) }
            else { return nil }
        }
        guard let cid else { return nil }
        return VsockConfig(cid: cid, socketPath: socket ?? "")
    }
}

/// `profile`: `{"path": "FILE", "hz": 99, "stacks": false}` (`--profile FILE`,
/// `--profile-hz N`, `--profile-stacks`).
struct ProfileValue: Decodable {
    let settings: ProfileSettings
    enum Keys: String, CodingKey, CaseIterable { case path, hz, stacks }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        settings = ProfileSettings(path: try c.decode(String.self, forKey: .path),
                                   hz: try c.decodeIfPresent(Int.self, forKey: .hz) ?? ProfileSettings.defaultHz,
                                   stacks: try c.decodeIfPresent(Bool.self, forKey: .stacks) ?? false)
    }
}

/// A size: a number of bytes or a string like "64M".
struct SizeValue: Decodable {
    let bytes: UInt64
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(UInt64.self) { bytes = n; return }
        if let s = try? c.decode(String.self), let n = ByteSize.parse(s) { bytes = n; return }
        throw JSONValueDecoder.Failure(path: JSONValueDecoder.pathText(decoder.codingPath), message: "must be a size like \"64M\" or a number of bytes")
    }
}

/// An address: a number or a string like "0x7c00", "7c00h" or "31744".
public struct AddressValue: Decodable, Sendable {
    public let address: UInt64
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(UInt64.self) { address = n; return }
        if let s = try? c.decode(String.self), let n = AddressValue.parse(s) { address = n; return }
        throw JSONValueDecoder.Failure(path: JSONValueDecoder.pathText(decoder.codingPath), message: "must be an address like \"0x100000\"")
    }

    /// `0x7c00`, `7c00h` or decimal `31744` (underscores allowed); nil otherwise.
    public static func parse(_ text: String) -> UInt64? {
        let t = String(text.lowercased().filter { $0 != "_" })
        if t.hasPrefix("0x") { return UInt64(t.dropFirst(2), radix: 16) }
        if t.hasSuffix("h") { return UInt64(t.dropLast(), radix: 16) }
        return UInt64(t)
    }

    public static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
}

/// `boot`: exactly one of demo, image or kernel.
struct BootValue: Decodable {
    let source: BootSource
    enum Keys: String, CodingKey, CaseIterable { case demo, image, mode, loadAddress, entry, kernel, cmdline, initrd }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        let here = JSONValueDecoder.pathText(decoder.codingPath)
        func fail(_ field: Keys, _ message: String) -> JSONValueDecoder.Failure {
            JSONValueDecoder.Failure(path: here + "." + field.stringValue, message: message)
        }
        let imageKeys: Set<Keys> = [.mode, .loadAddress, .entry], kernelKeys: Set<Keys> = [.cmdline, .initrd]
        let present = Set(c.allKeys)
        if let image = try c.decodeIfPresent(String.self, forKey: .image) {
            if let k = present.subtracting(imageKeys.union([.image])).first { throw fail(k, "is not for an image (an image takes mode, loadAddress, entry)") }
            var mode = CPUMode.long
            if let m = try c.decodeIfPresent(String.self, forKey: .mode) {
                guard let parsed = CPUMode(rawValue: m) else { throw fail(.mode, "must be real, protected or long") }
                mode = parsed
            }
            source = .flat(path: image, mode: mode, loadAddress: try c.decodeIfPresent(AddressValue.self, forKey: .loadAddress)?.address,
                           entry: try c.decodeIfPresent(AddressValue.self, forKey: .entry)?.address)
        } else if let kernel = try c.decodeIfPresent(String.self, forKey: .kernel) {
            if let k = present.subtracting(kernelKeys.union([.kernel])).first { throw fail(k, "is not for a kernel (a kernel takes cmdline, initrd)") }
            source = .kernel(path: kernel, commandLine: try c.decodeIfPresent(String.self, forKey: .cmdline) ?? "",
                             initrd: try c.decodeIfPresent(String.self, forKey: .initrd))
        } else {
            if let k = present.subtracting([.demo]).first {
                throw fail(k, imageKeys.contains(k) ? "needs \"image\"" : kernelKeys.contains(k) ? "needs \"kernel\"" : "is not for the demo")
            }
            guard try c.decodeIfPresent(Bool.self, forKey: .demo) ?? true else { throw fail(.demo, "must be true (or give image or kernel)") }
            source = .demo
        }
    }
}
