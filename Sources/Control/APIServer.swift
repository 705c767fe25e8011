import CLinux
import Devices
import Glibc
import VMM

/// Serves HTTP/1.1 on a Unix socket from the VMM process's event loop: one request per
/// connection, every socket non-blocking. A client that is slow or silent (a head sent
/// a byte at a time, a body that never ends, an answer never read) is cut off at its
/// connection's deadline and holds up nobody else; beyond `maximumConnections` the
/// oldest connection is dropped for a new one. A malformed request gets a 4xx JSON error.
public final class APIServer: @unchecked Sendable {
    // Sound to share: after `start`, everything here is touched only on the loop's
    // thread; `close` is called there too.
    public typealias Handler = (HTTPRequest) -> HTTPResponse

    let fd: Int32
    let path: String
    let handler: Handler
    /// How long one connection may take from accept to its answer being sent.
    public static let connectionDeadlineNanoseconds: UInt64 = 2_000_000_000
    public static let maximumConnections = 64

    private final class Connection {
        let fd: Int32
        let deadline: UInt64
        var input: [UInt8] = []
        var output: [UInt8] = []
        var sent = 0
        var timer = 0
        init(fd: Int32, deadline: UInt64) { self.fd = fd; self.deadline = deadline }
    }
    private var connections: [Int32: Connection] = [:]
    private weak var loop: EventLoop?

    public init(path: String, handler: @escaping Handler) throws(UnixSocket.Failure) {
        self.fd = try UnixSocket.listen(at: path)
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        self.path = path
        self.handler = handler
    }

    /// Starts accepting on `loop`.
    public func start(on loop: EventLoop) {
        self.loop = loop
        loop.add(fd) { [self] _ in acceptAll() }
    }

    private func acceptAll() {
        guard let loop else { return }
        while true {
            let client = clinux_accept_nonblocking(fd)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return // EAGAIN: all taken
            }
            if connections.count >= APIServer.maximumConnections,
               let oldest = connections.values.min(by: { $0.deadline < $1.deadline }) {
                drop(oldest)
            }
            let c = Connection(fd: client, deadline: monotonicNanoseconds() + APIServer.connectionDeadlineNanoseconds)
            connections[client] = c
            c.timer = loop.addTimer(at: c.deadline) { [weak self, weak c] in
                if let self, let c, self.connections[c.fd] === c { self.drop(c) }
            }
            loop.add(client) { [weak self, weak c] events in
                guard let self, let c else { return }
                self.service(c, events)
            }
        }
    }

    private func service(_ c: Connection, _ events: UInt32) {
        if c.output.isEmpty {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress!, $0.count, 0) }
                if n < 0 && errno == EINTR { continue }
                if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
                if n <= 0 {
                    // The client finished sending (or went away) without a whole request.
                    if c.input.isEmpty || n < 0 { drop(c) } else { respond(c, .error(HTTPError(status: 400, message: "incomplete request"))) }
                    return
                }
                c.input += buffer.prefix(n)
                do {
                    switch try HTTPRequest.parse(c.input) {
                    case .incomplete: continue
                    case let .complete(request, _): respond(c, handler(request)); return
                    }
                } catch {
                    respond(c, .error(error))
                    return
                }
            }
        } else {
            flush(c)
        }
    }

    private func respond(_ c: Connection, _ response: HTTPResponse) {
        c.output = response.bytes
        loop?.modify(c.fd, events: EventLoop.writable)
        flush(c)
    }

    private func flush(_ c: Connection) {
        while c.sent < c.output.count {
            let n = c.output.withUnsafeBytes { send(c.fd, $0.baseAddress! + c.sent, $0.count - c.sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return } // the loop calls again when writable
            if n <= 0 { drop(c); return }
            c.sent += n
        }
        // All sent. Closing with unread input would reset the connection and could
        // destroy the answer (e.g. a 431 sent before the head was all read): shut down
        // our side and let the peer's close (or the deadline) end it.
        shutdown(c.fd, Int32(SHUT_WR))
        loop?.add(c.fd, events: EventLoop.readable) { [weak self, weak c] _ in
            guard let self, let c else { return }
            var sink = [UInt8](repeating: 0, count: 4096)
            let n = sink.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress!, $0.count, 0) }
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) { self.drop(c) }
        }
    }

    private func drop(_ c: Connection) {
        guard connections[c.fd] === c else { return }
        connections[c.fd] = nil
        loop?.cancelTimer(c.timer)
        loop?.remove(c.fd)
        Glibc.close(c.fd)
    }

    /// Connections open now (for tests and `inspect`).
    public var openConnections: Int { connections.count }

    public func close() {
        for c in Array(connections.values) { drop(c) }
        loop?.remove(fd)
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
        unlink(path)
    }
}

/// A client for the API: one request, one response (what the CLI verbs use).
public enum APIClient {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static func request(_ socketPath: String, _ method: String, _ path: String, body: JSONValue? = nil,
                               timeoutSeconds: Int = 5) throws(Failure) -> (status: Int, body: JSONValue) {
        let fd: Int32
        do { fd = try UnixSocket.connect(to: socketPath, timeoutSeconds: timeoutSeconds) }
        catch { throw Failure(description: error.description) }
        defer { close(fd) }
        let payload = body.map { Array($0.rendered.utf8) } ?? []
        var head = "\(method) \(path) HTTP/1.1\r\nHost: swiftvisor\r\nContent-Length: \(payload.count)\r\n"
        if body != nil { head += "Content-Type: application/json\r\n" }
        head += "\r\n"
        guard UnixSocket.writeAll(fd, Array(head.utf8) + payload) else { throw Failure(description: "the VM's API closed the connection") }
        var data: [UInt8] = []
        // One deadline for the whole answer: each read's own limit alone would let a
        // server that trickles a byte at a time hold the client for ever.
        let deadline = monotonicNanoseconds() &+ UInt64(max(timeoutSeconds, 1)) * 1_000_000_000
        while true {
            let chunk = UnixSocket.readSome(fd)
            if chunk.isEmpty { break }
            data += chunk
            if data.count > 1 << 22 { throw Failure(description: "response too large") }
            if monotonicNanoseconds() > deadline { throw Failure(description: "the VM's API did not finish answering within \(timeoutSeconds) s") }
        }
        guard let headEnd = HTTPRequest.find(data, [13, 10, 13, 10]) else { throw Failure(description: "no response from the VM's API (timed out?)") }
        let statusLine = String(decoding: data[..<headEnd], as: UTF8.self).split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw Failure(description: "malformed response from the VM's API") }
        let text = String(decoding: data[(headEnd + 4)...], as: UTF8.self)
        let json: JSONValue
        do { json = text.isEmpty ? .null : try JSONValue.parse(text) }
        catch { throw Failure(description: "the VM's API answered with bad JSON: \(error.description)") }
        return (status, json)
    }
}
