import Devices
import VMM
import Glibc

/// The terminal as a foreground VM's serial console: what the user types goes to the
/// guest's COM1; on a terminal it is in raw mode (so Ctrl-C reaches the guest, as on a
/// real serial line) and Ctrl-A x quits, Ctrl-A Ctrl-A sends a Ctrl-A. `restore()` puts
/// the terminal back; callers do so on every way out.
public final class TerminalConsole: @unchecked Sendable {
    // Sound to share: `saved` is written once in init, read by restore(); input is read
    // on the event loop's thread.
    private var saved = termios()
    public let isTerminal: Bool
    private var restored = false
    public static let escape: UInt8 = 0x01 // Ctrl-A

    public init() {
        var attributes = termios()
        isTerminal = isatty(0) != 0 && tcgetattr(0, &attributes) == 0
        guard isTerminal else { return }
        saved = attributes
        var raw = attributes
        cfmakeraw(&raw)
        raw.c_oflag |= tcflag_t(OPOST | ONLCR) // keep "\n" -> "\r\n" on output
        tcsetattr(0, TCSANOW, &raw)
    }

    /// Reads stdin on `loop`, handing bytes to `deliver`; `quit` runs on Ctrl-A x, and
    /// `ended` when stdin closes.
    public func start(on loop: EventLoop, deliver: @escaping @Sendable ([UInt8]) -> Void, quit: @escaping () -> Void) {
        let terminal = isTerminal
        var escaped = false
        let pollable = loop.add(0) { _ in
            var buffer = [UInt8](repeating: 0, count: 1024)
            let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { return }
            if n <= 0 { loop.remove(0); return } // end of input: the guest keeps running
            var out: [UInt8] = []
            for b in buffer.prefix(n) {
                guard terminal else { out.append(b); continue }
                if escaped {
                    escaped = false
                    if b == UInt8(ascii: "x") || b == UInt8(ascii: "X") { deliver(out); loop.remove(0); quit(); return }
                    out.append(b == TerminalConsole.escape ? b : TerminalConsole.escape)
                    if b != TerminalConsole.escape { out.append(b) }
                } else if b == TerminalConsole.escape {
                    escaped = true
                } else {
                    out.append(b)
                }
            }
            if !out.isEmpty { deliver(out) }
        }
        if !pollable {
            // A regular file or /dev/null as stdin: epoll cannot watch it, so one thread
            // reads it to the end and hands the bytes to the loop.
            HostThread.detached(kind: .stdinReader) {
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return }
                    let bytes = Array(buffer.prefix(n))
                    loop.post { deliver(bytes) }
                }
            }
        }
    }

    public func restore() {
        guard isTerminal, !restored else { return }
        restored = true
        tcsetattr(0, TCSANOW, &saved)
    }

    deinit { restore() }
}
