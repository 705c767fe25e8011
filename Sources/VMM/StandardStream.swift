import Glibc

/// Unbuffered writes to stdout and stderr through `write(2)`: reports and error lines
/// reach the terminal in order with the guest's console, which also writes directly.
public enum StandardStream {
    public static func output(_ text: String) { write(fd: 1, text) }
    public static func error(_ text: String) { write(fd: 2, text) }

    static func write(fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 { if errno == EINTR || errno == EAGAIN { continue } else { return } }
            done += n
        }
    }
}
