import Synchronization

/// QEMU's firmware configuration device, legacy I/O interface (selector at 0x510,
/// data at 0x511): a guest selects a key, then reads its value a byte at a time.
/// kvm-unit-tests reads the CPU count and RAM size this way. Keys and encodings follow
/// QEMU's docs/specs/fw_cfg.rst; the DMA interface is not offered (the ID says so).
public final class FirmwareConfig: BusDevice {
    public static let portCount: UInt16 = 2

    public enum Key {
        public static let signature: UInt16 = 0x00
        public static let id: UInt16 = 0x01
        public static let ramSize: UInt16 = 0x03
        public static let noGraphic: UInt16 = 0x04
        public static let cpuCount: UInt16 = 0x05
        public static let maxCPUs: UInt16 = 0x0F
        public static let fileDirectory: UInt16 = 0x19
    }

    private let items: [UInt16: [UInt8]]
    private struct Cursor { var key: UInt16 = 0; var offset = 0 }
    private let cursor = Mutex(Cursor())

    public init(cpus: Int, ramSize: UInt64) {
        func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
        items = [
            Key.signature: Array("QEMU".utf8),
            Key.id: le(1, 4),                 // traditional interface only, no DMA
            Key.ramSize: le(ramSize, 8),
            Key.noGraphic: le(1, 2),
            Key.cpuCount: le(UInt64(cpus), 2),
            Key.maxCPUs: le(UInt64(cpus), 2),
            Key.fileDirectory: [0, 0, 0, 0],  // no files (count, big-endian)
        ]
    }

    public func read(region: Int, offset: UInt64, data: inout AccessData) {
        guard offset == 1 else { data.value = 0; return }
        let size = data.size
        data.value = cursor.withLock { c -> UInt64 in
            var v: UInt64 = 0
            // A wider read returns consecutive bytes, as QEMU's data port does.
            for i in 0..<size {
                let item = items[c.key] ?? []
                let b = c.offset < item.count ? item[c.offset] : 0
                v |= UInt64(b) << (8 * UInt64(i))
                c.offset += 1
            }
            return v
        }
    }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        guard offset == 0 else { return } // the data port is read-only here
        cursor.withLock { $0 = Cursor(key: UInt16(truncatingIfNeeded: data.value), offset: 0) }
    }
}

extension FirmwareConfig: StatefulDevice {
    /// The selected item and how far the guest has read it; the items themselves are
    /// rebuilt from the machine's configuration.
    public func saveState(into w: inout StateWriter) {
        let c = cursor.withLock { $0 }
        w.put(c.key); w.put(UInt64(c.offset))
    }

    public func restoreState(from r: inout StateReader) throws(StateError) {
        let key: UInt16 = try r.get(), offset: UInt64 = try r.get()
        guard offset <= UInt64(Int32.max) else { throw StateError("fw_cfg offset \(offset) is out of range") }
        cursor.withLock { $0 = Cursor(key: key, offset: Int(offset)) }
    }
}
