import Devices
import GuestMemory
import Synchronization
import XCTest

/// The PCI side as a guest's firmware and virtio-pci driver see it: configuration
/// mechanism #1 and ECAM, BAR sizing and moves, the capability list, MSI-X and INTx.
final class VirtioPCITests: XCTestCase {
    final class Vectors: MSIVectorSink {
        let sent = Mutex<[(vector: Int, address: UInt64, data: UInt32)]>([])
        func send(vector: Int, address: UInt64, data: UInt32) { sent.withLock { $0.append((vector, address, data)) } }
        var vectors: [Int] { sent.withLock { $0.map(\.vector) } }
    }

    let bar: UInt32 = 0xD000_0000

    func makeFunction(_ memory: GuestMemory, line: VirtioMMIOTests.Line, vectors: Vectors) throws -> VirtioPCI {
        VirtioPCI(device: try VirtioRNG(), memory: memory, bar: bar, intx: line, intxLine: 10, vectors: vectors)
    }

    /// The virtio capabilities by cfg_type: (offset in config space, BAR offset, length).
    func capabilities(_ f: VirtioPCI) -> [UInt8: (at: Int, offset: UInt32, length: UInt32)] {
        var out: [UInt8: (Int, UInt32, UInt32)] = [:]
        var at = Int(f.readConfig(offset: 0x34, size: 1))
        var guardCount = 0
        while at != 0 && guardCount < 48 {
            if f.readConfig(offset: at, size: 1) == 0x09 {
                out[UInt8(f.readConfig(offset: at + 3, size: 1))] = (at, f.readConfig(offset: at + 8, size: 4), f.readConfig(offset: at + 12, size: 4))
            }
            at = Int(f.readConfig(offset: at + 1, size: 1))
            guardCount += 1
        }
        return out
    }

    func testHeaderBARSizingAndReadOnlyFields() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let f = try makeFunction(memory, line: .init(), vectors: Vectors())
        XCTAssertEqual(f.readConfig(offset: 0, size: 2), 0x1AF4)
        XCTAssertEqual(f.readConfig(offset: 2, size: 2), 0x1044, "modern virtio-rng: 0x1040 + 4")
        XCTAssertEqual(f.readConfig(offset: 8, size: 1), 1, "revision 1: modern only")
        XCTAssertEqual(f.readConfig(offset: 0x10, size: 4), bar)
        f.writeConfig(offset: 0, size: 4, value: 0xDEAD_BEEF)
        XCTAssertEqual(f.readConfig(offset: 0, size: 2), 0x1AF4, "vendor id is read-only")
        // Sizing: all ones in, the size mask out, then the address back.
        f.writeConfig(offset: 0x10, size: 4, value: 0xFFFF_FFFF)
        XCTAssertEqual(f.readConfig(offset: 0x10, size: 4), ~(VirtioPCI.barSize - 1))
        f.writeConfig(offset: 0x10, size: 4, value: bar)
        XCTAssertEqual(f.readConfig(offset: 0x3D, size: 1), 1, "INTA#")
        XCTAssertEqual(f.readConfig(offset: 0x3C, size: 1), 10)
        XCTAssertEqual(f.readConfig(offset: 0x06, size: 2) & 0x10, 0x10, "capability list")
        let caps = capabilities(f)
        XCTAssertEqual(Set(caps.keys), [1, 2, 3, 4, 5], "common, notify, ISR, device and PCI-config capabilities")
        XCTAssertEqual(caps[1]?.offset, UInt32(VirtioPCI.commonOffset))
        XCTAssertEqual(f.readConfig(offset: 0x100, size: 4), 0, "no extended capabilities")
        XCTAssertEqual(f.readConfig(offset: 0x3, size: 2), 0, "misaligned reads nothing")
    }

    func testHostBridgeMechanismOneAndECAM() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let bridge = PCIHostBridge()
        let f = try makeFunction(memory, line: .init(), vectors: Vectors())
        XCTAssertEqual(bridge.plug(f), 1)
        func cf8(_ device: UInt32, _ reg: UInt32) { bridge.write(region: 0, offset: 0, size: 4, value: 0x8000_0000 | device << 11 | reg) }
        cf8(0, 0)
        XCTAssertEqual(bridge.read(region: 1, offset: 0, size: 4), 0x0008_1B36, "the host bridge at 00:00.0")
        cf8(0, 8)
        XCTAssertEqual(bridge.read(region: 1, offset: 0, size: 4) >> 8, 0x06_0000, "class: host bridge")
        cf8(1, 0)
        XCTAssertEqual(bridge.read(region: 1, offset: 2, size: 2), 0x1044, "byte lanes of the data port")
        cf8(2, 0)
        XCTAssertEqual(bridge.read(region: 1, offset: 0, size: 4), 0xFFFF_FFFF, "an empty slot")
        bridge.write(region: 0, offset: 0, size: 4, value: 0x0000_0800)
        XCTAssertEqual(bridge.read(region: 1, offset: 0, size: 4), 0xFFFF_FFFF, "enable bit clear: no cycle")
        bridge.write(region: 0, offset: 0, size: 4, value: 0x8001_0800)
        XCTAssertEqual(bridge.read(region: 1, offset: 0, size: 4), 0xFFFF_FFFF, "bus 1 does not exist")
        XCTAssertEqual(bridge.read(region: 2, offset: 1 << 15, size: 2), 0x1AF4, "ECAM: device 1")
        XCTAssertEqual(bridge.read(region: 2, offset: 1 << 15 | 1 << 12, size: 4), 0xFFFF_FFFF, "function 1 is empty")
        XCTAssertEqual(bridge.read(region: 2, offset: 0x10_0000 + 12, size: 4), 0xFFFF_FFFF, "beyond the window")
        bridge.write(region: 2, offset: 1 << 15 | 0x3C, size: 1, value: 11)
        XCTAssertEqual(f.readConfig(offset: 0x3C, size: 1), 11, "ECAM writes")
    }

    /// Bring-up as Linux's virtio_pci_modern does it, with MSI-X, then a request.
    func testModernDriverWithMSIXAndThenINTx() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let line = VirtioMMIOTests.Line(), vectors = Vectors()
        let f = try makeFunction(memory, line: line, vectors: vectors)
        let common = UInt64(capabilities(f)[1]!.offset)
        func set(_ o: UInt64, _ size: Int, _ v: UInt64) { f.write(region: 0, offset: common + o, size: size, value: v) }
        func get(_ o: UInt64, _ size: Int) -> UInt64 { f.read(region: 0, offset: common + o, size: size) }
        // MSI-X: enable in the capability, program vectors 0 (config) and 1 (queue 0).
        let msix = Int(f.readConfig(offset: 0x34, size: 1))
        XCTAssertEqual(f.readConfig(offset: msix, size: 1), 0x11)
        XCTAssertEqual(f.readConfig(offset: msix + 2, size: 2) & 0x7FF, 1, "two vectors: table size - 1")
        f.writeConfig(offset: msix + 2, size: 2, value: 0x8000)
        XCTAssertTrue(f.msixEnabled)
        for (v, data) in [(0, 0x30), (1, 0x31)] {
            let entry = VirtioPCI.msixTableOffset + UInt64(16 * v)
            f.write(region: 0, offset: entry, size: 4, value: 0xFEE0_0000)
            f.write(region: 0, offset: entry + 8, size: 4, value: data)
            f.write(region: 0, offset: entry + 12, size: 4, value: 0) // unmask
        }
        set(0x14, 1, 1); set(0x14, 1, 3)
        set(0x00, 4, 1)
        XCTAssertEqual(get(0x04, 4) & 1, 1, "VERSION_1 offered")
        set(0x08, 4, 0); set(0x0C, 4, 0); set(0x08, 4, 1); set(0x0C, 4, 1)
        set(0x14, 1, 11)
        XCTAssertEqual(get(0x14, 1), 11, "FEATURES_OK kept")
        set(0x10, 2, 0)
        XCTAssertEqual(get(0x10, 2), 0, "config vector accepted")
        XCTAssertEqual(get(0x12, 2), 1, "one queue")
        var driver = TestDriver(memory: memory)
        set(0x16, 2, 0)
        XCTAssertEqual(get(0x18, 2), 256)
        set(0x18, 2, UInt64(driver.size))
        set(0x1A, 2, 1)
        XCTAssertEqual(get(0x1A, 2), 1)
        set(0x20, 8, driver.descriptors)
        set(0x28, 4, driver.available); set(0x2C, 4, 0)
        set(0x30, 8, driver.used)
        set(0x1C, 2, 1)
        XCTAssertEqual(get(0x1C, 2), 1)
        XCTAssertEqual(get(0x1E, 2), 0, "queue_notify_off")
        set(0x14, 1, 15)
        try driver.request([(0x40000, 64, true)])
        f.write(region: 0, offset: VirtioPCI.notifyOffset, size: 2, value: 0)
        XCTAssertEqual(try driver.usedIndex(), 1)
        XCTAssertEqual(vectors.vectors, [1], "the queue's vector")
        XCTAssertEqual(vectors.sent.withLock { $0[0].data }, 0x31)
        XCTAssertFalse(line.high, "no INTx while MSI-X is on")
        // A masked vector is held pending and sent on unmask.
        f.write(region: 0, offset: VirtioPCI.msixTableOffset + 16 + 12, size: 4, value: 1)
        try driver.request([(0x40000, 64, true)], first: 1)
        f.write(region: 0, offset: VirtioPCI.notifyOffset, size: 2, value: 0)
        XCTAssertEqual(vectors.vectors, [1])
        XCTAssertEqual(f.read(region: 0, offset: VirtioPCI.msixPendingOffset, size: 4), 2, "pending bit 1")
        f.write(region: 0, offset: VirtioPCI.msixTableOffset + 16 + 12, size: 4, value: 0)
        XCTAssertEqual(vectors.vectors, [1, 1])
        XCTAssertEqual(f.read(region: 0, offset: VirtioPCI.msixPendingOffset, size: 4), 0)
        // MSI-X off: INTx and the ISR, which reading acknowledges.
        f.writeConfig(offset: msix + 2, size: 2, value: 0)
        try driver.request([(0x40000, 64, true)], first: 2)
        f.write(region: 0, offset: VirtioPCI.notifyOffset, size: 2, value: 0)
        XCTAssertTrue(line.high)
        XCTAssertEqual(f.read(region: 0, offset: VirtioPCI.isrOffset, size: 1), 1)
        XCTAssertFalse(line.high)
        XCTAssertEqual(f.read(region: 0, offset: VirtioPCI.isrOffset, size: 1), 0)
        XCTAssertEqual(f.statistics.completed, 3)
        // Reset clears the vectors.
        set(0x14, 1, 0)
        XCTAssertEqual(get(0x10, 2), 0xFFFF)
        XCTAssertEqual(get(0x14, 1), 0)
    }

    func testBARMovesReachTheMachineAndTheConfigWindowReachesTheBAR() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let f = try makeFunction(memory, line: .init(), vectors: Vectors())
        let moves = Mutex<[UInt64]>([])
        f.onBARMove { a in moves.withLock { $0.append(a) }; return true }
        // Decoding off: sizing and a new address do not move anything yet.
        f.writeConfig(offset: 0x10, size: 4, value: 0xFFFF_FFFF)
        f.writeConfig(offset: 0x10, size: 4, value: 0xD010_0000)
        XCTAssertEqual(moves.withLock { $0 }, [])
        f.writeConfig(offset: 0x04, size: 2, value: 0x0006) // memory + bus master
        XCTAssertEqual(moves.withLock { $0 }, [0xD010_0000])
        XCTAssertEqual(f.barAddress, 0xD010_0000)
        f.writeConfig(offset: 0x10, size: 4, value: 0xD010_0000)
        XCTAssertEqual(moves.withLock { $0 }.count, 1, "same address: no move")
        // A refused move keeps the old mapping.
        f.onBARMove { _ in false }
        f.writeConfig(offset: 0x10, size: 4, value: 0xD020_0000)
        XCTAssertEqual(f.barAddress, 0xD010_0000)
        // VIRTIO_PCI_CAP_PCI_CFG: bar 0, offset of device_feature_select's neighbour.
        let cfg = capabilities(f)[5]!.at
        f.writeConfig(offset: cfg + 4, size: 1, value: 0)
        f.writeConfig(offset: cfg + 8, size: 4, value: UInt32(VirtioPCI.commonOffset + 0x12))
        f.writeConfig(offset: cfg + 12, size: 4, value: 2)
        XCTAssertEqual(f.readConfig(offset: cfg + 16, size: 4), 1, "num_queues through the window")
        f.writeConfig(offset: cfg + 12, size: 4, value: 3)
        XCTAssertEqual(f.readConfig(offset: cfg + 16, size: 4), 0, "a length of 3 reads nothing")
    }

    func testHostileAccessesAreHarmless() throws {
        let memory = try GuestMemory(ranges: [(0, 0x10_0000)])
        let f = try makeFunction(memory, line: .init(), vectors: Vectors())
        for offset in stride(from: 0, to: Int(VirtioPCI.barSize) + 64, by: 1) {
            for size in [1, 2, 3, 4, 8] {
                _ = f.read(region: 0, offset: offset, size: size)
                f.write(region: 0, offset: offset, size: size, value: UInt64.max)
            }
        }
        for offset in 0..<300 { for size in [1, 2, 4] { f.writeConfig(offset: offset, size: size, value: .max); _ = f.readConfig(offset: offset, size: size) } }
        XCTAssertEqual(f.readConfig(offset: 0, size: 2), 0x1AF4)
    }
}
