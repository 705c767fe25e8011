/// A kernel's function and data symbols, to name the code at a guest address in a
/// failure report ("RIP 0xffffffff81234567 (rtc_cmos_init+0x37)"), the way the
/// kernel's own oops does. Read from the ELF symbol table of an unstripped vmlinux (the
/// kernel `scripts/build-kernel` makes, a Multiboot test image) or from a System.map
/// (distribution kernels: Debian's real one is in the `linux-image-*-dbg` package).
public struct KernelSymbols: Sendable {
    struct Symbol: Sendable {
        var address: UInt64
        var size: UInt64
        var name: String
    }

    /// Sorted by address.
    private let symbols: [Symbol]
    /// Physical-to-virtual mappings of the ELF's segments: a kernel's first
    /// instructions run at the physical address it was loaded at, before it turns on
    /// its own page tables, while its symbols are linked at virtual ones.
    private let segments: [(physical: UInt64, virtual: UInt64, size: UInt64)]

    public var count: Int { symbols.count }

    init(_ symbols: [Symbol], segments: [(physical: UInt64, virtual: UInt64, size: UInt64)] = []) {
        self.symbols = symbols.filter { $0.address != 0 && !$0.name.isEmpty }.sorted { $0.address < $1.address }
        self.segments = segments.filter { $0.physical != $0.virtual }
    }

    /// Reads `bytes` as an ELF file's symbol table (`SHT_SYMTAB`), else the kernel's own
    /// kallsyms tables inside it (a stripped distribution vmlinux), or as a System.map;
    /// nil when none of them yields a symbol.
    public static func read(_ bytes: [UInt8]) -> KernelSymbols? {
        if ELFImage.isELF(bytes) {
            if let s = try? KernelSymbols(elf: bytes), s.count > 0 { return s }
            return KernelSymbols(kallsymsIn: bytes).flatMap { $0.count > 0 ? $0 : nil }
        }
        let map = KernelSymbols(systemMap: String(decoding: bytes, as: UTF8.self))
        return map.count > 0 ? map : nil
    }

    /// `nm`-style lines: "ffffffff81000000 T _stext". Lines that are not are skipped,
    /// so a placeholder map (Debian's ships one line saying where the real one is)
    /// yields no symbols.
    public init(systemMap text: String) {
        var symbols: [Symbol] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3, let address = UInt64(fields[0], radix: 16), address != .max,
                  let type = fields[1].first, "TtWwDdBbRrVv".contains(type) else { continue }
            symbols.append(Symbol(address: address, size: 0, name: String(fields[2])))
        }
        self.init(symbols)
    }

    /// The `SHT_SYMTAB` section of a 32- or 64-bit little-endian ELF file and the string
    /// table it links to; every offset is checked against the file.
    public init(elf bytes: [UInt8]) throws(BootError) {
        guard bytes.count >= 52, ELFImage.isELF(bytes), bytes[5] == 1 else { throw .malformed("not a little-endian ELF file") }
        let r = ByteReader(bytes)
        let is64 = bytes[4] == 2
        guard !is64 || bytes.count >= 64 else { throw .malformed("truncated ELF header") }
        let shoff = is64 ? Int(clamping: r.u64(40)) : Int(r.u32(32))
        let shentsize = Int(r.u16(is64 ? 58 : 46)), shnum = Int(r.u16(is64 ? 60 : 48))
        guard shnum > 0 else { throw .malformed("ELF file has no section headers") }
        guard shentsize >= (is64 ? 64 : 40), shoff <= bytes.count, shnum * shentsize <= bytes.count - shoff else {
            throw .malformed("ELF section headers lie outside the file (truncated?)")
        }
        func section(_ i: Int) -> (type: UInt32, offset: Int, size: Int, link: Int, entsize: Int) {
            let h = shoff + i * shentsize
            return is64
                ? (r.u32(h + 4), Int(clamping: r.u64(h + 24)), Int(clamping: r.u64(h + 32)), Int(r.u32(h + 40)), Int(clamping: r.u64(h + 56)))
                : (r.u32(h + 4), Int(r.u32(h + 16)), Int(r.u32(h + 20)), Int(r.u32(h + 24)), Int(r.u32(h + 36)))
        }
        func inFile(_ s: (type: UInt32, offset: Int, size: Int, link: Int, entsize: Int)) -> Bool {
            s.offset <= bytes.count && s.size <= bytes.count - s.offset
        }
        var symbols: [Symbol] = []
        for i in 0..<shnum where section(i).type == 2 { // SHT_SYMTAB
            let table = section(i)
            let entry = is64 ? 24 : 16
            guard inFile(table), table.entsize >= entry, table.link < shnum, inFile(section(table.link)) else {
                throw .malformed("ELF symbol table \(i) or its string table lies outside the file (truncated?)")
            }
            let strings = section(table.link)
            for n in 0..<(table.size / table.entsize) {
                let e = table.offset + n * table.entsize
                let nameOffset = Int(r.u32(e))
                let info = is64 ? r.u8(e + 4) : r.u8(e + 12)
                let value = is64 ? r.u64(e + 8) : UInt64(r.u32(e + 4))
                let size = is64 ? r.u64(e + 16) : UInt64(r.u32(e + 8))
                guard info & 0xF <= 2, nameOffset < strings.size else { continue } // NOTYPE, OBJECT, FUNC
                let start = strings.offset + nameOffset
                let end = bytes[start..<(strings.offset + strings.size)].firstIndex(of: 0) ?? strings.offset + strings.size
                symbols.append(Symbol(address: value, size: size, name: String(decoding: bytes[start..<end], as: UTF8.self)))
            }
        }
        let segments = ((try? ELFImage(bytes))?.segments ?? []).map { ($0.physicalAddress, $0.virtualAddress, $0.memorySize) }
        self.init(symbols, segments: segments)
    }

    /// "name+0xoffset" for the symbol at or below `address`, or nil when no symbol
    /// covers it: below the first one, past the end of a sized one (padding, or code
    /// nobody named), or more than 64 KiB past an unsized label.
    public func name(for address: UInt64) -> String? {
        if let name = lookup(address) { return name }
        guard let s = segments.first(where: { address >= $0.physical && address - $0.physical < $0.size }) else { return nil }
        return lookup(s.virtual &+ (address - s.physical))
    }

    private func lookup(_ address: UInt64) -> String? {
        var low = 0, high = symbols.count
        while low < high {
            let mid = (low + high) / 2
            if symbols[mid].address <= address { low = mid + 1 } else { high = mid }
        }
        guard low > 0 else { return nil }
        // Several names may share an address; the last one sorted there is as good as any.
        let s = symbols[low - 1]
        let offset = address - s.address
        if s.size > 0 ? offset >= s.size : offset >= 0x1_0000 { return nil }
        return offset == 0 ? s.name : s.name + "+0x" + String(offset, radix: 16)
    }
}
