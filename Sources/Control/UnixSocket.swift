import Glibc

/// Stream sockets in the file system: how the control API and the console are reached.
/// The only place in Control that builds a `sockaddr_un`.
public enum UnixSocket {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// `sun_path` holds 108 bytes with the terminating NUL.
    public static let maximumPathLength = 107

    static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) throws(Failure) -> R {
        let bytes = Array(path.utf8)
        guard bytes.count <= maximumPathLength else {
            throw Failure(description: "socket path \(path) is longer than \(maximumPathLength) bytes; use a shorter --state-dir")
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        // Sound: sun_path is a fixed array of 108 bytes and bytes.count <= 107; the rest
        // stays zero, so the path is NUL-terminated.
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        return withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// A listening socket at `path` that only this user may connect to (mode 0600).
    public static func listen(at path: String) throws(Failure) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        unlink(path)
        let previous = umask(0o177) // the socket is created 0600, with no window at 0666
        let r = try withAddress(path) { bind(fd, $0, $1) }
        umask(previous)
        guard r == 0, Glibc.listen(fd, 16) == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "cannot listen on \(path): \(e)")
        }
        return fd
    }

    /// A connection to the socket at `path`, with send and receive time limits.
    public static func connect(to path: String, timeoutSeconds: Int = 5) throws(Failure) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        // Before connect: a Unix socket's connect waits for room in a full listen
        // backlog, as long as the send time limit allows (a VMM that stopped accepting).
        setTimeouts(fd, seconds: timeoutSeconds)
        let r = try withAddress(path) { Glibc.connect(fd, $0, $1) }
        guard r == 0 else {
            let timedOut = errno == EAGAIN || errno == EINPROGRESS
            let e = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: timedOut ? "\(path) accepted no connection within \(timeoutSeconds) s" : "cannot connect to \(path): \(e)")
        }
        return fd
    }

    public static func setTimeouts(_ fd: Int32, seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Writes all of `bytes`; false if the peer went away.
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 { if errno == EINTR { continue } else { return false } }
            done += n
        }
        return true
    }

    /// Reads what is available (up to `max` bytes); empty at end of stream or on error.
    public static func readSome(_ fd: Int32, max: Int = 65536) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: max)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            return n > 0 ? Array(buffer.prefix(n)) : []
        }
    }
}
