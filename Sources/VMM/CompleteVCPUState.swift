import Devices
import KVM

/// The part of a vCPU's state only a snapshot needs: what the guest's CPUID says and
/// its TSC's frequency (both fixed before the vCPU first runs), XCR0, the debug
/// registers, the local APIC and every MSR in KVM's save list.
public struct CompleteVCPUState: Sendable {
    public var cpuid: [CPUIDEntry]
    public var tscKHz: UInt32
    public var xcrs: ExtendedControlRegisters
    public var debug: DebugRegisters
    /// Nil without the in-kernel irqchip (flat binaries).
    public var lapic: LAPICState?
    public var msrs: [(index: UInt32, value: UInt64)]
}

extension VCPUState {
    /// Layout version of `encoded`; a restore refuses any other.
    static let encodingVersion: UInt32 = 1
    /// Bounds a hostile file cannot push past.
    static let maximumCPUIDEntries = 4096, maximumMSRs = 16384

    /// The whole state (it must be complete) as the bytes of a snapshot's vCPU file.
    public var encoded: [UInt8] {
        var w = StateWriter()
        w.put(VCPUState.encodingVersion)
        w.put(bytes: StateBytes.of(registers))
        w.put(bytes: StateBytes.of(special))
        w.put(bytes: StateBytes.of(events))
        w.put(mpState)
        w.put(xsave.permittedComponents)
        w.put(bytes: xsave.bytes)
        if let c = complete {
            w.put(true)
            w.put(UInt32(c.cpuid.count))
            for e in c.cpuid { w.put(bytes: StateBytes.of(e)) }
            w.put(c.tscKHz)
            w.put(bytes: StateBytes.of(c.xcrs))
            w.put(bytes: StateBytes.of(c.debug))
            w.put(c.lapic != nil)
            if let l = c.lapic { w.put(bytes: StateBytes.of(l)) }
            w.put(UInt32(c.msrs.count))
            for m in c.msrs { w.put(m.index); w.put(m.value) }
        } else {
            w.put(false)
        }
        return w.bytes
    }

    /// Reads `encoded` back; throws on any other version, size or a truncated file.
    public init(encoded bytes: [UInt8]) throws(StateError) {
        var r = StateReader(bytes)
        let version: UInt32 = try r.get()
        guard version == VCPUState.encodingVersion else { throw StateError("vCPU state version \(version), not \(VCPUState.encodingVersion)") }
        registers = try r.getKVMStruct(Registers.self, "general registers")
        special = try r.getKVMStruct(SpecialRegisters.self, "special registers")
        events = try r.getKVMStruct(VCPUEvents.self, "vCPU events")
        mpState = try r.get()
        let permitted: UInt64 = try r.get()
        guard let area = XSaveArea(bytes: try r.getBytes(limit: XSaveArea.size), permittedComponents: permitted) else {
            throw StateError("XSAVE area of the wrong size")
        }
        xsave = area
        if try r.getBool() {
            let n = Int(try r.get(UInt32.self))
            guard n <= VCPUState.maximumCPUIDEntries else { throw StateError("\(n) CPUID entries") }
            var cpuid: [CPUIDEntry] = []
            for _ in 0..<n { cpuid.append(try r.getKVMStruct(CPUIDEntry.self, "CPUID entry")) }
            let khz: UInt32 = try r.get()
            let xcrs = try r.getKVMStruct(ExtendedControlRegisters.self, "XCRs")
            let debug = try r.getKVMStruct(DebugRegisters.self, "debug registers")
            let lapic = try r.getBool() ? try r.getKVMStruct(LAPICState.self, "LAPIC") : nil
            let m = Int(try r.get(UInt32.self))
            guard m <= VCPUState.maximumMSRs else { throw StateError("\(m) MSRs") }
            var msrs: [(index: UInt32, value: UInt64)] = []
            for _ in 0..<m { msrs.append((try r.get(), try r.get())) }
            complete = CompleteVCPUState(cpuid: cpuid, tscKHz: khz, xcrs: xcrs, debug: debug, lapic: lapic, msrs: msrs)
        } else {
            complete = nil
        }
        try r.finish()
    }
}
