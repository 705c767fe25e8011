import ArgumentParser
import Control
import Glibc
import VMM

/// Becomes the VMM (`swiftvisor --config-fd N`) for a VM this command described.
enum VMMProcess {
    /// Hands the VMM the JSON in a memfd (inherited across exec, so the description
    /// never touches the disk).
    static func exec(_ launch: VMMLaunch) throws -> Never {
        switch launch.memfd() {
        case let .success(fd):
            try exec(arguments: ["--config-fd", String(fd)], json: launch.json)
        case let .failure(e):
            StandardStream.failure("cannot hand the VM description to the VMM: \(e.description)", code: ProcessExitCode.vmmFailure, json: launch.json)
            throw ExitCode(ProcessExitCode.vmmFailure)
        }
    }

    static func exec(arguments: [String], json: Bool) throws -> Never {
        let message = Companion.vmm.exec(arguments)
        StandardStream.failure("cannot start the VMM process: " + message, code: ProcessExitCode.vmmFailure, json: json)
        throw ExitCode(ProcessExitCode.vmmFailure)
    }
}
