import Boot
import KVM

extension VCPU {
    /// Loads a boot builder's `InitialCPUState` into this vCPU's registers. Public so
    /// that programs building their own machine from the KVM layer (and the KVM tests)
    /// enter each mode exactly as `Machine` does.
    public func apply(_ state: InitialCPUState, index: Int) throws(KVMError) {
        var sregs = try specialRegisters()
        let code = Segment(state.code), data = Segment(state.data)
        sregs.cs = code
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        if state.mode != .real {
            sregs.gdt.base = state.gdtBase
            sregs.gdt.limit = state.gdtLimit
        }
        sregs.cr0 = state.cr0
        sregs.cr3 = state.cr3
        sregs.cr4 = state.cr4
        sregs.efer = state.efer
        try setSpecialRegisters(sregs)

        var regs = Registers()
        regs.rip = state.rip
        regs.rsp = state.rsp
        regs.rflags = state.rflags
        regs.rax = state.rax
        regs.rbx = state.rbx
        regs.rsi = state.rsi
        regs.rdi = UInt64(index) // which vCPU this is, for SMP flat binaries
        try setRegisters(regs)
    }
}

extension Segment {
    init(_ d: SegmentDescriptor) {
        self.init(base: UInt64(d.base), limit: d.byteLimit, selector: d.selector, type: d.type,
                  present: d.present ? 1 : 0, dpl: d.dpl, db: d.defaultBig ? 1 : 0, s: d.isCodeOrData ? 1 : 0,
                  l: d.long ? 1 : 0, g: d.granularity4K ? 1 : 0, avl: 0, unusable: 0, padding: 0)
    }
}
