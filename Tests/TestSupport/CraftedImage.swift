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

extension CraftedImage {
    /// An ELF64 x86-64 executable with one segment: `code` linked at `virtualAddress`,
    /// loaded at `physicalAddress` (like vmlinux, whose code runs at high virtual
    /// addresses but is loaded low), entered at the segment's start.
    public static func elf64(code: [UInt8], physicalAddress: UInt64 = 0x100_0000,
                             virtualAddress: UInt64 = 0xFFFF_FFFF_8100_0000, entryOffset: UInt64 = 0) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 0x1000 + code.count)
        func put(_ v: UInt64, _ o: Int, _ n: Int) { for i in 0..<n { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        b[0...3] = [0x7F, 0x45, 0x4C, 0x46]; b[4] = 2; b[5] = 1; b[6] = 1
        put(2, 16, 2); put(62, 18, 2); put(1, 20, 4); put(virtualAddress + entryOffset, 24, 8); put(64, 32, 8)
        put(64, 52, 2); put(56, 54, 2); put(1, 56, 2)
        let h = 64
        put(1, h, 4); put(5, h + 4, 4); put(0x1000, h + 8, 8); put(virtualAddress, h + 16, 8); put(physicalAddress, h + 24, 8)
        put(UInt64(code.count), h + 32, 8); put(UInt64(code.count) + 0x1000, h + 40, 8); put(0x1000, h + 48, 8)
        for (i, c) in code.enumerated() { b[0x1000 + i] = c }
        return b
    }

    /// A bzImage-shaped file: boot sector signature, a setup header of `version`
    /// (with the 64-bit entry flag unless `kernel64` is false) and `payload` after
    /// `setupSectors` sectors of setup code.
    public static func bzImage(version: UInt16 = 0x020F, kernel64: Bool = true, setupSectors: UInt8 = 4,
                               payload: [UInt8] = [UInt8](repeating: 0x90, count: 0x400), syssizeBytes: Int? = nil) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: (Int(setupSectors) + 1) * 512)
        func put(_ v: UInt64, _ o: Int, _ n: Int) { for i in 0..<n { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        b[0x1F1] = setupSectors
        put(UInt64((syssizeBytes ?? payload.count) + 15) / 16, 0x1F4, 4)
        b[0x1FE] = 0x55; b[0x1FF] = 0xAA
        b[0x201] = 0x62
        for (i, c) in "HdrS".utf8.enumerated() { b[0x202 + i] = c }
        put(UInt64(version), 0x206, 2)
        b[0x211] = 0x01                                   // LOADED_HIGH
        put(0x7FFF_FFFF, 0x22C, 4)                        // initrd_addr_max
        put(0x20_0000, 0x230, 4)                          // kernel_alignment
        put(kernel64 ? 0x3 : 0x0, 0x236, 2)               // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
        put(2048, 0x238, 4)                               // cmdline_size
        put(0x40_0000, 0x260, 4)                          // init_size
        return b + payload
    }
}

extension CraftedImage {
    /// `elf64(code:)` plus a PT_NOTE segment holding Xen's PVH entry note
    /// (XEN_ELFNOTE_PHYS32_ENTRY = 18) pointing at the code's physical address.
    public static func elf64PVH(code: [UInt8], physicalAddress: UInt64 = 0x100_0000) -> [UInt8] {
        var b = elf64(code: code, physicalAddress: physicalAddress)
        func put(_ v: UInt64, _ o: Int, _ n: Int) { for i in 0..<n { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        // The note: namesz 4 ("Xen\0"), descsz 4, type 18, then the 32-bit entry.
        let noteOffset = b.count
        var note = [UInt8](repeating: 0, count: 20)
        note[0] = 4; note[4] = 4; note[8] = 18
        note[12...15] = [0x58, 0x65, 0x6E, 0x00]
        for i in 0..<4 { note[16 + i] = UInt8(truncatingIfNeeded: physicalAddress >> (8 * UInt64(i))) }
        b += note
        // A second program header right after the first (there is room before 0x1000).
        put(2, 56, 2)
        let h = 64 + 56
        put(4, h, 4); put(4, h + 4, 4); put(UInt64(noteOffset), h + 8, 8); put(0, h + 16, 8); put(0, h + 24, 8)
        put(20, h + 32, 8); put(20, h + 40, 8); put(4, h + 48, 8)
        return b
    }
}

extension CraftedImage {
    /// `elf` (an ELF64 file) with a symbol table appended: `.symtab` of FUNC symbols,
    /// `.strtab`, and a section header table pointing at both.
    public static func addingSymbols(_ elf: [UInt8], _ symbols: [(name: String, address: UInt64, size: UInt64)]) -> [UInt8] {
        var b = elf
        func append(_ v: UInt64, _ n: Int) { for i in 0..<n { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
        func put(_ v: UInt64, _ o: Int, _ n: Int) { for i in 0..<n { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        var strtab: [UInt8] = [0]
        var offsets: [Int] = []
        for s in symbols { offsets.append(strtab.count); strtab += Array(s.name.utf8) + [0] }
        while b.count % 8 != 0 { b.append(0) }
        let symtabOffset = b.count
        append(0, 24) // the null symbol
        for (s, o) in zip(symbols, offsets) {
            append(UInt64(o), 4); append(0x12, 1); append(0, 1); append(1, 2); append(s.address, 8); append(s.size, 8) // GLOBAL FUNC
        }
        let symtabSize = b.count - symtabOffset
        let strtabOffset = b.count
        b += strtab
        while b.count % 8 != 0 { b.append(0) }
        let shoff = b.count
        append(0, 64) // null section
        // .symtab: type 2, link 2 (.strtab), entsize 24
        append(0, 4); append(2, 4); append(0, 8); append(0, 8); append(UInt64(symtabOffset), 8); append(UInt64(symtabSize), 8)
        append(2, 4); append(1, 4); append(8, 8); append(24, 8)
        // .strtab: type 3
        append(0, 4); append(3, 4); append(0, 8); append(0, 8); append(UInt64(strtabOffset), 8); append(UInt64(strtab.count), 8)
        append(0, 4); append(0, 4); append(1, 8); append(0, 8)
        put(UInt64(shoff), 40, 8); put(64, 58, 2); put(3, 60, 2)
        return b
    }
}

extension CraftedImage {
    /// The kallsyms tables `scripts/kallsyms.c` writes for a 64-bit kernel with
    /// base-relative offsets (KALLSYMS_ABSOLUTE_PERCPU), with or without 6.2's
    /// `kallsyms_seqs_of_names`, inside `padding` bytes of other data. Token 0 is "ab";
    /// every other byte value is itself.
    public static func kallsyms(_ symbols: [(type: Character, name: String, address: UInt64)], relativeBase: UInt64 = 0xFFFF_FFFF_8100_0000,
                                seqsOfNames: Bool, padding: Int = 4096) -> [UInt8] {
        var b = [UInt8](repeating: 0x5A, count: padding)
        func align() { while b.count % 8 != 0 { b.append(0) } }
        func append(_ v: UInt64, _ n: Int) { for i in 0..<n { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
        align()
        for s in symbols { append(relativeBase &- 1 &- s.address, 4) }
        align(); append(relativeBase, 8)
        append(UInt64(symbols.count), 4); align()
        var markers: [Int] = []
        let namesAt = b.count
        for (i, s) in symbols.enumerated() {
            if i % 256 == 0 { markers.append(b.count - namesAt) }
            var encoded: [UInt8] = []
            var chars = Array(String(s.type).utf8) + Array(s.name.utf8)
            while !chars.isEmpty {
                if chars.starts(with: Array("ab".utf8)) { encoded.append(0); chars.removeFirst(2) } else { encoded.append(chars.removeFirst()) }
            }
            if encoded.count <= 0x7F { b.append(UInt8(encoded.count)) } else { b += [UInt8(encoded.count & 0x7F | 0x80), UInt8(encoded.count >> 7)] }
            b += encoded
        }
        align()
        for m in markers { append(UInt64(m), 4) }
        align()
        if seqsOfNames { for i in 0..<symbols.count { b += [UInt8(i >> 16 & 0xFF), UInt8(i >> 8 & 0xFF), UInt8(i & 0xFF)] }; align() }
        var index: [Int] = []
        let tableAt = b.count
        for i in 0..<256 { index.append(b.count - tableAt); b += (i == 0 ? Array("ab".utf8) : [UInt8(i)]) + [0] }
        align()
        for i in index { append(UInt64(i), 2) }
        return b + [UInt8](repeating: 0xA5, count: padding)
    }
}
