import CKVM

/// The KVM capabilities Swiftvisor asks about (`KVM_CHECK_EXTENSION`), by name rather
/// than by number. `KVMSystem.check(_:)` answers 0 where the kernel lacks one.
public enum Capability: Int32, CaseIterable, Sendable {
    case irqchip = 0              // KVM_CAP_IRQCHIP
    case hlt = 1                  // KVM_CAP_HLT
    case userMemory = 3           // KVM_CAP_USER_MEMORY
    case setTSSAddress = 4        // KVM_CAP_SET_TSS_ADDR
    case extendedCPUID = 7        // KVM_CAP_EXT_CPUID
    case nrVCPUs = 9              // KVM_CAP_NR_VCPUS: recommended maximum
    case nrMemorySlots = 10       // KVM_CAP_NR_MEMSLOTS
    case pit = 11                 // KVM_CAP_PIT
    case syncMMU = 16             // KVM_CAP_SYNC_MMU
    case irqInjectStatus = 26     // KVM_CAP_IRQ_INJECT_STATUS
    case irqRouting = 25          // KVM_CAP_IRQ_ROUTING
    case irqfd = 32               // KVM_CAP_IRQFD
    case pit2 = 33                // KVM_CAP_PIT2
    case setIdentityMapAddress = 37 // KVM_CAP_SET_IDENTITY_MAP_ADDR
    case ioeventfd = 36           // KVM_CAP_IOEVENTFD
    case vcpuEvents = 41          // KVM_CAP_VCPU_EVENTS
    case internalErrorData = 40   // KVM_CAP_INTERNAL_ERROR_DATA
    case maxVCPUs = 66            // KVM_CAP_MAX_VCPUS
    case tscDeadlineTimer = 72    // KVM_CAP_TSC_DEADLINE_TIMER
    case syncRegisters = 74       // KVM_CAP_SYNC_REGS: which register sets kvm_run can carry
    case immediateExit = 136      // KVM_CAP_IMMEDIATE_EXIT
    case splitIRQChip = 121       // KVM_CAP_SPLIT_IRQCHIP
    case x86UserSpaceMSR = 188    // KVM_CAP_X86_USER_SPACE_MSR

    /// The name used in api.rst, for reports.
    public var kernelName: String {
        switch self {
        case .irqchip: "KVM_CAP_IRQCHIP"
        case .hlt: "KVM_CAP_HLT"
        case .userMemory: "KVM_CAP_USER_MEMORY"
        case .setTSSAddress: "KVM_CAP_SET_TSS_ADDR"
        case .extendedCPUID: "KVM_CAP_EXT_CPUID"
        case .nrVCPUs: "KVM_CAP_NR_VCPUS"
        case .nrMemorySlots: "KVM_CAP_NR_MEMSLOTS"
        case .pit: "KVM_CAP_PIT"
        case .syncMMU: "KVM_CAP_SYNC_MMU"
        case .syncRegisters: "KVM_CAP_SYNC_REGS"
        case .irqInjectStatus: "KVM_CAP_IRQ_INJECT_STATUS"
        case .irqRouting: "KVM_CAP_IRQ_ROUTING"
        case .irqfd: "KVM_CAP_IRQFD"
        case .pit2: "KVM_CAP_PIT2"
        case .setIdentityMapAddress: "KVM_CAP_SET_IDENTITY_MAP_ADDR"
        case .ioeventfd: "KVM_CAP_IOEVENTFD"
        case .vcpuEvents: "KVM_CAP_VCPU_EVENTS"
        case .internalErrorData: "KVM_CAP_INTERNAL_ERROR_DATA"
        case .maxVCPUs: "KVM_CAP_MAX_VCPUS"
        case .tscDeadlineTimer: "KVM_CAP_TSC_DEADLINE_TIMER"
        case .immediateExit: "KVM_CAP_IMMEDIATE_EXIT"
        case .splitIRQChip: "KVM_CAP_SPLIT_IRQCHIP"
        case .x86UserSpaceMSR: "KVM_CAP_X86_USER_SPACE_MSR"
        }
    }
}
