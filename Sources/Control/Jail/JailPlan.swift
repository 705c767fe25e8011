/// What a jailed VMM may reach and use (`Jail.enter` carries it out): the host files
/// and folders it sees, each at the path it already has, so the VM's description works
/// unchanged inside; the network namespace it lives in; and the limits on its
/// resources. The plan is a value, built from a VM's description (`Control`), so what a
/// jail holds can be printed and tested without making one.
public struct JailPlan: Equatable, Sendable {
    /// A host file, device or folder bound into the private root at `path` (absolute, or
    /// relative to `workingDirectory`), read-only unless `writable`.
    public struct Mount: Equatable, Sendable {
        public var path: String
        public var writable: Bool
        public init(path: String, writable: Bool) {
            self.path = path
            self.writable = writable
        }
    }

    /// Limits a cgroup (v2) enforces on the whole jail, where the host lets us make one.
    public struct CgroupLimits: Equatable, Sendable {
        /// The leaf's name under `swiftvisor/` (the VM's name, or `vmm-PID`).
        public var name: String
        /// `memory.max`: guest RAM, the VMM's own memory and the page cache it causes.
        public var memoryBytes: UInt64
        /// `cpu.max` in CPUs (1.5 = one and a half CPUs' time each period).
        public var cpus: Double
        /// `pids.max`: threads count.
        public var tasks: UInt64
        public init(name: String, memoryBytes: UInt64, cpus: Double, tasks: UInt64) {
            self.name = name
            self.memoryBytes = memoryBytes
            self.cpus = cpus
            self.tasks = tasks
        }
    }

    public var mounts: [Mount]
    /// The process's working directory, recreated inside so relative paths still work.
    public var workingDirectory: String
    /// Join this network namespace (a path like `/run/netns/NAME`) instead of a new,
    /// empty one.
    public var networkNamespace: String?
    /// TAP interfaces opened in that namespace before the jail takes CAP_NET_ADMIN and
    /// /dev away (the VM's network devices).
    public var taps: [String] = []
    /// RLIMIT_NOFILE.
    public var openFiles: UInt64
    /// RLIMIT_AS beyond what the process maps when it enters the jail: guest RAM is
    /// mapped into the VMM later, so this bounds it and what else the process can map.
    public var addressSpace: UInt64
    /// RLIMIT_NPROC (binds an unprivileged uid only: the kernel exempts root).
    public var processes: UInt64
    public var cgroup: CgroupLimits?

    public init(mounts: [Mount], workingDirectory: String, networkNamespace: String? = nil, openFiles: UInt64 = 4096,
                addressSpace: UInt64, processes: UInt64 = 512, cgroup: CgroupLimits? = nil) {
        self.mounts = mounts
        self.workingDirectory = workingDirectory
        self.networkNamespace = networkNamespace
        self.openFiles = openFiles
        self.addressSpace = addressSpace
        self.processes = processes
        self.cgroup = cgroup
    }

    /// `path` as the jail sees it from its root.
    public func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : (workingDirectory.hasSuffix("/") ? workingDirectory : workingDirectory + "/") + path
    }
}
