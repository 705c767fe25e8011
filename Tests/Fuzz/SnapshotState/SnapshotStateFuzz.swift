// Fuzz target: the files of a snapshot as a restore reads them (a user may hand
// `swiftvisor restore` any folder). The first byte picks the parser: the header, a
// vCPU's state, the VM's state, or one device's state restored into a live device that
// must then still answer the bus (the legacy devices, the PCI host bridge, and virtio
// transports over MMIO and PCI with their queues and device state). Any input is a value or one error, never a crash, and
// a device that refused a state is as it was. Built with libFuzzer by scripts/fuzz;
// without -DFUZZING it replays the files it is given.
import Control
import Devices
import FuzzSupport
import GuestMemory
import VMM

final class Sink: SerialOutput { func write(_ byte: UInt8) {} }
final class NoPower: PowerControl {
    func guestExit(code: Int32) {}
    func guestPowerOff() {}
    func guestReset() {}
    func guestSuspend() {}
}

/// The device a state is restored into, made afresh for each input: a virtio
/// transport's device holds it weakly, and a weak reference's side table kept alive by a
/// global is a leak to LeakSanitizer (it cannot read the encoded pointer).
func makeDevice(_ choice: Int) -> (any StatefulDevice)? {
    switch choice % 12 {
    case 0: return Serial8250(output: Sink())
    case 1: return I8042(power: NoPower())
    case 2: return CMOS(memorySize: 1 << 20)
    case 3: return PowerManagement(power: NoPower(), s5SleepType: 5, s3SleepType: 1)
    case 4: return FirmwareConfig(cpus: 1, ramSize: 1 << 20)
    case 5: return ExitPort(power: NoPower())
    case 6: return DebugExit(power: NoPower())
    case 7: return PCIHostBridge()
    default: break
    }
    guard let memory = try? GuestMemory(ranges: [(0, 1 << 20)]) else { return nil }
    switch choice % 12 {
    case 8: return PCTestDevice(memory: memory, irqLines: [])
    case 9: return (try? VirtioRNG()).map { VirtioMMIO(device: $0, memory: memory, interrupt: nil) }
    case 10: return (try? VirtioRNG()).map { VirtioPCI(device: $0, memory: memory, bar: 0xC000_0000, intx: nil, intxLine: 5, vectors: nil) }
    default: return VirtioMMIO(device: VirtioConsole(output: Sink()), memory: memory, interrupt: nil)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size >= 1, size <= 1 << 17 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch data[0] % 4 {
    case 0:
        if let h = try? SnapshotFolder.parseHeader(bytes, path: "fuzz") { _ = h.description.json.rendered }
    case 1:
        if let s = try? VCPUState(encoded: bytes) { precondition(s.encoded == bytes, "a vCPU state re-encodes to its bytes") }
    case 2:
        _ = try? MachineSnapshot.checkVMState(bytes)
    default:
        guard let device = makeDevice(Int(data[0] / 4)) else { return 0 }
        var before = StateWriter()
        device.saveState(into: &before)
        var reader = StateReader(bytes)
        do {
            try device.restoreState(from: &reader)
        } catch {
            var after = StateWriter()
            device.saveState(into: &after)
            if !(device is PowerManagement) { precondition(after.bytes == before.bytes, "a refused state leaves the device as it was") }
        }
        for offset in 0..<UInt64(8) {
            var d = AccessData(size: 1)
            device.read(region: 0, offset: offset, data: &d)
            device.write(region: 0, offset: offset, data: AccessData(size: 1, value: offset))
        }
    }
    return 0
}

@main
enum Main {
    static func main() { FuzzMain.run(fuzzOneInput) }
}
