import GuestMemory

/// A Multiboot (version 1) kernel: the header in its first 8 KiB says how to load it,
/// and it starts in flat 32-bit protected mode with EAX = 0x2BADB002 and EBX pointing
/// at the Multiboot information structure. kvm-unit-tests' images are such kernels.
/// Specification: "Multiboot Specification version 0.6.96", sections 3.1 to 3.3.
public struct Multiboot: Sendable {
    public static let headerMagic: UInt32 = 0x1BAD_B002
    public static let bootloaderMagic: UInt32 = 0x2BAD_B002
    public static let searchLength = 8192

    public struct Header: Sendable, Equatable {
        public let offset: Int
        public let flags: UInt32
        /// Flag 16: the a.out-kludge address fields are valid (and win over ELF).
        public let addresses: (header: UInt32, load: UInt32, loadEnd: UInt32, bssEnd: UInt32, entry: UInt32)?

        public static func == (a: Header, b: Header) -> Bool {
            a.offset == b.offset && a.flags == b.flags && a.addresses.map { [$0.header, $0.load, $0.loadEnd, $0.bssEnd, $0.entry] } == b.addresses.map { [$0.header, $0.load, $0.loadEnd, $0.bssEnd, $0.entry] }
        }
    }

    /// A piece to place in guest memory: file bytes, then zeros up to `memorySize`.
    public struct Piece: Sendable, Equatable {
        public let address: UInt64
        public let bytes: ArraySlice<UInt8>
        public let memorySize: UInt64
    }

    public let header: Header
    public let entry: UInt64
    public let pieces: [Piece]
    /// One past the end of the loaded image (BSS included).
    public let imageEnd: UInt64

    /// Finds the header: 4-byte aligned in the first 8 KiB, magic plus flags plus
    /// checksum adding up to zero. Nil when there is none (not a Multiboot image).
    public static func findHeader(_ bytes: [UInt8]) throws(BootError) -> Header? {
        let r = ByteReader(bytes)
        let limit = min(bytes.count, searchLength) - 12
        guard limit >= 0 else { return nil }
        var magicWithBadChecksum = false
        for offset in stride(from: 0, through: limit, by: 4) where r.u32(offset) == headerMagic {
            let flags = r.u32(offset + 4), checksum = r.u32(offset + 8)
            guard headerMagic &+ flags &+ checksum == 0 else { magicWithBadChecksum = true; continue }
            // Bits 0-15 are requirements: 0 page-aligned modules, 1 memory info and
            // 2 video mode are understood (video is simply not provided).
            let unknown = flags & 0xFFF8
            guard unknown == 0 else {
                throw .malformed("Multiboot header requires features this loader does not know (flags 0x\(String(flags, radix: 16)))")
            }
            var addresses: (UInt32, UInt32, UInt32, UInt32, UInt32)? = nil
            if flags & (1 << 16) != 0 {
                guard offset + 32 <= bytes.count else { throw .malformed("Multiboot header with address fields is truncated") }
                addresses = (r.u32(offset + 12), r.u32(offset + 16), r.u32(offset + 20), r.u32(offset + 24), r.u32(offset + 28))
            }
            return Header(offset: offset, flags: flags, addresses: addresses)
        }
        if magicWithBadChecksum { throw .malformed("Multiboot header magic found, but its checksum is wrong") }
        return nil
    }

    public init(_ bytes: [UInt8]) throws(BootError) {
        guard let header = try Multiboot.findHeader(bytes) else {
            throw .malformed("no Multiboot header in the first 8 KiB")
        }
        self.header = header
        if let a = header.addresses {
            // a.out kludge: the file, from the header's position, maps to header_addr.
            guard a.load <= a.header, UInt64(a.header) - UInt64(a.load) <= UInt64(header.offset) else {
                throw .malformed("Multiboot load_addr 0x\(String(a.load, radix: 16)) is after header_addr 0x\(String(a.header, radix: 16))")
            }
            let fileStart = header.offset - Int(a.header - a.load)
            let loadLength = a.loadEnd == 0 ? bytes.count - fileStart : Int(Int64(a.loadEnd) - Int64(a.load))
            guard loadLength > 0, fileStart + loadLength <= bytes.count else {
                throw .malformed("Multiboot load range (load_addr..load_end_addr) runs past the end of the file")
            }
            let bssEnd = a.bssEnd == 0 ? UInt64(a.load) + UInt64(loadLength) : UInt64(a.bssEnd)
            guard bssEnd >= UInt64(a.load) + UInt64(loadLength) else { throw .malformed("Multiboot bss_end_addr is before the end of the loaded image") }
            pieces = [Piece(address: UInt64(a.load), bytes: bytes[fileStart..<(fileStart + loadLength)], memorySize: bssEnd - UInt64(a.load))]
            entry = UInt64(a.entry)
            imageEnd = bssEnd
        } else {
            let elf = try ELFImage(bytes)
            guard !elf.is64Bit || elf.end <= 0x1_0000_0000 else { throw .malformed("Multiboot ELF segments must lie below 4 GiB") }
            pieces = elf.segments.map { Piece(address: $0.physicalAddress, bytes: bytes[$0.fileOffset..<($0.fileOffset + $0.fileSize)], memorySize: $0.memorySize) }
            entry = elf.entry
            imageEnd = elf.end
        }
        guard entry < 0x1_0000_0000 else { throw .unreachable(what: "Multiboot entry point", address: entry, mode: .protected) }
        guard pieces.contains(where: { entry >= $0.address && entry < $0.address + $0.memorySize }) else {
            throw .malformed("Multiboot entry point 0x\(String(entry, radix: 16)) is outside every loaded segment")
        }
    }

    /// Loads the kernel, its command line and modules, writes the Multiboot
    /// information (memory map included) after the image, and returns the boot state.
    public func load(into memory: GuestMemory, commandLine: String, modules: [(bytes: [UInt8], name: String)],
                     memoryMap: [(base: UInt64, length: UInt64, type: UInt32)]) throws(BootError) -> InitialCPUState {
        for p in pieces {
            guard memory.isValid(GuestAddress(p.address), length: p.memorySize) else {
                throw .doesNotFit(what: "kernel segment", address: p.address, size: p.memorySize, memorySize: memory.size)
            }
        }
        var state = try ModeSetup.prepare(.protected, entry: entry, memory: memory)
        try ModeSetup.wrap { () throws(GuestMemoryError) in
            for p in pieces {
                try memory.write(bytes: p.bytes, at: GuestAddress(p.address))
                if p.memorySize > UInt64(p.bytes.count) {
                    try memory.fill(0, count: p.memorySize - UInt64(p.bytes.count), at: GuestAddress(p.address + UInt64(p.bytes.count)))
                }
            }
        }

        // Everything else goes after the image, page by page, like QEMU's loader.
        var next = (imageEnd + 0xFFF) & ~0xFFF
        func place(_ bytes: [UInt8], what: String, align: UInt64 = 16) throws(BootError) -> UInt64 {
            let at = (next + align - 1) & ~(align - 1)
            // Multiboot's fields are 32-bit: the whole piece, its end included, stays below 4 GiB.
            guard UInt64(bytes.count) <= 0x1_0000_0000, at <= 0x1_0000_0000 - UInt64(bytes.count), memory.isValid(GuestAddress(at), length: UInt64(max(bytes.count, 1))) else {
                throw .doesNotFit(what: what, address: at, size: UInt64(bytes.count), memorySize: memory.size)
            }
            try ModeSetup.wrap { () throws(GuestMemoryError) in try memory.write(bytes: bytes, at: GuestAddress(at)) }
            next = at + UInt64(bytes.count)
            return at
        }

        let infoAddress = try place([UInt8](repeating: 0, count: 88), what: "Multiboot information", align: 8)
        let cmdline = try place(Array(commandLine.utf8) + [0], what: "kernel command line")
        var moduleEntries = ByteWriter()
        for m in modules {
            let start = try place(m.bytes, what: "module \(m.name)", align: 0x1000) // flag 0 asks for page alignment
            let name = try place(Array(m.name.utf8) + [0], what: "module name")
            moduleEntries.u32(UInt32(start)); moduleEntries.u32(UInt32(start + UInt64(m.bytes.count)))
            moduleEntries.u32(UInt32(name)); moduleEntries.u32(0)
        }
        let modsAddress = modules.isEmpty ? 0 : try place(moduleEntries.bytes, what: "module list")
        var map = ByteWriter()
        for e in memoryMap { map.u32(20); map.u64(e.base); map.u64(e.length); map.u32(e.type) }
        let mapAddress = try place(map.bytes, what: "memory map", align: 8)

        let lower = memoryMap.first { $0.base == 0 && $0.type == 1 }.map { min($0.length, 0xA0000) / 1024 } ?? 0
        let upper = memoryMap.first { $0.base <= 0x10_0000 && $0.base + $0.length > 0x10_0000 && $0.type == 1 }
            .map { ($0.base + $0.length - 0x10_0000) / 1024 } ?? 0
        var info = ByteWriter()
        let flags: UInt32 = 0x1 | 0x4 | 0x40 | (modules.isEmpty ? 0 : 0x8) | 0x200 // mem, cmdline, mmap, mods, loader name
        let loaderName = try place(Array("Swiftvisor".utf8) + [0], what: "boot loader name")
        info.u32(flags)
        info.u32(UInt32(lower)); info.u32(UInt32(min(upper, UInt64(UInt32.max))))
        info.u32(0xFFFF_FFFF)              // boot_device: none
        info.u32(UInt32(cmdline))
        info.u32(UInt32(modules.count)); info.u32(UInt32(modsAddress))
        info.raw([UInt8](repeating: 0, count: 16)) // syms
        info.u32(UInt32(map.bytes.count)); info.u32(UInt32(mapAddress))
        info.u32(0); info.u32(0)            // drives
        info.u32(0)                         // config_table
        info.u32(UInt32(loaderName))
        info.raw([UInt8](repeating: 0, count: 88 - info.bytes.count))
        try ModeSetup.wrap { () throws(GuestMemoryError) in try memory.write(bytes: info.bytes, at: GuestAddress(infoAddress)) }

        state.rax = UInt64(Multiboot.bootloaderMagic)
        state.rbx = infoAddress
        state.rsp = 0 // Multiboot gives no stack: the kernel sets its own
        return state
    }
}
