import Boot
import Devices
import VMM

/// The one table of `run`'s (and `create`'s) options: each flag's name, whether it
/// takes a value, whether the fast path may handle it, and what it does to the
/// settings. The fast path (`Swiftvisor.main`) parses a command line with it alone;
/// after ArgumentParser has checked a command line (help, errors, spellings) `RunCommand`
/// hands the same words to it too, so what a flag means is written once. A test checks
/// that ArgumentParser declares exactly these flags.
public enum RunFlags {
    public struct Flag: Sendable {
        public let name: String
        public let takesValue: Bool
        /// The fast path may take a command line with it: no state directory, no
        /// host-side kernel work, no config file, nothing printed before the VM.
        public let fastPath: Bool
        public let apply: @Sendable (inout RunSettings, String) throws(Failure) -> Void
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public let code: Int32
        public init(_ description: String, code: Int32 = ProcessExitCode.usage) {
            self.description = description
            self.code = code
        }
    }

    static func value<T>(_ flag: String, _ text: String, _ parse: @escaping (String) -> T?, _ what: String) throws(Failure) -> T {
        guard let v = parse(text) else { throw Failure("\(flag): '\(text)' is not \(what)") }
        return v
    }

    public static let table: [Flag] = [
        Flag(name: "--image", takesValue: true, fastPath: true) { s, v in s.image = v },
        Flag(name: "--mode", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.mode = try value("--mode", v, CPUMode.init(rawValue:), "real, protected or long") },
        Flag(name: "--load-address", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.loadAddress = try value("--load-address", v, AddressValue.parse, "an address (0x7c00, 7c00h or 31744)") },
        Flag(name: "--entry", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.entry = try value("--entry", v, AddressValue.parse, "an address (0x7c00, 7c00h or 31744)") },
        Flag(name: "--kernel", takesValue: true, fastPath: false) { s, v in s.kernel = v },
        Flag(name: "--cmdline", takesValue: true, fastPath: false) { s, v in s.cmdline = v },
        Flag(name: "--initrd", takesValue: true, fastPath: false) { s, v in s.initrd = v },
        Flag(name: "--system-map", takesValue: true, fastPath: false) { s, v in s.systemMap = v },
        Flag(name: "--pvh", takesValue: false, fastPath: false) { s, _ in s.pvh = true },
        Flag(name: "--disk", takesValue: true, fastPath: false) { s, v throws(Failure) in
            s.disks.append(try value("--disk", v, DiskValue.parse, "a disk (PATH[,readonly][,id=NAME][,serial=S][,direct][,cache=none|writeback][,bw=SIZE][,iops=N])")) },
        Flag(name: "--net", takesValue: true, fastPath: false) { s, v throws(Failure) in
            s.nets.append(try value("--net", v, NetValue.parse, "a network device (tap=NAME|auto[,mac=MAC][,id=NAME][,bw=SIZE][,pps=N][,rx-bw=SIZE][,rx-pps=N][,tx-bw=SIZE][,tx-pps=N])")) },
        Flag(name: "--vsock", takesValue: true, fastPath: false) { s, v throws(Failure) in
            s.vsock = try value("--vsock", v, VsockValue.parse, "a vsock device (cid=N,socket=PATH)") },
        Flag(name: "--rng", takesValue: false, fastPath: false) { s, _ in s.rng = true },
        Flag(name: "--rng-limit", takesValue: true, fastPath: false) { s, v throws(Failure) in
            s.rngLimit = try value("--rng-limit", v, ByteSize.parse, "a size a second (64K, 1M or a byte count)") },
        Flag(name: "--virtio-console", takesValue: false, fastPath: false) { s, _ in s.virtioConsole = true },
        Flag(name: "--virtio-transport", takesValue: true, fastPath: false) { s, v throws(Failure) in
            s.virtioTransport = try value("--virtio-transport", v, VirtioTransportKind.init(rawValue:), "pci or mmio") },
        Flag(name: "--memory", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.memory = try value("--memory", v, ByteSize.parse, "a size (64M, 1G or a byte count)") },
        Flag(name: "--cpus", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.cpus = try value("--cpus", v, { Int($0) }, "a number") },
        Flag(name: "--test-devices", takesValue: false, fastPath: true) { s, _ in s.testDevices = true },
        Flag(name: "--no-pit", takesValue: false, fastPath: true) { s, _ in s.noPIT = true },
        Flag(name: "--hugepages", takesValue: false, fastPath: true) { s, _ in s.hugePages = true },
        Flag(name: "--mergeable", takesValue: false, fastPath: true) { s, _ in s.mergeable = true },
        Flag(name: "--quirks", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.quirks = try value("--quirks", v, RunSettings.Quirks.init(rawValue:), "auto, on or off") },
        Flag(name: "--on-reboot", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.restartOnReboot = try value("--on-reboot", v, { $0 == "restart" ? true : $0 == "exit" ? false : nil }, "exit or restart") },
        Flag(name: "--timeout", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.timeout = try value("--timeout", v, { Double($0) }, "a number of seconds") },
        Flag(name: "--seccomp", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.seccomp = try value("--seccomp", v, SeccompMode.init(rawValue:), "kill, log or off") },
        Flag(name: "--profile", takesValue: true, fastPath: false) { s, v in s.profile = v },
        Flag(name: "--profile-hz", takesValue: true, fastPath: false) { s, v throws(Failure) in
            s.profileHz = try value("--profile-hz", v, { Int($0) }, "a number of samples a second") },
        Flag(name: "--profile-stacks", takesValue: false, fastPath: false) { s, _ in s.profileStacks = true },
        Flag(name: "--symbols", takesValue: true, fastPath: false) { s, v in s.symbols = v },
        Flag(name: "--trace", takesValue: true, fastPath: false) { s, v in s.trace = v },
        Flag(name: "--jail", takesValue: false, fastPath: true) { s, _ in s.jail = true },
        Flag(name: "--netns", takesValue: true, fastPath: true) { s, v in s.netns = v },
        Flag(name: "--stats", takesValue: false, fastPath: true) { s, _ in s.stats = true },
        Flag(name: "--json", takesValue: false, fastPath: true) { s, _ in s.json = true },
        Flag(name: "--verbose", takesValue: false, fastPath: false) { s, _ in s.verbose = true },
        Flag(name: "--kvm-device", takesValue: true, fastPath: true) { s, v in s.kvmDevice = v },
        Flag(name: "--config", takesValue: true, fastPath: false) { s, v in s.configFile = v },
        Flag(name: "--name", takesValue: true, fastPath: false) { s, v in s.name = v },
        Flag(name: "--state-dir", takesValue: true, fastPath: false) { s, v in s.stateDir = v },
        Flag(name: "--detach", takesValue: false, fastPath: false) { s, _ in s.detach = true },
    ]

    /// A linear search: 40 names are found faster than a dictionary of them is built,
    /// and the fast path runs this once per VM.
    public static func flag(named name: String) -> Flag? { table.first { $0.name == name } }

    /// Reads `arguments` (the words after `run`) into settings. A flag that takes a
    /// value takes the next word whatever it looks like (`--cmdline -x`), or the text
    /// after `=`. `fastPathOnly`: fail on anything the fast path must leave alone.
    public static func parse(_ arguments: [String], fastPathOnly: Bool = false) throws(Failure) -> RunSettings {
        var settings = RunSettings()
        var i = 0
        while i < arguments.count {
            var word = arguments[i]
            var inline: String? = nil
            if word.hasPrefix("--"), let eq = word.firstIndex(of: "=") {
                inline = String(word[word.index(after: eq)...])
                word = String(word[..<eq])
            }
            if !word.hasPrefix("-") {
                settings.positionals.append(word)
                i += 1
                continue
            }
            guard let flag = flag(named: word) else { throw Failure("unknown option '\(arguments[i])'") }
            if fastPathOnly && !flag.fastPath { throw Failure("\(word) is not for the fast path") }
            var v = ""
            if flag.takesValue {
                if let inline { v = inline } else {
                    i += 1
                    guard i < arguments.count else { throw Failure("\(word) needs a value") }
                    v = arguments[i]
                }
            } else if inline != nil {
                throw Failure("\(word) takes no value")
            }
            try flag.apply(&settings, v)
            i += 1
        }
        return settings
    }
}

extension RunFlags {
    /// The launch for `swiftvisor run ARGS` when the option table alone can read `ARGS`
    /// (no help, no named VM, no kernel to prepare, no file to read) and they are valid;
    /// nil whenever `swiftvisor-cli` (ArgumentParser) should handle them, so every error
    /// and all help come from one place.
    public static func fastPathLaunch(_ arguments: [String]) -> VMMLaunch? {
        guard arguments.first == "run",
              let s = try? parse(Array(arguments.dropFirst()), fastPathOnly: true), s.positionals.isEmpty,
              let d = try? s.description(base: VMDescription(), prepareKernel: { _ throws(Failure) in throw Failure("no kernel here") },
                                         quirksHere: { false }) else { return nil }
        return VMMLaunch(vm: d, stats: s.stats, json: s.json)
    }
}
