import GuestMemory
import Synchronization

/// The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2): one device behind a
/// 4 KiB register window and one interrupt line. It owns feature negotiation (VERSION_1
/// required, legacy not offered), the device status, each queue's set-up and the
/// interrupt status; the device handles requests. A malformed queue or chain is counted
/// and sets DEVICE_NEEDS_RESET with a configuration-change interrupt, as the
/// specification says; the VMM goes on.
public final class VirtioMMIO: BusDevice {
    public static let windowSize: UInt64 = 0x1000
    /// Where the driver writes a queue's index to notify it (what an ioeventfd watches).
    public static let queueNotifyOffset: UInt64 = 0x050
    public static let magic: UInt32 = 0x7472_6976 // "virt"
    public static let vendor: UInt32 = 0x5446_5753 // "SWFT"

    public let device: any VirtioDevice
    private let memory: GuestMemory
    private let interrupt: (any InterruptSource)?

    struct State {
        var status: UInt32 = 0
        var deviceFeatureSelect: UInt32 = 0
        var driverFeatureSelect: UInt32 = 0
        var driverFeatures: UInt64 = 0
        var queueSelect: UInt32 = 0
        var queues: [VirtQueue]
        var interruptStatus: UInt32 = 0
        var configGeneration: UInt32 = 0
    }
    private let state: Mutex<State>

    /// Counters `inspect` shows: requests completed, malformed chains, notifications.
    public struct Counters: Sendable, Equatable {
        public var completed: UInt64 = 0
        public var malformed: UInt64 = 0
        public var notifications: UInt64 = 0
        public var lastError: String?
    }
    private let counters = Mutex(Counters())

    public init(device: any VirtioDevice, memory: GuestMemory, interrupt: (any InterruptSource)?) {
        self.device = device
        self.memory = memory
        self.interrupt = interrupt
        state = Mutex(State(queues: device.queueSizes.map { VirtQueue(maximumSize: $0) }))
    }

    public var offeredFeatures: UInt64 {
        device.offeredFeatures | VirtioFeature.version1 | VirtioFeature.ringIndirectDescriptors | VirtioFeature.ringEventIndex
    }

    public var statistics: Counters { counters.withLock { $0 } }
    public var status: UInt32 { state.withLock { $0.status } }
    public var negotiatedFeatures: UInt64 { state.withLock { $0.driverFeatures } }

    // Register offsets.
    static let magicValue = 0x000, version = 0x004, deviceID = 0x008, vendorID = 0x00C
    static let deviceFeatures = 0x010, deviceFeaturesSel = 0x014, driverFeatures = 0x020, driverFeaturesSel = 0x024
    static let queueSel = 0x030, queueNumMax = 0x034, queueNum = 0x038, queueReady = 0x044, queueNotify = 0x050
    static let interruptStatus = 0x060, interruptACK = 0x064, statusRegister = 0x070
    static let queueDescLow = 0x080, queueDescHigh = 0x084, queueDriverLow = 0x090, queueDriverHigh = 0x094
    static let queueDeviceLow = 0x0A0, queueDeviceHigh = 0x0A4, configGeneration = 0x0FC, config = 0x100

    public func read(region: Int, offset: UInt64, data: inout AccessData) {
        let o = Int(truncatingIfNeeded: offset)
        if o >= VirtioMMIO.config {
            data.value = device.readConfig(offset: o - VirtioMMIO.config, size: data.size)
            return
        }
        // Registers are 32-bit; other widths read as nothing (the specification requires
        // 32-bit accesses).
        guard data.size == 4 else { data.value = 0; return }
        data.value = UInt64(state.withLock { s -> UInt32 in
            let q = Int(s.queueSelect)
            switch o {
            case VirtioMMIO.magicValue: return VirtioMMIO.magic
            case VirtioMMIO.version: return 2
            case VirtioMMIO.deviceID: return device.deviceType
            case VirtioMMIO.vendorID: return VirtioMMIO.vendor
            case VirtioMMIO.deviceFeatures:
                let f = offeredFeatures
                return s.deviceFeatureSelect == 0 ? UInt32(truncatingIfNeeded: f) : s.deviceFeatureSelect == 1 ? UInt32(truncatingIfNeeded: f >> 32) : 0
            case VirtioMMIO.queueNumMax: return q < s.queues.count ? UInt32(s.queues[q].maximumSize) : 0
            case VirtioMMIO.queueReady: return q < s.queues.count && s.queues[q].ready ? 1 : 0
            case VirtioMMIO.interruptStatus: return s.interruptStatus
            case VirtioMMIO.statusRegister: return s.status
            case VirtioMMIO.configGeneration: return s.configGeneration
            default: return 0
            }
        })
    }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        let o = Int(truncatingIfNeeded: offset)
        if o >= VirtioMMIO.config {
            device.writeConfig(offset: o - VirtioMMIO.config, size: data.size, value: data.value)
            return
        }
        guard data.size == 4 else { return }
        let v = UInt32(truncatingIfNeeded: data.value)
        if o == VirtioMMIO.queueNotify { notify(queue: Int(v)); return }
        state.withLock { s in
            let q = Int(s.queueSelect)
            let configurable = q < s.queues.count && !s.queues[q].ready && s.status & VirtioStatus.driverOK == 0
            switch o {
            case VirtioMMIO.deviceFeaturesSel: s.deviceFeatureSelect = v
            case VirtioMMIO.driverFeaturesSel: s.driverFeatureSelect = v
            case VirtioMMIO.driverFeatures:
                // Only while negotiating (before FEATURES_OK).
                guard s.status & VirtioStatus.featuresOK == 0, s.driverFeatureSelect < 2 else { break }
                let shift = UInt64(s.driverFeatureSelect) * 32
                s.driverFeatures = (s.driverFeatures & ~(0xFFFF_FFFF << shift)) | UInt64(v) << shift
            case VirtioMMIO.queueSel: s.queueSelect = v
            case VirtioMMIO.queueNum: if configurable { s.queues[q].size = UInt16(truncatingIfNeeded: v) }
            case VirtioMMIO.queueDescLow: if configurable { s.queues[q].descriptorTable = VirtioMMIO.low(s.queues[q].descriptorTable, v) }
            case VirtioMMIO.queueDescHigh: if configurable { s.queues[q].descriptorTable = VirtioMMIO.high(s.queues[q].descriptorTable, v) }
            case VirtioMMIO.queueDriverLow: if configurable { s.queues[q].availableRing = VirtioMMIO.low(s.queues[q].availableRing, v) }
            case VirtioMMIO.queueDriverHigh: if configurable { s.queues[q].availableRing = VirtioMMIO.high(s.queues[q].availableRing, v) }
            case VirtioMMIO.queueDeviceLow: if configurable { s.queues[q].usedRing = VirtioMMIO.low(s.queues[q].usedRing, v) }
            case VirtioMMIO.queueDeviceHigh: if configurable { s.queues[q].usedRing = VirtioMMIO.high(s.queues[q].usedRing, v) }
            case VirtioMMIO.queueReady:
                guard q < s.queues.count else { break }
                if v == 0 { s.queues[q].ready = false; break }
                do throws(VirtQueueError) {
                    try s.queues[q].validate(memory)
                    s.queues[q].eventIndex = s.driverFeatures & VirtioFeature.ringEventIndex != 0
                    s.queues[q].ready = true
                } catch {
                    fail(&s, error)
                }
            case VirtioMMIO.interruptACK:
                s.interruptStatus &= ~v
                interrupt?.setLevel(s.interruptStatus != 0)
            case VirtioMMIO.statusRegister:
                setStatus(&s, v)
            default:
                break
            }
        }
    }

    static func low(_ a: GuestAddress, _ v: UInt32) -> GuestAddress { GuestAddress((a.value & ~0xFFFF_FFFF) | UInt64(v)) }
    static func high(_ a: GuestAddress, _ v: UInt32) -> GuestAddress { GuestAddress((a.value & 0xFFFF_FFFF) | UInt64(v) << 32) }

    private func setStatus(_ s: inout State, _ v: UInt32) {
        if v == 0 {
            // Reset: queues, features, interrupts (virtio 1.2, 2.1.1).
            s = State(queues: s.queues.map { var q = $0; q.reset(); return q })
            interrupt?.setLevel(false)
            device.reset()
            return
        }
        var value = v
        if v & VirtioStatus.featuresOK != 0 && s.status & VirtioStatus.featuresOK == 0 {
            // Accept only a subset of what was offered, with VERSION_1 (no legacy).
            let ok = s.driverFeatures & ~offeredFeatures == 0 && s.driverFeatures & VirtioFeature.version1 != 0
            if !ok { value &= ~VirtioStatus.featuresOK }
        }
        s.status = value | (s.status & VirtioStatus.needsReset)
    }

    private func fail(_ s: inout State, _ error: VirtQueueError) {
        counters.withLock { $0.malformed += 1; $0.lastError = error.description }
        s.status |= VirtioStatus.needsReset
        s.configGeneration &+= 1
        s.interruptStatus |= 2 // configuration change
        interrupt?.setLevel(true)
    }

    /// The driver notified queue `index` (a QueueNotify write, or its ioeventfd): the
    /// device takes what is available and the driver is interrupted if it wants.
    public func notify(queue index: Int) {
        counters.withLock { $0.notifications += 1 }
        state.withLock { s in
            guard index >= 0, index < s.queues.count, s.queues[index].ready,
                  s.status & VirtioStatus.driverOK != 0, s.status & VirtioStatus.needsReset == 0 else { return }
            do throws(VirtQueueError) {
                let n = try device.process(queue: index, &s.queues[index], memory: memory)
                if n > 0 { counters.withLock { $0.completed += UInt64(n) } }
            } catch {
                fail(&s, error)
                return
            }
            if s.queues[index].needsInterrupt(memory) {
                s.interruptStatus |= 1 // used buffer
                interrupt?.setLevel(true)
            }
        }
    }

    /// Every queue: for a notification that does not say which (a shared ioeventfd).
    public func notifyAll() {
        let count = state.withLock { $0.queues.count }
        for i in 0..<count { notify(queue: i) }
    }

    /// Linux's kernel command-line announcement of this window: `virtio_mmio.device=`.
    public static func commandLine(base: UInt64, irq: UInt32) -> String {
        "virtio_mmio.device=4K@0x\(String(base, radix: 16)):\(irq)"
    }
}
