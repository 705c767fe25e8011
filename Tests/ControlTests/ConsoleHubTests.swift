import Control
import Glibc
import XCTest

/// A detached VM's console log is capped: a guest printing forever cannot fill the disk.
final class ConsoleHubTests: XCTestCase {
    func testTheLogRotatesAtItsLimitAndKeepsTheNewestOutput() throws {
        let dir = "/tmp/sv-hub-\(getpid())-\(UInt32.random(in: 0...0xFFFFFF))"
        XCTAssertEqual(mkdir(dir, 0o700), 0)
        defer {
            for f in ["console.log", "console.log.1", "console.sock"] { unlink("\(dir)/\(f)") }
            rmdir(dir)
        }
        let hub = try ConsoleHub(logPath: "\(dir)/console.log", socketPath: "\(dir)/console.sock", logLimit: 100)
        for i in 0..<250 { hub.write(UInt8(i)) }
        hub.close()
        func contents(_ path: String) -> [UInt8] {
            guard let f = fopen(path, "rb") else { return [] }
            defer { fclose(f) }
            var out: [UInt8] = []
            while true { let c = fgetc(f); if c < 0 { break }; out.append(UInt8(c)) }
            return out
        }
        XCTAssertEqual(contents("\(dir)/console.log.1"), (100..<200).map { UInt8($0) }, "the previous full log")
        XCTAssertEqual(contents("\(dir)/console.log"), (200..<250).map { UInt8($0) }, "the live log")
    }
}
