import Glibc
import SystemPackage

/// Reads a whole image file (or its first `limit` bytes), with errors that say which
/// file and why.
public enum FileContents {
    public static let maximumSize = 1 << 30

    /// The whole of an already open file, by position (the fd's offset is left alone,
    /// so threads may share it); `path` names it in errors.
    public static func read(fd: Int32, path: String, limit: Int = FileContents.maximumSize) throws(MachineError) -> [UInt8] {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .file(path: path, why: "cannot stat", missing: false) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .file(path: path, why: "not a regular file", missing: false) }
        guard st.st_size <= maximumSize else { throw .file(path: path, why: "larger than 1 GiB", missing: false) }
        var bytes = [UInt8](repeating: 0, count: min(Int(st.st_size), limit))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { buf in pread(fd, buf.baseAddress! + done, buf.count - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw .file(path: path, why: "read failed: \(String(cString: strerror(errno)))", missing: false) }
            if n == 0 { break }
            done += n
        }
        return Array(bytes.prefix(done))
    }

    public static func read(_ path: String, limit: Int = FileContents.maximumSize) throws(MachineError) -> [UInt8] {
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        } catch {
            let errno = error as? Errno
            throw .file(path: path, why: errno.map { "\($0)" } ?? "cannot open", missing: errno == .noSuchFileOrDirectory)
        }
        defer { try? fd.close() }
        return try read(fd: fd.rawValue, path: path, limit: limit)
    }
}
