import GuestMemory

/// A raw binary: bytes copied to one guest address and entered in the chosen mode,
/// with no header to trust. The simplest thing a VMM can boot, and what its tests use.
public struct FlatBinary: Sendable {
    public let bytes: [UInt8]
    public let mode: CPUMode
    public let loadAddress: UInt64
    public let entry: UInt64
    /// Whether ring 3 may use the identity map (see `ModeSetup.prepare`).
    public let userAccessible: Bool

    /// Where a flat binary goes when the user does not say: 0x7C00 in real mode (where a
    /// BIOS puts a boot sector), 1 MiB otherwise (where kernels go).
    public static func defaultLoadAddress(for mode: CPUMode) -> UInt64 {
        mode == .real ? 0x7C00 : 0x10_0000
    }

    public init(bytes: [UInt8], mode: CPUMode, loadAddress: UInt64? = nil, entry: UInt64? = nil, userAccessible: Bool = false) {
        self.userAccessible = userAccessible
        self.bytes = bytes
        self.mode = mode
        self.loadAddress = loadAddress ?? FlatBinary.defaultLoadAddress(for: mode)
        self.entry = entry ?? self.loadAddress
    }

    /// Copies the image into `memory` and returns the boot vCPU's state.
    public func load(into memory: GuestMemory) throws(BootError) -> InitialCPUState {
        guard !bytes.isEmpty else { throw .emptyImage }
        guard memory.isValid(GuestAddress(loadAddress), length: UInt64(bytes.count)) else {
            throw .doesNotFit(what: "the image", address: loadAddress, size: UInt64(bytes.count), memorySize: memory.size)
        }
        // 0xFFFF:0xFFFF is the last byte real mode can address.
        if mode == .real, loadAddress + UInt64(bytes.count) > 0x10_FFF0 {
            throw .unreachable(what: "the image's end", address: loadAddress + UInt64(bytes.count), mode: .real)
        }
        let state = try ModeSetup.prepare(mode, entry: entry, memory: memory, userAccessible: userAccessible,
                                          structures: try bootStructures(in: memory))
        try ModeSetup.wrap { () throws(GuestMemoryError) in try memory.write(bytes: bytes, at: GuestAddress(loadAddress)) }
        return state
    }

    /// Where the GDT, stack and page tables go: the standard block, unless the image
    /// overlaps it; then the first page after the image, which must be RAM below 4 GiB
    /// (protected mode's GDT base and long mode's identity map reach no further). Real
    /// mode needs none of them (its stack sits just below the image, as a boot sector's).
    /// The caller has checked that the image lies in `memory`.
    public func bootStructures(in memory: GuestMemory) throws(BootError) -> BootStructures {
        let image = loadAddress..<(loadAddress + UInt64(bytes.count))
        guard mode != .real, BootStructures.standard.used.overlaps(image) else { return .standard }
        let base = (image.upperBound + 0xFFF) & ~0xFFF
        guard base <= (1 << 32) - BootStructures.size, memory.isValid(GuestAddress(base), length: BootStructures.size) else {
            throw .malformed("the image at 0x\(String(loadAddress, radix: 16))-0x\(String(image.upperBound - 1, radix: 16)) covers the boot GDT and page tables' usual place (0x500-0xefff), and no \(BootStructures.size >> 10) KiB of RAM below 4 GiB follows it; load it at 0xf000 or higher, or give the guest more --memory")
        }
        return BootStructures(base: base)
    }

    /// Where the image and what the VMM built for it went, for `run --verbose`: a few
    /// numbers kept with the machine, put into words only when they are shown.
    public struct Placement: Sendable, CustomStringConvertible {
        public let image: Range<UInt64>
        public let mode: CPUMode
        public let entry: UInt64
        public let state: InitialCPUState

        public var description: String {
            let hex = { (v: UInt64) in "0x" + String(v, radix: 16) }
            var line = "flat binary at \(hex(image.lowerBound))-\(hex(image.upperBound - 1)), \(mode.rawValue) mode, entry \(hex(entry))"
            switch mode {
            case .real: line += "; stack just below the entry (SS:SP \(hex(UInt64(state.code.selector))):\(hex(state.rsp)))"
            case .protected: line += "; boot GDT at \(hex(state.gdtBase)), stack top \(hex(state.rsp))"
            case .long:
                let tables = BootStructures(base: state.cr3 - BootLayout.pml4).pageTables
                line += "; boot GDT at \(hex(state.gdtBase)), page tables at \(hex(tables.lowerBound))-\(hex(tables.upperBound - 1)), stack top \(hex(state.rsp))"
            }
            return line
        }
    }

    public func placement(_ state: InitialCPUState) -> Placement {
        Placement(image: loadAddress..<(loadAddress + UInt64(bytes.count)), mode: mode, entry: entry, state: state)
    }
}
