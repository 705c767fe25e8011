/// Just enough of ACPI's Machine Language (ACPI 6.x, chapter 20) to describe the
/// machine's devices in the DSDT: scopes, devices, named integers, strings, EISA ids,
/// buffers and packages, with the package-length encoding, and the resource
/// descriptors (chapter 6.4) a `_CRS` uses. Every output is plain bytes.
public enum AML {
    /// A package length (20.2.4) followed by `body`: the length counts its own bytes.
    static func lengthPrefixed(_ body: [UInt8]) -> [UInt8] {
        let n = body.count
        if n + 1 <= 0x3F { return [UInt8(n + 1)] + body }
        if n + 2 <= 0xFFF {
            let t = n + 2
            return [UInt8(0x40 | (t & 0xF)), UInt8(truncatingIfNeeded: t >> 4)] + body
        }
        let t = n + 3
        return [UInt8(0x80 | (t & 0xF)), UInt8(truncatingIfNeeded: t >> 4), UInt8(truncatingIfNeeded: t >> 12)] + body
    }

    /// A four-character name segment, padded with '_'.
    static func name(_ s: String) -> [UInt8] {
        let b = Array(s.utf8.prefix(4))
        return b + [UInt8](repeating: 0x5F, count: 4 - b.count)
    }

    /// `Scope (\NAME) { body }`.
    public static func scope(_ root: String, _ body: [UInt8]) -> [UInt8] {
        [0x10] + lengthPrefixed([0x5C] + name(root) + body)
    }

    /// `Device (NAME) { body }`.
    public static func device(_ n: String, _ body: [UInt8]) -> [UInt8] {
        [0x5B, 0x82] + lengthPrefixed(name(n) + body)
    }

    /// `Name (NAME, value)`.
    public static func named(_ n: String, _ value: [UInt8]) -> [UInt8] { [0x08] + name(n) + value }

    public static func integer(_ v: UInt64) -> [UInt8] {
        switch v {
        case 0: return [0x00]
        case 1: return [0x01]
        case ...0xFF: return [0x0A, UInt8(v)]
        case ...0xFFFF: return [0x0B] + le(v, 2)
        case ...0xFFFF_FFFF: return [0x0C] + le(v, 4)
        default: return [0x0E] + le(v, 8)
        }
    }

    public static func string(_ s: String) -> [UInt8] { [0x0D] + Array(s.utf8) + [0] }

    /// `EISAID ("PNP0A03")`: three letters in five bits each, then four hex digits.
    public static func eisaID(_ id: String) -> [UInt8] {
        let c = Array(id.utf8)
        precondition(c.count == 7, "an EISA id is 7 characters")
        let letters = UInt16(c[0] & 0x1F) << 10 | UInt16(c[1] & 0x1F) << 5 | UInt16(c[2] & 0x1F)
        func hex(_ x: UInt8) -> UInt8 { x <= 0x39 ? x - 0x30 : (x | 0x20) - 0x61 + 10 }
        return [0x0C, UInt8(letters >> 8), UInt8(letters & 0xFF), hex(c[3]) << 4 | hex(c[4]), hex(c[5]) << 4 | hex(c[6])]
    }

    public static func buffer(_ bytes: [UInt8]) -> [UInt8] {
        [0x11] + lengthPrefixed(integer(UInt64(bytes.count)) + bytes)
    }

    /// `Package (n) { elements }`, each element already encoded.
    public static func package(_ elements: [[UInt8]]) -> [UInt8] {
        [0x12] + lengthPrefixed([UInt8(elements.count)] + elements.flatMap { $0 })
    }

    static func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

    // MARK: Resource descriptors (6.4)

    /// `Memory32Fixed (ReadWrite, base, length)`.
    public static func memory32Fixed(base: UInt32, length: UInt32) -> [UInt8] {
        [0x86, 0x09, 0x00, 0x01] + le(UInt64(base), 4) + le(UInt64(length), 4)
    }

    /// `Interrupt (ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive) { gsi }`.
    public static func interrupt(_ gsi: UInt32, edge: Bool, activeLow: Bool = false) -> [UInt8] {
        let flags: UInt8 = 0x01 | (edge ? 0x02 : 0) | (activeLow ? 0x04 : 0)
        return [0x89, 0x06, 0x00, flags, 0x01] + le(UInt64(gsi), 4)
    }

    /// `IO (Decode16, min, min, 1, length)`.
    public static func io(_ base: UInt16, length: UInt8) -> [UInt8] {
        [0x47, 0x01] + le(UInt64(base), 2) + le(UInt64(base), 2) + [0x01, length]
    }

    /// A Word Address Space descriptor a bridge produces: `kind` 1 for I/O, 2 for bus
    /// numbers; minimum and maximum fixed.
    public static func wordRange(kind: UInt8, min: UInt16, max: UInt16) -> [UInt8] {
        let typeFlags: UInt8 = kind == 1 ? 0x03 : 0x00 // I/O: the entire ISA and non-ISA range
        return [0x88, 0x0D, 0x00, kind, 0x0C, typeFlags] + le(0, 2) + le(UInt64(min), 2) + le(UInt64(max), 2)
            + le(0, 2) + le(UInt64(max) - UInt64(min) + 1, 2)
    }

    /// A DWord memory range a bridge produces (read-write, non-cacheable).
    public static func dwordMemory(min: UInt32, max: UInt32) -> [UInt8] {
        [0x87, 0x17, 0x00, 0x00, 0x0C, 0x01] + le(0, 4) + le(UInt64(min), 4) + le(UInt64(max), 4)
            + le(0, 4) + le(UInt64(max) - UInt64(min) + 1, 4)
    }

    /// The end tag of a resource template (checksum 0: none).
    public static let endTag: [UInt8] = [0x79, 0x00]
}
