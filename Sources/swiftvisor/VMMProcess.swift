import ArgumentParser
import CLinux
import Control
import Glibc
import VMM

/// Finds `swiftvisor-vmm` and becomes it.
enum VMMProcess {
    /// `SWIFTVISOR_VMM` if set, else `swiftvisor-vmm` beside this executable.
    static func path() -> String {
        if let p = getenv("SWIFTVISOR_VMM") { return String(cString: p) }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return "swiftvisor-vmm" }
        let exe = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let dir = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return dir + "/swiftvisor-vmm"
    }

    /// Becomes the VMM for `launch`, handing it the JSON in a memfd (inherited across
    /// exec, so the description never touches the disk).
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
        let vmm = path()
        let argv = [vmm] + arguments
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
        cArgs.append(nil)
        execv(vmm, &cArgs)
        let message = "cannot start the VMM process \(vmm): \(String(cString: strerror(errno))); install swiftvisor-vmm beside swiftvisor or set SWIFTVISOR_VMM"
        StandardStream.failure(message, code: ProcessExitCode.vmmFailure, json: json)
        throw ExitCode(ProcessExitCode.vmmFailure)
    }
}
