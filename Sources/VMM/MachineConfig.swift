import GuestMemory
import Boot
import Devices

/// Everything needed to build a machine: plain data, checked by `validate()` before
/// anything is created. The command line, config files and the API all produce one.
public struct MachineConfig: Equatable, Sendable {
    public var memorySize: UInt64
    public var vcpuCount: Int
    public var boot: BootSource
    public var kvmPath: String
    /// The devices QEMU offers test suites (isa-debug-exit, pc-testdev, fw_cfg): off
    /// unless asked for, since no ordinary guest needs them.
    public var testDevices: Bool
    /// Whether kernels get the i8254 PIT (QEMU's `-machine pit=off` leaves it out, for
    /// guests that must not see its interrupts).
    public var pit: Bool
    /// Apply the work-arounds for hosts whose KVM emulates guest kernel mode
    /// (`HostQuirks`): the caller decides, normally from `HostProbe` (the command line
    /// does, with `--quirks auto`).
    public var hostQuirks: Bool = false
    /// Boot a vmlinux through its PVH entry (32-bit, hvm_start_info) instead of the
    /// 64-bit boot protocol.
    public var pvh: Bool = false
    /// Where to find the guest kernel's symbols for failure reports: an unstripped
    /// vmlinux or a System.map. nil: the kernel file itself, when it has a symbol
    /// table. Read only when a failure is reported, so it costs nothing otherwise.
    public var symbolFile: String? = nil
    /// Record every exit into this file (`--trace`; `swiftvisor trace` reads it).
    public var tracePath: String? = nil
    /// Sample each vCPU's RIP (and stack) this often (`--profile`).
    public var profile: ProfileSettings? = nil
    /// virtio-blk disks, in the order the guest sees them (the first is /dev/vda).
    public var disks: [DiskConfig] = []
    /// virtio-net devices, each over a TAP interface (eth0 is the first).
    public var nets: [NetConfig] = []
    /// A virtio-vsock device: host-guest sockets (`--vsock`).
    public var vsock: VsockConfig? = nil
    /// The VM's name, for what is derived from it: a network device's MAC and a
    /// `tap=auto` interface's name (the same at every start of a named VM).
    public var name: String? = nil
    /// A virtio-rng entropy device, and at most how many bytes a second it gives.
    public var rng: Bool = false
    public var rngBytesPerSecond: UInt64?
    /// A virtio console (the guest's hvc0), beside the 8250; it takes the console's
    /// input.
    public var virtioConsole: Bool = false
    /// How the virtio devices reach the guest: PCI functions (what stock distribution
    /// kernels find) or virtio-mmio windows.
    public var virtioTransport: VirtioTransportKind = .pci
    /// How guest RAM is backed: reserved 2 MiB pages where the host has them
    /// (`--hugepages`), KSM merging (`--mergeable`). See `MemoryRegion.Options`.
    public var memoryOptions = MemoryRegion.Options()

    /// The file failure reports take symbol names from, if any.
    public var effectiveSymbolFile: String? {
        if let symbolFile { return symbolFile }
        if case let .kernel(path, _, _) = boot { return path }
        return nil
    }

    public static let defaultMemorySize: UInt64 = 64 << 20
    /// Guest RAM Swiftvisor will map; beyond this a typo ("64G" for "64M") is likelier
    /// than intent, and the host would have to overcommit.
    public static let maximumMemorySize: UInt64 = 1 << 40
    public static let minimumMemorySize: UInt64 = 1 << 20
    /// Each virtio device takes an interrupt line from `AddressMap.allocatableIRQs`
    /// (virtio-mmio's only interrupt; virtio-pci's INTx when MSI-X is off).
    public static let maximumVirtioDevices = AddressMap.allocatableIRQs.count

    public init(memorySize: UInt64 = MachineConfig.defaultMemorySize, vcpuCount: Int = 1,
                boot: BootSource = .demo, kvmPath: String = "/dev/kvm", testDevices: Bool = false, pit: Bool = true) {
        self.pit = pit
        self.memorySize = memorySize
        self.vcpuCount = vcpuCount
        self.boot = boot
        self.kvmPath = kvmPath
        self.testDevices = testDevices
    }

    /// Checks what can be checked without touching KVM or files.
    public func validate() throws(ConfigError) {
        guard memorySize >= MachineConfig.minimumMemorySize else {
            throw .invalid("memory", "\(ByteSize.format(memorySize)) is too little; a VM needs at least 1 MiB")
        }
        guard memorySize <= MachineConfig.maximumMemorySize else {
            throw .invalid("memory", "\(ByteSize.format(memorySize)) is more than the 1 TiB Swiftvisor maps")
        }
        guard memorySize % 4096 == 0 else {
            throw .invalid("memory", "\(memorySize) bytes is not a whole number of 4 KiB pages")
        }
        guard vcpuCount >= 1 && vcpuCount <= 255 else {
            throw .invalid("cpus", "\(vcpuCount) vCPUs: give 1 to 255")
        }
        if case .demo = boot, memorySize < DemoGuest.minimumMemory {
            throw .invalid("memory", "the demo guest needs at least \(ByteSize.format(DemoGuest.minimumMemory))")
        }
        if let t = tracePath, t.isEmpty { throw .invalid("trace", "needs a file to write the exits to") }
        if let p = profile {
            guard p.hz >= 1 && p.hz <= ProfileSettings.maximumHz else {
                throw .invalid("profile-hz", "\(p.hz) samples a second: give 1 to \(ProfileSettings.maximumHz)")
            }
            guard !p.path.isEmpty else { throw .invalid("profile", "needs a file to write the folded stacks to") }
        }
        if rngBytesPerSecond != nil && !rng { throw .invalid("rng-limit", "limits an entropy device: add --rng") }
        if rngBytesPerSecond == 0 { throw .invalid("rng-limit", "0 bytes a second would stop the entropy device; leave it out for none") }
        let others = (rng ? 1 : 0) + (virtioConsole ? 1 : 0) + nets.count + (vsock == nil ? 0 : 1)
        if !disks.isEmpty || others > 0 {
            let field = !disks.isEmpty ? "disk" : !nets.isEmpty ? "net" : vsock != nil ? "vsock" : rng ? "rng" : "virtio-console"
            guard case .kernel = boot else { throw .invalid(field, "virtio devices need a kernel (--kernel): a flat binary has no interrupt controller to be told through") }
        }
        guard disks.count <= MachineConfig.maximumVirtioDevices - others else {
            throw .invalid("disk", "\(disks.count) disks: at most \(MachineConfig.maximumVirtioDevices - others) beside the other virtio devices")
        }
        var ids = Set<String>()
        for (i, d) in disks.enumerated() {
            guard !d.path.isEmpty else { throw .invalid("disk", "disk \(i + 1) has no path") }
            guard ids.insert(d.id(index: i)).inserted else { throw .invalid("disk", "two disks with the id '\(d.id(index: i))'") }
            if let s = d.serial, s.utf8.count > 20 { throw .invalid("disk", "serial '\(s)' is longer than virtio's 20 bytes") }
            if d.bytesPerSecond == 0 || d.operationsPerSecond == 0 { throw .invalid("disk", "disk \(i + 1): a rate limit of 0 would stop it; leave it out for none") }
        }
        var taps = Set<String>()
        for (i, n) in nets.enumerated() {
            guard ids.insert(n.id(index: i)).inserted else { throw .invalid("net", "two devices with the id '\(n.id(index: i))'") }
            guard n.tap == NetConfig.automaticTap || TapName.isValid(n.tap) else {
                throw .invalid("net", "tap '\(n.tap)' is not an interface name (1 to 15 bytes, no '/', ':' or spaces) or 'auto'")
            }
            if n.tap != NetConfig.automaticTap, !taps.insert(n.tap).inserted { throw .invalid("net", "two devices on the TAP '\(n.tap)'") }
            for (what, v) in [("rx-bw", n.receive.bytesPerSecond), ("rx-pps", n.receive.operationsPerSecond),
                              ("tx-bw", n.transmit.bytesPerSecond), ("tx-pps", n.transmit.operationsPerSecond)] where v == 0 {
                throw .invalid("net", "\(n.id(index: i)): \(what)=0 would stop it; leave it out for none")
            }
        }
        if let v = vsock {
            guard v.cid >= 3, v.cid <= VsockConfig.maximumCID else {
                throw .invalid("vsock", "CID \(v.cid) is reserved (0-2 are the hypervisor, local and host); give 3 to \(VsockConfig.maximumCID)")
            }
            guard !v.socketPath.isEmpty else { throw .invalid("vsock", "needs socket=PATH: the Unix socket host programs connect to") }
            guard v.socketPath.utf8.count <= VsockConfig.maximumSocketPath else {
                throw .invalid("vsock", "socket path '\(v.socketPath)' is longer than \(VsockConfig.maximumSocketPath) bytes (a Unix socket's path, with room for _PORT)")
            }
        }
        if case let .flat(_, mode, load, entry) = boot {
            if mode == .real, let load, load >= 0x10_0000 {
                throw .invalid("load-address", "0x\(String(load, radix: 16)) is beyond the 1 MiB real mode can reach")
            }
            if mode == .real, let entry, entry >= 0x10_0000 {
                throw .invalid("entry", "0x\(String(entry, radix: 16)) is beyond the 1 MiB real mode can reach")
            }
        }
    }
}

/// The virtio transport: `--virtio-transport pci|mmio`, `"virtioTransport"` in JSON.
public enum VirtioTransportKind: String, Equatable, Sendable, CaseIterable {
    case pci, mmio
}

/// One virtio-blk disk: a raw image file or a block device.
public struct DiskConfig: Equatable, Sendable {
    public var path: String
    public var readOnly: Bool
    /// The device's id (what `inspect` shows); default `vda`, `vdb`...
    public var id: String?
    /// What the guest reads with GET_ID (at most 20 bytes); default the file's name.
    public var serial: String?
    /// O_DIRECT: bypass the host's page cache (`direct`, `cache=none`); the guest's
    /// buffers must then be aligned as the host's disk wants, which Linux's are.
    public var direct = false
    /// Rate limits (token buckets refilled each second): bytes and requests a second.
    public var bytesPerSecond: UInt64?
    public var operationsPerSecond: UInt64?

    public init(path: String, readOnly: Bool = false, id: String? = nil, serial: String? = nil) {
        self.path = path
        self.readOnly = readOnly
        self.id = id
        self.serial = serial
    }

    /// `vda`, `vdb`... for the disk at `index`, unless an id was given.
    public func id(index: Int) -> String {
        id ?? "vd" + String(UnicodeScalar(UInt8(97 + index % 26)))
    }
}

/// One virtio-net device: a TAP interface (existing, or `auto`: made and named after the
/// VM), its MAC, id and rate limits each way.
public struct NetConfig: Equatable, Sendable {
    public static let automaticTap = "auto"
    public var tap: String
    /// nil: derived from the VM's name and the id, random for an unnamed VM.
    public var mac: MACAddress?
    /// The device's id (what `inspect` shows); default `eth0`, `eth1`...
    public var id: String?
    /// Token buckets: bytes and frames a second, from the guest (`transmit`) and to it
    /// (`receive`).
    public var receive = RateLimit()
    public var transmit = RateLimit()

    public init(tap: String, mac: MACAddress? = nil, id: String? = nil) {
        self.tap = tap
        self.mac = mac
        self.id = id
    }

    public func id(index: Int) -> String { id ?? "eth\(index)" }

    /// The MAC the guest sees for the device at `index` of the VM `name`.
    public func address(index: Int, vm name: String?) -> MACAddress {
        mac ?? name.map { MACAddress.derived(vm: $0, device: id(index: index)) } ?? MACAddress.random()
    }

    /// The interface to open: the given one, or for `auto` one named after the VM
    /// (`sv-NAME`, or a hash of it when that is longer than an interface name may be;
    /// `svtapN`, the kernel choosing N, for an unnamed VM).
    public func interfaceName(index: Int, vm name: String?) -> String {
        guard tap == NetConfig.automaticTap else { return tap }
        guard let name else { return "svtap%d" }
        let suffix = index == 0 ? "" : "-\(index)"
        let plain = "sv-" + name + suffix
        if TapName.isValid(plain) { return plain }
        var hash: UInt32 = 0x811c_9dc5
        for b in Array(name.utf8) + Array(suffix.utf8) { hash = (hash ^ UInt32(b)) &* 0x0100_0193 }
        return "sv-" + String(hash, radix: 16)
    }
}

/// A virtio-vsock device: the guest's context id and the Unix socket host programs use
/// (`CONNECT PORT`; the guest's connections to host port P reach `PATH_P`).
public struct VsockConfig: Equatable, Sendable {
    public static let maximumCID: UInt64 = 0xFFFF_FFFE
    /// sun_path holds 107 bytes; `_4294967295` must fit after the path.
    public static let maximumSocketPath = 107 - 11
    public var cid: UInt64
    public var socketPath: String
    public init(cid: UInt64, socketPath: String) {
        self.cid = cid
        self.socketPath = socketPath
    }
}

/// What Linux accepts as an interface name (dev_valid_name): 1 to 15 bytes, not "." or
/// "..", no '/', ':' or white space.
public enum TapName {
    public static func isValid(_ name: String) -> Bool {
        let b = Array(name.utf8)
        guard !b.isEmpty, b.count <= 15, name != ".", name != ".." else { return false }
        return !b.contains { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 32 || $0 == 127 }
    }
}

/// What the machine boots.
public enum BootSource: Equatable, Sendable {
    /// The built-in demo guest (see `DemoGuest`).
    case demo
    /// A raw binary from a file, entered directly in `mode`.
    case flat(path: String, mode: CPUMode, loadAddress: UInt64?, entry: UInt64?)
    /// A raw binary already in memory (library users, tests).
    case flatImage(FlatBinary)
    /// A kernel file, its command line and an optional initial RAM disk (a Multiboot
    /// kernel's one module). The format is recognised from the file.
    case kernel(path: String, commandLine: String, initrd: String?)

    public static func == (a: BootSource, b: BootSource) -> Bool {
        switch (a, b) {
        case (.demo, .demo): true
        case let (.flat(p1, m1, l1, e1), .flat(p2, m2, l2, e2)): p1 == p2 && m1 == m2 && l1 == l2 && e1 == e2
        case let (.kernel(p1, c1, i1), .kernel(p2, c2, i2)): p1 == p2 && c1 == c2 && i1 == i2
        case let (.flatImage(x), .flatImage(y)): x.bytes == y.bytes && x.mode == y.mode && x.loadAddress == y.loadAddress && x.entry == y.entry && x.userAccessible == y.userAccessible
        default: false
        }
    }
}

/// A configuration that cannot work, naming the setting and what is wrong with it.
public enum ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalid(String, String)

    public var description: String {
        switch self {
        case let .invalid(field, why): "invalid --\(field): \(why)"
        }
    }
}
