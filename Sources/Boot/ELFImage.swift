/// The loadable parts of an ELF executable (32- or 64-bit, little-endian): its entry
/// point and `PT_LOAD` segments. Just what a loader needs; every offset and size is
/// checked against the file, because the file is untrusted input.
public struct ELFImage: Sendable, Equatable {
    public struct Segment: Sendable, Equatable {
        /// Physical load address (`p_paddr`): where boot protocols put the segment.
        public let physicalAddress: UInt64
        public let virtualAddress: UInt64
        public let fileOffset: Int
        public let fileSize: Int
        /// Bytes in memory; beyond `fileSize` they are zero (BSS).
        public let memorySize: UInt64
    }

    public let is64Bit: Bool
    public let machine: UInt16
    public let entry: UInt64
    public let segments: [Segment]
    /// ELF notes from PT_NOTE segments: (owner name, type, description).
    public let notes: [(name: String, type: UInt32, description: [UInt8])]

    public static let magic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46] // "\x7fELF"

    public static func isELF(_ bytes: [UInt8]) -> Bool { bytes.count >= 4 && Array(bytes[0..<4]) == magic }

    public init(_ bytes: [UInt8]) throws(BootError) {
        guard bytes.count >= 52, ELFImage.isELF(bytes) else { throw .malformed("not an ELF file (no \\x7fELF magic)") }
        let r = ByteReader(bytes)
        let elfClass = bytes[4]
        guard elfClass == 1 || elfClass == 2 else { throw .malformed("ELF class \(elfClass) is neither 32- nor 64-bit") }
        guard bytes[5] == 1 else { throw .malformed("big-endian ELF: x86 images are little-endian") }
        is64Bit = elfClass == 2
        let type = r.u16(16)
        guard type == 2 || type == 3 else { throw .malformed("ELF type \(type) is not an executable") }
        machine = r.u16(18)
        guard machine == 3 || machine == 62 else { throw .malformed("ELF machine \(machine) is not x86 (3) or x86-64 (62)") }
        if is64Bit { guard bytes.count >= 64 else { throw .malformed("truncated ELF header") } }
        entry = is64Bit ? r.u64(24) : UInt64(r.u32(24))
        let phoff = is64Bit ? Int(clamping: r.u64(32)) : Int(r.u32(28))
        let phentsize = Int(r.u16(is64Bit ? 54 : 42))
        let phnum = Int(r.u16(is64Bit ? 56 : 44))
        let minimum = is64Bit ? 56 : 32
        guard phnum > 0 else { throw .malformed("ELF file has no program headers") }
        guard phentsize >= minimum, phoff > 0, phoff <= bytes.count, phnum * phentsize <= bytes.count - phoff else {
            throw .malformed("ELF program headers lie outside the file (truncated?)")
        }
        var segments: [Segment] = []
        var notes: [(String, UInt32, [UInt8])] = []
        for i in 0..<phnum {
            let h = phoff + i * phentsize
            if r.u32(h) == 4 { // PT_NOTE: namesz, descsz, type, name, desc, each 4-aligned
                let offset = is64Bit ? Int(clamping: r.u64(h + 8)) : Int(r.u32(h + 4))
                let size = is64Bit ? Int(clamping: r.u64(h + 32)) : Int(r.u32(h + 16))
                guard offset <= bytes.count, size <= bytes.count - offset else {
                    throw .malformed("ELF note segment \(i) runs past the end of the file (truncated?)")
                }
                var o = offset
                while o + 12 <= offset + size {
                    let namesz = Int(r.u32(o)), descsz = Int(r.u32(o + 4)), type = r.u32(o + 8)
                    let nameStart = o + 12, descStart = nameStart + (namesz + 3) & ~3
                    guard namesz < 256, descsz < 1 << 20, descStart + descsz <= offset + size else { break }
                    let name = String(decoding: bytes[nameStart..<(nameStart + namesz)].prefix { $0 != 0 }, as: UTF8.self)
                    notes.append((name, type, Array(bytes[descStart..<(descStart + descsz)])))
                    o = descStart + (descsz + 3) & ~3
                }
                continue
            }
            guard r.u32(h) == 1 else { continue } // PT_LOAD
            let s: Segment
            if is64Bit {
                s = Segment(physicalAddress: r.u64(h + 24), virtualAddress: r.u64(h + 16), fileOffset: Int(clamping: r.u64(h + 8)),
                            fileSize: Int(clamping: r.u64(h + 32)), memorySize: r.u64(h + 40))
            } else {
                s = Segment(physicalAddress: UInt64(r.u32(h + 12)), virtualAddress: UInt64(r.u32(h + 8)), fileOffset: Int(r.u32(h + 4)),
                            fileSize: Int(r.u32(h + 16)), memorySize: UInt64(r.u32(h + 20)))
            }
            guard s.fileOffset <= bytes.count, s.fileSize <= bytes.count - s.fileOffset else {
                throw .malformed("ELF segment \(i) (\(s.fileSize) bytes at file offset \(s.fileOffset)) runs past the end of the file (truncated?)")
            }
            guard UInt64(s.fileSize) <= s.memorySize else {
                throw .malformed("ELF segment \(i) is larger in the file (\(s.fileSize)) than in memory (\(s.memorySize))")
            }
            guard s.physicalAddress.addingReportingOverflow(s.memorySize).overflow == false else {
                throw .malformed("ELF segment \(i) wraps around the address space")
            }
            segments.append(s)
        }
        guard !segments.isEmpty else { throw .malformed("ELF file has no loadable (PT_LOAD) segment") }
        let sorted = segments.sorted { $0.physicalAddress < $1.physicalAddress }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.physicalAddress + a.memorySize > b.physicalAddress {
            throw .malformed("ELF segments at 0x\(String(a.physicalAddress, radix: 16)) and 0x\(String(b.physicalAddress, radix: 16)) overlap")
        }
        self.segments = segments
        self.notes = notes
    }

    public static func == (a: ELFImage, b: ELFImage) -> Bool {
        a.is64Bit == b.is64Bit && a.machine == b.machine && a.entry == b.entry && a.segments == b.segments
            && a.notes.map { "\($0.name)/\($0.type)/\($0.description)" } == b.notes.map { "\($0.name)/\($0.type)/\($0.description)" }
    }

    /// One past the highest byte any segment occupies in memory.
    public var end: UInt64 { segments.map { $0.physicalAddress + $0.memorySize }.max() ?? 0 }
}

/// Little-endian reads from a byte array; callers check bounds first.
struct ByteReader {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    func u8(_ o: Int) -> UInt8 { bytes[o] }
    func u16(_ o: Int) -> UInt16 { UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
    func u32(_ o: Int) -> UInt32 { UInt32(u16(o)) | UInt32(u16(o + 2)) << 16 }
    func u64(_ o: Int) -> UInt64 { UInt64(u32(o)) | UInt64(u32(o + 4)) << 32 }
}

/// Little-endian building of tables (boot information, ACPI).
struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { for i in 0..<2 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt16(i)))) } }
    mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    mutating func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
    mutating func ascii(_ s: String, length: Int) {
        let a = Array(s.utf8.prefix(length))
        bytes += a + [UInt8](repeating: 0x20, count: length - a.count)
    }
    mutating func raw(_ b: [UInt8]) { bytes += b }
    mutating func set32(_ v: UInt32, at o: Int) { for i in 0..<4 { bytes[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
}
