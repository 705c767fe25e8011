/// One exit in an exit trace (`run --trace FILE`), and the file's layout.
///
/// A trace file is a 48-byte header, then 48-byte records, all little-endian:
///
///     header   "SVTRACE\0"  u32 version (1)  u32 record size (48)  u32 vCPUs
///              u32 0        u64 wall-clock start (ns since 1970)   16 bytes 0
///     record   u64 time (ns since the trace started)  u64 RIP  u64 port or address
///              u64 data  u32 ns in the VMM handling it  u16 vCPU  u8 kind  u8 size
///              u8 flags  7 bytes 0
///     trailer  one record per vCPU with kind 255: data = exits dropped (the ring was
///              full when the writer fell behind)
///
/// `kind` is `ExitKind`'s raw value; `flags` bit 0 says port/address and data are set
/// (port I/O and MMIO), bit 1 that it was a write. Fixed-size records keep the writer a
/// byte copy and the reader a loop without any length it must trust.
public struct TraceRecord: Equatable, Sendable {
    public var time: UInt64
    public var rip: UInt64
    public var address: UInt64
    public var data: UInt64
    public var handlingNanoseconds: UInt32
    public var vcpu: UInt16
    public var kind: UInt8
    public var size: UInt8
    public var flags: UInt8

    public static let size = 48
    public static let headerSize = 48
    public static let magic: [UInt8] = Array("SVTRACE\0".utf8)
    public static let version: UInt32 = 1
    /// The kind of a trailer record.
    public static let trailerKind: UInt8 = 255
    public static let hasAccess: UInt8 = 1
    public static let isWrite: UInt8 = 2

    public init(time: UInt64, rip: UInt64, address: UInt64 = 0, data: UInt64 = 0, handlingNanoseconds: UInt32 = 0, vcpu: UInt16,
                kind: UInt8, size: UInt8 = 0, flags: UInt8 = 0) {
        self.time = time
        self.rip = rip
        self.address = address
        self.data = data
        self.handlingNanoseconds = handlingNanoseconds
        self.vcpu = vcpu
        self.kind = kind
        self.size = size
        self.flags = flags
    }

    public var exitKind: ExitKind? { ExitKind(rawValue: Int(kind)) }
    public var isPortIO: Bool { kind == UInt8(ExitKind.ioIn.rawValue) || kind == UInt8(ExitKind.ioOut.rawValue) }
    public var isMMIO: Bool { kind == UInt8(ExitKind.mmioRead.rawValue) || kind == UInt8(ExitKind.mmioWrite.rawValue) }

    /// The record's 48 bytes.
    public var bytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: TraceRecord.size)
        TraceRecord.put(time, &b, 0, 8)
        TraceRecord.put(rip, &b, 8, 8)
        TraceRecord.put(address, &b, 16, 8)
        TraceRecord.put(data, &b, 24, 8)
        TraceRecord.put(UInt64(handlingNanoseconds), &b, 32, 4)
        TraceRecord.put(UInt64(vcpu), &b, 36, 2)
        b[38] = kind
        b[39] = size
        b[40] = flags
        return b
    }

    /// A record from 48 bytes at `offset` of `b` (the caller checked they are there).
    init(_ b: ArraySlice<UInt8>, at offset: Int) {
        func get(_ at: Int, _ n: Int) -> UInt64 {
            var v: UInt64 = 0
            for i in 0..<n { v |= UInt64(b[offset + at + i]) << (8 * UInt64(i)) }
            return v
        }
        self.init(time: get(0, 8), rip: get(8, 8), address: get(16, 8), data: get(24, 8),
                  handlingNanoseconds: UInt32(truncatingIfNeeded: get(32, 4)), vcpu: UInt16(truncatingIfNeeded: get(36, 2)),
                  kind: b[offset + 38], size: b[offset + 39], flags: b[offset + 40])
    }

    static func put(_ v: UInt64, _ b: inout [UInt8], _ at: Int, _ n: Int) {
        for i in 0..<n { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    public static func header(vcpus: Int, wallClockNanoseconds: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: headerSize)
        b.replaceSubrange(0..<8, with: magic)
        put(UInt64(version), &b, 8, 4)
        put(UInt64(size), &b, 12, 4)
        put(UInt64(vcpus), &b, 16, 4)
        put(wallClockNanoseconds, &b, 24, 8)
        return b
    }
}
