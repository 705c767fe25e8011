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
        if mode != .real, loadAddress < BootLayout.firstFree {
            throw .malformed("load address 0x\(String(loadAddress, radix: 16)) overlaps the boot GDT and page tables below 0x\(String(BootLayout.firstFree, radix: 16)); use --load-address 0x\(String(BootLayout.firstFree, radix: 16)) or higher")
        }
        let state = try ModeSetup.prepare(mode, entry: entry, memory: memory, userAccessible: userAccessible)
        try ModeSetup.wrap { () throws(GuestMemoryError) in try memory.write(bytes: bytes, at: GuestAddress(loadAddress)) }
        return state
    }
}
