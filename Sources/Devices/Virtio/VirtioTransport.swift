import GuestMemory
import Synchronization

/// What every virtio transport shares (virtio 1.2, 2 and 3): feature negotiation
/// (VERSION_1 required, legacy never offered), the device status and its reset, each
/// queue's set-up, and serving a notified queue. The MMIO and PCI transports keep one
/// of these under their lock and differ only in registers and in how they interrupt.
struct VirtioTransportState {
    var status: UInt32 = 0
    var deviceFeatureSelect: UInt32 = 0
    var driverFeatureSelect: UInt32 = 0
    var driverFeatures: UInt64 = 0
    var queueSelect: UInt32 = 0
    var queues: [VirtQueue]
    var configGeneration: UInt32 = 0

    init(queueSizes: [UInt16]) { queues = queueSizes.map { VirtQueue(maximumSize: $0) } }

    /// What a transport offers on top of the device's own bits.
    static func offered(_ device: any VirtioDevice) -> UInt64 {
        device.offeredFeatures | VirtioFeature.version1 | VirtioFeature.ringIndirectDescriptors | VirtioFeature.ringEventIndex
    }

    var selectedQueue: Int? { Int(queueSelect) < queues.count ? Int(queueSelect) : nil }

    /// The selected queue while the driver may still set it up (not enabled, DRIVER_OK
    /// not yet set).
    var configurableQueue: Int? {
        guard let q = selectedQueue, !queues[q].ready, status & VirtioStatus.driverOK == 0 else { return nil }
        return q
    }

    func deviceFeatureWord(_ offered: UInt64) -> UInt32 {
        switch deviceFeatureSelect {
        case 0: UInt32(truncatingIfNeeded: offered)
        case 1: UInt32(truncatingIfNeeded: offered >> 32)
        default: 0
        }
    }

    /// A driver-features word, accepted only while negotiating (before FEATURES_OK).
    mutating func writeDriverFeatureWord(_ v: UInt32) {
        guard status & VirtioStatus.featuresOK == 0, driverFeatureSelect < 2 else { return }
        let shift = UInt64(driverFeatureSelect) * 32
        driverFeatures = (driverFeatures & ~(0xFFFF_FFFF << shift)) | UInt64(v) << shift
    }

    /// The driver enables the selected queue: its areas must lie in guest RAM.
    mutating func enableQueue(_ memory: GuestMemory) throws(VirtQueueError) {
        guard let q = selectedQueue, !queues[q].ready else { return }
        try queues[q].validate(memory)
        queues[q].eventIndex = driverFeatures & VirtioFeature.ringEventIndex != 0
        queues[q].ready = true
    }

    /// A status write. Returns true when it was a reset (0), after which the transport
    /// clears its own interrupt state and resets the device.
    mutating func writeStatus(_ v: UInt32, offered: UInt64) -> Bool {
        if v == 0 {
            self = VirtioTransportState(queueSizes: queues.map(\.maximumSize))
            return true
        }
        var value = v
        if v & VirtioStatus.featuresOK != 0 && status & VirtioStatus.featuresOK == 0 {
            // Accept only a subset of what was offered, with VERSION_1 (no legacy).
            let ok = driverFeatures & ~offered == 0 && driverFeatures & VirtioFeature.version1 != 0
            if !ok { value &= ~VirtioStatus.featuresOK }
        }
        status = value | (status & VirtioStatus.needsReset)
        return false
    }

    /// A malformed queue or chain: DEVICE_NEEDS_RESET and a new configuration
    /// generation; the transport then sends a configuration-change interrupt.
    mutating func fail(_ error: VirtQueueError, counters: borrowing Mutex<VirtioCounters>) {
        counters.withLock { $0.malformed += 1; $0.lastError = error.description }
        status |= VirtioStatus.needsReset
        configGeneration &+= 1
    }

    enum Served { case nothing, usedBuffers, failed }

    /// Requests the device finished after `process` returned: pushed to queue `index`'s
    /// used ring unless the queue was reset or disabled meanwhile.
    mutating func complete(queue index: Int, _ finished: [UsedElement], memory: GuestMemory,
                           counters: borrowing Mutex<VirtioCounters>) -> Served {
        guard index >= 0, index < queues.count, queues[index].ready,
              status & VirtioStatus.driverOK != 0, status & VirtioStatus.needsReset == 0 else { return .nothing }
        do throws(VirtQueueError) {
            for f in finished { try queues[index].push(memory, head: f.head, written: f.written) }
        } catch {
            fail(error, counters: counters)
            return .failed
        }
        counters.withLock { $0.completed += UInt64(finished.count) }
        return queues[index].needsInterrupt(memory) ? .usedBuffers : .nothing
    }

    /// Serves queue `index` after a notification. `.usedBuffers` when the driver wants
    /// an interrupt for what was completed; `.failed` after `fail`.
    mutating func serve(queue index: Int, device: any VirtioDevice, memory: GuestMemory,
                        counters: borrowing Mutex<VirtioCounters>) -> Served {
        guard index >= 0, index < queues.count, queues[index].ready,
              status & VirtioStatus.driverOK != 0, status & VirtioStatus.needsReset == 0 else { return .nothing }
        do throws(VirtQueueError) {
            let n = try device.process(queue: index, &queues[index], memory: memory)
            if n > 0 { counters.withLock { $0.completed += UInt64(n) } }
        } catch {
            fail(error, counters: counters)
            return .failed
        }
        return queues[index].needsInterrupt(memory) ? .usedBuffers : .nothing
    }
}

/// Counters `inspect` and the API show for each virtio device: requests completed,
/// malformed chains (with the last one's description), queue notifications.
public struct VirtioCounters: Sendable, Equatable {
    public var completed: UInt64 = 0
    public var malformed: UInt64 = 0
    public var notifications: UInt64 = 0
    public var lastError: String?
}

/// A virtio device on some transport, as the machine serves it and `inspect` shows it.
public protocol VirtioTransport: BusDevice {
    var device: any VirtioDevice { get }
    /// "mmio" or "pci".
    var transportName: String { get }
    var statistics: VirtioCounters { get }
    var status: UInt32 { get }
    var negotiatedFeatures: UInt64 { get }
    /// Serves every queue: for a notification that does not say which (a shared
    /// ioeventfd).
    func notifyAll()
    /// Serves queue `index` for the device's own reasons (input arrived).
    func serve(queue index: Int)
    /// From now on, a notification written to the registers calls `wake` instead of
    /// being served on the writing (vCPU) thread.
    func handNotificationsOff(to wake: @escaping @Sendable () -> Void)
}

/// What a transport offers its device for requests finished after `process` returned.
protocol LateCompletionTarget: AnyObject, Sendable {
    func complete(queue index: Int, _ finished: [UsedElement])
    func serve(queue index: Int)
}

extension VirtioDevice {
    /// Gives the device a completer leading back to `transport` (held weakly: the
    /// transport owns the device).
    func attach(to transport: some LateCompletionTarget) {
        attach(VirtioCompleter(complete: { [weak transport] q, f in transport?.complete(queue: q, f) },
                               serve: { [weak transport] q in transport?.serve(queue: q) }))
    }
}

extension VirtioTransportState {
    /// Negotiation, status and every queue (with what `device` holds of each) for a
    /// snapshot.
    func encode(into w: inout StateWriter, device: any VirtioDevice) {
        w.put(status); w.put(deviceFeatureSelect); w.put(driverFeatureSelect); w.put(driverFeatures)
        w.put(queueSelect); w.put(configGeneration)
        w.put(UInt32(queues.count))
        for (i, q) in queues.enumerated() { q.encode(into: &w, held: device.heldRequests(queue: i)) }
    }

    /// Reads what `encode` wrote into a fresh state for the same device.
    mutating func restore(from r: inout StateReader, memory: GuestMemory, offered: UInt64) throws(StateError) {
        var s = VirtioTransportState(queueSizes: queues.map(\.maximumSize))
        s.status = try r.get(); s.deviceFeatureSelect = try r.get(); s.driverFeatureSelect = try r.get(); s.driverFeatures = try r.get()
        s.queueSelect = try r.get(); s.configGeneration = try r.get()
        guard s.driverFeatures & ~offered == 0 else { throw StateError("the driver's features 0x\(String(s.driverFeatures, radix: 16)) were never offered") }
        let n = Int(try r.get(UInt32.self))
        guard n == s.queues.count else { throw StateError("\(n) queues where the device has \(s.queues.count)") }
        for i in s.queues.indices { try s.queues[i].restore(from: &r, memory: memory) }
        self = s
    }
}
