import ArgumentParser
import Control
import Glibc
import VMM

/// `swiftvisor console NAME`: the detached VM's serial console, interactively.
struct ConsoleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console", abstract: "Attach to a detached VM's serial console; Ctrl-] detaches and leaves it running.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String

    static let detachKey: UInt8 = 0x1D // Ctrl-]

    func run() throws {
        try verb(state.json) {
            let s = try status(name, state)
            try requireAlive(s)
            let fd: Int32
            do { fd = try UnixSocket.connect(to: state.directory.path(name, "console.sock"), timeoutSeconds: 0) }
            catch { throw CLIFailure(message: "VM '\(name)' has no console socket (it runs in the foreground): \(error)", code: ProcessExitCode.conflict) }
            defer { close(fd) }
            let terminal = RawTerminal()
            defer { terminal.restore() }
            StandardStream.error("Connected to \(name); Ctrl-] detaches.\r\n")
            var fds = [pollfd(fd: 0, events: Int16(POLLIN), revents: 0), pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            while true {
                if poll(&fds, 2, -1) < 0 { if errno == EINTR { continue } else { return } }
                if fds[1].revents != 0 {
                    let bytes = UnixSocket.readSome(fd)
                    if bytes.isEmpty {
                        StandardStream.error("\r\n[VM \(name) has stopped]\r\n")
                        return
                    }
                    StandardStream.write(bytes: bytes)
                }
                if fds[0].revents != 0 {
                    var buffer = [UInt8](repeating: 0, count: 1024)
                    let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
                    if n <= 0 { fds[0].events = 0; continue } // stdin closed: keep showing output
                    let input = Array(buffer.prefix(n))
                    if let k = input.firstIndex(of: ConsoleCommand.detachKey) {
                        UnixSocket.writeAll(fd, Array(input[..<k]))
                        StandardStream.error("\r\n[detached from \(name); it keeps running]\r\n")
                        return
                    }
                    UnixSocket.writeAll(fd, input)
                }
            }
        }
    }
}

/// Puts the terminal in raw mode (every key goes to the guest) and restores it.
final class RawTerminal {
    private var saved = termios()
    private let active: Bool

    init() {
        guard isatty(0) != 0, tcgetattr(0, &saved) == 0 else { active = false; return }
        var raw = saved
        cfmakeraw(&raw)
        active = tcsetattr(0, TCSANOW, &raw) == 0
    }

    func restore() {
        if active { tcsetattr(0, TCSANOW, &saved) }
    }

    deinit { restore() }
}
