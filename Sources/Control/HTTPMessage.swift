import VMM

/// An HTTP/1.1 request as the control API sees it. Parsing is bounded: a client can
/// make the VMM read at most `HTTPRequest.maximumHeaderBytes` of head and
/// `maximumBodyBytes` of body, and every malformed request becomes a 4xx, never a crash.
public struct HTTPRequest: Sendable {
    public let method: String
    public let path: String
    public let headers: [(String, String)]
    public let body: [UInt8]

    public static let maximumHeaderBytes = 16 * 1024
    public static let maximumBodyBytes = 64 * 1024

    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    /// The body as JSON; an empty body is an empty object.
    public func json() throws(HTTPError) -> JSONValue {
        if body.isEmpty { return .object([]) }
        do { return try JSONValue.parse(String(decoding: body, as: UTF8.self)) }
        catch { throw HTTPError(status: 400, message: "request body: \(error.description)") }
    }

    /// Reads one request from `fd`. Nil when the client closed the connection first.
    public static func read(from fd: Int32) throws(HTTPError) -> HTTPRequest? {
        var data: [UInt8] = []
        var headEnd: Int? = nil
        while headEnd == nil {
            let chunk = UnixSocket.readSome(fd, max: 4096)
            if chunk.isEmpty {
                if data.isEmpty { return nil }
                throw HTTPError(status: 400, message: "incomplete request head")
            }
            data += chunk
            headEnd = find(data, [13, 10, 13, 10])
            if (headEnd ?? data.count) > maximumHeaderBytes {
                throw HTTPError(status: 431, message: "request head larger than \(maximumHeaderBytes) bytes")
            }
        }
        let head = String(decoding: data[..<headEnd!], as: UTF8.self)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count == 3, requestLine[2].hasPrefix("HTTP/1.") else {
            throw HTTPError(status: 400, message: "malformed request line")
        }
        var headers: [(String, String)] = []
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { throw HTTPError(status: 400, message: "malformed header line") }
            headers.append((String(line[..<colon]).trimmingSpaces, String(line[line.index(after: colon)...]).trimmingSpaces))
        }
        var body = Array(data[(headEnd! + 4)...])
        let request = HTTPRequest(method: String(requestLine[0]), path: String(requestLine[1]), headers: headers, body: [])
        if request.header("Transfer-Encoding") != nil {
            throw HTTPError(status: 411, message: "chunked bodies are not accepted; send Content-Length")
        }
        let length: Int
        if let text = request.header("Content-Length") {
            guard let n = Int(text), n >= 0 else { throw HTTPError(status: 400, message: "bad Content-Length") }
            guard n <= maximumBodyBytes else { throw HTTPError(status: 413, message: "body larger than \(maximumBodyBytes) bytes") }
            length = n
        } else {
            length = 0
        }
        while body.count < length {
            let chunk = UnixSocket.readSome(fd, max: min(65536, length - body.count))
            if chunk.isEmpty { throw HTTPError(status: 400, message: "body shorter than Content-Length") }
            body += chunk
        }
        return HTTPRequest(method: request.method, path: request.path, headers: headers, body: Array(body.prefix(length)))
    }

    static func find(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }
}

/// A request the API refuses, with the status it answers.
public struct HTTPError: Error, Sendable {
    public let status: Int
    public let message: String
    public init(status: Int, message: String) { self.status = status; self.message = message }
}

/// An HTTP/1.1 response with a JSON body.
public struct HTTPResponse: Sendable {
    public let status: Int
    public let body: JSONValue

    public init(status: Int, body: JSONValue) { self.status = status; self.body = body }

    public static func error(_ e: HTTPError) -> HTTPResponse {
        HTTPResponse(status: e.status, body: .object([("error", .string(e.message))]))
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 204: "No Content"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 409: "Conflict"
        case 411: "Length Required"
        case 413: "Payload Too Large"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        default: "Status"
        }
    }

    public var bytes: [UInt8] {
        let body = Array((self.body.rendered + "\n").utf8)
        let head = "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + body
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
