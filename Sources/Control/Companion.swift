import Glibc

/// Swiftvisor ships as two executables that find each other: `swiftvisor`, the small
/// one users type and every VM runs in, and `swiftvisor-cli`, which holds
/// ArgumentParser for everything the small one hands on (README "Two executables").
/// Each is looked up beside the running one unless an environment variable names it,
/// so a build folder, an install prefix and a test can each point at their own copy.
public enum Companion: Sendable {
    /// `swiftvisor`: the VMM process (`--config-fd N`).
    case vmm
    /// `swiftvisor-cli`: help, errors and every verb but a fast-path `run`.
    case cli

    public var fileName: String { self == .vmm ? "swiftvisor" : "swiftvisor-cli" }
    public var environmentVariable: String { self == .vmm ? "SWIFTVISOR_VMM" : "SWIFTVISOR_CLI" }

    /// The environment's choice, else `fileName` in this executable's folder.
    public var path: String {
        if let p = getenv(environmentVariable), p.pointee != 0 { return String(cString: p) }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return fileName }
        let exe = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let folder = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return folder + "/" + fileName
    }

    /// What to tell a user whose companion could not be started.
    public var hint: String {
        "install \(fileName) beside \(self == .vmm ? "swiftvisor-cli" : "swiftvisor") or set \(environmentVariable)"
    }

    /// Becomes the companion with `arguments` (argv[0] is its path). Returns only when
    /// exec failed, with the message to report.
    public func exec(_ arguments: [String]) -> String {
        let executable = path
        var cArgs: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) }
        cArgs.append(nil)
        execv(executable, &cArgs)
        let reason = String(cString: strerror(errno))
        for p in cArgs { free(p) }
        return "cannot start \(executable): \(reason); \(hint)"
    }
}
