import Devices
import Glibc
import KVM

/// A paused machine's state as the bytes a snapshot stores, one part per vCPU, one for
/// the VM (irqchip, PIT, kvmclock) and one for the devices (each by its id); guest
/// memory goes to a file of its own (`Machine.saveState(memoryFD:)`). What a restore
/// hands back to `Machine.build`.
public struct MachineSnapshot: Sendable {
    public var vcpus: [[UInt8]]
    public var vm: [UInt8]
    public var devices: [UInt8]

    public init(vcpus: [[UInt8]], vm: [UInt8], devices: [UInt8]) {
        self.vcpus = vcpus
        self.vm = vm
        self.devices = devices
    }
}

/// Why a snapshot could not be taken or brought back.
public struct SnapshotError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable {
        /// This machine has something snapshots do not cover yet.
        case unsupported
        /// The snapshot's files are damaged, truncated or of another format.
        case corrupt
        /// Whole, but made for another host (CPU vendor, features, TSC).
        case incompatible
        /// The host refused (KVM, the file system).
        case failed
    }
    public let kind: Kind
    public let description: String
    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

/// The VM-wide state: the in-kernel irqchip's three chips, the PIT and kvmclock.
struct VMState {
    var irqChips: [IRQChipState]
    var pit: PITState?
    var clock: ClockState?

    static let encodingVersion: UInt32 = 1

    init(reading vm: VMFileDescriptor, platform: Bool, pit hasPIT: Bool) throws(KVMError) {
        irqChips = platform ? try [0, 1, 2].map { (c: UInt32) throws(KVMError) in try vm.irqChip(c) } : []
        pit = platform && hasPIT ? try vm.pit() : nil
        clock = platform ? try vm.clock() : nil
    }

    /// PIT and clock first, then the chips, as Firecracker restores them.
    func write(to vm: VMFileDescriptor) throws(KVMError) {
        if let pit { try vm.setPIT(pit) }
        if let clock { try vm.setClock(clock) }
        for chip in irqChips { try vm.setIRQChip(chip) }
    }

    var encoded: [UInt8] {
        var w = StateWriter()
        w.put(VMState.encodingVersion)
        w.put(UInt8(irqChips.count))
        for c in irqChips { w.put(bytes: StateBytes.of(c)) }
        w.put(pit != nil); if let pit { w.put(bytes: StateBytes.of(pit)) }
        w.put(clock != nil); if let clock { w.put(bytes: StateBytes.of(clock)) }
        return w.bytes
    }

    init(encoded bytes: [UInt8]) throws(StateError) {
        var r = StateReader(bytes)
        let version: UInt32 = try r.get()
        guard version == VMState.encodingVersion else { throw StateError("VM state version \(version), not \(VMState.encodingVersion)") }
        let n = Int(try r.get(UInt8.self))
        guard n == 0 || n == 3 else { throw StateError("\(n) irqchip parts, not 0 or 3") }
        irqChips = []
        for _ in 0..<n { irqChips.append(try r.getKVMStruct(IRQChipState.self, "irqchip")) }
        pit = try r.getBool() ? try r.getKVMStruct(PITState.self, "PIT") : nil
        clock = try r.getBool() ? try r.getKVMStruct(ClockState.self, "kvmclock") : nil
        try r.finish()
    }
}

extension Machine {
    /// Whether the machine has the in-kernel irqchip (kernels do, flat binaries not).
    var hasPlatform: Bool { config.boot.needsPlatform }

    /// The state of a paused machine, its memory written to `memoryFD` (an empty file,
    /// left sparse). Every vCPU is read on its own thread after re-entering KVM_RUN
    /// with immediate_exit set (done by `pause`), so no port or MMIO access is half
    /// done. Throws `.unsupported` for a machine with a device snapshots do not cover.
    public func saveState(memoryFD: Int32) throws(SnapshotError) -> (state: MachineSnapshot, memoryWritten: UInt64) {
        guard state == .paused else { throw SnapshotError(.failed, "the VM is \(state.rawValue), not paused") }
        // Every virtio device first finishes what it has in flight (a disk's I/O): its
        // used rings, status bytes and interrupts are then in memory and the irqchip.
        for endpoint in virtio {
            let device = endpoint.transport.device
            if let why = device.snapshotRefusal {
                throw SnapshotError(.unsupported, "snapshots do not cover the device '\(endpoint.id)': \(why)")
            }
            guard device.quiesce(timeoutNanoseconds: 5_000_000_000) else {
                throw SnapshotError(.failed, "the device '\(endpoint.id)' did not finish its requests in flight within 5 s")
            }
        }
        var devicePart = StateWriter()
        let entries = devices.entries
        devicePart.put(UInt32(entries.count))
        for e in entries {
            guard let d = e.device as? any StatefulDevice else {
                throw SnapshotError(.unsupported, "snapshots do not cover the \(e.name) device ('\(e.id)') yet")
            }
            var w = StateWriter()
            d.saveState(into: &w)
            devicePart.put(bytes: Array(e.id.utf8))
            devicePart.put(bytes: w.bytes)
        }
        let msrs: [UInt32]
        do { msrs = try kvm.msrIndexList() } catch { throw SnapshotError(.failed, error.description) }
        var vcpus: [[UInt8]] = []
        for t in threads {
            switch t.save(msrs: msrs, lapic: hasPlatform) {
            case let .success(s)?: vcpus.append(s.encoded)
            case let .failure(e)?: throw SnapshotError(.failed, "vCPU \(t.index): \(e.description)")
            case nil: throw SnapshotError(.failed, "vCPU \(t.index) did not answer")
            }
        }
        let vmState: VMState
        do { vmState = try VMState(reading: vm, platform: hasPlatform, pit: config.pit) } catch { throw SnapshotError(.failed, error.description) }
        let written: UInt64
        do { written = try memory.save(to: memoryFD) } catch { throw SnapshotError(.failed, error.description) }
        return (MachineSnapshot(vcpus: vcpus, vm: vmState.encoded, devices: devicePart.bytes), written)
    }

    /// Writes the saved devices back into a machine just built from the same
    /// configuration: the same ids, each taking its own state.
    static func restoreDevices(_ bytes: [UInt8], into devices: DeviceManager) throws(SnapshotError) {
        var r = StateReader(bytes)
        do {
            let n = Int(try r.get(UInt32.self))
            let entries = devices.entries
            guard n == entries.count else {
                throw SnapshotError(.corrupt, "the snapshot has \(n) devices, this configuration makes \(entries.count)")
            }
            for _ in 0..<n {
                let id = String(decoding: try r.getBytes(limit: 256), as: UTF8.self)
                let state = try r.getBytes(limit: 16 << 20)
                guard let e = entries.first(where: { $0.id == id }), let d = e.device as? any StatefulDevice else {
                    throw SnapshotError(.corrupt, "the snapshot has a device '\(id)' this configuration does not make")
                }
                var sr = StateReader(state)
                do {
                    try d.restoreState(from: &sr)
                    try sr.finish()
                } catch { throw SnapshotError(.corrupt, "device '\(id)': \(error.description)") }
            }
            try r.finish()
        } catch let e as StateError {
            throw SnapshotError(.corrupt, "devices: \(e.description)")
        } catch let e as SnapshotError {
            throw e
        } catch {
            throw SnapshotError(.corrupt, "devices: \(error)")
        }
    }
}

extension MachineSnapshot {
    /// Decodes the VM part as a restore would, and throws what it would (for the fuzz
    /// target; a restore decodes it itself).
    public static func checkVMState(_ bytes: [UInt8]) throws(StateError) { _ = try VMState(encoded: bytes) }

    /// The CPU the guest depends on, from vCPU 0's saved CPUID and TSC frequency.
    public var cpuIdentity: (vendor: String, tscKHz: UInt32, features: [(name: String, value: UInt32)])? {
        guard let first = vcpus.first, let s = try? VCPUState(encoded: first), let c = s.complete else { return nil }
        return (CPUFeatures.vendor(c.cpuid), c.tscKHz, CPUFeatures.of(c.cpuid))
    }
}

extension BootSource {
    /// Kernels get a PC platform (irqchip, ACPI); flat binaries run bare (README "HLT").
    public var needsPlatform: Bool {
        if case .kernel = self { true } else { false }
    }
}
