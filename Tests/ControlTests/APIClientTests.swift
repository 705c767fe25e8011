import Control
import Devices
import Glibc
import XCTest

/// A VMM that stopped accepting or answering cannot hold a `swiftvisor` verb: the
/// client gives up within its time limit with a clear message.
final class APIClientTests: XCTestCase {
    func testAFullBacklogAndASilentServerTimeOut() throws {
        let path = "/tmp/sv-api-\(getpid())-\(UInt32.random(in: 0...0xFFFFFF)).sock"
        let listener = try UnixSocket.listen(at: path) // never accepts
        defer { close(listener); unlink(path) }
        // Fill the backlog (16): the connections after it wait in connect.
        var open: [Int32] = []
        defer { open.forEach { close($0) } }
        var failure: String?
        let start = monotonicNanoseconds()
        for _ in 0..<40 {
            do { open.append(try UnixSocket.connect(to: path, timeoutSeconds: 1)) } catch { failure = error.description; break }
        }
        XCTAssertTrue(failure?.contains("accepted no connection within 1 s") ?? false, failure ?? "every connect succeeded")
        XCTAssertLessThan(monotonicNanoseconds() - start, 5_000_000_000)

        // Accepted by the kernel (in the backlog) but never answered: the request times out.
        let silentPath = path + "2"
        let silent = try UnixSocket.listen(at: silentPath)
        defer { close(silent); unlink(silentPath) }
        let t0 = monotonicNanoseconds()
        XCTAssertThrowsError(try APIClient.request(silentPath, "GET", "/vm", timeoutSeconds: 1)) { e in
            XCTAssertTrue("\(e)".contains("no response"), "\(e)")
        }
        XCTAssertLessThan(monotonicNanoseconds() - t0, 5_000_000_000)
    }
}
