import Boot

/// A machine configuration plus how the VMM process reports on it: what the
/// `swiftvisor` command hands to the `swiftvisor-vmm` process it becomes.
///
/// The hand-over is an argument vector (the same flags `swiftvisor run` takes, already
/// validated and normalised) so that the VMM process needs no argument-parsing or JSON
/// library: see README "Two executables".
public struct RunOptions: Equatable, Sendable {
    public var config: MachineConfig
    /// Print the exit summary (always on for the demo guest).
    public var stats: Bool
    /// Print the report as JSON on stdout; the guest console goes to stderr.
    public var json: Bool
    /// Stop a guest still running after this many seconds (exit code 124).
    public var timeoutSeconds: Double?
    /// A named VM registers in the state directory and serves the control API there.
    public var name: String?
    public var stateDirectory: String?
    /// Detached: the console goes to the state directory (log and console socket).
    public var detached: Bool = false
    /// A guest that resets (reboots) is started again instead of ending the VM.
    public var restartOnReboot: Bool = false

    public init(config: MachineConfig, stats: Bool = false, json: Bool = false, timeoutSeconds: Double? = nil) {
        self.config = config
        self.stats = stats
        self.json = json
        self.timeoutSeconds = timeoutSeconds
    }

    /// The argument vector that `init(arguments:)` reads back.
    public var arguments: [String] {
        var a = ["--memory", String(config.memorySize), "--cpus", String(config.vcpuCount)]
        if config.kvmPath != "/dev/kvm" { a += ["--kvm-device", config.kvmPath] }
        switch config.boot {
        case .demo:
            a.append("--demo")
        case let .flat(path, mode, load, entry):
            a += ["--image", path, "--mode", mode.rawValue]
            if let load { a += ["--load-address", RunOptions.hex(load)] }
            if let entry { a += ["--entry", RunOptions.hex(entry)] }
        case .flatImage:
            break // in-memory images cannot cross a process boundary
        case let .kernel(path, commandLine, initrd):
            a += ["--kernel", path]
            if !commandLine.isEmpty { a += ["--cmdline", commandLine] }
            if let initrd { a += ["--initrd", initrd] }
        }
        if config.testDevices { a.append("--test-devices") }
        if !config.pit { a.append("--no-pit") }
        if config.hostQuirks { a.append("--host-quirks") }
        if config.pvh { a.append("--pvh") }
        if let s = config.symbolFile { a += ["--symbols", s] }
        if let timeoutSeconds { a += ["--timeout", String(timeoutSeconds)] }
        if let name { a += ["--name", name] }
        if let stateDirectory { a += ["--state-dir", stateDirectory] }
        if detached { a.append("--detached") }
        if restartOnReboot { a += ["--on-reboot", "restart"] }
        if stats { a.append("--stats") }
        if json { a.append("--json") }
        return a
    }

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Reads the vector `arguments` writes (flags in any order, values as
    /// `swiftvisor run` accepts them).
    public init(arguments: [String]) throws(ParseError) {
        var config = MachineConfig()
        var stats = false, json = false, demo = false
        var image: String? = nil, mode: CPUMode? = nil
        var kernel: String? = nil, commandLine: String? = nil, initrd: String? = nil
        var timeout: Double? = nil
        var name: String? = nil, stateDirectory: String? = nil, detached = false, restart = false
        var load: UInt64? = nil, entry: UInt64? = nil
        var i = 0
        func value(_ flag: String) throws(ParseError) -> String {
            i += 1
            guard i < arguments.count else { throw ParseError(description: "\(flag) needs a value") }
            return arguments[i]
        }
        while i < arguments.count {
            let flag = arguments[i]
            switch flag {
            case "--memory":
                let v = try value(flag)
                guard let n = ByteSize.parse(v) else { throw ParseError(description: "--memory: '\(v)' is not a size (e.g. 64M, 1G)") }
                config.memorySize = n
            case "--cpus":
                let v = try value(flag)
                guard let n = Int(v) else { throw ParseError(description: "--cpus: '\(v)' is not a number") }
                config.vcpuCount = n
            case "--kvm-device": config.kvmPath = try value(flag)
            case "--demo": demo = true
            case "--image": image = try value(flag)
            case "--mode":
                let v = try value(flag)
                guard let m = CPUMode(rawValue: v) else { throw ParseError(description: "--mode: '\(v)' is not real, protected or long") }
                mode = m
            case "--load-address":
                let v = try value(flag)
                guard let n = RunOptions.parseAddress(v) else { throw ParseError(description: "--load-address: '\(v)' is not an address") }
                load = n
            case "--entry":
                let v = try value(flag)
                guard let n = RunOptions.parseAddress(v) else { throw ParseError(description: "--entry: '\(v)' is not an address") }
                entry = n
            case "--kernel": kernel = try value(flag)
            case "--cmdline": commandLine = try value(flag)
            case "--initrd": initrd = try value(flag)
            case "--test-devices": config.testDevices = true
            case "--no-pit": config.pit = false
            case "--host-quirks": config.hostQuirks = true
            case "--pvh": config.pvh = true
            case "--symbols": config.symbolFile = try value(flag)
            case "--timeout":
                let v = try value(flag)
                guard let t = Double(v), t > 0, t.isFinite else { throw ParseError(description: "--timeout: '\(v)' is not a positive number of seconds") }
                timeout = t
            case "--name": name = try value(flag)
            case "--state-dir": stateDirectory = try value(flag)
            case "--detached": detached = true
            case "--on-reboot":
                let v = try value(flag)
                guard v == "restart" || v == "exit" else { throw ParseError(description: "--on-reboot: '\(v)' is not restart or exit") }
                restart = v == "restart"
            case "--stats": stats = true
            case "--json": json = true
            default:
                throw ParseError(description: "unknown option '\(flag)'")
            }
            i += 1
        }
        if kernel == nil, commandLine != nil || initrd != nil {
            throw ParseError(description: "--cmdline and --initrd need --kernel")
        }
        if let kernel {
            guard !demo, image == nil else { throw ParseError(description: "--kernel excludes --image and --demo") }
            guard mode == nil, load == nil, entry == nil else {
                throw ParseError(description: "--mode, --load-address and --entry are for --image; a kernel says where it goes")
            }
            config.boot = .kernel(path: kernel, commandLine: commandLine ?? "", initrd: initrd)
        } else if let image {
            guard !demo else { throw ParseError(description: "--demo and --image exclude each other") }
            config.boot = .flat(path: image, mode: mode ?? .long, loadAddress: load, entry: entry)
        } else {
            guard mode == nil, load == nil, entry == nil else {
                throw ParseError(description: "--mode, --load-address and --entry need --image")
            }
            config.boot = .demo
        }
        guard !detached || (name != nil && stateDirectory != nil) else {
            throw ParseError(description: "--detached needs --name and --state-dir")
        }
        self.init(config: config, stats: stats, json: json, timeoutSeconds: timeout)
        self.name = name
        self.stateDirectory = stateDirectory
        self.detached = detached
        self.restartOnReboot = restart
    }

    /// `0x7c00`, `7c00h` or decimal `31744`.
    public static func parseAddress(_ text: String) -> UInt64? {
        let t = text.lowercased().replacingOccurrences(of: "_", with: "")
        if t.hasPrefix("0x") { return UInt64(t.dropFirst(2), radix: 16) }
        if t.hasSuffix("h") { return UInt64(t.dropLast(), radix: 16) }
        return UInt64(t)
    }

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
