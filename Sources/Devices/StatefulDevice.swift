/// A device whose state a snapshot saves and a restore writes back (DESIGN
/// "Snapshots"). Saved while every vCPU is parked, restored before any runs; a device
/// not conforming makes a snapshot of its machine refuse, rather than resume wrong.
public protocol StatefulDevice: BusDevice {
    func saveState(into writer: inout StateWriter)
    /// Takes a state back whole or not at all: on a throw the device is as before.
    func restoreState(from reader: inout StateReader) throws(StateError)
}
