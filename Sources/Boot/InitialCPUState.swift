/// What a boot builder wants the boot vCPU to hold when the guest starts. Plain data:
/// the VMM turns it into KVM registers, so `Boot` never touches a real vCPU.
public struct InitialCPUState: Equatable, Sendable {
    public var mode: CPUMode
    public var rip: UInt64
    public var rsp: UInt64 = 0
    /// Bit 1 is reserved and always set; interrupts start disabled.
    public var rflags: UInt64 = 0x2
    /// Registers some boot protocols pass values in (Multiboot: EAX, EBX; Linux: RSI; PVH: RBX).
    public var rax: UInt64 = 0
    public var rbx: UInt64 = 0
    public var rsi: UInt64 = 0
    public var code: SegmentDescriptor
    public var data: SegmentDescriptor
    /// Guest-physical base and limit of the GDT (unused in real mode).
    public var gdtBase: UInt64 = 0
    public var gdtLimit: UInt16 = 0
    public var cr0: UInt64
    public var cr3: UInt64 = 0
    public var cr4: UInt64 = 0
    public var efer: UInt64 = 0

    public init(mode: CPUMode, rip: UInt64, code: SegmentDescriptor, data: SegmentDescriptor, cr0: UInt64) {
        self.mode = mode; self.rip = rip; self.code = code; self.data = data; self.cr0 = cr0
    }
}

/// Control-register and EFER bits the builders use (Intel SDM vol. 3, 2.5).
public enum ControlBits {
    public static let cr0PE: UInt64 = 1 << 0
    public static let cr0ET: UInt64 = 1 << 4
    public static let cr0PG: UInt64 = 1 << 31
    public static let cr4PAE: UInt64 = 1 << 5
    public static let eferLME: UInt64 = 1 << 8
    public static let eferLMA: UInt64 = 1 << 10
}
