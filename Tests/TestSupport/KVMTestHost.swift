import Glibc
import XCTest

/// Whether this machine can run the tests that need a real `/dev/kvm`.
///
/// Where it cannot, those tests are skipped with the reason (XCTest prints it), never
/// passed silently.
public enum KVMTestHost {
    public static let devicePath = "/dev/kvm"

    /// nil when usable; otherwise why not.
    public static let unavailableReason: String? = {
        let fd = open(devicePath, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            return "\(devicePath) is not usable here (\(String(cString: strerror(e)))): KVM tests skipped"
        }
        close(fd)
        return nil
    }()

    public static func skipUnlessUsable(file: StaticString = #filePath, line: UInt = #line) throws {
        if let reason = unavailableReason {
            print("SKIP: \(reason)")
            throw XCTSkip(reason, file: file, line: line)
        }
    }
}
