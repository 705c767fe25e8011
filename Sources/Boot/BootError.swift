import GuestMemory

/// Why an image cannot be booted, phrased for the person who supplied it.
public enum BootError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file is empty.
    case emptyImage
    /// The image (or one of its parts) does not fit in guest memory at that address.
    case doesNotFit(what: String, address: UInt64, size: UInt64, memorySize: UInt64)
    /// An entry point or load address that the chosen mode cannot reach.
    case unreachable(what: String, address: UInt64, mode: CPUMode)
    /// A malformed image, with what is wrong.
    case malformed(String)
    /// A write into guest memory failed (a layout bug, reported rather than trapped).
    case memory(GuestMemoryError)

    public var description: String {
        switch self {
        case .emptyImage:
            "the image is empty"
        case let .doesNotFit(what, address, size, memorySize):
            "\(what) (\(size) bytes at 0x\(String(address, radix: 16))) does not fit in guest memory of \(memorySize) bytes; load it lower or give the VM more --memory"
        case let .unreachable(what, address, mode):
            "\(what) 0x\(String(address, radix: 16)) cannot be reached in \(mode.rawValue) mode" +
                (mode == .real ? " (real mode reaches the first 1 MiB only)" : " (above 4 GiB)")
        case let .malformed(why):
            why
        case let .memory(e):
            e.description
        }
    }
}
