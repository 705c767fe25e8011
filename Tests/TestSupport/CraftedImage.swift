/// Kernel images built byte by byte for tests, so that loaders can be checked on files
/// whose every field is known (and broken on purpose).
public enum CraftedImage {
    /// An ELF32 executable whose first segment (file offset 0x100, loaded at `paddr`)
    /// starts with a Multiboot header (flags 0); `code` follows at `paddr + 0x10`.
    public static func multibootELF(entry: UInt32 = 0x10_0010, paddr: UInt32 = 0x10_0000, code: [UInt8] = [0xF4],
                                    fileSize: UInt32? = nil, memSize: UInt32? = nil, segments: Int = 1) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: max(0x1000, 0x110 + code.count))
        func put32(_ v: UInt32, _ o: Int) { for i in 0..<4 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
        func put16(_ v: UInt16, _ o: Int) { b[o] = UInt8(v & 0xFF); b[o + 1] = UInt8(v >> 8) }
        b[0...3] = [0x7F, 0x45, 0x4C, 0x46]; b[4] = 1; b[5] = 1; b[6] = 1
        put16(2, 16); put16(3, 18); put32(1, 20); put32(entry, 24); put32(52, 28)
        put16(52, 40); put16(32, 42); put16(UInt16(segments), 44)
        for s in 0..<segments {
            let h = 52 + s * 32
            put32(1, h); put32(0x100, h + 4); put32(paddr + UInt32(s) * 0x1000, h + 8); put32(paddr + UInt32(s) * 0x1000, h + 12)
            put32(fileSize ?? UInt32(0x10 + code.count), h + 16); put32(memSize ?? 0x2000, h + 20); put32(5, h + 24); put32(0x1000, h + 28)
        }
        let magic: UInt32 = 0x1BAD_B002
        put32(magic, 0x100); put32(0, 0x104); put32(0 &- magic, 0x108)
        for (i, c) in code.enumerated() { b[0x110 + i] = c }
        return b
    }
}
