import Glibc
import VMM

/// Where named VMs live: one folder per VM under a root, holding what the VMM process
/// and the CLI share.
///
///     ROOT/NAME/config.json   the VM's description (the API's schema)
///     ROOT/NAME/pid           the VMM process
///     ROOT/NAME/api.sock      the control API (HTTP/JSON, mode 0600)
///     ROOT/NAME/console.sock  the serial console, for `swiftvisor console`
///     ROOT/NAME/console.log   what the guest printed (console.log.1 before it, once full)
///     ROOT/NAME/vmm.log       the VMM process's own messages
///     ROOT/NAME/result.json   how it ended (written when the VMM exits)
///
/// ROOT is `--state-dir`, else `$SWIFTVISOR_STATE_DIR`, else `$XDG_RUNTIME_DIR/swiftvisor`,
/// else `/run/swiftvisor` for root and `/tmp/swiftvisor-UID` for others.
public struct StateDirectory: Sendable {
    public let root: String

    public init(root: String) { self.root = root }

    public static func resolve(_ explicit: String?) -> StateDirectory {
        if let explicit { return StateDirectory(root: explicit) }
        if let p = getenv("SWIFTVISOR_STATE_DIR"), p.pointee != 0 { return StateDirectory(root: String(cString: p)) }
        if let p = getenv("XDG_RUNTIME_DIR"), p.pointee != 0 { return StateDirectory(root: String(cString: p) + "/swiftvisor") }
        return StateDirectory(root: geteuid() == 0 ? "/run/swiftvisor" : "/tmp/swiftvisor-\(geteuid())")
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public enum Kind: Sendable { case invalidName, exists, notFound, io }
        public let kind: Kind
        public let description: String
    }

    /// Names are what a shell script can pass around unquoted.
    public static func validate(name: String) throws(Failure) {
        let ok = !name.isEmpty && name.count <= 64 && name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
        } && name.first != "." && name.first != "-"
        guard ok else {
            throw Failure(kind: .invalidName, description: "invalid VM name '\(name)': use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.' or '-'")
        }
    }

    public func folder(_ name: String) -> String { root + "/" + name }
    public func path(_ name: String, _ file: String) -> String { folder(name) + "/" + file }

    /// Creates the VM's folder; fails if the name is taken.
    public func create(_ name: String) throws(Failure) {
        try StateDirectory.validate(name: name)
        try makeRoot()
        if mkdir(folder(name), 0o700) != 0 {
            if errno == EEXIST {
                throw Failure(kind: .exists, description: "a VM named '\(name)' already exists (see `swiftvisor ls`; `swiftvisor rm \(name)` removes a stopped one)")
            }
            throw Failure(kind: .io, description: "cannot create \(folder(name)): \(String(cString: strerror(errno)))")
        }
    }

    func makeRoot() throws(Failure) {
        if let why = FileSystem.makeDirectories(root, mode: 0o700) {
            throw Failure(kind: .io, description: "cannot create the state directory \(root): \(why) (set --state-dir or SWIFTVISOR_STATE_DIR)")
        }
    }

    public func exists(_ name: String) -> Bool { access(folder(name), F_OK) == 0 }

    public func require(_ name: String) throws(Failure) {
        try StateDirectory.validate(name: name)
        guard exists(name) else { throw Failure(kind: .notFound, description: "no VM named '\(name)' (see `swiftvisor ls`)") }
    }

    /// The names of all VMs, sorted.
    public func names() -> [String] {
        (FileSystem.entries(of: root) ?? []).filter { name in
            (try? StateDirectory.validate(name: name)) != nil && access(folder(name) + "/config.json", F_OK) == 0
        }.sorted()
    }

    /// Removes the VM's folder and everything in it.
    public func remove(_ name: String) throws(Failure) {
        try require(name)
        for file in ["config.json", "vmm.json", "pid", "api.sock", "console.sock", "console.log", "console.log.1", "vmm.log", "result.json", "started"] {
            unlink(path(name, file))
        }
        guard rmdir(folder(name)) == 0 else {
            throw Failure(kind: .io, description: "cannot remove \(folder(name)): \(String(cString: strerror(errno)))")
        }
    }

    // MARK: Small files

    public func write(_ text: String, to name: String, _ file: String) throws(Failure) {
        if let why = FileSystem.writeAtomically(Array(text.utf8), to: path(name, file)) {
            throw Failure(kind: .io, description: why)
        }
    }

    public func read(_ name: String, _ file: String) -> String? { FileSystem.readText(path(name, file)) }

    public func pid(_ name: String) -> pid_t? { read(name, "pid").flatMap { pid_t($0.trimmingSpaces.filter { $0 != "\n" }) } }

    /// Whether `pid` is a live VMM process (not a recycled pid): `swiftvisor` running a
    /// launch document, as swiftvisor-cli starts a named VM.
    public static func isVMM(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        let fd = open("/proc/\(pid)/cmdline", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
        guard n > 0 else { return false }
        let words = buffer.prefix(n).split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard let program = words.first?.split(separator: "/").last, program.hasPrefix("swiftvisor") else { return false }
        return ["--config", "--config-fd", "--jailed"].contains(words.dropFirst().first ?? "")
    }
}
