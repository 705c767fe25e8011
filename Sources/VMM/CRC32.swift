/// CRC-32 (IEEE 802.3, zlib's and Python's `zlib.crc32`): the checksum of a
/// snapshot's header and state files, so that anyone can check one with standard
/// tools. Written out (a table and a loop) rather than taken from zlib, so that the
/// lean `swiftvisor` binary loads no further shared library for it (README "Two
/// executables").
public enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: some Sequence<UInt8>, continuing crc: UInt32 = 0) -> UInt32 {
        var c = ~crc
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }
}
