// Fuzz target: a guest driving the virtio devices through their registers and rings.
// The input is a little program: each step picks a device (a virtio-pci block disk,
// virtio-mmio entropy, network and vsock devices, the PCI host bridge), an access (config space, a BAR or
// window offset, a size, a value) and sometimes bytes to write into guest RAM where the
// rings and buffers live, so that hostile descriptor chains, rings, feature and status
// sequences, BAR moves and MSI-X tables are all reachable; the network device's host
// side (a socket pair standing for its TAP) sends it frames. Nothing may crash, hang or
// grow without bound. Built with libFuzzer by scripts/fuzz; without -DFUZZING it is a
// replayer: `fuzz-virtio-devices FILE...` runs the given inputs once each.
import CLinux
import Devices
import FuzzSupport
import Glibc
import GuestMemory

/// Everything one input runs against, made once (the disk image is a temporary file).
final class Rig: @unchecked Sendable {
    let memory: GuestMemory
    let block: VirtioPCI
    let rng: VirtioMMIO
    let net: VirtioMMIO
    let vsock: VirtioMMIO
    let netDevice: VirtioNet
    let vsockDevice: VirtioVsock
    let bridge: PCIHostBridge
    /// The network device's host side, as a TAP would be.
    let peer: Int32

    final class Pair: NetBackend {
        let fd: Int32
        let supportedOffloads = TapDevice.allOffloads
        init(_ fd: Int32) { self.fd = fd }
        func setOffloads(_ flags: UInt32) -> Bool { true }
    }

    final class Sink: MSIVectorSink, InterruptSource {
        func send(vector: Int, address: UInt64, data: UInt32) {}
        func setLevel(_ high: Bool) {}
        func trigger() {}
    }

    init() {
        let path = "/tmp/swiftvisor-fuzz-\(getpid()).img"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        _ = ftruncate(fd, 64 * 1024)
        close(fd)
        defer { unlink(path) }
        do {
            memory = try GuestMemory(ranges: [(0, 1 << 20)])
            let sink = Sink()
            let disk = try VirtioBlock(path: path, queues: 2, memory: memory, backend: nil)
            block = VirtioPCI(device: disk, memory: memory, bar: 0xD000_0000, intx: sink, intxLine: 5, vectors: sink)
            rng = VirtioMMIO(device: try VirtioRNG(), memory: memory, interrupt: sink)
            var fds: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0 else { fatalError("socketpair") }
            peer = fds[1]
            netDevice = try VirtioNet(backend: Pair(fds[0]), mac: MACAddress.random())
            net = VirtioMMIO(device: netDevice, memory: memory, interrupt: sink)
            vsockDevice = try VirtioVsock(guestCID: 3, socketPath: "/tmp/swiftvisor-fuzz-\(getpid()).vsock")
            vsock = VirtioMMIO(device: vsockDevice, memory: memory, interrupt: sink)
        } catch {
            fatalError("fuzz-virtio-devices: cannot set up: \(error)")
        }
        bridge = PCIHostBridge()
        _ = bridge.plug(block)
    }

    /// Runs one input.
    func run(_ input: UnsafeRawBufferPointer) {
        var i = 0
        func byte() -> UInt8? { guard i < input.count else { return nil }; defer { i += 1 }; return input[i] }
        func u16() -> UInt16? { guard let a = byte(), let b = byte() else { return nil }; return UInt16(a) | UInt16(b) << 8 }
        func u32() -> UInt32? { guard let a = u16(), let b = u16() else { return nil }; return UInt32(a) | UInt32(b) << 16 }
        var steps = 0
        while steps < 512, let op = byte() {
            steps += 1
            let size = [1, 2, 4, 8][Int(op >> 6)]
            switch op & 0x7 {
            case 0: // PCI configuration write
                guard let o = byte(), let v = u32() else { return }
                block.writeConfig(offset: Int(o), size: min(size, 4), value: v)
            case 1: // PCI configuration read
                guard let o = byte() else { return }
                _ = block.readConfig(offset: Int(o), size: min(size, 4))
            case 2: // BAR 0 write
                guard let o = u16(), let v = u32() else { return }
                block.write(region: 0, offset: UInt64(o), data: AccessData(size: size, value: UInt64(v) | UInt64(v) << 32))
            case 3: // BAR 0 read
                guard let o = u16() else { return }
                var d = AccessData(size: size)
                block.read(region: 0, offset: UInt64(o), data: &d)
            case 4: // virtio-mmio write (registers, QueueNotify included): entropy, network, vsock
                guard let o = u16(), let v = u32() else { return }
                let target = [rng, net, vsock, rng][Int(op >> 3 & 3)]
                target.write(region: 0, offset: UInt64(o & 0x1FF), data: AccessData(size: size, value: UInt64(v)))
            case 5: // guest RAM: up to 64 bytes at an address in the ring area
                guard let a = u16(), let n = byte() else { return }
                let count = Int(n & 0x3F)
                guard i + count <= input.count else { return }
                let bytes = Array(input[i..<(i + count)])
                i += count
                try? memory.write(bytes: bytes, at: GuestAddress(UInt64(a) << 4))
            case 6: // host bridge: mechanism #1 and ECAM
                guard let o = u32(), let v = u32() else { return }
                bridge.write(region: 0, offset: 0, data: AccessData(size: 4, value: UInt64(o)))
                bridge.write(region: Int(op >> 3 & 1) + 1, offset: UInt64(v & 0xF_FFFF), data: AccessData(size: min(size, 4), value: UInt64(v)))
                var d = AccessData(size: min(size, 4))
                bridge.read(region: Int(op >> 3 & 1) + 1, offset: UInt64(o & 0xF_FFFF), data: &d)
            default: // notify every queue; with bit 3, the network's host side sends a frame first
                if op & 0x8 != 0, let n = u16() {
                    let frame = [UInt8](repeating: op, count: Int(n))
                    _ = frame.withUnsafeBytes { send(peer, $0.baseAddress, $0.count, 0) }
                    netDevice.eventReady(netDevice.backend.fd)
                }
                block.notifyAll()
                rng.notifyAll()
                net.notifyAll()
                vsock.notifyAll()
                vsockDevice.eventReady(vsockDevice.eventFDs[0])
            }
        }
        // Leave the next input a fresh device.
        block.write(region: 0, offset: VirtioPCI.commonOffset + 0x14, data: AccessData(size: 1, value: 0))
        rng.write(region: 0, offset: 0x70, data: AccessData(size: 4, value: 0))
        net.write(region: 0, offset: 0x70, data: AccessData(size: 4, value: 0))
        vsock.write(region: 0, offset: 0x70, data: AccessData(size: 4, value: 0))
        // Frames the device left in its host queue.
        var scratch = [UInt8](repeating: 0, count: 70_000)
        while scratch.withUnsafeMutableBytes({ recv(peer, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) >= 0 {}
        while scratch.withUnsafeMutableBytes({ recv(netDevice.backend.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) >= 0 {}
    }
}

let rig = Rig()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    rig.run(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}

@main
enum Main {
    static func main() { FuzzMain.run(fuzzOneInput) }
}
