import Glibc

/// A file under /tmp that is removed when the test is done with it.
public final class TemporaryFile {
    public let path: String

    public init(bytes: [UInt8], suffix: String = ".bin") {
        var template = Array("/tmp/swiftvisor-test-XXXXXX\(suffix)".utf8CString)
        let fd = mkstemps(&template, Int32(suffix.utf8.count))
        precondition(fd >= 0, "mkstemps failed")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            precondition(n > 0)
            done += n
        }
        close(fd)
    }

    deinit { unlink(path) }
}
