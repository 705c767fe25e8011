import KVM

/// A KVM hypercall (VMCALL/VMMCALL with the number in RAX, arguments in RBX, RCX, RDX,
/// RSI), done in user space for hosts whose KVM leaves the instruction hanging at
/// guest CPL 0 (PVM: the vCPU never retires it). It follows the kernel's
/// `kvm_emulate_hypercall` (Documentation/virt/kvm/x86/hypercalls.rst), so that a
/// guest sees what it would on any KVM host: the calls that wake or interrupt other
/// vCPUs go to the in-kernel local APICs as MSIs, hints succeed, anything else is
/// -KVM_ENOSYS.
struct Hypercall: Equatable {
    var number: UInt64
    var arguments: [UInt64]
    /// Made at CPL 0; from user mode every hypercall is -KVM_EPERM.
    var privileged: Bool

    static let vapicPollIRQ: UInt64 = 1, kickCPU: UInt64 = 5, clockPairing: UInt64 = 9, sendIPI: UInt64 = 10, schedYield: UInt64 = 11
    static let enosys: Int64 = -1000, eperm: Int64 = -1, eopnotsupp: Int64 = -95

    /// The value the guest gets in RAX.
    func perform(on vm: VMFileDescriptor) throws(KVMError) -> Int64 {
        guard privileged else { return Hypercall.eperm }
        switch number {
        case Hypercall.vapicPollIRQ, Hypercall.schedYield:
            return 0 // a hint: nothing to do
        case Hypercall.kickCPU:
            // Wake the vCPU with APIC ID a1 from a PV halt: KVM's own kick is an
            // interrupt in the "remote read" delivery mode, which the local APIC takes
            // as "unhalt".
            _ = try deliver(to: arguments[1], data: 3 << 8, on: vm)
            return 0
        case Hypercall.sendIPI:
            // a0/a1: a 128-bit map of destination APIC IDs from a2; a3: the ICR's low half.
            let icr = arguments[3]
            var data = UInt32(icr & 0xFF) | UInt32(icr & 0x700) // vector, delivery mode
            if icr & 0x4000 != 0 { data |= 1 << 14 } // level: assert
            if icr & 0x8000 != 0 { data |= 1 << 15 } // trigger: level
            var delivered: Int64 = 0
            for (word, bits) in [arguments[0], arguments[1]].enumerated() {
                for bit in 0..<64 where bits & (1 << UInt64(bit)) != 0 {
                    if try deliver(to: arguments[2] &+ UInt64(word * 64 + bit), data: data, on: vm) { delivered += 1 }
                }
            }
            return delivered
        case Hypercall.clockPairing:
            return Hypercall.eopnotsupp // KVM's answer without a TSC-stable host clock
        default:
            return Hypercall.enosys
        }
    }

    /// An MSI to the local APIC with ID `apicID` (physical destination mode).
    private func deliver(to apicID: UInt64, data: UInt32, on vm: VMFileDescriptor) throws(KVMError) -> Bool {
        guard apicID <= 0xFF else { return false }
        return try vm.signalMSI(address: 0xFEE0_0000 | apicID << 12, data: data)
    }
}
