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

    /// What `parse` found in the bytes received so far.
    public enum Parse: Sendable {
        /// More bytes are needed.
        case incomplete
        /// One whole request, and how many bytes of the buffer it took.
        case complete(HTTPRequest, consumed: Int)
    }

    /// Parses one request from the start of `data`, as bytes arrive (the API serves
    /// many clients from one thread, so it never blocks on one). Bounded: a head longer
    /// than `maximumHeaderBytes` or a body longer than `maximumBodyBytes` is refused as
    /// soon as it is seen.
    public static func parse(_ data: [UInt8]) throws(HTTPError) -> Parse {
        guard let headEnd = find(data, [13, 10, 13, 10]) else {
            if data.count > maximumHeaderBytes { throw HTTPError(status: 431, message: "request head larger than \(maximumHeaderBytes) bytes") }
            return .incomplete
        }
        guard headEnd <= maximumHeaderBytes else { throw HTTPError(status: 431, message: "request head larger than \(maximumHeaderBytes) bytes") }
        let head = String(decoding: data[..<headEnd], as: UTF8.self)
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
        let request = HTTPRequest(method: String(requestLine[0]), path: String(requestLine[1]), headers: headers, body: [])
        if request.header("Transfer-Encoding") != nil {
            throw HTTPError(status: 411, message: "chunked bodies are not accepted; send Content-Length")
        }
        var length = 0
        if let text = request.header("Content-Length") {
            guard let n = Int(text), n >= 0 else { throw HTTPError(status: 400, message: "bad Content-Length") }
            guard n <= maximumBodyBytes else { throw HTTPError(status: 413, message: "body larger than \(maximumBodyBytes) bytes") }
            length = n
        }
        let bodyStart = headEnd + 4
        guard data.count - bodyStart >= length else { return .incomplete }
        return .complete(HTTPRequest(method: request.method, path: request.path, headers: headers,
                                     body: Array(data[bodyStart..<(bodyStart + length)])), consumed: bodyStart + length)
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
        case 503: "Service Unavailable"
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
