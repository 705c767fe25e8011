import Glibc

/// The few file-system operations the VMM, the control plane and the command share:
/// whole-file reads (of /proc and /sys too, whose sizes read as 0, so a stat-sized read
/// would get nothing), directories made with their parents, files replaced atomically.
public enum FileSystem {
    /// A small text file read until end of file, or nil if it cannot be opened.
    public static func readText(_ path: String, limit: Int = 1 << 20) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while out.count < limit {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out += buffer.prefix(n)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Writes all of `bytes` to `fd`; false on an error.
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 { if errno == EINTR || errno == EAGAIN { continue } else { return false } }
            if n == 0 { return false }
            done += n
        }
        return true
    }

    /// The names in the folder `path` (without "." and ".."), or nil if it cannot be
    /// read.
    public static func entries(of path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var out: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }

    /// Creates `path` and any missing parents with `mode`. Nil on success, else why not.
    public static func makeDirectories(_ path: String, mode: mode_t) -> String? {
        var partial = ""
        for part in path.split(separator: "/") {
            partial += "/" + part
            if mkdir(partial, mode) != 0 && errno != EEXIST { return String(cString: strerror(errno)) }
        }
        return nil
    }

    /// Replaces `path` with `bytes` all at once (a temporary file renamed over it), so a
    /// reader never sees half a file. Nil on success, else why not.
    public static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600) -> String? {
        let tmp = path + ".\(getpid()).tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { return "cannot write \(tmp): \(String(cString: strerror(errno)))" }
        let ok = writeAll(fd, bytes)
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            return "cannot write \(path)"
        }
        return nil
    }
}
