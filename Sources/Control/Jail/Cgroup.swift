import Glibc
import VMM

/// A jailed VMM's cgroup (v2): `swiftvisor/NAME` under the unified hierarchy, with
/// `memory.max`, `cpu.max` and `pids.max`, made by the jail's supervisor before the
/// VMM runs and removed after it ends. Hosts that keep these controllers in cgroup v1
/// (or delegate none of them to us) get no cgroup; the jail says so and goes on, as
/// the README and `doctor` explain.
public enum Cgroup {
    struct Unavailable: Error, CustomStringConvertible { let description: String }

    /// The unified hierarchy's mount point, from /proc/self/mountinfo.
    public static func unifiedMount() -> String? {
        guard let text = FileSystem.readText("/proc/self/mountinfo") else { return nil }
        for line in text.split(separator: "\n") {
            let halves = line.split(separator: " - ", maxSplits: 1, omittingEmptySubsequences: false)
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ")
            if fields.count > 4 { return String(fields[4]) }
        }
        return nil
    }

    /// Which of the controllers the jail uses the unified hierarchy offers.
    public static func controllers(at mount: String) -> [String] {
        let offered = FileSystem.readText(mount + "/cgroup.controllers", limit: 4096)?.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init) ?? []
        return ["memory", "cpu", "pids"].filter { offered.contains($0) }
    }

    /// Makes the VM's cgroup with its limits; its path, or why there is none.
    static func make(_ limits: JailPlan.CgroupLimits) -> Result<String, Unavailable> {
        guard let mount = unifiedMount() else { return .failure(.init(description: "this host has no cgroup v2 hierarchy")) }
        let available = controllers(at: mount)
        guard available.contains("memory") || available.contains("cpu") else {
            return .failure(.init(description: "cgroup v2 at \(mount) has no memory or cpu controller (they are in cgroup v1 on this host)"))
        }
        let enable = available.map { "+" + $0 }.joined(separator: " ")
        let base = mount + "/swiftvisor"
        if mkdir(base, 0o755) != 0 && errno != EEXIST { return .failure(.init(description: "mkdir \(base): \(String(cString: strerror(errno)))")) }
        for parent in [mount, base] {
            if let why = write(enable, to: parent + "/cgroup.subtree_control") { return .failure(.init(description: why)) }
        }
        let leaf = base + "/" + limits.name
        if mkdir(leaf, 0o755) != 0 {
            // A leftover of a VMM that was killed with its supervisor: empty, so reusable.
            guard errno == EEXIST else { return .failure(.init(description: "mkdir \(leaf): \(String(cString: strerror(errno)))")) }
        }
        var settings: [(String, String)] = []
        if available.contains("memory") { settings.append(("memory.max", String(limits.memoryBytes))) }
        if available.contains("cpu") {
            let period = 100_000.0
            let quota = max(1000, min(limits.cpus * period, 1e12))
            settings.append(("cpu.max", "\(Int64(quota)) \(Int64(period))"))
        }
        if available.contains("pids") { settings.append(("pids.max", String(limits.tasks))) }
        for (file, value) in settings {
            if let why = write(value, to: leaf + "/" + file) {
                remove(leaf)
                return .failure(.init(description: why))
            }
        }
        return .success(leaf)
    }

    /// Moves `pid` into the cgroup at `path`; why not, or nil.
    static func join(_ path: String, pid: pid_t) -> String? { write(String(pid), to: path + "/cgroup.procs") }

    /// Removes an emptied cgroup (the kernel frees its last task a moment after the
    /// task's parent has reaped it, hence the retries).
    static func remove(_ path: String?) {
        guard let path else { return }
        for _ in 0..<50 {
            if rmdir(path) == 0 || errno != EBUSY { return }
            usleep(10_000)
        }
    }

    private static func write(_ text: String, to path: String) -> String? {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return "\(path): \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        return FileSystem.writeAll(fd, Array(text.utf8)) ? nil : "writing '\(text)' to \(path): \(String(cString: strerror(errno)))"
    }
}
