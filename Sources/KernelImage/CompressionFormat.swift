/// The formats Linux compresses its kernel in (arch/x86/boot/compressed), recognised by
/// their magic numbers.
public enum CompressionFormat: String, Sendable, CaseIterable {
    case gzip, xz, lzma, zstd, lz4, bzip2, lzo

    public static func detect(_ b: ArraySlice<UInt8>) -> CompressionFormat? {
        let s = Array(b.prefix(6))
        func starts(_ magic: [UInt8]) -> Bool { s.count >= magic.count && Array(s.prefix(magic.count)) == magic }
        if starts([0x1F, 0x8B]) { return .gzip }
        if starts([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { return .xz }
        if starts([0x28, 0xB5, 0x2F, 0xFD]) { return .zstd }
        if starts([0x02, 0x21, 0x4C, 0x18]) { return .lz4 }
        if starts([0x42, 0x5A, 0x68]) { return .bzip2 }
        if starts([0x89, 0x4C, 0x5A, 0x4F]) { return .lzo }
        if starts([0x5D, 0x00, 0x00]) { return .lzma }
        return nil
    }

    /// Whether Swiftvisor can decompress it on the host.
    public var isSupported: Bool { [.gzip, .xz, .lzma, .zstd, .lz4].contains(self) }
}
