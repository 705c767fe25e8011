/// The processor mode a guest starts in.
public enum CPUMode: String, CaseIterable, Sendable {
    /// 16-bit real mode, as after reset (a boot sector, a BIOS-less firmware).
    case real
    /// 32-bit flat protected mode, paging off (Multiboot's contract).
    case protected
    /// 64-bit long mode with an identity map of the low 4 GiB (Linux's 64-bit entry).
    case long
}
