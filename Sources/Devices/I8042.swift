import Synchronization

/// The i8042 keyboard controller, as far as a kernel without a keyboard needs it:
/// status and command byte, self tests, and the CPU reset line (command 0xFE, or an
/// output-port write with bit 0 clear), which is how Linux reboots with `reboot=k`.
/// Ports 0x60 (data) and 0x64 (status and command).
public final class I8042: BusDevice {

    let power: any PowerControl
    private struct State {
        /// Bytes waiting for the guest to read port 0x60, at most `outputCapacity`: the
        /// controller's answers only, and a guest that asks without reading cannot grow it.
        var output: [UInt8] = []
        var commandByte: UInt8 = 0x45     // keyboard interrupt on, system flag, translation
        var pending: UInt8? = nil         // command waiting for its data byte
        var lastWasCommand = false

        mutating func answer(_ byte: UInt8) {
            if output.count < I8042.outputCapacity { output.append(byte) }
        }
    }
    private let state = Mutex(State())

    public init(power: any PowerControl) { self.power = power }

    /// The real controller holds one byte; QEMU queues 16. Answers beyond are dropped.
    static let outputCapacity = 16

    /// Its two ranges: the data port (0x60) and the status/command port (0x64).
    public enum Region: Int, Sendable { case data = 0, command = 1 }

    public func read(region: Int, offset: UInt64, data: inout AccessData) {
        data.value = UInt64(read(region == Region.command.rawValue))
    }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        write(region == Region.command.rawValue, value: data.byte)
    }

    func read(_ command: Bool) -> UInt8 {
        state.withLock { s in
            if command {
                // OBF, system flag, command/data, keyboard not inhibited.
                return (s.output.isEmpty ? 0 : 0x01) | 0x04 | (s.lastWasCommand ? 0x08 : 0) | 0x10
            }
            return s.output.isEmpty ? 0 : s.output.removeFirst()
        }
    }

    func write(_ command: Bool, value: UInt8) {
        var reset = false
        state.withLock { s in
            if command {
                s.lastWasCommand = true
                switch value {
                case 0x20: s.answer(s.commandByte)
                case 0x60, 0xD1, 0xD2, 0xD3, 0xD4: s.pending = value
                case 0xAA: s.answer(0x55)       // controller self test passed
                case 0xAB, 0xA9: s.answer(0x00) // interface tests passed
                case 0xC0: s.answer(0x00)       // input port
                case 0xD0: s.answer(0x01)       // output port: reset line high
                case 0xF0...0xFF: reset = value & 0x01 == 0 // pulse output lines; bit 0 is reset
                default: break                          // enable/disable keyboard and aux
                }
            } else {
                s.lastWasCommand = false
                switch s.pending {
                case 0x60: s.commandByte = value
                case 0xD1: reset = value & 0x01 == 0
                case 0xD2, 0xD3: s.answer(value) // echo as if from keyboard or aux
                default: break                          // bytes for a keyboard that is not there
                }
                s.pending = nil
            }
        }
        if reset { power.guestReset() }
    }
}

extension I8042: StatefulDevice {
    public func saveState(into w: inout StateWriter) {
        let s = state.withLock { $0 }
        w.put(bytes: s.output)
        w.put(s.commandByte)
        w.put(s.pending != nil); w.put(s.pending ?? 0)
        w.put(s.lastWasCommand)
    }

    public func restoreState(from r: inout StateReader) throws(StateError) {
        var s = State()
        s.output = try r.getBytes(limit: I8042.outputCapacity)
        s.commandByte = try r.get()
        let hasPending = try r.getBool(), pending: UInt8 = try r.get()
        s.pending = hasPending ? pending : nil
        s.lastWasCommand = try r.getBool()
        let restored = s
        state.withLock { $0 = restored }
    }
}
