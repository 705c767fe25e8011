/// Swiftvisor's exit port: a guest writes its exit status to I/O port 0x501 and the
/// VMM ends with that status. It gives test guests and flat binaries a way to say
/// "done, and this is the result" without a power-management stack.
///
/// The value written (1, 2 or 4 bytes) is the exit code, truncated to 0...255 as a
/// process exit status is. Reads return 0.
public final class ExitPort: BusDevice {

    let power: any PowerControl

    public init(power: any PowerControl) { self.power = power }

    public func read(region: Int, offset: UInt64, data: inout AccessData) { data.value = 0 }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        power.guestExit(code: Int32(data.byte))
    }
}

/// Nothing to save: every write acts at once.
extension ExitPort: StatefulDevice {
    public func saveState(into w: inout StateWriter) {}
    public func restoreState(from r: inout StateReader) throws(StateError) {}
}
