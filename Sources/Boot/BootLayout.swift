/// Where the builders put the structures a guest needs before its own code runs.
///
/// The same low-memory spots Firecracker and Cloud Hypervisor use, all below the
/// classic 0x7C00 load address and outside the BIOS data area, so they clash with
/// neither a boot sector nor a kernel loaded at 1 MiB.
public enum BootLayout {
    /// Boot GDT: null, 64-bit code (0x08), data (0x10), 32-bit code (0x18), and for
    /// guests that drop to ring 3 user data (0x20, RPL 3: 0x23) and user 64-bit code
    /// (0x28, RPL 3: 0x2B).
    public static let gdt: UInt64 = 0x500
    /// Stack top for protected and long-mode flat binaries (grows down).
    public static let stackTop: UInt64 = 0x8FF0
    /// PML4, then the PDPT, then four page directories (identity map of 4 GiB).
    public static let pml4: UInt64 = 0x9000
    public static let pdpt: UInt64 = 0xA000
    public static let pageDirectories: UInt64 = 0xB000
    /// Everything above belongs to the guest image by default.
    public static let firstFree: UInt64 = 0xF000

    public static let codeSelector64: UInt16 = 0x08
    public static let dataSelector: UInt16 = 0x10
    public static let codeSelector32: UInt16 = 0x18
    public static let userDataSelector: UInt16 = 0x20
    public static let userCodeSelector64: UInt16 = 0x28
}
