import Devices

/// Accesses as a guest makes them, for driving a device directly in tests.
extension BusDevice {
    func read<O: BinaryInteger>(region: Int = 0, offset: O, size: Int) -> UInt64 {
        var d = AccessData(size: size)
        read(region: region, offset: UInt64(offset), data: &d)
        return d.value
    }

    func write<O: BinaryInteger, V: BinaryInteger>(region: Int = 0, offset: O, size: Int, value: V) {
        write(region: region, offset: UInt64(offset), data: AccessData(size: size, value: UInt64(truncatingIfNeeded: value)))
    }

    /// One of the device's ranges, as the bus would present it.
    func window(_ region: Int) -> RegionView { RegionView(device: self, region: region) }
}

struct RegionView {
    let device: any BusDevice
    let region: Int
    func read<O: BinaryInteger>(offset: O, size: Int) -> UInt64 { device.read(region: region, offset: offset, size: size) }
    func write<O: BinaryInteger, V: BinaryInteger>(offset: O, size: Int, value: V) { device.write(region: region, offset: offset, size: size, value: value) }
}
