import VMM

/// `"jail": true` or `"jail": {"netns": "/run/netns/blue", "memoryLimit": "1G",
/// "cpuLimit": 1.5, "openFiles": 4096, "addressSpace": "8G", "processes": 512}` in a VM's
/// description (`--jail`, `--netns PATH` on the command line): run the VMM jailed
/// (`Jail`, README "Security"). Every limit is optional and defaults to what the VM's
/// size needs.
public struct JailSettings: Equatable, Sendable, Decodable {
    /// Join this network namespace instead of a new, empty one.
    public var networkNamespace: String?
    /// The cgroup's memory.max (default: guest RAM + `overhead`).
    public var memoryLimit: UInt64?
    /// The cgroup's cpu.max in CPUs (default: one per vCPU, plus one for devices).
    public var cpuLimit: Double?
    /// RLIMIT_NOFILE (default 4096).
    public var openFiles: UInt64?
    /// RLIMIT_AS (default: guest RAM + 4 GiB, room for the runtime, thread stacks and
    /// malloc's per-thread arenas, which reserve far more than they use).
    public var addressSpace: UInt64?
    /// RLIMIT_NPROC (default 512; the kernel does not apply it to root).
    public var processes: UInt64?

    public init(networkNamespace: String? = nil, memoryLimit: UInt64? = nil, cpuLimit: Double? = nil, openFiles: UInt64? = nil,
                addressSpace: UInt64? = nil, processes: UInt64? = nil) {
        self.networkNamespace = networkNamespace
        self.memoryLimit = memoryLimit
        self.cpuLimit = cpuLimit
        self.openFiles = openFiles
        self.addressSpace = addressSpace
        self.processes = processes
    }

    /// What the VMM uses beyond guest RAM, with the page cache its disks fill: the
    /// default cgroup memory limit's margin.
    public static let overhead: UInt64 = 256 << 20
    public static let addressSpaceMargin: UInt64 = 4 << 30

    enum Keys: String, CodingKey, CaseIterable { case netns, memoryLimit, cpuLimit, openFiles, addressSpace, processes }

    public init(from decoder: any Decoder) throws {
        if let on = try? decoder.singleValueContainer().decode(Bool.self) {
            guard on else {
                throw JSONValueDecoder.Failure(path: JSONValueDecoder.pathText(decoder.codingPath), message: "must be true or an object (leave it out for no jail)")
            }
            self.init()
            return
        }
        let c = try decoder.container(keyedBy: Keys.self)
        self.init(networkNamespace: try c.decodeIfPresent(String.self, forKey: .netns),
                  memoryLimit: try c.decodeIfPresent(SizeValue.self, forKey: .memoryLimit)?.bytes,
                  cpuLimit: try c.decodeIfPresent(Double.self, forKey: .cpuLimit),
                  openFiles: try c.decodeIfPresent(UInt64.self, forKey: .openFiles),
                  addressSpace: try c.decodeIfPresent(SizeValue.self, forKey: .addressSpace)?.bytes,
                  processes: try c.decodeIfPresent(UInt64.self, forKey: .processes))
    }

    public var json: JSONValue {
        var o: [(String, JSONValue)] = []
        if let networkNamespace { o.append(("netns", .string(networkNamespace))) }
        if let memoryLimit { o.append(("memoryLimit", .uint(memoryLimit))) }
        if let cpuLimit { o.append(("cpuLimit", .double(cpuLimit))) }
        if let openFiles { o.append(("openFiles", .uint(openFiles))) }
        if let addressSpace { o.append(("addressSpace", .uint(addressSpace))) }
        if let processes { o.append(("processes", .uint(processes))) }
        return o.isEmpty ? .bool(true) : .object(o)
    }

    /// The limits a machine of this size needs at least, checked without overflow.
    func validate(for config: MachineConfig) throws(ConfigError) {
        let (floor, overflow) = config.memorySize.addingReportingOverflow(64 << 20)
        if let m = memoryLimit, overflow || m < floor {
            throw .invalid("jail.memoryLimit", "\(m) bytes is less than the guest's memory and 64 MiB for the VMM")
        }
        if let c = cpuLimit, !(c.isFinite && c >= 0.01 && c <= 4096) {
            throw .invalid("jail.cpuLimit", "\(c) is not a number of CPUs from 0.01 to 4096")
        }
        if let n = openFiles, n < 64 || n > 1 << 20 {
            throw .invalid("jail.openFiles", "\(n) is not from 64 to 1048576")
        }
        let (spaceFloor, spaceOverflow) = config.memorySize.addingReportingOverflow(1 << 30)
        if let a = addressSpace, spaceOverflow || a < spaceFloor {
            throw .invalid("jail.addressSpace", "\(a) bytes is less than the guest's memory and 1 GiB for the VMM")
        }
        if let n = processes, n < 16 || n > 1 << 22 {
            throw .invalid("jail.processes", "\(n) is not from 16 to 4194304")
        }
        if let p = networkNamespace, p.isEmpty { throw .invalid("jail.netns", "is empty") }
    }

    /// The jail for the VM `d`: every file it boots from or writes (kernel, initrd,
    /// image, symbols, disks, trace), the KVM device and its state folder, each at its own
    /// path; the limits, defaults filled in. `cgroupName` names its cgroup.
    public func plan(for d: VMDescription, stateFolder: String?, workingDirectory: String, cgroupName: String) -> JailPlan {
        let c = d.config
        var mounts = [JailPlan.Mount(path: c.kvmPath, writable: true)]
        switch c.boot {
        case .demo, .flatImage: break
        case let .flat(path, _, _, _): mounts.append(.init(path: path, writable: false))
        case let .kernel(path, _, initrd):
            mounts.append(.init(path: path, writable: false))
            if let initrd { mounts.append(.init(path: initrd, writable: false)) }
        }
        if let s = c.effectiveSymbolFile { mounts.append(.init(path: s, writable: false)) }
        for disk in c.disks { mounts.append(.init(path: disk.path, writable: !disk.readOnly)) }
        if let stateFolder { mounts.append(.init(path: stateFolder, writable: true)) }
        if let t = c.tracePath { mounts.append(.init(path: t, writable: true)) }
        // The vsock's sockets (PATH, and PATH_P for each port the guest connects to)
        // are made and reached in their folder.
        if let v = c.vsock {
            let folder = v.socketPath.contains("/") ? String(v.socketPath[..<(v.socketPath.lastIndex(of: "/") ?? v.socketPath.endIndex)]) : "."
            mounts.append(.init(path: folder.isEmpty ? "/" : folder, writable: true))
        }
        // One mount per path: a file named twice is writable if either use writes.
        var unique: [JailPlan.Mount] = []
        for m in mounts {
            if let i = unique.firstIndex(where: { $0.path == m.path }) { unique[i].writable = unique[i].writable || m.writable } else { unique.append(m) }
        }
        let memory = c.memorySize
        let (space, spaceOverflow) = memory.addingReportingOverflow(JailSettings.addressSpaceMargin)
        let (cgroupMemory, memoryOverflow) = memory.addingReportingOverflow(JailSettings.overhead)
        // A VM with network devices stays where its TAPs are (the namespace it was
        // started in) unless told to join another; without, it gets an empty one.
        let netns = networkNamespace ?? (c.nets.isEmpty ? nil : "/proc/self/ns/net")
        var plan = JailPlan(mounts: unique, workingDirectory: workingDirectory, networkNamespace: netns,
                            openFiles: openFiles ?? 4096,
                            addressSpace: addressSpace ?? (spaceOverflow ? UInt64.max : space),
                            processes: processes ?? 512,
                            cgroup: .init(name: cgroupName, memoryBytes: memoryLimit ?? (memoryOverflow ? UInt64.max : cgroupMemory),
                                          cpus: cpuLimit ?? Double(c.vcpuCount + 1), tasks: processes ?? 512))
        plan.taps = c.nets.enumerated().map { $0.element.interfaceName(index: $0.offset, vm: c.name) }
        return plan
    }
}
