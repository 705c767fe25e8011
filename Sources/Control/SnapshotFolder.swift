import Devices
import Glibc
import VMM

/// A snapshot on disk (README "Snapshots"): a folder holding
///
///     header     "SWIFTVISOR-SNAPSHOT 1 crc32=XXXXXXXX" on its first line, then JSON: the
///                format, the VM's description, the CPU it depends on, the memory
///                file's size, and each state file's size and CRC-32
///     vcpu-N     each vCPU's registers, LAPIC, MSRs, events, CPUID
///     vm         the irqchip, PIT and kvmclock
///     devices    each device's state, by id
///     memory     guest RAM, sparse (holes where the guest had zeros)
///
/// Written into a hidden sibling folder and renamed into place at the end, so a
/// snapshot that is there is whole; read back with every size and checksum checked
/// before anything trusts it (the memory file by size only, so that a restore does not
/// read all of guest RAM).
public enum SnapshotFolder {
    public static let magic = "SWIFTVISOR-SNAPSHOT"
    public static let formatVersion = 1
    /// No state file is larger (a vCPU's is about 8 KiB, the devices' under 100 KiB).
    static let partLimit = 64 << 20

    /// What a snapshot took.
    public struct Summary: Sendable {
        public let path: String
        public let memoryBytes: UInt64
        /// Guest memory actually written (the file's other pages are holes).
        public let memoryWritten: UInt64
        public let stateBytes: Int
        public let nanoseconds: UInt64

        public var json: JSONValue {
            .object([("path", .string(path)), ("memoryBytes", .uint(memoryBytes)), ("memoryWritten", .uint(memoryWritten)),
                     ("stateBytes", .int(Int64(stateBytes))), ("milliseconds", .double(Double(nanoseconds / 1000) / 1000))])
        }
    }

    /// A snapshot read back and checked.
    public struct Loaded: Sendable {
        public let path: String
        public let description: VMDescription
        public let state: MachineSnapshot
        public var memoryPath: String { path + "/memory" }
    }

    /// Saves `machine` (paused by the caller) described by `description` into `path`,
    /// which must not exist (or be an empty folder).
    public static func write(_ machine: Machine, description: VMDescription, to path: String) throws(SnapshotError) -> Summary {
        let started = monotonicNanoseconds()
        let path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard path.hasPrefix("/") else { throw SnapshotError(.failed, "\(path): the snapshot's folder must be an absolute path") }
        var st = stat()
        if stat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR, FileSystem.entries(of: path)?.isEmpty == true else {
                throw SnapshotError(.failed, "\(path) exists: a snapshot goes into a new (or empty) folder")
            }
        }
        let slash = path.lastIndex(of: "/") ?? path.startIndex
        let parent = slash == path.startIndex ? "/" : String(path[..<slash])
        let temporary = parent + "/." + path[path.index(after: slash)...] + ".partial-\(getpid())"
        guard mkdir(temporary, 0o700) == 0 else { throw SnapshotError(.failed, "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var created: [String] = []
        func cleanUp() {
            for f in created { unlink(temporary + "/" + f) }
            rmdir(temporary)
        }
        do throws(SnapshotError) {
            created.append("memory")
            let fd = open(temporary + "/memory", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SnapshotError(.failed, "cannot create the memory file: \(String(cString: strerror(errno)))") }
            let saved: (state: MachineSnapshot, memoryWritten: UInt64)
            do throws(SnapshotError) {
                saved = try machine.saveState(memoryFD: fd)
                guard fsync(fd) == 0 else { throw SnapshotError(.failed, "memory file: fsync: \(String(cString: strerror(errno)))") }
            } catch {
                close(fd)
                throw error
            }
            close(fd)

            var parts: [(String, [UInt8])] = saved.state.vcpus.enumerated().map { ("vcpu-\($0.offset)", $0.element) }
            parts += [("vm", saved.state.vm), ("devices", saved.state.devices)]
            var listed: [JSONValue] = []
            for (name, bytes) in parts {
                created.append(name)
                try writeFile(temporary + "/" + name, bytes)
                listed.append(.object([("name", .string(name)), ("size", .int(Int64(bytes.count))), ("crc32", .uint(UInt64(CRC32.checksum(bytes))))]))
            }
            guard let identity = saved.state.cpuIdentity else { throw SnapshotError(.failed, "vCPU 0's CPUID could not be read back") }
            let header: JSONValue = .object([
                ("format", .int(Int64(formatVersion))),
                ("vmm", .string("swiftvisor \(VMMVersion.current)")),
                ("created", .int(Int64(time(nil)))),
                ("cpu", .object([("vendor", .string(identity.vendor)), ("tscKHz", .uint(UInt64(identity.tscKHz))),
                                 ("features", .object(identity.features.map { ($0.name, .uint(UInt64($0.value))) }))])),
                ("memory", .object([("file", .string("memory")), ("size", .uint(machine.memory.size))])),
                ("parts", .array(listed)),
                ("vm", description.json),
            ])
            let body = Array((header.rendered + "\n").utf8)
            created.append("header")
            try writeFile(temporary + "/header", Array("\(magic) \(formatVersion) crc32=\(hex8(CRC32.checksum(body)))\n".utf8) + body)
            let summary = Summary(path: path, memoryBytes: machine.memory.size, memoryWritten: saved.memoryWritten,
                                  stateBytes: parts.reduce(0) { $0 + $1.1.count } + body.count,
                                  nanoseconds: monotonicNanoseconds() - started)
            // The moment the snapshot exists: whole, or not at all.
            if stat(path, &st) == 0 { rmdir(path) }
            guard rename(temporary, path) == 0 else { throw SnapshotError(.failed, "cannot rename the snapshot into \(path): \(String(cString: strerror(errno)))") }
            let dir = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dir >= 0 { fsync(dir); close(dir) }
            return summary
        } catch {
            cleanUp()
            throw error
        }
    }

    /// Reads and checks the snapshot in `path`: its header (magic, version, checksum,
    /// JSON), every state file (size and CRC-32), and the memory file's size. With
    /// `kvmPath`, also that this host's CPU can run the guest. Every failure is one
    /// `SnapshotError`: `.corrupt` for damaged files, `.incompatible` for a foreign
    /// format or CPU.
    public static func read(_ path: String, kvmPath: String? = nil) throws(SnapshotError) -> Loaded {
        let path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        var st = stat()
        guard stat(path, &st) == 0 else { throw SnapshotError(.corrupt, "\(path): \(String(cString: strerror(errno)))") }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw SnapshotError(.corrupt, "\(path) is not a snapshot (not a folder)") }
        guard let text = try? FileContents.read(path + "/header", limit: 1 << 20) else {
            throw SnapshotError(.corrupt, "\(path) is not a snapshot (no readable header)")
        }
        let header = try parseHeader(text, path: path)
        let (description, memorySize, list, vendor, features) = (header.description, header.memorySize, header.parts, header.vendor, header.features)
        guard stat(path + "/memory", &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            throw SnapshotError(.corrupt, "\(path)/memory: \(String(cString: strerror(errno == 0 ? ENOENT : errno)))")
        }
        guard Int64(st.st_size) == memorySize else {
            throw SnapshotError(.corrupt, "\(path)/memory is \(st.st_size) bytes, not \(memorySize) (truncated?)")
        }
        var files: [String: [UInt8]] = [:]
        for p in list {
            guard let name = p["name"]?.string, let size = p["size"]?.int, let crc = p["crc32"]?.int,
                  name == "vm" || name == "devices" || name.hasPrefix("vcpu-"), !name.contains("/") else {
                throw SnapshotError(.corrupt, "\(path)/header: a part is malformed")
            }
            guard let bytes = try? FileContents.read(path + "/" + name, limit: partLimit) else { throw SnapshotError(.corrupt, "\(path)/\(name) is missing") }
            guard bytes.count == size else { throw SnapshotError(.corrupt, "\(path)/\(name) is \(bytes.count) bytes, not \(size) (truncated?)") }
            guard Int64(CRC32.checksum(bytes)) == crc else { throw SnapshotError(.corrupt, "\(path)/\(name): checksum mismatch (the file was changed or damaged)") }
            files[name] = bytes
        }
        var vcpus: [[UInt8]] = []
        while let v = files["vcpu-\(vcpus.count)"] { vcpus.append(v) }
        guard let vmPart = files["vm"], let devices = files["devices"], vcpus.count == description.config.vcpuCount,
              files.count == vcpus.count + 2 else {
            throw SnapshotError(.corrupt, "\(path)/header: the parts are not one per vCPU plus vm and devices")
        }
        if let kvmPath {
            let f = features.map { (name: $0.0, value: UInt32(truncatingIfNeeded: $0.1.int ?? 0)) }
            if let why = CPUFeatures.incompatibility(vendor: vendor, features: f, kvmPath: kvmPath) {
                throw SnapshotError(.incompatible, "\(path) cannot run here: \(why)")
            }
        }
        return Loaded(path: path, description: description, state: MachineSnapshot(vcpus: vcpus, vm: vmPart, devices: devices))
    }

    /// A header's fields, checked (magic, version, checksum, JSON, every field there).
    public struct Header: Sendable {
        public let description: VMDescription
        public let memorySize: Int64
        public let parts: [JSONValue]
        public let vendor: String
        public let features: [(String, JSONValue)]
    }

    /// Parses the header file's bytes; `path` names the snapshot in errors. Any input
    /// is a header or one `SnapshotError` (fuzzed: `fuzz-snapshot-state`).
    public static func parseHeader(_ text: [UInt8], path: String) throws(SnapshotError) -> Header {
        guard let newline = text.firstIndex(of: 0x0A) else { throw SnapshotError(.corrupt, "\(path)/header: no first line") }
        let first = String(decoding: text[..<newline], as: UTF8.self).split(separator: " ")
        guard first.count == 3, first[0] == magic, first[2].hasPrefix("crc32=") else {
            throw SnapshotError(.corrupt, "\(path) is not a snapshot (its header does not start with \(magic))")
        }
        guard first[1] == String(formatVersion) else {
            throw SnapshotError(.incompatible, "\(path) is a snapshot of format \(first[1]); this swiftvisor reads format \(formatVersion)")
        }
        let body = text[(newline + 1)...]
        guard UInt32(first[2].dropFirst(6), radix: 16) == CRC32.checksum(body) else {
            throw SnapshotError(.corrupt, "\(path)/header: checksum mismatch (the file was changed or damaged)")
        }
        let header: JSONValue
        do { header = try JSONValue.parse(String(decoding: body, as: UTF8.self)) } catch { throw SnapshotError(.corrupt, "\(path)/header: \(error.description)") }
        guard header["format"]?.int == Int64(formatVersion), let vm = header["vm"], let parts = header["parts"], case let .array(list) = parts,
              let memorySize = header["memory"]?["size"]?.int, let cpu = header["cpu"], let vendor = cpu["vendor"]?.string,
              let features = cpu["features"]?.fields else {
            throw SnapshotError(.corrupt, "\(path)/header: a field is missing (format, vm, parts, memory.size, cpu)")
        }
        let description: VMDescription
        do { description = try VMDescription.from(vm) } catch { throw SnapshotError(.corrupt, "\(path)/header: the VM's description: \(error.description)") }
        guard memorySize >= 0, UInt64(memorySize) == description.config.memorySize else {
            throw SnapshotError(.corrupt, "\(path)/header: memory of \(memorySize) bytes for a VM of \(description.config.memorySize)")
        }
        return Header(description: description, memorySize: memorySize, parts: list, vendor: vendor, features: features)
    }

    static func writeFile(_ path: String, _ bytes: [UInt8]) throws(SnapshotError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SnapshotError(.failed, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard FileSystem.writeAll(fd, bytes), fsync(fd) == 0 else { throw SnapshotError(.failed, "cannot write \(path): \(String(cString: strerror(errno)))") }
    }

    static func hex8(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}
