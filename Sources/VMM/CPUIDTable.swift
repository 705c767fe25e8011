import KVM

/// The CPUID a vCPU reports: what the host's KVM supports, with the APIC ID fields set
/// to this vCPU's index so that an SMP guest can tell its processors apart.
enum CPUIDTable {
    static func forVCPU(_ index: Int, supported: [CPUIDEntry]) -> [CPUIDEntry] {
        supported.map { entry in
            var e = entry
            switch e.function {
            case 1:
                // EBX[31:24]: initial APIC ID.
                e.ebx = (e.ebx & 0x00FF_FFFF) | (UInt32(index) << 24)
            case 0xB, 0x1F:
                // EDX: x2APIC ID of this logical processor.
                e.edx = UInt32(index)
            default:
                break
            }
            return e
        }
    }
}
