import ArgumentParser
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
