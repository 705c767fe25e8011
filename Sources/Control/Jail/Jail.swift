import CLinux
import Devices
import Glibc

/// The jailed launch (Firecracker's jailer, done by the VMM process itself before it
/// starts any thread): new PID, mount, IPC, UTS, cgroup and network namespaces; a
/// private root (a small read-only tmpfs) holding only the files the plan names, bound
/// at their own paths; a fresh /proc; resource limits and, where cgroup v2 offers the
/// controllers, a cgroup; `no_new_privs` and no capabilities. Seccomp comes on top,
/// per thread, once set-up is done.
///
/// A process cannot move itself into a new PID namespace, only its children, so the
/// VMM process the user started (`start`) runs the jailed VMM as its child, which
/// enters the rest of the jail itself (`enter`) and learns its pid as the host sees it
/// (what the state directory records: a `kill` of the pid file's number must reach the
/// VMM, never the host's init). The parent stays outside as the child's supervisor: it
/// passes on stop signals, and when the child ends it removes the cgroup and ends the
/// same way, so whoever started the VMM (a shell, `swiftvisor run --detach`) sees the
/// exit status it would have seen without the jail. If the supervisor is killed, the
/// kernel kills the VMM too.
///
/// The VMM needs no shared library inside: everything it links is mapped before the
/// root changes, and it loads nothing later.
public enum Jail {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
        /// A file the plan names does not exist (exit code 66 rather than 71).
        public let missingFile: Bool
        init(_ description: String, missingFile: Bool = false) {
            self.description = "jail: " + description
            self.missingFile = missingFile
        }
    }

    /// Where the private root is built: a tmpfs mounted over /tmp in the jail's own
    /// mount namespace (the host's /tmp is untouched; files under it were opened first).
    static let staging = "/tmp"

    /// In the process the user started: checks what can be checked, makes the cgroup,
    /// starts the jailed VMM in a new PID namespace (this executable again, run with
    /// `arguments(syncFD)`; the child calls `enter` with that fd) and supervises it.
    /// Throws only before the child exists; otherwise exits as the child does.
    ///
    /// The child execs rather than runs on from the fork: the Swift runtime caches each
    /// thread's id for its locks (priority-inheritance futexes hold the owner's tid), and
    /// a forked child into a new PID namespace has a new tid the cache does not know.
    public static func start(_ plan: JailPlan, arguments: (Int32) -> [String], note: (String) -> Void = { _ in }) throws(Failure) -> Never {
        try checkSources(plan)
        if let path = plan.networkNamespace, access(path, R_OK) != 0 {
            let e = errno
            throw Failure("cannot open the network namespace \(path): \(String(cString: strerror(e)))", missingFile: e == ENOENT)
        }
        var cgroup: String? = nil
        if let limits = plan.cgroup {
            switch Cgroup.make(limits) {
            case let .success(path): cgroup = path
            case let .failure(why): note("no cgroup limits: \(why)")
            }
        }

        // SIGCHLD is held from before the fork, so a child that ends at once is still
        // heard (an unheld SIGCHLD with its default action is discarded).
        var held = sigset_t()
        sigemptyset(&held)
        sigaddset(&held, SIGCHLD)
        pthread_sigmask(SIG_BLOCK, &held, nil)

        var pipeFDs: [Int32] = [-1, -1]
        let piped = clinux_pipe_cloexec(&pipeFDs)
        guard piped == 0 else {
            Cgroup.remove(cgroup)
            throw Failure("pipe: \(String(cString: strerror(-piped)))")
        }
        let argv = [CommandLine.arguments.first ?? "swiftvisor"] + arguments(pipeFDs[0])
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
        cArgs.append(nil)
        let r = clinux_unshare(CLINUX_CLONE_NEWPID)
        guard r == 0 else {
            close(pipeFDs[0]); close(pipeFDs[1])
            Cgroup.remove(cgroup)
            let hint = -r == EPERM ? " (making namespaces needs root: run it as root, or without --jail)" : ""
            throw Failure("cannot make a PID namespace: \(String(cString: strerror(-r)))\(hint)")
        }
        let child = fork()
        if child == 0 {
            // Only async-signal-safe calls between fork and exec.
            _ = fcntl(pipeFDs[0], F_SETFD, 0)
            pthread_sigmask(SIG_UNBLOCK, &held, nil)
            execv("/proc/self/exe", &cArgs)
            _exit(127)
        }
        for p in cArgs { free(p) }
        close(pipeFDs[0])
        guard child > 0 else {
            let e = errno
            close(pipeFDs[1])
            Cgroup.remove(cgroup)
            throw Failure("fork: \(String(cString: strerror(e)))")
        }
        if let cgroup, let why = Cgroup.join(cgroup, pid: child) { note("not in the cgroup: \(why)") }
        // Tell the child its host pid; it waits for this, so it is in the cgroup before
        // it allocates anything.
        var hostPid = child
        _ = withUnsafeBytes(of: &hostPid) { write(pipeFDs[1], $0.baseAddress, $0.count) }
        close(pipeFDs[1])
        supervise(child, cgroup: cgroup)
    }

    /// In the jailed child (started by `start`), before it starts any thread: enters the
    /// jail and returns its pid as the host sees it.
    public static func enter(_ plan: JailPlan, syncFD: Int32) throws(Failure) -> pid_t {
        // The supervisor's death ends the VMM; if it is already gone, the pipe says so.
        _ = clinux_set_parent_death_signal(SIGKILL)
        var hostPid: pid_t = 0
        let n = withUnsafeMutableBytes(of: &hostPid) { read(syncFD, $0.baseAddress, $0.count) }
        close(syncFD)
        guard n == MemoryLayout<pid_t>.size, getpid() == 1 else { throw Failure("the jail's supervisor is gone") }
        var netns: Int32 = -1
        if let path = plan.networkNamespace {
            netns = open(path, O_RDONLY | O_CLOEXEC)
            guard netns >= 0 else { throw Failure("cannot open the network namespace \(path): \(String(cString: strerror(errno)))", missingFile: errno == ENOENT) }
        }
        defer { if netns >= 0 { close(netns) } }
        try build(plan, mounts: ordered(plan), netns: netns)
        return hostPid
    }

    /// Parents before what is bound inside them.
    private static func ordered(_ plan: JailPlan) -> [JailPlan.Mount] {
        plan.mounts.sorted { plan.absolute($0.path).utf8.count < plan.absolute($1.path).utf8.count }
    }

    /// Every file the plan names exists: a clear error (exit 66) rather than a mount's.
    private static func checkSources(_ plan: JailPlan) throws(Failure) {
        for m in plan.mounts {
            var st = stat()
            guard stat(plan.absolute(m.path), &st) == 0 else {
                let e = errno
                throw Failure("cannot reach \(m.path), which the VM needs: \(String(cString: strerror(e)))", missingFile: e == ENOENT)
            }
        }
    }

    /// In the child: the namespaces, the private root, the limits, the privileges.
    private static func build(_ plan: JailPlan, mounts: [JailPlan.Mount], netns: Int32) throws(Failure) {
        if netns >= 0 {
            try check(clinux_setns(netns, CLINUX_CLONE_NEWNET), "cannot join the network namespace \(plan.networkNamespace ?? "")")
        } else {
            try check(clinux_unshare(CLINUX_CLONE_NEWNET), "cannot make a network namespace")
        }
        // The VM's TAPs live in this namespace; opening one needs /dev/net/tun and, for
        // most, CAP_NET_ADMIN, both gone once the jail is built.
        do { try TapDevice.openAhead(plan.taps) } catch { throw Failure(error.description) }
        try check(clinux_unshare(CLINUX_CLONE_NEWNS | CLINUX_CLONE_NEWIPC | CLINUX_CLONE_NEWUTS | CLINUX_CLONE_NEWCGROUP), "cannot make mount, IPC, UTS and cgroup namespaces")
        // Nothing mounted from here on may reach the host's namespace.
        try mountOrFail(nil, "/", nil, UInt(MS_REC | MS_PRIVATE), "making the mounts private")
        // Opened in this namespace (a bind's source must be in the caller's), before the
        // tmpfs can hide any of them.
        var sources: [(mount: JailPlan.Mount, fd: Int32)] = []
        defer { for s in sources { close(s.fd) } }
        for m in mounts {
            let fd = open(plan.absolute(m.path), CLINUX_O_PATH | O_CLOEXEC)
            guard fd >= 0 else { throw Failure("cannot reach \(m.path), which the VM needs: \(String(cString: strerror(errno)))", missingFile: errno == ENOENT) }
            sources.append((m, fd))
        }
        try mountOrFail("tmpfs", staging, "tmpfs", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), "a tmpfs for the private root", data: "size=1m,mode=0755")

        for (m, fd) in sources {
            let path = plan.absolute(m.path)
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw Failure("cannot read what \(m.path) is: \(String(cString: strerror(errno)))") }
            let kind = st.st_mode & S_IFMT
            let target = staging + path
            try makeParents(of: target)
            if kind == S_IFDIR {
                if mkdir(target, 0o755) != 0 && errno != EEXIST { throw Failure("mkdir \(path): \(String(cString: strerror(errno)))") }
            } else if access(target, F_OK) != 0 {
                let f = open(target, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
                guard f >= 0 else { throw Failure("cannot make a mount point for \(path): \(String(cString: strerror(errno)))") }
                close(f)
            }
            try mountOrFail("/proc/self/fd/\(fd)", target, nil, UInt(MS_BIND | (kind == S_IFDIR ? MS_REC : 0)), "binding \(m.path)")
            // Devices keep device access (the KVM node); nothing bound runs programs.
            var flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC
            if kind != S_IFCHR && kind != S_IFBLK { flags |= MS_NODEV }
            if !m.writable { flags |= MS_RDONLY }
            try mountOrFail(nil, target, nil, UInt(flags), "making \(m.path) \(m.writable ? "private" : "read-only")")
        }
        try makeParents(of: staging + plan.absolute(plan.workingDirectory) + "/.")
        for dir in ["/proc", "/.old"] where mkdir(staging + dir, 0o755) != 0 && errno != EEXIST {
            throw Failure("mkdir \(dir): \(String(cString: strerror(errno)))")
        }
        // /proc of the new PID namespace: the VMM reads its own status there.
        try mountOrFail("proc", staging + "/proc", "proc", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), "a /proc for the jail")
        try check(clinux_pivot_root(staging, staging + "/.old"), "cannot change the root (pivot_root)")
        guard chdir("/") == 0 else { throw Failure("chdir /: \(String(cString: strerror(errno)))") }
        guard umount2("/.old", Int32(MNT_DETACH)) == 0 else { throw Failure("cannot let go of the host's root: \(String(cString: strerror(errno)))") }
        rmdir("/.old")
        try mountOrFail(nil, "/", nil, UInt(MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC), "making the root read-only")
        guard chdir(plan.workingDirectory) == 0 else { throw Failure("chdir \(plan.workingDirectory): \(String(cString: strerror(errno)))") }

        try limit(Int32(RLIMIT_NOFILE.rawValue), plan.openFiles, "open files")
        // Counted from what is mapped already: a sanitizer's shadow memory alone is
        // terabytes of address space, reserved before main.
        let (space, overflow) = ProcessMemory.addressSpace().addingReportingOverflow(plan.addressSpace)
        try limit(Int32(RLIMIT_AS.rawValue), overflow ? UInt64.max : space, "address space")
        try limit(CLINUX_RLIMIT_NPROC, plan.processes, "processes")
        // A core dump would hold guest memory.
        try limit(Int32(RLIMIT_CORE.rawValue), 0, "core dump size")
        try check(clinux_set_no_new_privileges(), "cannot set no_new_privs")
        try check(clinux_drop_all_capabilities(), "cannot drop capabilities")
    }

    /// Creates every folder above `path` (each component as written, inside the
    /// staging root, which is ours alone).
    private static func makeParents(of path: String) throws(Failure) {
        var prefix = ""
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        for part in parts.dropLast() {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw Failure("mkdir \(prefix.dropFirst(staging.utf8.count)): \(String(cString: strerror(errno)))")
            }
        }
    }

    private static func check(_ result: Int32, _ what: String) throws(Failure) {
        guard result == 0 else { throw Failure("\(what): \(String(cString: strerror(-result)))") }
    }

    private static func mountOrFail(_ source: String?, _ target: String, _ type: String?, _ flags: UInt, _ what: String, data: String? = nil) throws(Failure) {
        let r: Int32
        if let data { r = data.withCString { d in mount(source, target, type, flags, d) } } else { r = mount(source, target, type, flags, nil) }
        guard r == 0 else { throw Failure("\(what): mount: \(String(cString: strerror(errno)))") }
    }

    private static func limit(_ resource: Int32, _ value: UInt64, _ what: String) throws(Failure) {
        var l = rlimit(rlim_cur: rlim_t(value), rlim_max: rlim_t(value))
        guard setrlimit(resource, &l) == 0 else { throw Failure("cannot limit \(what) to \(value): \(String(cString: strerror(errno)))") }
    }

    /// The parent's whole remaining life: pass stop signals to the jailed VMM, and when
    /// it ends, remove its cgroup and end the same way.
    private static func supervise(_ child: pid_t, cgroup: String?) -> Never {
        var waitFor = sigset_t()
        sigemptyset(&waitFor)
        for s in [SIGINT, SIGTERM, SIGHUP, SIGCHLD] { sigaddset(&waitFor, s) }
        pthread_sigmask(SIG_BLOCK, &waitFor, nil)
        while true {
            let signal = sigwaitinfo(&waitFor, nil)
            if signal > 0 && signal != SIGCHLD {
                kill(child, signal)
                continue
            }
            var status: Int32 = 0
            guard waitpid(child, &status, WNOHANG) == child else { continue }
            Cgroup.remove(cgroup)
            let terminatingSignal = status & 0x7f
            guard terminatingSignal != 0 else { exit((status >> 8) & 0xff) }
            // Die of the same signal, so the caller sees what it would have seen.
            Glibc.signal(terminatingSignal, SIG_DFL)
            var one = sigset_t()
            sigemptyset(&one)
            sigaddset(&one, terminatingSignal)
            pthread_sigmask(SIG_UNBLOCK, &one, nil)
            raise(terminatingSignal)
            _exit(128 + terminatingSignal)
        }
    }
}
