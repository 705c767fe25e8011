import Glibc
import SystemPackage

/// A failed KVM operation: which ioctl (or system call), the errno it returned, and
/// what a user can do about it. Every failure in this module is one of these so that
/// the command line can print one line that says what failed, why and what to do.
public struct KVMError: Error, CustomStringConvertible, Sendable {
    /// The ioctl or call that failed, named as in the kernel's api.rst (`KVM_CREATE_VM`).
    public let operation: String
    public let errno: Errno?
    public let hint: String?

    public init(_ operation: String, errno: Errno?, hint: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.hint = hint
    }

    /// The error for the errno a failed call just left behind.
    static func last(_ operation: String, hint: String? = nil) -> KVMError {
        KVMError(operation, errno: Errno(rawValue: Glibc.errno), hint: hint)
    }

    public var description: String {
        var text = "\(operation) failed"
        if let errno { text += ": \(errno.description) (errno \(errno.rawValue))" }
        if let hint { text += "; \(hint)" }
        return text
    }
}
