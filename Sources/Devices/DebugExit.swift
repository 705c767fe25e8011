/// QEMU's `isa-debug-exit` (port 0xF4, 4 ports): a write ends the VM. Test suites such
/// as kvm-unit-tests report their result this way. QEMU turns the value v into the
/// process status (v << 1) | 1; Swiftvisor reports v itself as the guest's exit code,
/// like its own exit port, so a suite's 0 is success.
public final class DebugExit: BusDevice {
    public static let portCount: UInt16 = 4

    let power: any PowerControl
    public init(power: any PowerControl) { self.power = power }

    public func read(region: Int, offset: UInt64, data: inout AccessData) { data.value = 0 }
    public func write(region: Int, offset: UInt64, data: AccessData) {
        power.guestExit(code: Int32(bitPattern: UInt32(truncatingIfNeeded: data.value)))
    }
}

/// Nothing to save: every write acts at once.
extension DebugExit: StatefulDevice {
    public func saveState(into w: inout StateWriter) {}
    public func restoreState(from r: inout StateReader) throws(StateError) {}
}
