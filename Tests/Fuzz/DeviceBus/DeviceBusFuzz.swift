// Fuzz target: a guest driving the machine's legacy devices through the bus, exactly
// the set `Machine` wires (the 8250 UART, the exit port, the ACPI PM block, CMOS/RTC,
// the i8042, and the test devices: isa-debug-exit, fw_cfg, pc-testdev with its MMIO
// scratch memory), plus what the host does to them meanwhile (console input, the power
// button, RTC alarms and update cycles). The input is a little program: each step an
// access (port or MMIO, read or write, 1 to 8 bytes) at one of the devices' ranges plus
// an offset, or a host event. Nothing may crash, hang or grow without bound (a guest
// that never reads its UART still leaves the VMM's memory flat). Built with libFuzzer
// by scripts/fuzz; without -DFUZZING it replays the files it is given.
import Boot
import Devices
import FuzzSupport
import GuestMemory
import VMM

final class Power: PowerControl {
    func guestExit(code: Int32) {}
    func guestReset() {}
    func guestPowerOff() {}
    func guestSuspend() {}
}
final class Discard: SerialOutput { func write(_ byte: UInt8) {} }
final class Line: InterruptSource {
    func setLevel(_ high: Bool) {}
    func trigger() {}
}

let memory: GuestMemory = {
    do { return try GuestMemory(ranges: [(0, 1 << 20)]) } catch { fatalError("fuzz-device-bus: guest memory: \(error)") }
}()
let devices: DeviceManager = {
    var config = MachineConfig(memorySize: 1 << 20, vcpuCount: 2)
    config.testDevices = true
    do {
        return try Machine.wireDevices(config, platform: true, memory: memory, power: Power(), console: Discard(), irq: { _ in Line() })
    } catch {
        fatalError("fuzz-device-bus: cannot wire the devices: \(error)")
    }
}()
/// Where the devices are, so most accesses land on one.
let ports: [UInt16] = [AddressMap.com1, AddressMap.exitPort, AddressMap.pmBlock, AddressMap.cmos, AddressMap.i8042Data,
                       AddressMap.i8042Command, AddressMap.debugExit, AddressMap.firmwareConfig, AddressMap.testDeviceScratch,
                       AddressMap.testDeviceFlush, AddressMap.testDeviceBytes, AddressMap.testDeviceIRQs, 0]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    var i = 0
    func byte() -> UInt8? { guard i < input.count else { return nil }; defer { i += 1 }; return input[i] }
    func u32() -> UInt32? {
        guard let a = byte(), let b = byte(), let c = byte(), let d = byte() else { return nil }
        return UInt32(a) | UInt32(b) << 8 | UInt32(c) << 16 | UInt32(d) << 24
    }
    let bus = devices.bus
    let cmos = devices.device("cmos") as? CMOS
    let pm = devices.device("acpi-pm") as? PowerManagement
    let uart = devices.device("com1") as? Serial8250
    var steps = 0
    while steps < 1024, let op = byte() {
        steps += 1
        let size = [1, 2, 4, 8][Int(op >> 6)]
        switch op & 0x7 {
        case 0, 1: // a port access: a device's base plus an offset
            guard let which = byte(), let offset = byte() else { return 0 }
            let port = ports[Int(which) % ports.count] &+ UInt16(offset & 0x1F)
            if op & 1 == 0 {
                _ = bus.readPort(port, size: min(size, 4))
            } else {
                guard let v = u32() else { return 0 }
                bus.writePort(port, size: min(size, 4), value: v)
            }
        case 2, 3: // pc-testdev's MMIO scratch memory, and just beyond it
            guard let o = u32() else { return 0 }
            let address = AddressMap.testDeviceMemory &+ UInt64(o % UInt32(AddressMap.testDeviceMemorySize + 16))
            if op & 1 == 0 {
                _ = bus.readMMIO(address, size: size)
            } else {
                guard let v = u32() else { return 0 }
                bus.writeMMIO(address, size: size, value: UInt64(v) | UInt64(v) << 32)
            }
        case 4: // console input: a guest that never reads it must not make the VMM grow
            guard let n = byte() else { return 0 }
            uart?.receive([UInt8](repeating: n, count: Int(n)))
        case 5: _ = pm?.pressPowerButton()
        case 6: _ = pm?.rtcAlarm()
        default: _ = cmos?.updateCycle()
        }
    }
    return 0
}

@main
enum Main {
    static func main() { FuzzMain.run(fuzzOneInput) }
}
