import VMM
import Devices
import Glibc

/// Serial output written straight to a file descriptor (the terminal, a log file), one
/// `write(2)` per byte so that what the guest prints appears when it prints it.
public struct FileDescriptorOutput: SerialOutput {
    public let fd: Int32
    public init(fd: Int32) { self.fd = fd }

    public func write(_ byte: UInt8) {
        var b = byte
        while Glibc.write(fd, &b, 1) < 0 && (errno == EINTR || errno == EAGAIN) {}
    }
}

/// Output that goes nowhere (a guest whose console nobody wants).
public struct DiscardOutput: SerialOutput {
    public init() {}
    public func write(_ byte: UInt8) {}
}
