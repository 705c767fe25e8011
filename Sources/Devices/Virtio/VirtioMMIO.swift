import GuestMemory
import Synchronization

/// The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2): one device behind a
/// 4 KiB register window and one interrupt line. It owns feature negotiation (VERSION_1
/// required, legacy not offered), the device status, each queue's set-up and the
/// interrupt status; the device handles requests. A malformed queue or chain is counted
/// and sets DEVICE_NEEDS_RESET with a configuration-change interrupt, as the
/// specification says; the VMM goes on.
public final class VirtioMMIO: VirtioTransport, LateCompletionTarget {
    public static let windowSize: UInt64 = 0x1000
    /// Where the driver writes a queue's index to notify it (what an ioeventfd watches).
    public static let queueNotifyOffset: UInt64 = 0x050
    public static let magic: UInt32 = 0x7472_6976 // "virt"
    public static let vendor: UInt32 = 0x5446_5753 // "SWFT"

    public let device: any VirtioDevice
    private let memory: GuestMemory
    private let interrupt: (any InterruptSource)?

    struct State {
        var common: VirtioTransportState
        var interruptStatus: UInt32 = 0
    }
    private let state: Mutex<State>
    private let counters = Mutex(VirtioCounters())
    /// See `handNotificationsOff(to:)`.
    private let notificationHandoff = Mutex<(@Sendable () -> Void)?>(nil)

    /// A notification written to the registers rather than caught by its ioeventfd (an
    /// access of another width, say) arrives on a vCPU thread; with this set it is handed
    /// to `wake` (the machine signals the device's ioeventfd) so that every queue is served
    /// on the event loop, whose system-call filter allows what devices do there (a vsock
    /// connecting a socket): a guest cannot make a vCPU thread do it.
    public func handNotificationsOff(to wake: @escaping @Sendable () -> Void) { notificationHandoff.withLock { $0 = wake } }

    public init(device: any VirtioDevice, memory: GuestMemory, interrupt: (any InterruptSource)?) {
        self.device = device
        self.memory = memory
        self.interrupt = interrupt
        state = Mutex(State(common: VirtioTransportState(queueSizes: device.queueSizes)))
        device.attach(to: self)
    }

    /// A request the device finished late (a disk's I/O).
    func complete(queue index: Int, _ finished: [UsedElement]) {
        state.withLock { s in signal(&s, s.common.complete(queue: index, finished, memory: memory, counters: counters)) }
    }

    /// Raises the line for what serving a queue came to: used buffers (bit 0) or a
    /// configuration change after a failure (bit 1).
    private func signal(_ s: inout State, _ served: VirtioTransportState.Served) {
        switch served {
        case .nothing: return
        case .failed: s.interruptStatus |= 2
        case .usedBuffers: s.interruptStatus |= 1
        }
        interrupt?.setLevel(true)
    }

    public var offeredFeatures: UInt64 { VirtioTransportState.offered(device) }
    public var transportName: String { "mmio" }
    public var statistics: VirtioCounters { counters.withLock { $0 } }
    public var status: UInt32 { state.withLock { $0.common.status } }
    public var negotiatedFeatures: UInt64 { state.withLock { $0.common.driverFeatures } }

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
            let q = s.common.selectedQueue
            switch o {
            case VirtioMMIO.magicValue: return VirtioMMIO.magic
            case VirtioMMIO.version: return 2
            case VirtioMMIO.deviceID: return device.deviceType
            case VirtioMMIO.vendorID: return VirtioMMIO.vendor
            case VirtioMMIO.deviceFeatures: return s.common.deviceFeatureWord(offeredFeatures)
            case VirtioMMIO.queueNumMax: return q.map { UInt32(s.common.queues[$0].maximumSize) } ?? 0
            case VirtioMMIO.queueReady: return q.map { s.common.queues[$0].ready ? 1 : 0 } ?? 0
            case VirtioMMIO.interruptStatus: return s.interruptStatus
            case VirtioMMIO.statusRegister: return s.common.status
            case VirtioMMIO.configGeneration: return s.common.configGeneration
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
        if o == VirtioMMIO.queueNotify {
            if let hand = notificationHandoff.withLock({ $0 }) { hand() } else { notify(queue: Int(v)) }
            return
        }
        state.withLock { s in
            let q = s.common.configurableQueue
            switch o {
            case VirtioMMIO.deviceFeaturesSel: s.common.deviceFeatureSelect = v
            case VirtioMMIO.driverFeaturesSel: s.common.driverFeatureSelect = v
            case VirtioMMIO.driverFeatures: s.common.writeDriverFeatureWord(v)
            case VirtioMMIO.queueSel: s.common.queueSelect = v
            case VirtioMMIO.queueNum: if let q { s.common.queues[q].size = UInt16(truncatingIfNeeded: v) }
            case VirtioMMIO.queueDescLow: if let q { s.common.queues[q].descriptorTable = VirtioMMIO.low(s.common.queues[q].descriptorTable, v) }
            case VirtioMMIO.queueDescHigh: if let q { s.common.queues[q].descriptorTable = VirtioMMIO.high(s.common.queues[q].descriptorTable, v) }
            case VirtioMMIO.queueDriverLow: if let q { s.common.queues[q].availableRing = VirtioMMIO.low(s.common.queues[q].availableRing, v) }
            case VirtioMMIO.queueDriverHigh: if let q { s.common.queues[q].availableRing = VirtioMMIO.high(s.common.queues[q].availableRing, v) }
            case VirtioMMIO.queueDeviceLow: if let q { s.common.queues[q].usedRing = VirtioMMIO.low(s.common.queues[q].usedRing, v) }
            case VirtioMMIO.queueDeviceHigh: if let q { s.common.queues[q].usedRing = VirtioMMIO.high(s.common.queues[q].usedRing, v) }
            case VirtioMMIO.queueReady:
                guard let sel = s.common.selectedQueue else { break }
                if v == 0 { s.common.queues[sel].ready = false; break }
                do throws(VirtQueueError) { try s.common.enableQueue(memory) } catch { fail(&s, error) }
            case VirtioMMIO.interruptACK:
                s.interruptStatus &= ~v
                interrupt?.setLevel(s.interruptStatus != 0)
            case VirtioMMIO.statusRegister:
                let wasLive = s.common.status & VirtioStatus.driverOK != 0
                if s.common.writeStatus(v, offered: offeredFeatures) {
                    // Reset: queues, features, interrupts (virtio 1.2, 2.1.1).
                    s.interruptStatus = 0
                    interrupt?.setLevel(false)
                    device.reset()
                } else if !wasLive && s.common.status & VirtioStatus.driverOK != 0 {
                    device.activate(features: s.common.driverFeatures)
                }
            default:
                break
            }
        }
    }

    static func low(_ a: GuestAddress, _ v: UInt32) -> GuestAddress { GuestAddress((a.value & ~0xFFFF_FFFF) | UInt64(v)) }
    static func high(_ a: GuestAddress, _ v: UInt32) -> GuestAddress { GuestAddress((a.value & 0xFFFF_FFFF) | UInt64(v) << 32) }

    private func fail(_ s: inout State, _ error: VirtQueueError) {
        s.common.fail(error, counters: counters)
        s.interruptStatus |= 2 // configuration change
        interrupt?.setLevel(true)
    }

    /// The driver notified queue `index` (a QueueNotify write, or its ioeventfd): the
    /// device takes what is available and the driver is interrupted if it wants.
    public func notify(queue index: Int) {
        counters.withLock { $0.notifications += 1 }
        serve(queue: index)
    }

    /// Serves queue `index` because the device has work for it (console input), not
    /// because the driver asked.
    public func serve(queue index: Int) {
        state.withLock { s in signal(&s, s.common.serve(queue: index, device: device, memory: memory, counters: counters)) }
        // What the device's backend finished at once (io_uring completes page-cache
        // reads during submission) is finished now, not one event-loop round later.
        device.completeReady()
    }

    /// Every queue: for a notification that does not say which (a shared ioeventfd).
    public func notifyAll() {
        let count = state.withLock { $0.common.queues.count }
        for i in 0..<count { notify(queue: i) }
    }

    /// Linux's kernel command-line announcement of this window: `virtio_mmio.device=`.
    public static func commandLine(base: UInt64, irq: UInt32) -> String {
        "virtio_mmio.device=4K@0x\(String(base, radix: 16)):\(irq)"
    }
}

extension VirtioMMIO: StatefulDevice {
    /// Negotiation, status, queues and the interrupt status, then the device's own.
    public func saveState(into w: inout StateWriter) {
        state.withLock { s in
            s.common.encode(into: &w, device: device)
            w.put(s.interruptStatus)
        }
        device.saveDeviceState(into: &w)
    }

    public func restoreState(from r: inout StateReader) throws(StateError) {
        var common = VirtioTransportState(queueSizes: device.queueSizes)
        try common.restore(from: &r, memory: memory, offered: offeredFeatures)
        let interruptStatus: UInt32 = try r.get()
        try device.restoreDeviceState(from: &r)
        let restored = State(common: common, interruptStatus: interruptStatus & 3)
        state.withLock { s in
            s = restored
            interrupt?.setLevel(s.interruptStatus != 0)
        }
        if common.status & VirtioStatus.driverOK != 0 { device.activate(features: common.driverFeatures) }
    }
}
