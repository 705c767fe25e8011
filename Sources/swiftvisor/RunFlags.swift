import Boot
import Control
import VMM

/// The one table of `run`'s (and `create`'s) options: each flag's name, whether it
/// takes a value, whether the fast path may handle it, and what it does to the
/// settings. The fast path (`Swiftvisor.main`) parses a command line with it alone;
/// after ArgumentParser has checked a command line (help, errors, spellings) `RunCommand`
/// hands the same words to it too, so what a flag means is written once. A test checks
/// that ArgumentParser declares exactly these flags.
struct RunFlags {
    struct Flag: Sendable {
        let name: String
        let takesValue: Bool
        /// The fast path may take a command line with it: no state directory, no
        /// host-side kernel work, no config file, nothing printed before the VM.
        let fastPath: Bool
        let apply: @Sendable (inout RunSettings, String) throws(Failure) -> Void
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        let code: Int32
        init(_ description: String, code: Int32 = ProcessExitCode.usage) {
            self.description = description
            self.code = code
        }
    }

    static func value<T>(_ flag: String, _ text: String, _ parse: @escaping (String) -> T?, _ what: String) throws(Failure) -> T {
        guard let v = parse(text) else { throw Failure("\(flag): '\(text)' is not \(what)") }
        return v
    }

    static let table: [Flag] = [
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
        Flag(name: "--quirks", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.quirks = try value("--quirks", v, RunSettings.Quirks.init(rawValue:), "auto, on or off") },
        Flag(name: "--on-reboot", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.restartOnReboot = try value("--on-reboot", v, { $0 == "restart" ? true : $0 == "exit" ? false : nil }, "exit or restart") },
        Flag(name: "--timeout", takesValue: true, fastPath: true) { s, v throws(Failure) in
            s.timeout = try value("--timeout", v, { Double($0) }, "a number of seconds") },
        Flag(name: "--stats", takesValue: false, fastPath: true) { s, _ in s.stats = true },
        Flag(name: "--json", takesValue: false, fastPath: true) { s, _ in s.json = true },
        Flag(name: "--verbose", takesValue: false, fastPath: false) { s, _ in s.verbose = true },
        Flag(name: "--kvm-device", takesValue: true, fastPath: true) { s, v in s.kvmDevice = v },
        Flag(name: "--config", takesValue: true, fastPath: false) { s, v in s.configFile = v },
        Flag(name: "--name", takesValue: true, fastPath: false) { s, v in s.name = v },
        Flag(name: "--state-dir", takesValue: true, fastPath: false) { s, v in s.stateDir = v },
        Flag(name: "--detach", takesValue: false, fastPath: false) { s, _ in s.detach = true },
    ]

    static let byName: [String: Flag] = Dictionary(uniqueKeysWithValues: table.map { ($0.name, $0) })

    /// Reads `arguments` (the words after `run`) into settings. A flag that takes a
    /// value takes the next word whatever it looks like (`--cmdline -x`), or the text
    /// after `=`. `fastPathOnly`: fail on anything the fast path must leave alone.
    static func parse(_ arguments: [String], fastPathOnly: Bool = false) throws(Failure) -> RunSettings {
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
            guard let flag = byName[word] else { throw Failure("unknown option '\(arguments[i])'") }
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

/// What the flags of `run` say, before they become a VM description.
struct RunSettings {
    enum Quirks: String, CaseIterable { case auto, on, off }
    var image: String?, mode: CPUMode?, loadAddress: UInt64?, entry: UInt64?
    var kernel: String?, cmdline: String?, initrd: String?, systemMap: String?, pvh = false
    var disks: [DiskConfig] = [], rng = false
    var virtioTransport: VirtioTransportKind?
    var virtioConsole = false
    var rngLimit: UInt64?
    var memory: UInt64?, cpus: Int?, testDevices = false, noPIT = false
    var quirks = Quirks.auto, restartOnReboot: Bool?, timeout: Double?
    var stats = false, json = false, verbose = false, kvmDevice: String?
    var configFile: String?, name: String?, stateDir: String?, detach = false
    /// Words that are no option's value (`create`'s NAME).
    var positionals: [String] = []

    /// The VM description these settings give, on top of `base` (a config file's).
    /// `prepareKernel` turns the kernel's path into the file to boot (a bzImage's
    /// payload decompressed on the host) and says whether it is Linux; `quirksHere`
    /// says whether this host needs the quirks (the probe, asked only for `auto`).
    func description(base: VMDescription, prepareKernel: (String) throws(RunFlags.Failure) -> (path: String, linux: Bool),
                     quirksHere: () -> Bool) throws(RunFlags.Failure) -> VMDescription {
        if image == nil, mode != nil || loadAddress != nil || entry != nil {
            throw RunFlags.Failure("--mode, --load-address and --entry need --image")
        }
        if kernel == nil, cmdline != nil || initrd != nil || pvh || systemMap != nil {
            throw RunFlags.Failure("--cmdline, --initrd, --pvh and --system-map need --kernel")
        }
        if kernel != nil, image != nil { throw RunFlags.Failure("--kernel excludes --image") }
        var d = base
        if kernel == nil, case let .kernel(path, commandLine, initrd) = base.config.boot {
            // A config file's kernel gets the same host-side preparation as --kernel's.
            d.config.boot = .kernel(path: try prepareKernel(path).path, commandLine: commandLine, initrd: initrd)
            if d.config.symbolFile == nil { d.config.symbolFile = RunCommand.systemMap(besides: path) }
        }
        if let kernel {
            let prepared = try prepareKernel(kernel)
            d.config.boot = .kernel(path: prepared.path, commandLine: cmdline ?? "", initrd: initrd)
            d.config.symbolFile = systemMap ?? RunCommand.systemMap(besides: kernel)
            d.config.pvh = pvh
        } else if let image {
            d.config.boot = .flat(path: image, mode: mode ?? .long, loadAddress: loadAddress, entry: entry)
        }
        let isKernel: Bool = if case .kernel = d.config.boot { true } else { false }
        switch quirks {
        case .on: d.config.hostQuirks = true
        case .off: d.config.hostQuirks = false
        case .auto: if isKernel && (kernel != nil || !d.config.hostQuirks) { d.config.hostQuirks = quirksHere() }
        }
        if !disks.isEmpty { d.config.disks = disks }
        if rng { d.config.rng = true }
        if virtioConsole { d.config.virtioConsole = true }
        if let rngLimit { d.config.rngBytesPerSecond = rngLimit }
        if let virtioTransport { d.config.virtioTransport = virtioTransport }
        if let memory { d.config.memorySize = memory }
        if let cpus { d.config.vcpuCount = cpus }
        if let kvmDevice { d.config.kvmPath = kvmDevice }
        if testDevices { d.config.testDevices = true }
        if noPIT { d.config.pit = false }
        if let timeout { d.timeoutSeconds = timeout }
        if let restartOnReboot { d.restartOnReboot = restartOnReboot }
        if let name { d.name = name }
        do { try d.validate() } catch { throw RunFlags.Failure(error.description) }
        return d
    }
}
