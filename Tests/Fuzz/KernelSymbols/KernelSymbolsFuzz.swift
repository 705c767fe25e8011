// Fuzz target: the kernel symbol readers a failure report uses (`--system-map`, the
// kernel file itself): an ELF symbol table and its string table, the kallsyms tables
// inside a stripped vmlinux (names compressed with a token table, markers, relative
// offsets) and System.map text. Any input gives symbols or none, never a crash, and a
// lookup in what was read is bounded. Built with libFuzzer by scripts/fuzz; without
// -DFUZZING it replays the files it is given.
import Boot
import FuzzSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size <= 1 << 20 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var tables: [KernelSymbols] = []
    if let s = KernelSymbols.read(bytes) { tables.append(s) }
    if let s = try? KernelSymbols(elf: bytes) { tables.append(s) }
    if let s = KernelSymbols(kallsymsIn: bytes) { tables.append(s) }
    tables.append(KernelSymbols(systemMap: String(decoding: bytes, as: UTF8.self)))
    // Lookups at addresses the input itself names, and at the ends of the range.
    var probes: [UInt64] = [0, 1, .max, 0xFFFF_FFFF_8100_0000]
    var i = 0
    while i + 8 <= bytes.count && probes.count < 16 {
        probes.append((0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[i + $1]) << (8 * UInt64($1)) })
        i += 8
    }
    for t in tables { for p in probes { _ = t.name(for: p) } }
    return 0
}

@main
enum Main {
    static func main() { FuzzMain.run(fuzzOneInput) }
}
