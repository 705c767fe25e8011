import CKVM
import Glibc
import Synchronization
import SystemPackage

/// General-purpose registers (`struct kvm_regs`).
public typealias Registers = kvm_regs
/// Segment, control and descriptor-table registers (`struct kvm_sregs`).
public typealias SpecialRegisters = kvm_sregs
/// One segment register as KVM sees it, hidden part included (`struct kvm_segment`).
public typealias Segment = kvm_segment
/// x87/SSE state (`struct kvm_fpu`): registers, control words and MXCSR.
public typealias FPUState = kvm_fpu
/// Pending and injected exceptions, interrupts and NMIs (`struct kvm_vcpu_events`).
public typealias VCPUEvents = kvm_vcpu_events
/// The local APIC's register page (`struct kvm_lapic_state`, 1 KiB).
public typealias LAPICState = kvm_lapic_state
/// DR0-DR3, DR6, DR7 (`struct kvm_debugregs`).
public typealias DebugRegisters = kvm_debugregs
/// The extended control registers, XCR0 above all (`struct kvm_xcrs`).
public typealias ExtendedControlRegisters = kvm_xcrs

/// A vCPU fd from `KVM_CREATE_VCPU` and its mapped `kvm_run` page, both owned here
/// and released once.
///
/// Like the hardware thread it stands for, a `VCPU` is driven by one thread: `run()`
/// and the register calls come from that thread. Only `requestImmediateExit()` may be
/// called from others (it is how a VMM kicks a vCPU out of `KVM_RUN`).
public final class VCPU: @unchecked Sendable {
    public let id: Int
    let fd: FileDescriptor
    let runPage: UnsafeMutablePointer<kvm_run>
    let mmapSize: Int
    /// Kept so the VM fd outlives its vCPUs in this process.
    let vm: VMFileDescriptor
    /// The guest's supported XCR0 (CPUID leaf 0xD), learnt from `setCPUID`.
    private let permittedXSaveComponents = Atomic<UInt64>(XSaveArea.legacyComponents)
    /// What `setCPUID` last gave KVM: what a snapshot records as the guest's CPUID.
    private let assignedCPUID = Mutex<[CPUIDEntry]>([])

    init(fd: FileDescriptor, id: Int, mmapSize: Int, vm: VMFileDescriptor) throws(KVMError) {
        let p = mmap(nil, mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, 0)
        guard let p, p != MAP_FAILED else {
            let e = KVMError.last("mmap kvm_run", hint: "vCPU \(id)")
            try? fd.close()
            throw e
        }
        self.fd = fd
        self.id = id
        self.mmapSize = mmapSize
        self.vm = vm
        // Sound: the kernel maps at least sizeof(struct kvm_run) bytes here.
        self.runPage = p.bindMemory(to: kvm_run.self, capacity: 1)
    }

    /// The VM this vCPU belongs to (for what a vCPU does to others: interrupts).
    public var vmFileDescriptor: VMFileDescriptor { vm }

    deinit {
        munmap(UnsafeMutableRawPointer(runPage), mmapSize)
        try? fd.close()
    }

    // MARK: Running

    /// `KVM_RUN`: enters the guest until it exits, and says why.
    public func run() throws(KVMError) -> VMExit {
        if ckvm_ioctl_val(fd.rawValue, CKVM_RUN, 0) != 0 {
            let e = Glibc.errno
            if e == EINTR || e == EAGAIN {
                runPage.pointee.immediate_exit = 0
                return .interrupted
            }
            throw KVMError("KVM_RUN", errno: Errno(rawValue: e), hint: "vCPU \(id)")
        }
        return decodeExit()
    }

    /// Sets `kvm_run.immediate_exit` so that the next (or a signal-interrupted current)
    /// `KVM_RUN` returns at once with `EINTR`. Safe from any thread.
    public func requestImmediateExit() {
        // A byte store into the shared page; the kernel reads it on entry.
        UnsafeMutableRawPointer(runPage).storeBytes(of: 1, toByteOffset: 1, as: UInt8.self)
    }

    /// Has KVM copy the general registers into `kvm_run` at every exit
    /// (`KVM_CAP_SYNC_REGS`, `kvm_valid_regs`), so that an exit's RIP costs no ioctl:
    /// what the exit trace reads. Registers are only read this way, never written
    /// (`kvm_dirty_regs` stays 0).
    public func syncRegistersOnExit(_ on: Bool) {
        runPage.pointee.kvm_valid_regs = on ? 1 /* KVM_SYNC_X86_REGS */ : 0
    }

    /// RIP as of the last exit, once `syncRegistersOnExit(true)` is set (0 before).
    public var exitRIP: UInt64 { runPage.pointee.s.regs.regs.rip }

    /// The guest's RFLAGS.IF as of the last exit, without a register ioctl.
    public var interruptFlag: Bool { runPage.pointee.if_flag != 0 }

    private func decodeExit() -> VMExit {
        let raw = UnsafeMutableRawPointer(runPage)
        switch Int32(runPage.pointee.exit_reason) {
        case KVM_EXIT_IO:
            let io = runPage.pointee.io
            let size = Int(io.size), count = Int(io.count)
            return .io(IOExit(port: io.port,
                              direction: io.direction == UInt8(KVM_EXIT_IO_OUT) ? .out : .in,
                              size: size, count: count,
                              data: IOData(base: raw + Int(io.data_offset), count: size * count)))
        case KVM_EXIT_MMIO:
            let m = runPage.pointee.mmio
            return .mmio(MMIOExit(address: m.phys_addr, isWrite: m.is_write != 0, length: Int(min(m.len, 8)),
                                  data: IOData(base: raw + Int(CKVM_RUN_MMIO_DATA_OFFSET), count: Int(min(m.len, 8)))))
        case KVM_EXIT_HLT:
            return .hlt(interruptsEnabled: runPage.pointee.if_flag != 0)
        case KVM_EXIT_SHUTDOWN:
            return .shutdown
        case KVM_EXIT_SYSTEM_EVENT:
            return .systemEvent(type: runPage.pointee.system_event.type)
        case KVM_EXIT_INTR:
            runPage.pointee.immediate_exit = 0
            return .interrupted
        case KVM_EXIT_FAIL_ENTRY:
            let f = runPage.pointee.fail_entry
            return .failEntry(hardwareReason: f.hardware_entry_failure_reason, cpu: f.cpu)
        case KVM_EXIT_INTERNAL_ERROR:
            return .internalError(decodeInternalError())
        case KVM_EXIT_EXCEPTION:
            let ex = runPage.pointee.ex
            return .exception(vector: ex.exception, errorCode: ex.error_code)
        case KVM_EXIT_DEBUG:
            return .debug
        case KVM_EXIT_UNKNOWN:
            return .unknown(reason: 0, hardwareReason: runPage.pointee.hw.hardware_exit_reason)
        default:
            return .unknown(reason: runPage.pointee.exit_reason, hardwareReason: 0)
        }
    }

    private func decodeInternalError() -> InternalError {
        let internalError = runPage.pointee.internal
        let n = Int(min(internalError.ndata, 16))
        let data = withUnsafeBytes(of: internalError.data) { raw in
            (0..<n).map { raw.load(fromByteOffset: $0 * 8, as: UInt64.self) }
        }
        var bytes: [UInt8]? = nil
        if internalError.suberror == UInt32(KVM_INTERNAL_ERROR_EMULATION) {
            let ef = runPage.pointee.emulation_failure
            if ef.flags & UInt64(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0 {
                let size = Int(min(ef.insn_size, 15))
                bytes = withUnsafeBytes(of: ef.insn_bytes) { Array($0.prefix(size)) }
            }
        }
        return InternalError(suberror: internalError.suberror, data: data, instructionBytes: bytes)
    }

    // MARK: Registers

    /// `KVM_GET_REGS`.
    public func registers() throws(KVMError) -> Registers {
        var r = Registers()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_REGS, &r) == 0 else { throw KVMError.last("KVM_GET_REGS") }
        return r
    }

    /// `KVM_SET_REGS`.
    public func setRegisters(_ regs: Registers) throws(KVMError) {
        var r = regs
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_REGS, &r) == 0 else { throw KVMError.last("KVM_SET_REGS") }
    }

    /// `KVM_GET_SREGS`.
    public func specialRegisters() throws(KVMError) -> SpecialRegisters {
        var s = SpecialRegisters()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_SREGS, &s) == 0 else { throw KVMError.last("KVM_GET_SREGS") }
        return s
    }

    /// `KVM_SET_SREGS`.
    public func setSpecialRegisters(_ sregs: SpecialRegisters) throws(KVMError) {
        var s = sregs
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_SREGS, &s) == 0 else { throw KVMError.last("KVM_SET_SREGS") }
    }

    /// `KVM_GET_FPU`.
    public func fpu() throws(KVMError) -> FPUState {
        var f = FPUState()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_FPU, &f) == 0 else { throw KVMError.last("KVM_GET_FPU") }
        return f
    }

    /// `KVM_SET_FPU`.
    public func setFPU(_ state: FPUState) throws(KVMError) {
        var f = state
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_FPU, &f) == 0 else { throw KVMError.last("KVM_SET_FPU") }
    }

    /// `KVM_GET_XSAVE`: the vCPU's extended state as XSAVE lays it out. Where
    /// `KVM_GET_FPU` leaves MXCSR out (some hosts report it as 0), this carries it.
    public func xsave() throws(KVMError) -> XSaveArea {
        var area = XSaveArea(permittedComponents: permittedXSaveComponents.load(ordering: .relaxed))
        guard area.withBytes({ ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_XSAVE, $0) }) == 0 else { throw KVMError.last("KVM_GET_XSAVE") }
        return area
    }

    /// `KVM_SET_XSAVE`.
    public func setXSave(_ area: XSaveArea) throws(KVMError) {
        var a = area
        guard a.withBytes({ ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_XSAVE, $0) }) == 0 else { throw KVMError.last("KVM_SET_XSAVE") }
    }

    /// `KVM_GET_VCPU_EVENTS`.
    public func events() throws(KVMError) -> VCPUEvents {
        var e = VCPUEvents()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_VCPU_EVENTS, &e) == 0 else { throw KVMError.last("KVM_GET_VCPU_EVENTS") }
        return e
    }

    /// `KVM_SET_VCPU_EVENTS`: e.g. to inject an exception the host cannot deliver itself.
    public func setEvents(_ events: VCPUEvents) throws(KVMError) {
        var e = events
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_VCPU_EVENTS, &e) == 0 else { throw KVMError.last("KVM_SET_VCPU_EVENTS") }
    }

    /// `KVM_GET_MSRS` for `indices`; returns the values in the same order.
    public func msrs(_ indices: [UInt32]) throws(KVMError) -> [UInt64] {
        var buffer = MSRBuffer(entries: indices.map { ($0, 0) })
        let n = buffer.withHeader { ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_MSRS, $0) }
        guard n == indices.count else {
            throw KVMError.last("KVM_GET_MSRS", hint: n >= 0 ? "MSR 0x\(String(indices[Int(n)], radix: 16)) not readable" : nil)
        }
        return buffer.values
    }

    /// `KVM_SET_MSRS`.
    public func setMSRs(_ entries: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        var buffer = MSRBuffer(entries: entries)
        let n = buffer.withHeader { ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_MSRS, $0) }
        guard n == entries.count else {
            throw KVMError.last("KVM_SET_MSRS", hint: n >= 0 ? "MSR 0x\(String(entries[Int(n)].index, radix: 16)) refused" : nil)
        }
    }

    /// `KVM_SET_CPUID2`: what the guest's CPUID instruction reports. Leaf 0xD (sub-leaf
    /// 0) also fixes which XSAVE components the guest may use, which `xsave()` needs.
    public func setCPUID(_ entries: [CPUIDEntry]) throws(KVMError) {
        var buffer = CPUIDBuffer(entries: entries)
        guard buffer.withHeader({ ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_CPUID2, $0) }) == 0 else {
            throw KVMError.last("KVM_SET_CPUID2")
        }
        assignedCPUID.withLock { $0 = entries }
        if let leaf = entries.first(where: { $0.function == 0xD && $0.index == 0 }) {
            let supported = UInt64(leaf.eax) | UInt64(leaf.edx) << 32
            permittedXSaveComponents.store(supported | XSaveArea.legacyComponents, ordering: .relaxed)
        }
    }

    /// The entries `setCPUID` last gave this vCPU: what a snapshot saves, rather than
    /// `KVM_GET_CPUID2`'s answer, which some KVMs (this project's emulated one) fill
    /// with bits they never offered in `KVM_GET_SUPPORTED_CPUID`, so that no host would
    /// accept them back.
    public var assignedCPUIDEntries: [CPUIDEntry] { assignedCPUID.withLock { $0 } }

    /// `KVM_TRANSLATE`: the guest-physical address a linear address maps to under the
    /// vCPU's current paging, or nil where it is not mapped.
    public func translate(_ linearAddress: UInt64) throws(KVMError) -> UInt64? {
        var t = kvm_translation()
        t.linear_address = linearAddress
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_TRANSLATE, &t) == 0 else { throw KVMError.last("KVM_TRANSLATE") }
        return t.valid != 0 ? t.physical_address : nil
    }

    /// `KVM_GET_LAPIC`.
    public func lapic() throws(KVMError) -> LAPICState {
        var l = LAPICState()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_LAPIC, &l) == 0 else { throw KVMError.last("KVM_GET_LAPIC") }
        return l
    }

    /// `KVM_SET_LAPIC`.
    public func setLAPIC(_ state: LAPICState) throws(KVMError) {
        var l = state
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_LAPIC, &l) == 0 else { throw KVMError.last("KVM_SET_LAPIC") }
    }

    /// `KVM_GET_DEBUGREGS`.
    public func debugRegisters() throws(KVMError) -> DebugRegisters {
        var d = DebugRegisters()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_DEBUGREGS, &d) == 0 else { throw KVMError.last("KVM_GET_DEBUGREGS") }
        return d
    }

    /// `KVM_SET_DEBUGREGS`.
    public func setDebugRegisters(_ regs: DebugRegisters) throws(KVMError) {
        var d = regs
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_DEBUGREGS, &d) == 0 else { throw KVMError.last("KVM_SET_DEBUGREGS") }
    }

    /// `KVM_GET_XCRS`.
    public func extendedControlRegisters() throws(KVMError) -> ExtendedControlRegisters {
        var x = ExtendedControlRegisters()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_XCRS, &x) == 0 else { throw KVMError.last("KVM_GET_XCRS") }
        return x
    }

    /// `KVM_SET_XCRS`.
    public func setExtendedControlRegisters(_ xcrs: ExtendedControlRegisters) throws(KVMError) {
        var x = xcrs
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_XCRS, &x) == 0 else { throw KVMError.last("KVM_SET_XCRS") }
    }

    /// `KVM_GET_TSC_KHZ`: the guest's TSC frequency, which a restore on another host
    /// must reproduce (or the guest's clocks run wrong).
    public func tscKHz() throws(KVMError) -> UInt32 {
        let r = ckvm_ioctl_val(fd.rawValue, CKVM_GET_TSC_KHZ, 0)
        guard r > 0 else { throw KVMError.last("KVM_GET_TSC_KHZ") }
        return UInt32(truncatingIfNeeded: r)
    }

    /// `KVM_SET_TSC_KHZ`: fails where the host cannot scale the TSC to `khz`.
    public func setTSCKHz(_ khz: UInt32) throws(KVMError) {
        guard ckvm_ioctl_val(fd.rawValue, CKVM_SET_TSC_KHZ, UInt(khz)) == 0 else {
            throw KVMError.last("KVM_SET_TSC_KHZ", hint: "the host cannot give the guest a \(khz) kHz TSC")
        }
    }

    /// The MSRs among `indices` this vCPU lets the VMM read, with their values: KVM's
    /// save list names MSRs a given guest CPUID makes unreadable, and `KVM_GET_MSRS`
    /// stops at the first one, so each refusal is skipped and the read goes on after it.
    public func readableMSRs(_ indices: [UInt32]) throws(KVMError) -> [(index: UInt32, value: UInt64)] {
        var result: [(index: UInt32, value: UInt64)] = []
        var rest = indices[...]
        while !rest.isEmpty {
            var buffer = MSRBuffer(entries: rest.map { ($0, 0) })
            let n = buffer.withHeader { ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_MSRS, $0) }
            guard n >= 0 else { throw KVMError.last("KVM_GET_MSRS") }
            let values = buffer.values
            for i in 0..<min(Int(n), rest.count) { result.append((rest[rest.startIndex + i], values[i])) }
            rest = rest.dropFirst(Int(n) + 1) // the one at n was refused
        }
        return result
    }

    /// Writes `entries` as `KVM_SET_MSRS` takes them, going on past each one KVM refuses
    /// (the save list names paravirtual MSRs that a guest without the matching CPUID
    /// bit can read but not have written back); returns the refused indices.
    @discardableResult
    public func writeMSRs(_ entries: [(index: UInt32, value: UInt64)]) throws(KVMError) -> [UInt32] {
        var refused: [UInt32] = []
        var rest = entries[...]
        while !rest.isEmpty {
            var buffer = MSRBuffer(entries: Array(rest))
            let n = buffer.withHeader { ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_MSRS, $0) }
            guard n >= 0 else { throw KVMError.last("KVM_SET_MSRS") }
            if Int(n) < rest.count { refused.append(rest[rest.startIndex + Int(n)].index) }
            rest = rest.dropFirst(Int(n) + 1)
        }
        return refused
    }

    /// `KVM_GET_MP_STATE`: 0 runnable, 1 uninitialized (waiting for INIT/SIPI), 3 halted...
    public func mpState() throws(KVMError) -> UInt32 {
        var s = kvm_mp_state()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_MP_STATE, &s) == 0 else { throw KVMError.last("KVM_GET_MP_STATE") }
        return s.mp_state
    }

    /// `KVM_SET_MP_STATE`.
    public func setMPState(_ state: UInt32) throws(KVMError) {
        var s = kvm_mp_state(mp_state: state)
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_MP_STATE, &s) == 0 else { throw KVMError.last("KVM_SET_MP_STATE") }
    }
}

/// The state components of the XSAVE area, by their bit in XCR0 and `XSTATE_BV`
/// (Intel SDM vol. 1, 13.1).
public enum XSaveComponent: Int, Sendable, CaseIterable {
    /// x87: FCW, FSW, the ST registers (legacy area).
    case x87 = 0
    /// SSE: the XMM registers and MXCSR (legacy area).
    case sse = 1
    /// AVX: the upper halves of the YMM registers.
    case avx = 2

    public var mask: UInt64 { 1 << UInt64(rawValue) }
}

/// `struct kvm_xsave`: 4 KiB in the XSAVE standard format: the FXSAVE legacy area
/// (512 bytes), then the XSAVE header (`XSTATE_BV`, `XCOMP_BV`), then the extended
/// components.
///
/// The header matters when the area goes back to KVM: Linux copies a component from
/// the buffer given to `KVM_SET_XSAVE` only when its bit is set in `XSTATE_BV`
/// (`copy_uabi_to_xstate`; MXCSR travels with FP, SSE or AVX). A vCPU that has not yet
/// touched the FPU or SSE reports none of those bits, so a value written into the area
/// would be silently dropped. Every setter here therefore marks the component it
/// writes, as the processor's own XSAVE would, but never one outside
/// `permittedComponents` (the XCR0 bits this guest may use: KVM refuses an area with
/// any other bit, and the guest could not have produced one).
public struct XSaveArea: Sendable {
    public static let size = MemoryLayout<kvm_xsave>.size
    /// Offsets in the standard format.
    static let mxcsrOffset = 24, mxcsrMaskOffset = 28, xstateBVOffset = 512, xcompBVOffset = 520
    /// What a 64-bit processor always has: FXSAVE's legacy area (x87 and SSE).
    public static let legacyComponents = XSaveComponent.x87.mask | XSaveComponent.sse.mask

    private var storage = [UInt64](repeating: 0, count: XSaveArea.size / 8)
    /// The components `XSTATE_BV` may name (the guest's supported XCR0).
    public let permittedComponents: UInt64

    public init(permittedComponents: UInt64 = XSaveArea.legacyComponents) {
        self.permittedComponents = permittedComponents
    }

    /// An area saved as `bytes` (a snapshot's); nil when the size is not KVM's.
    public init?(bytes: [UInt8], permittedComponents: UInt64) {
        guard bytes.count == XSaveArea.size else { return nil }
        self.permittedComponents = permittedComponents
        storage.withUnsafeMutableBytes { $0.copyBytes(from: bytes) }
    }

    /// The SSE control and status register (legacy area, byte 24). Setting it marks
    /// the SSE component present, so that `KVM_SET_XSAVE` takes it.
    public var mxcsr: UInt32 {
        get { storage.withUnsafeBytes { $0.load(fromByteOffset: XSaveArea.mxcsrOffset, as: UInt32.self) } }
        set {
            storage.withUnsafeMutableBytes { $0.storeBytes(of: newValue, toByteOffset: XSaveArea.mxcsrOffset, as: UInt32.self) }
            markPresent(.sse)
        }
    }

    /// Bits of MXCSR the processor accepts (legacy area, byte 28; 0 means 0xFFBF).
    public var mxcsrMask: UInt32 {
        let m = storage.withUnsafeBytes { $0.load(fromByteOffset: XSaveArea.mxcsrMaskOffset, as: UInt32.self) }
        return m == 0 ? 0xFFBF : m
    }

    /// `XSTATE_BV` (header, byte 512): which components hold state rather than their
    /// initial configuration.
    public var xstateBV: UInt64 {
        storage.withUnsafeBytes { $0.load(fromByteOffset: XSaveArea.xstateBVOffset, as: UInt64.self) }
    }

    /// `XCOMP_BV` (header, byte 520): 0 in the standard (uncompacted) format, the only
    /// one `KVM_GET_XSAVE` returns and `KVM_SET_XSAVE` takes.
    public var xcompBV: UInt64 {
        storage.withUnsafeBytes { $0.load(fromByteOffset: XSaveArea.xcompBVOffset, as: UInt64.self) }
    }

    /// Marks `component` as holding state in `XSTATE_BV`, if this guest may use it.
    public mutating func markPresent(_ component: XSaveComponent) {
        let bits = xstateBV | (component.mask & permittedComponents)
        storage.withUnsafeMutableBytes { $0.storeBytes(of: bits, toByteOffset: XSaveArea.xstateBVOffset, as: UInt64.self) }
    }

    /// The area as bytes, for tests and snapshots.
    public var bytes: [UInt8] { storage.withUnsafeBytes { Array($0) } }

    mutating func withBytes<R>(_ body: (UnsafeMutableRawPointer) -> R) -> R {
        storage.withUnsafeMutableBytes { body($0.baseAddress!) }
    }
}

/// `struct kvm_msrs` with its flexible array of entries, in one aligned allocation.
struct MSRBuffer {
    private var storage: [UInt64]
    private let count: Int
    private static let header = MemoryLayout<kvm_msrs>.size
    private static let stride = MemoryLayout<kvm_msr_entry>.stride

    init(entries: [(index: UInt32, value: UInt64)]) {
        count = entries.count
        storage = [UInt64](repeating: 0, count: (MSRBuffer.header + count * MSRBuffer.stride + 7) / 8)
        storage.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(entries.count), toByteOffset: 0, as: UInt32.self)
            for (i, e) in entries.enumerated() {
                let off = MSRBuffer.header + i * MSRBuffer.stride
                raw.storeBytes(of: e.index, toByteOffset: off, as: UInt32.self)
                raw.storeBytes(of: e.value, toByteOffset: off + 8, as: UInt64.self)
            }
        }
    }

    mutating func withHeader<R>(_ body: (UnsafeMutableRawPointer) -> R) -> R {
        storage.withUnsafeMutableBytes { body($0.baseAddress!) }
    }

    var values: [UInt64] {
        storage.withUnsafeBytes { raw in
            (0..<count).map { raw.load(fromByteOffset: MSRBuffer.header + $0 * MSRBuffer.stride + 8, as: UInt64.self) }
        }
    }
}
