import GuestMemory

/// A Linux kernel booted through the 64-bit boot protocol (Documentation/arch/x86/
/// boot.rst, "64-bit Boot Protocol"): long mode with an identity map, RSI pointing at
/// the zero page (`struct boot_params`) that holds the setup header, the command line
/// pointer, the e820 memory map and the initrd. Two formats:
/// - bzImage: the setup header is validated and the protected-mode part is loaded at
///   1 MiB and entered at its 64-bit entry (load address + 0x200); it decompresses
///   the kernel itself.
/// - vmlinux: an uncompressed ELF64 kernel, its segments loaded at their physical
///   addresses and entered at the ELF entry point.
public struct LinuxKernel: Sendable {
    public enum Format: Sendable, Equatable { case bzImage, vmlinux }

    public let format: Format
    /// Setup header fields that matter to the loader.
    public let protocolVersion: UInt16
    public let setupHeader: [UInt8]
    public let commandLineSize: UInt32
    public let initrdAddressMax: UInt32
    let pieces: [(address: UInt64, bytes: ArraySlice<UInt8>, memorySize: UInt64)]
    public let entry: UInt64
    /// Where a bzImage's compressed kernel lies in the file (protocol 2.08+), for
    /// decompressing it on the host instead of in the guest.
    public let payload: Range<Int>?
    /// The 32-bit PVH entry point from the vmlinux's Xen ELF note
    /// (XEN_ELFNOTE_PHYS32_ENTRY), when the kernel was built with CONFIG_PVH.
    public let pvhEntry: UInt64?

    public static let pvhStartInfo: UInt64 = 0x6000
    static let pvhMagic: UInt32 = 0x336E_C578

    public static let bzImageLoadAddress: UInt64 = 0x10_0000
    public static let zeroPage: UInt64 = 0x7000
    public static let commandLineAddress: UInt64 = 0x2_0000
    /// The oldest protocol with a 64-bit entry point (2.12 adds XLF_KERNEL_64).
    public static let minimumProtocol: UInt16 = 0x020C

    /// Whether `bytes` look like a Linux kernel this loader knows.
    public static func recognises(_ bytes: [UInt8]) -> Bool {
        isBzImage(bytes) || (ELFImage.isELF(bytes) && bytes.count > 4 && bytes[4] == 2)
    }

    /// A bzImage's boot sector and setup-header magic (the first 0x264 bytes suffice).
    public static func isBzImage(_ b: [UInt8]) -> Bool {
        b.count >= 0x264 && b[0x1FE] == 0x55 && b[0x1FF] == 0xAA && Array(b[0x202..<0x206]) == Array("HdrS".utf8)
    }

    public init(_ bytes: [UInt8]) throws(BootError) {
        if ELFImage.isELF(bytes) {
            let elf = try ELFImage(bytes)
            guard elf.is64Bit, elf.machine == 62 else { throw .malformed("not a 64-bit x86 kernel (ELF machine \(elf.machine), \(elf.is64Bit ? 64 : 32)-bit)") }
            format = .vmlinux
            protocolVersion = 0x020F
            setupHeader = []
            commandLineSize = 2048
            initrdAddressMax = 0x7FFF_FFFF
            // vmlinux links at a virtual address; its segments say where they go physically.
            pieces = elf.segments.map { (address: $0.physicalAddress, bytes: bytes[$0.fileOffset..<($0.fileOffset + $0.fileSize)], memorySize: $0.memorySize) }
            // Differences, not sums: a segment's virtual range is the file's to claim and
            // may wrap (its physical range is checked by ELFImage).
            let text = elf.segments.first { elf.entry >= $0.virtualAddress && elf.entry - $0.virtualAddress < $0.memorySize }
            entry = text.map { elf.entry - $0.virtualAddress + $0.physicalAddress } ?? elf.entry
            payload = nil
            pvhEntry = elf.notes.first { $0.name == "Xen" && $0.type == 18 && ($0.description.count == 4 || $0.description.count == 8) }
                .map { d in d.description.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) } }
            guard pieces.contains(where: { entry >= $0.address && entry < $0.address + $0.memorySize }) else {
                throw .malformed("the kernel's entry point 0x\(String(elf.entry, radix: 16)) is outside its segments")
            }
            return
        }
        guard bytes.count >= 0x264 else { throw .malformed("too short to be a Linux kernel (\(bytes.count) bytes)") }
        guard bytes[0x1FE] == 0x55, bytes[0x1FF] == 0xAA else { throw .malformed("not a Linux kernel: no boot signature 0xAA55 at offset 0x1FE") }
        guard Array(bytes[0x202..<0x206]) == Array("HdrS".utf8) else {
            throw .malformed("not a bzImage: no \"HdrS\" setup header at offset 0x202 (a kernel older than 2.0 or not a kernel)")
        }
        let r = ByteReader(bytes)
        let version = r.u16(0x206)
        guard version >= LinuxKernel.minimumProtocol else {
            throw .malformed("boot protocol \(version >> 8).\(version & 0xFF) is too old: the 64-bit entry needs 2.12 (Linux 3.8 or later)")
        }
        let xloadflags = r.u16(0x236)
        guard xloadflags & 0x1 != 0 else { throw .malformed("the kernel has no 64-bit entry point (XLF_KERNEL_64 not set): a 32-bit kernel") }
        let loadflags = r.u8(0x211)
        guard loadflags & 0x1 != 0 else { throw .malformed("the kernel wants to be loaded low (LOADED_HIGH not set): not a bzImage") }
        var setupSectors = Int(r.u8(0x1F1))
        if setupSectors == 0 { setupSectors = 4 }
        let kernelStart = (setupSectors + 1) * 512
        guard kernelStart < bytes.count else { throw .malformed("the file ends inside the setup code (\(setupSectors) sectors): truncated") }
        // syssize counts 16-byte paragraphs, so it may round up past the last byte.
        let syssize = UInt64(r.u32(0x1F4)) * 16
        guard UInt64(bytes.count - kernelStart) + 15 >= syssize else {
            throw .malformed("the protected-mode kernel is \(syssize) bytes but the file holds only \(bytes.count - kernelStart): truncated")
        }
        format = .bzImage
        protocolVersion = version
        let headerEnd = min(0x202 + Int(r.u8(0x201)), bytes.count) // byte 0x201: length of the header after 0x202
        setupHeader = Array(bytes[0x1F1..<max(headerEnd, 0x264)])
        commandLineSize = version >= 0x0206 ? r.u32(0x238) : 255
        initrdAddressMax = version >= 0x0203 ? r.u32(0x22C) : 0x37FF_FFFF
        let initSize = UInt64(r.u32(0x260))
        let image = bytes[kernelStart...]
        pieces = [(LinuxKernel.bzImageLoadAddress, image, max(UInt64(image.count), initSize))]
        entry = LinuxKernel.bzImageLoadAddress + 0x200
        pvhEntry = nil
        if version >= 0x0208, r.u32(0x24C) > 0 {
            let offset = kernelStart + Int(r.u32(0x248)), length = Int(r.u32(0x24C))
            guard offset <= bytes.count, length <= bytes.count - offset else {
                throw .malformed("the compressed kernel (payload_offset/payload_length) lies outside the file: truncated")
            }
            payload = offset..<(offset + length)
        } else {
            payload = nil
        }
    }

    /// Loads the kernel, its command line, initrd and zero page; returns the boot state.
    public func load(into memory: GuestMemory, commandLine: String, initrd: [UInt8]?,
                     memoryMap: [(base: UInt64, length: UInt64, type: UInt32)], rsdp: UInt64?) throws(BootError) -> InitialCPUState {
        let cmdline = Array(commandLine.utf8)
        guard cmdline.count < Int(commandLineSize) else {
            // cmdline_size counts the terminating NUL, and a hostile header may say 0.
            throw .malformed("the command line is \(cmdline.count) bytes; this kernel takes at most \(max(commandLineSize, 1) - 1)")
        }
        for p in pieces where !memory.isValid(GuestAddress(p.address), length: p.memorySize) {
            throw .doesNotFit(what: "the kernel", address: p.address, size: p.memorySize, memorySize: memory.size)
        }
        let kernelEnd = pieces.map { $0.address + $0.memorySize }.max() ?? 0
        var state = try ModeSetup.prepare(.long, entry: entry, memory: memory)
        var zero = [UInt8](repeating: 0, count: 4096)
        func put(_ v: UInt64, _ at: Int, _ n: Int) { for i in 0..<n { zero[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        if format == .bzImage {
            zero.replaceSubrange(0x1F1..<(0x1F1 + setupHeader.count), with: setupHeader)
        } else {
            put(0xAA55, 0x1FE, 2); put(0x5372_6448, 0x202, 4) // "HdrS"
            put(UInt64(protocolVersion), 0x206, 2)
            put(0x100_0000, 0x230, 4)                          // kernel_alignment
        }
        zero[0x210] = 0xFF                                     // type_of_loader: undefined
        zero[0x211] |= 0x01 | 0x80                             // LOADED_HIGH, CAN_USE_HEAP
        put(0xFE00, 0x224, 2)                                  // heap_end_ptr
        put(LinuxKernel.commandLineAddress, 0x228, 4)          // cmd_line_ptr
        if let rsdp { put(rsdp, 0x070, 8) }                    // acpi_rsdp_addr (2.14)

        var initrdPlace: (UInt64, UInt64)? = nil
        if let initrd, !initrd.isEmpty {
            // As high as allowed, below the PCI hole, page-aligned, above the kernel.
            let top = min(UInt64(initrdAddressMax) + 1, memoryMap.filter { $0.type == PlatformMemoryMap.ram && $0.base < 0xC000_0000 }
                .map { $0.base + $0.length }.max() ?? 0)
            let size = UInt64(initrd.count)
            guard top > size, (top - size) & ~0xFFF >= (kernelEnd + 0xFFF) & ~0xFFF else {
                throw .doesNotFit(what: "the initrd", address: kernelEnd, size: size, memorySize: memory.size)
            }
            let at = (top - size) & ~0xFFF
            initrdPlace = (at, size)
            put(at, 0x218, 4); put(size, 0x21C, 4)
            put(at >> 32, 0x0C0, 4); put(size >> 32, 0x0C4, 4)
        }
        let entries = memoryMap.prefix(128)
        zero[0x1E8] = UInt8(entries.count)
        for (i, e) in entries.enumerated() {
            put(e.base, 0x2D0 + i * 20, 8); put(e.length, 0x2D0 + i * 20 + 8, 8); put(UInt64(e.type), 0x2D0 + i * 20 + 16, 4)
        }

        try ModeSetup.wrap { () throws(GuestMemoryError) in
            for p in pieces {
                try memory.write(bytes: p.bytes, at: GuestAddress(p.address))
                if p.memorySize > UInt64(p.bytes.count) {
                    try memory.fill(0, count: p.memorySize - UInt64(p.bytes.count), at: GuestAddress(p.address + UInt64(p.bytes.count)))
                }
            }
            try memory.write(bytes: cmdline + [0], at: GuestAddress(LinuxKernel.commandLineAddress))
            if let (at, _) = initrdPlace, let initrd { try memory.write(bytes: initrd, at: GuestAddress(at)) }
            try memory.write(bytes: zero, at: GuestAddress(LinuxKernel.zeroPage))
        }
        state.rsi = LinuxKernel.zeroPage
        return state
    }
}

extension LinuxKernel {
    /// Loads the kernel for the PVH boot protocol (x86/pvh in Xen's docs, Linux's
    /// arch/x86/platform/pvh): 32-bit flat protected mode, paging off, at the Xen note's
    /// entry, EBX pointing at `struct hvm_start_info` (version 1: command line, the
    /// initrd as module 0, the memory map, the RSDP).
    public func loadPVH(into memory: GuestMemory, commandLine: String, initrd: [UInt8]?,
                        memoryMap: [(base: UInt64, length: UInt64, type: UInt32)], rsdp: UInt64?) throws(BootError) -> InitialCPUState {
        guard let pvhEntry else { throw .malformed("the kernel has no PVH entry (no XEN_ELFNOTE_PHYS32_ENTRY note; build it with CONFIG_PVH)") }
        // The 64-bit path places everything the same way; then the start info is added.
        var state = try load(into: memory, commandLine: commandLine, initrd: initrd, memoryMap: memoryMap, rsdp: rsdp)
        let zero = GuestAddress(LinuxKernel.zeroPage)
        let initrdAddress: UInt32, initrdSize: UInt32
        do {
            initrdAddress = try memory.read(at: zero.adding(0x218)!)
            initrdSize = try memory.read(at: zero.adding(0x21C)!)
        } catch { throw .memory(error) }
        let info = LinuxKernel.pvhStartInfo, modules = info + 0x100, map = info + 0x200
        let entries = Array(memoryMap.prefix(128))
        var w = ByteWriter()
        w.u32(LinuxKernel.pvhMagic); w.u32(1); w.u32(0)                 // magic, version 1, flags
        w.u32(initrdSize > 0 ? 1 : 0); w.u64(initrdSize > 0 ? modules : 0) // nr_modules, modlist_paddr
        w.u64(LinuxKernel.commandLineAddress); w.u64(rsdp ?? 0)         // cmdline_paddr, rsdp_paddr
        w.u64(map); w.u32(UInt32(entries.count)); w.u32(0)              // memmap_paddr, memmap_entries
        var m = ByteWriter()
        m.u64(UInt64(initrdAddress)); m.u64(UInt64(initrdSize)); m.u64(0); m.u64(0)
        var e = ByteWriter()
        for x in entries { e.u64(x.base); e.u64(x.length); e.u32(x.type); e.u32(0) }
        try ModeSetup.wrap { () throws(GuestMemoryError) in
            try memory.write(bytes: w.bytes, at: GuestAddress(info))
            try memory.write(bytes: m.bytes, at: GuestAddress(modules))
            try memory.write(bytes: e.bytes, at: GuestAddress(map))
        }
        let protected = try ModeSetup.prepare(.protected, entry: pvhEntry, memory: memory)
        state = protected
        state.rbx = info
        return state
    }
}
