@testable import Control
import Foundation
import XCTest

/// The API's request parser, fed as bytes arrive.
final class HTTPRequestTests: XCTestCase {
    func parse(_ text: String) throws -> HTTPRequest.Parse { try HTTPRequest.parse(Array(text.utf8)) }

    func testAWholeRequestAndEveryPrefixOfIt() throws {
        let text = "PUT /vm/state HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{\"state\": \"paused\"}\nEXTRA"
        let bytes = Array(text.utf8)
        for n in 0..<(bytes.count - 6) {
            guard case .incomplete = try HTTPRequest.parse(Array(bytes.prefix(n))) else { return XCTFail("complete after \(n) bytes") }
        }
        guard case let .complete(r, consumed) = try HTTPRequest.parse(bytes) else { return XCTFail("incomplete") }
        XCTAssertEqual(r.method, "PUT")
        XCTAssertEqual(r.path, "/vm/state")
        XCTAssertEqual(r.header("content-length"), "20")
        XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "{\"state\": \"paused\"}\n")
        XCTAssertEqual(consumed, bytes.count - 5, "what follows the body is not this request's")
        XCTAssertEqual(try r.json()["state"]?.string, "paused")
    }

    func testMalformedAndOversizedRequestsAre4xx() {
        func status(_ text: String) -> Int? {
            do { _ = try parse(text); return nil } catch let e as HTTPError { return e.status } catch { return nil }
        }
        XCTAssertEqual(status("GARBAGE\r\n\r\n"), 400)
        XCTAssertEqual(status("GET /vm HTTP/1.1\r\nNoColon\r\n\r\n"), 400)
        XCTAssertEqual(status("GET /vm HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400)
        XCTAssertEqual(status("GET /vm HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 400)
        XCTAssertEqual(status("PUT /vm HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n"), 413, "refused before the body arrives")
        XCTAssertEqual(status("PUT /vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 411)
        XCTAssertEqual(status("GET /" + String(repeating: "a", count: 20_000)), 431, "a head that never ends is refused once too long")
        XCTAssertThrowsError(try HTTPRequest(method: "PUT", path: "/", headers: [], body: Array("{".utf8)).json())
    }
}

/// The OpenAPI document describes exactly the paths the API routes.
final class OpenAPIDocumentTests: XCTestCase {
    func testEveryRoutedPathIsDocumentedAndNoOther() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources/Control/openapi.json").path
        let text = try String(contentsOfFile: file, encoding: .utf8)
        let doc = try JSONValue.parse(text)
        let paths = Set(doc["paths"]?.fields?.map(\.0) ?? [])
        XCTAssertEqual(paths, Set(VMAPI.resources))
        let config = Set(doc["components"]?["schemas"]?["Config"]?["properties"]?.fields?.map(\.0) ?? [])
        XCTAssertEqual(config, Set(VMDescription.Keys.allCases.map(\.rawValue)), "the schema lists every field the decoder takes")
    }
}
