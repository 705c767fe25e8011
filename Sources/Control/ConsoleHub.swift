import Devices
import CLinux
import Glibc
import Synchronization
import VMM

/// A detached VM's serial console: what the guest prints is appended to console.log
/// and copied to every attached `swiftvisor console`; what they type goes to the
/// guest's UART. Clients come and go through console.sock, served by the VMM process's
/// event loop; the VM never waits for them.
public final class ConsoleHub: SerialOutput, Sendable {
    let log: Int32
    private let clients = Mutex<[Int32]>([])
    private let listener: Int32
    private let socketPath: String
    private let loop = Mutex<EventLoop?>(nil)

    public init(logPath: String, socketPath: String) throws(UnixSocket.Failure) {
        log = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard log >= 0 else { throw UnixSocket.Failure(description: "cannot open \(logPath): \(String(cString: strerror(errno)))") }
        listener = try UnixSocket.listen(at: socketPath)
        self.socketPath = socketPath
    }

    public func write(_ byte: UInt8) {
        var b = byte
        _ = Glibc.write(log, &b, 1)
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
