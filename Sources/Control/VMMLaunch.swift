import CLinux
import Glibc
import VMM

/// What `swiftvisor-cli` hands the VMM process (`swiftvisor --config-fd N`) it starts, or
/// the fast path builds in that process itself: the VM's
/// description plus how this process reports and whether it boots at once. JSON, in a
/// file (a named VM's `vmm.json`) or an fd (a memfd for a foreground VM), so the VMM
/// process needs no argument parser and no flag of its own is reachable from the
/// public command line.
///
///     {"vm": {...VMDescription...}, "stateDir": "/run/swiftvisor", "detached": false,
///      "start": true, "stats": false, "json": false, "restore": "/path/to/snapshot"}
public struct VMMLaunch: Equatable, Sendable, Decodable {
    public var vm: VMDescription
    /// A named VM (vm.name set) lives here: pid, result, API and console sockets.
    public var stateDirectory: String?
    /// The console goes to the state directory (log and socket), not the terminal.
    public var detached: Bool
    /// Boot at once; false for `swiftvisor create` (boots on `start` or the API).
    public var start: Bool
    /// Print the exit summary after the guest stops (always for the demo).
    public var stats: Bool
    /// Print the run report as JSON on stdout; the guest console goes to stderr.
    public var json: Bool
    /// List every device on stderr once the machine is built (`run --verbose`).
    public var verbose: Bool
    /// A snapshot's folder: the first boot restores it instead of booting `vm` (which
    /// is the snapshot's description, perhaps renamed).
    public var restore: String?

    public init(vm: VMDescription, stateDirectory: String? = nil, detached: Bool = false, start: Bool = true, stats: Bool = false, json: Bool = false,
                verbose: Bool = false, restore: String? = nil) {
        self.restore = restore
        self.vm = vm
        self.stateDirectory = stateDirectory
        self.detached = detached
        self.start = start
        self.stats = stats
        self.json = json
        self.verbose = verbose
    }

    enum Keys: String, CodingKey, CaseIterable { case vm, stateDir, detached, start, stats, json, verbose, restore }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        vm = try c.decode(VMDescription.self, forKey: .vm)
        stateDirectory = try c.decodeIfPresent(String.self, forKey: .stateDir)
        detached = try c.decodeIfPresent(Bool.self, forKey: .detached) ?? false
        start = try c.decodeIfPresent(Bool.self, forKey: .start) ?? true
        stats = try c.decodeIfPresent(Bool.self, forKey: .stats) ?? false
        json = try c.decodeIfPresent(Bool.self, forKey: .json) ?? false
        verbose = try c.decodeIfPresent(Bool.self, forKey: .verbose) ?? false
        restore = try c.decodeIfPresent(String.self, forKey: .restore)
    }

    public var jsonValue: JSONValue {
        var o: [(String, JSONValue)] = [("vm", vm.json)]
        if let stateDirectory { o.append(("stateDir", .string(stateDirectory))) }
        o += [("detached", .bool(detached)), ("start", .bool(start)), ("stats", .bool(stats)), ("json", .bool(json))]
        if verbose { o.append(("verbose", .bool(true))) }
        if let restore { o.append(("restore", .string(restore))) }
        return .object(o)
    }

    public struct Invalid: Error, CustomStringConvertible, Sendable { public let description: String }

    /// Reads and validates a launch document.
    public static func parse(_ text: String) throws(Invalid) -> VMMLaunch {
        let l: VMMLaunch
        do { l = try JSONValueDecoder().decode(VMMLaunch.self, from: try JSONValue.parse(text)) }
        catch let e as JSONValue.ParseError { throw Invalid(description: e.description) }
        catch { throw Invalid(description: "\(error)") }
        do { try l.vm.validate() } catch { throw Invalid(description: error.description) }
        guard !l.detached || (l.vm.name != nil && l.stateDirectory != nil) else {
            throw Invalid(description: "a detached VM needs a name and a state directory")
        }
        guard l.start || (l.vm.name != nil && l.stateDirectory != nil) else {
            throw Invalid(description: "a VM that does not boot at once needs a name and a state directory (its API starts it)")
        }
        return l
    }

    /// The document in a memfd (inherited across exec, so the description never touches
    /// the disk): what `read(fd:)` reads back. The fd, or why there is none.
    public func memfd() -> Result<Int32, Invalid> {
        let fd = clinux_memfd_create("swiftvisor-vm", 0)
        guard fd >= 0 else { return .failure(Invalid(description: "memfd_create: \(String(cString: strerror(errno)))")) }
        guard FileSystem.writeAll(fd, Array(jsonValue.rendered.utf8)) else {
            let why = String(cString: strerror(errno))
            close(fd)
            return .failure(Invalid(description: "writing the memfd: \(why)"))
        }
        return .success(fd)
    }

    /// Reads a launch document from `fd` (a memfd or a file), whole, from its start.
    public static func read(fd: Int32, limit: Int = 1 << 20) throws(Invalid) -> VMMLaunch {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var offset: off_t = 0
        while bytes.count <= limit {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw Invalid(description: "cannot read the VM description from fd \(fd): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            bytes += buffer.prefix(n)
            offset += off_t(n)
        }
        guard bytes.count <= limit else { throw Invalid(description: "the VM description is larger than \(limit) bytes") }
        return try parse(String(decoding: bytes, as: UTF8.self))
    }
}
