import VMM
import Glibc

/// Unbuffered writes to stdout and stderr through `write(2)`: reports and error lines
/// reach the terminal in order with the guest's console, which also writes directly.
public enum StandardStream {
    public static func output(_ text: String) { write(fd: 1, text) }
    public static func error(_ text: String) { write(fd: 2, text) }

    /// The one line a failure gets on stderr: `swiftvisor: error: ...`, or with `json`
    /// `{"error": "...", "exitCode": N}`.
    public static func failure(_ message: String, code: Int32, json: Bool) {
        if json {
            error(JSONValue.object([("error", .string(message)), ("exitCode", .int(Int64(code)))]).rendered + "\n")
        } else {
            error("swiftvisor: error: \(message)\n")
        }
    }

    public static func write(bytes: [UInt8]) { write(fd: 1, bytes: bytes) }

    static func write(fd: Int32, _ text: String) { write(fd: fd, bytes: Array(text.utf8)) }

    static func write(fd: Int32, bytes: [UInt8]) { FileSystem.writeAll(fd, bytes) }
}
