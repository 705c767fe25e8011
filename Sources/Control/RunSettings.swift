import Boot
import Devices
import Glibc
import VMM

/// What the flags of `run` say, before they become a VM description.
public struct RunSettings {
    public enum Quirks: String, CaseIterable { case auto, on, off }
    public var image: String?, mode: CPUMode?, loadAddress: UInt64?, entry: UInt64?
    public var kernel: String?, cmdline: String?, initrd: String?, systemMap: String?, pvh = false
    public var disks: [DiskConfig] = [], rng = false
    public var nets: [NetConfig] = []
    public var vsock: VsockConfig?
    public var virtioTransport: VirtioTransportKind?
    public var virtioConsole = false
    public var rngLimit: UInt64?
    public var memory: UInt64?, cpus: Int?, testDevices = false, noPIT = false, hugePages = false, mergeable = false
    public var quirks = Quirks.auto, restartOnReboot: Bool?, timeout: Double?, seccomp: SeccompMode?
    public var stats = false, json = false, verbose = false, kvmDevice: String?
    public var configFile: String?, name: String?, stateDir: String?, detach = false
    public var jail = false, netns: String?
    public var profile: String?, profileHz: Int?, profileStacks = false, symbols: String?, trace: String?
    /// Words that are no option's value (`create`'s NAME).
    public var positionals: [String] = []

    public init() {}

    /// The VM description these settings give, on top of `base` (a config file's).
    /// `prepareKernel` turns the kernel's path into the file to boot (a bzImage's
    /// payload decompressed on the host) and says whether it is Linux; `quirksHere`
    /// says whether this host needs the quirks (the probe, asked only for `auto`).
    public func description(base: VMDescription, prepareKernel: (String) throws(RunFlags.Failure) -> (path: String, linux: Bool),
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
            if d.config.symbolFile == nil { d.config.symbolFile = RunSettings.systemMap(besides: path) }
        }
        if let kernel {
            let prepared = try prepareKernel(kernel)
            d.config.boot = .kernel(path: prepared.path, commandLine: cmdline ?? "", initrd: initrd)
            d.config.symbolFile = systemMap ?? RunSettings.systemMap(besides: kernel)
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
        if !nets.isEmpty { d.config.nets = nets }
        if let vsock { d.config.vsock = vsock }
        if rng { d.config.rng = true }
        if virtioConsole { d.config.virtioConsole = true }
        if let rngLimit { d.config.rngBytesPerSecond = rngLimit }
        if let virtioTransport { d.config.virtioTransport = virtioTransport }
        if let memory { d.config.memorySize = memory }
        if let cpus { d.config.vcpuCount = cpus }
        if let kvmDevice { d.config.kvmPath = kvmDevice }
        if testDevices { d.config.testDevices = true }
        if noPIT { d.config.pit = false }
        if hugePages { d.config.memoryOptions.hugePages = true }
        if mergeable { d.config.memoryOptions.mergeable = true }
        if let timeout { d.timeoutSeconds = timeout }
        if let restartOnReboot { d.restartOnReboot = restartOnReboot }
        if let name { d.name = name }
        if let seccomp { d.seccomp = seccomp }
        if let symbols { d.config.symbolFile = symbols }
        if let trace { d.config.tracePath = trace }
        if profileHz != nil || profileStacks, profile == nil, d.config.profile == nil {
            throw RunFlags.Failure("--profile-hz and --profile-stacks need --profile FILE")
        }
        if let profile { d.config.profile = ProfileSettings(path: profile) }
        if let profileHz { d.config.profile?.hz = profileHz }
        if profileStacks { d.config.profile?.stacks = true }
        if jail || netns != nil {
            var j = d.jail ?? JailSettings()
            if let netns { j.networkNamespace = netns }
            d.jail = j
        }
        do { try d.validate() } catch { throw RunFlags.Failure(error.description) }
        return d
    }

    /// `System.map-VERSION` beside `vmlinuz-VERSION`, as distributions install them,
    /// when it is a real map (Debian's package ships a one-line placeholder; the real one
    /// is in `linux-image-*-dbg`).
    public static func systemMap(besides kernel: String) -> String? {
        let slash = kernel.lastIndex(of: "/")
        let directory = slash.map { String(kernel[...$0]) } ?? ""
        let file = slash.map { String(kernel[kernel.index(after: $0)...]) } ?? kernel
        guard file.hasPrefix("vmlinuz-") || file.hasPrefix("vmlinux-") else { return nil }
        let map = directory + "System.map-" + file.dropFirst("vmlinuz-".count)
        var st = stat()
        guard stat(map, &st) == 0, st.st_size > 4096 else { return nil }
        return map
    }
}
