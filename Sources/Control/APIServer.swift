import Glibc
import VMM

/// Serves HTTP/1.1 on a Unix socket, one request per connection, on a thread of its
/// own. A slow or silent client is cut off by the socket's receive time limit, so it
/// cannot hold the API; a malformed request gets a 4xx JSON error.
public final class APIServer: Sendable {
    public typealias Handler = @Sendable (HTTPRequest) -> HTTPResponse

    let fd: Int32
    let path: String
    let handler: Handler

    public init(path: String, handler: @escaping Handler) throws(UnixSocket.Failure) {
        self.fd = try UnixSocket.listen(at: path)
        self.path = path
        self.handler = handler
    }

    /// Starts the accept loop; it ends when `close()` shuts the socket.
    public func start() {
        _ = HostThread.spawn { [self] in
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return // closed
                }
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                UnixSocket.setTimeouts(client, seconds: 2)
                serve(client)
                Glibc.close(client)
            }
        }
    }

    func serve(_ client: Int32) {
        let response: HTTPResponse
        do {
            guard let request = try HTTPRequest.read(from: client) else { return }
            response = handler(request)
        } catch {
            response = .error(error)
        }
        UnixSocket.writeAll(client, response.bytes)
        // Lingering close: closing with unread input would reset the connection and
        // could destroy the response (e.g. a 431 sent before the head was all read).
        shutdown(client, Int32(SHUT_WR))
        var drained = 0
        while drained < 1 << 20 {
            let n = UnixSocket.readSome(client, max: 65536).count
            if n == 0 { break }
            drained += n
        }
    }

    public func close() {
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
        while true {
            let chunk = UnixSocket.readSome(fd)
            if chunk.isEmpty { break }
            data += chunk
            if data.count > 1 << 22 { throw Failure(description: "response too large") }
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
