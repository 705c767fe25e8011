import Devices
import CLinux
import Glibc
import Synchronization
import VMM

/// A detached VM's serial console: what the guest prints is appended to console.log
/// and copied to every attached `swiftvisor console`; what they type goes to the
/// guest's UART. Clients come and go through console.sock, served by the VMM process's
/// event loop; the VM never waits for them.
///
/// The log is capped: when console.log reaches `logLimit` bytes it becomes
/// console.log.1 (replacing the one before) and a new console.log starts, so a guest
/// printing forever uses at most twice the limit on disk; `logs` reads both.
public final class ConsoleHub: SerialOutput, Sendable {
    /// 8 MiB: several boots' worth of a chatty kernel.
    public static let defaultLogLimit = 8 << 20
    private struct Log {
        var fd: Int32
        var size: Int
    }
    private let log: Mutex<Log>
    private let logPath: String
    private let logLimit: Int
    private let clients = Mutex<[Int32]>([])
    private let listener: Int32
    private let socketPath: String
    private let loop = Mutex<EventLoop?>(nil)

    public init(logPath: String, socketPath: String, logLimit: Int = ConsoleHub.defaultLogLimit) throws(UnixSocket.Failure) {
        let fd = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw UnixSocket.Failure(description: "cannot open \(logPath): \(String(cString: strerror(errno)))") }
        var st = stat()
        let size = fstat(fd, &st) == 0 ? Int(clamping: st.st_size) : 0
        log = Mutex(Log(fd: fd, size: size))
        self.logPath = logPath
        self.logLimit = max(logLimit, 1)
        do { listener = try UnixSocket.listen(at: socketPath) } catch { Glibc.close(fd); throw error }
        self.socketPath = socketPath
    }

    deinit { Glibc.close(log.withLock { $0.fd }) }

    /// The file a full console.log becomes.
    public static func rotatedPath(_ logPath: String) -> String { logPath + ".1" }

    public func write(_ byte: UInt8) {
        var b = byte
        log.withLock { l in
            if l.size >= logLimit {
                // Rotate: the full log keeps its name's ".1"; a failure keeps appending
                // to the old file rather than losing output.
                let fresh = rename(logPath, ConsoleHub.rotatedPath(logPath)) == 0
                    ? open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC | O_CLOEXEC, 0o600) : -1
                if fresh >= 0 { Glibc.close(l.fd); l.fd = fresh }
                l.size = 0
            }
            if Glibc.write(l.fd, &b, 1) == 1 { l.size += 1 }
        }
        let dead = clients.withLock { list -> [Int32] in
            var gone: [Int32] = []
            for fd in list where send(fd, &b, 1, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno != EAGAIN { gone.append(fd) }
            list.removeAll { gone.contains($0) }
            return gone
        }
        for fd in dead { Glibc.close(fd) }
    }

    /// Accepts console clients on `loop` and feeds what they type to `deliver` (the
    /// guest's console device).
    public func start(on loop: EventLoop, deliver: @escaping @Sendable ([UInt8]) -> Void) {
        _ = fcntl(listener, F_SETFL, fcntl(listener, F_GETFL) | O_NONBLOCK)
        loop.add(listener) { [self] _ in
            while true {
                let fd = clinux_accept_nonblocking(listener)
                if fd < 0 { if errno == EINTR { continue } else { return } }
                clients.withLock { $0.append(fd) }
                loop.add(fd) { [self] _ in
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
                    if n > 0 { deliver(Array(buffer.prefix(n))); return }
                    if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
                    loop.remove(fd)
                    let mine = clients.withLock { list -> Bool in
                        let had = list.contains(fd)
                        list.removeAll { $0 == fd }
                        return had
                    }
                    if mine { Glibc.close(fd) }
                }
            }
        }
        self.loop.withLock { $0 = loop }
    }

    /// From the loop's thread.
    public func close() {
        if let loop = loop.withLock({ $0 }) {
            loop.remove(listener)
            for fd in clients.withLock({ $0 }) { loop.remove(fd) }
        }
        shutdown(listener, Int32(SHUT_RDWR))
        Glibc.close(listener)
        unlink(socketPath)
        for fd in clients.withLock({ l -> [Int32] in let c = l; l.removeAll(); return c }) { shutdown(fd, Int32(SHUT_RDWR)); Glibc.close(fd) }
    }
}
