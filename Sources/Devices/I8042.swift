import Synchronization

/// The i8042 keyboard controller, as far as a kernel without a keyboard needs it:
/// status and command byte, self tests, and the CPU reset line (command 0xFE, or an
/// output-port write with bit 0 clear), which is how Linux reboots with `reboot=k`.
/// Ports 0x60 (data) and 0x64 (status and command).
public final class I8042: Sendable {
    public static let dataPort: UInt16 = 0x60
    public static let commandPort: UInt16 = 0x64

    let power: any PowerControl
    private struct State {
        var output: [UInt8] = []
        var commandByte: UInt8 = 0x45     // keyboard interrupt on, system flag, translation
        var pending: UInt8? = nil         // command waiting for its data byte
        var lastWasCommand = false
    }
    private let state = Mutex(State())

    public init(power: any PowerControl) { self.power = power }

    /// Registered twice (0x60 and 0x64); the window says which port it is.
    public func window(_ port: UInt16) -> any PortIODevice { Window(device: self, port: port) }

    final class Window: PortIODevice {
        let device: I8042
        let port: UInt16
        init(device: I8042, port: UInt16) { self.device = device; self.port = port }
        func read(offset: UInt16, size: Int) -> UInt32 { device.read(port: port) }
        func write(offset: UInt16, size: Int, value: UInt32) { device.write(port: port, value: UInt8(truncatingIfNeeded: value)) }
    }

    func read(port: UInt16) -> UInt32 {
        state.withLock { s in
            if port == I8042.commandPort {
                // OBF, system flag, command/data, keyboard not inhibited.
                return UInt32((s.output.isEmpty ? 0 : 0x01) | 0x04 | (s.lastWasCommand ? 0x08 : 0) | 0x10)
            }
            return s.output.isEmpty ? 0 : UInt32(s.output.removeFirst())
        }
    }

    func write(port: UInt16, value: UInt8) {
        var reset = false
        state.withLock { s in
            if port == I8042.commandPort {
                s.lastWasCommand = true
                switch value {
                case 0x20: s.output.append(s.commandByte)
                case 0x60, 0xD1, 0xD2, 0xD3, 0xD4: s.pending = value
                case 0xAA: s.output.append(0x55)       // controller self test passed
                case 0xAB, 0xA9: s.output.append(0x00) // interface tests passed
                case 0xC0: s.output.append(0x00)       // input port
                case 0xD0: s.output.append(0x01)       // output port: reset line high
                case 0xF0...0xFF: reset = value & 0x01 == 0 // pulse output lines; bit 0 is reset
                default: break                          // enable/disable keyboard and aux
                }
            } else {
                s.lastWasCommand = false
                switch s.pending {
                case 0x60: s.commandByte = value
                case 0xD1: reset = value & 0x01 == 0
                case 0xD2, 0xD3: s.output.append(value) // echo as if from keyboard or aux
                default: break                          // bytes for a keyboard that is not there
                }
                s.pending = nil
            }
        }
        if reset { power.guestReset() }
    }
}
