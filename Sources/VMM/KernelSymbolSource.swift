import Boot
import Glibc
import Synchronization

/// The kernel's symbols for failure reports, opened when the machine is built (on the
/// main thread) and read at most once, when a report first needs them: a vCPU thread's
/// seccomp filter lets it read an open file but not open one, and a guest that keeps
/// failing cannot make the VMM parse the file again and again.
public final class KernelSymbolSource: Sendable {
    private let fd: Int32
    private let path: String
    private let parsed = Mutex<KernelSymbols??>(nil)

    /// nil when there is no file or it cannot be opened (reports then give addresses).
    public init?(path: String?) {
        guard let path else { return nil }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    public var symbols: KernelSymbols? {
        parsed.withLock { cached in
            if let cached { return cached }
            let s = (try? FileContents.read(fd: fd, path: path)).flatMap(KernelSymbols.read)
            cached = .some(s)
            return s
        }
    }
}
