import Control
import CLinux
import Glibc
import KVM
import VMM

/// What `swiftvisor doctor` knows about a host: plain data, gathered from the running
/// system by `gather()` or written by hand in tests, and judged by `HostDiagnosis`.
public struct HostFacts: Sendable, Equatable {
    public struct CPU: Sendable, Equatable {
        public var vendor: String
        public var model: String
        public var flags: Set<String>
        public init(vendor: String, model: String, flags: Set<String>) {
            self.vendor = vendor; self.model = model; self.flags = flags
        }
    }

    public struct Device: Sendable, Equatable {
        public var exists: Bool
        public var isCharacterDevice: Bool
        /// Whether this user may open it for reading and writing.
        public var readWrite: Bool
        public var group: String
        /// Permission bits (e.g. 0o660).
        public var mode: UInt32
        public init(exists: Bool, isCharacterDevice: Bool = true, readWrite: Bool = true, group: String = "kvm", mode: UInt32 = 0o660) {
            self.exists = exists; self.isCharacterDevice = isCharacterDevice; self.readWrite = readWrite
            self.group = group; self.mode = mode
        }
        public static let missing = Device(exists: false, isCharacterDevice: false, readWrite: false, group: "", mode: 0)
    }

    public struct KVMInfo: Sendable, Equatable {
        public var apiVersion: Int32
        public var capabilities: [Capability: Int]
        public init(apiVersion: Int32, capabilities: [Capability: Int]) {
            self.apiVersion = apiVersion; self.capabilities = capabilities
        }
    }

    public var cpu: CPU
    /// Who the hypervisor under this host is, when it runs under one (CPUID leaf
    /// 0x40000000 signature or DMI), else nil.
    public var hypervisor: String?
    /// Loaded kernel modules (and built-in ones that show in /sys/module).
    public var modules: Set<String>
    /// Module parameters that matter here, as "module/parameter": value.
    public var parameters: [String: String]
    public var devicePath: String
    public var device: Device
    public var user: String
    public var isRoot: Bool
    /// Nil when `/dev/kvm` could not be opened; `kvmError` then says why.
    public var kvm: KVMInfo?
    public var kvmError: String?
    /// Optional host devices and whether each exists, in report order.
    public var optionalDevices: [String: Bool]
    public var hugePages: Int
    /// The live probe's results, when it ran.
    public var probe: ProbeResult?
    /// The cgroup v2 hierarchy and which of the controllers `--jail` uses it offers
    /// (nil: no cgroup v2).
    public var cgroupMount: String?
    public var cgroupControllers: [String] = []

    public init(cpu: CPU, hypervisor: String? = nil, modules: Set<String>, parameters: [String: String] = [:],
                devicePath: String = "/dev/kvm", device: Device, user: String = "user", isRoot: Bool = false,
                kvm: KVMInfo?, kvmError: String? = nil, optionalDevices: [String: Bool] = [:], hugePages: Int = 0,
                probe: ProbeResult? = nil) {
        self.cpu = cpu; self.hypervisor = hypervisor; self.modules = modules; self.parameters = parameters
        self.devicePath = devicePath; self.device = device; self.user = user; self.isRoot = isRoot
        self.kvm = kvm; self.kvmError = kvmError; self.optionalDevices = optionalDevices
        self.hugePages = hugePages; self.probe = probe
    }

    public static let optionalDevicePaths = ["/dev/net/tun", "/dev/vhost-vsock", "/dev/vhost-net"]

    /// Reads this host. `probe` runs the live probe (a few tiny VMs) when KVM opens.
    public static func gather(devicePath: String = "/dev/kvm", probe runProbe: Bool = true) -> HostFacts {
        let cpuinfo = FileSystem.readText("/proc/cpuinfo") ?? ""
        var modules = Set<String>()
        if let text = FileSystem.readText("/proc/modules") {
            for line in text.split(separator: "\n") { if let name = line.split(separator: " ").first { modules.insert(String(name)) } }
        }
        for name in ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm", "vhost_vsock", "vhost_net", "tun"] where exists("/sys/module/\(name)") {
            modules.insert(name)
        }
        var parameters: [String: String] = [:]
        for key in ["kvm_intel/nested", "kvm_amd/nested", "kvm_pvm/nested_pvm"] {
            if let v = FileSystem.readText("/sys/module/\(key.split(separator: "/")[0])/parameters/\(key.split(separator: "/")[1])") {
                parameters[key] = v.trimmingWhitespace
            }
        }
        let cpu = parseCPUInfo(cpuinfo)
        var facts = HostFacts(cpu: cpu, hypervisor: hypervisorName(flags: cpu.flags),
                              modules: modules, parameters: parameters, devicePath: devicePath,
                              device: inspectDevice(devicePath), user: currentUser(), isRoot: geteuid() == 0, kvm: nil)
        do {
            let system = try KVMSystem(path: devicePath)
            var caps: [Capability: Int] = [:]
            for c in Capability.allCases { caps[c] = system.check(c) }
            facts.kvm = KVMInfo(apiVersion: system.apiVersion, capabilities: caps)
        } catch {
            facts.kvmError = error.description
        }
        for p in optionalDevicePaths { facts.optionalDevices[p] = exists(p) }
        facts.cgroupMount = Cgroup.unifiedMount()
        facts.cgroupControllers = facts.cgroupMount.map { Cgroup.controllers(at: $0) } ?? []
        facts.hugePages = Int((FileSystem.readText("/proc/sys/vm/nr_hugepages") ?? "0").trimmingWhitespace) ?? 0
        if runProbe, facts.kvm != nil {
            facts.probe = HostProbe.run(devicePath: devicePath)
        }
        return facts
    }

    /// The first processor's vendor, model and flags from /proc/cpuinfo text.
    public static func parseCPUInfo(_ text: String) -> CPU {
        var cpu = CPU(vendor: "unknown", model: "unknown", flags: [])
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty && cpu.vendor != "unknown" { break } // first processor only
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmingWhitespace, value = parts[1].trimmingWhitespace
            switch key {
            case "vendor_id": cpu.vendor = value
            case "model name": cpu.model = value
            case "flags": cpu.flags = Set(value.split(separator: " ").map(String.init))
            default: break
            }
        }
        return cpu
    }

    static func hypervisorName(flags: Set<String>) -> String? {
        guard flags.contains("hypervisor") else { return nil }
        var regs: [UInt32] = [0, 0, 0, 0]
        regs.withUnsafeMutableBufferPointer { clinux_cpuid(0x4000_0000, 0, $0.baseAddress!) }
        var bytes: [UInt8] = []
        for r in [regs[1], regs[2], regs[3]] { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: r >> (8 * UInt32(i)))) } }
        let signature = String(decoding: bytes.filter { $0 >= 0x20 && $0 < 0x7F }, as: UTF8.self).trimmingWhitespace
        let known = ["KVMKVMKVM": "KVM", "Microsoft Hv": "Hyper-V", "VMwareVMware": "VMware", "XenVMMXenVMM": "Xen",
                     "TCGTCGTCGTCG": "QEMU (TCG)", "ACRNACRNACRN": "ACRN", "VBoxVBoxVBox": "VirtualBox", "bhyve bhyve": "bhyve"]
        if let name = known[signature] { return name }
        if let vendor = FileSystem.readText("/sys/class/dmi/id/sys_vendor")?.trimmingWhitespace, !vendor.isEmpty { return vendor }
        return signature.isEmpty ? "unknown hypervisor" : signature
    }

    static func inspectDevice(_ path: String) -> Device {
        var st = stat()
        guard stat(path, &st) == 0 else { return .missing }
        let group = getgrgid(st.st_gid).map { String(cString: $0.pointee.gr_name) } ?? String(st.st_gid)
        return Device(exists: true, isCharacterDevice: (st.st_mode & S_IFMT) == S_IFCHR,
                      readWrite: access(path, R_OK | W_OK) == 0, group: group, mode: UInt32(st.st_mode & 0o7777))
    }

    static func currentUser() -> String {
        if let pw = getpwuid(geteuid()) { return String(cString: pw.pointee.pw_name) }
        return String(geteuid())
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

}

extension StringProtocol {
    var trimmingWhitespace: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
