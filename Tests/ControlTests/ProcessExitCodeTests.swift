import Boot
@testable import Control
import Devices
import TestSupport
import VMM
import XCTest

final class ProcessExitCodeTests: XCTestCase {
    final class Discard: SerialOutput { func write(_ byte: UInt8) {} }

    func testStopsAndBuildErrorsHaveTheirDocumentedCodes() throws {
        XCTAssertEqual(ProcessExitCode.forStop(.signal(15)), 143)
        XCTAssertEqual(ProcessExitCode.forStop(.exitPort(code: 7)), 7)
        XCTAssertEqual(ProcessExitCode.forStop(.timeLimit), 124)
        try KVMTestHost.skipUnlessUsable()
        func error(_ config: MachineConfig) -> MachineError? {
            do { _ = try Machine.build(config, console: Discard()); return nil } catch { return error }
        }
        let missing = error(MachineConfig(boot: .flat(path: "/nonexistent.bin", mode: .long, loadAddress: nil, entry: nil)))
        XCTAssertEqual(missing.map(ProcessExitCode.forError), ProcessExitCode.fileNotFound)
        XCTAssertEqual(missing?.description, "cannot read /nonexistent.bin: No such file or directory")
        let directory = error(MachineConfig(boot: .flat(path: "/tmp", mode: .long, loadAddress: nil, entry: nil)))
        XCTAssertEqual(directory.map(ProcessExitCode.forError), ProcessExitCode.badImage)
        let empty = TemporaryFile(bytes: [])
        XCTAssertEqual(error(MachineConfig(boot: .flat(path: empty.path, mode: .long, loadAddress: nil, entry: nil))).map(ProcessExitCode.forError), ProcessExitCode.badImage)
        XCTAssertEqual(error(MachineConfig(memorySize: 4096)).map(ProcessExitCode.forError), ProcessExitCode.usage)
        XCTAssertEqual(error(MachineConfig(vcpuCount: 0)).map(ProcessExitCode.forError), ProcessExitCode.usage)
        let noKVM = error(MachineConfig(kvmPath: "/nonexistent/kvm"))
        XCTAssertEqual(noKVM.map(ProcessExitCode.forError), ProcessExitCode.kvmUnavailable)
    }
}
