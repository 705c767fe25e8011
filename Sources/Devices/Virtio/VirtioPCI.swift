import GuestMemory
import Synchronization

/// The modern virtio-pci transport (virtio 1.2, 4.1): one device as a PCI function
/// whose single 32-bit memory BAR holds the common configuration, the ISR, the
/// device's configuration, the queue notification addresses and the MSI-X table, each
/// announced by a vendor capability. Interrupts are MSI-X vectors (one for
/// configuration changes, one per queue) when the driver enables MSI-X, INTx otherwise.
/// The guest may move the BAR; the machine is told and re-maps it (bus range and
/// notification ioeventfds).
public final class VirtioPCI: VirtioTransport, PCIFunction, LateCompletionTarget {
    public static let vendorID: UInt16 = 0x1AF4
    /// BAR 0's layout.
    public static let barSize: UInt32 = 0x4000
    public static let commonOffset: UInt64 = 0x0000, commonLength: UInt64 = 0x38
    public static let isrOffset: UInt64 = 0x0800
    public static let deviceConfigOffset: UInt64 = 0x1000, deviceConfigLength: UInt64 = 0x1000
    public static let notifyOffset: UInt64 = 0x2000
    /// Queue `n` is notified at `notifyOffset + n * notifyMultiplier`.
    public static let notifyMultiplier: UInt64 = 4
    public static let msixTableOffset: UInt64 = 0x3000, msixPendingOffset: UInt64 = 0x3800
    public static let noVector: UInt16 = 0xFFFF
    static let capCommon: UInt8 = 1, capNotify: UInt8 = 2, capISR: UInt8 = 3, capDevice: UInt8 = 4, capPCIConfig: UInt8 = 5

    public let device: any VirtioDevice
    private let memory: GuestMemory
    private let intx: (any InterruptSource)?
    private let vectors: (any MSIVectorSink)?

    struct State {
        var common: VirtioTransportState
        var config: PCIConfigSpace
        var msix: MSIXTable
        var configVector = VirtioPCI.noVector
        var queueVectors: [UInt16]
        var isr: UInt8 = 0
        /// Where BAR 0 is mapped on the bus now.
        var mappedBAR: UInt32
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
    private let barMoved = Mutex<(@Sendable (UInt64) -> Bool)?>(nil)
    private let slot = Atomic<Int>(-1)
    /// Offsets of the MSI-X and PCI-configuration-access capabilities.
    private let msixCapability: Int
    private let pciConfigCapability: Int

    /// `bar` is where BAR 0 starts (the device manager's allocation); `intxLine` is
    /// written to the Interrupt Line register for firmware-less guests.
    public init(device: any VirtioDevice, memory: GuestMemory, bar: UInt32, intx: (any InterruptSource)?, intxLine: UInt8,
                vectors: (any MSIVectorSink)?) {
        self.device = device
        self.memory = memory
        self.intx = intx
        self.vectors = vectors
        let queueCount = device.queueSizes.count
        var config = PCIConfigSpace(vendor: VirtioPCI.vendorID, device: UInt16(truncatingIfNeeded: 0x1040 + device.deviceType),
                                    revision: 1, classCode: VirtioPCI.classCode(device.deviceType),
                                    subsystemVendor: VirtioPCI.vendorID, subsystem: 0x40)
        config.setMemoryBAR(0, size: VirtioPCI.barSize, address: bar)
        config.setInterrupt(pin: 1, line: intxLine)
        let msix = MSIXTable(vectors: queueCount + 1)
        let cap = MSIXTable.capability(vectors: msix.count, bar: 0, tableOffset: UInt32(VirtioPCI.msixTableOffset),
                                       pendingOffset: UInt32(VirtioPCI.msixPendingOffset))
        msixCapability = config.addCapability(id: MSIXTable.capabilityID, body: cap.body, writableMask: cap.writable)
        func virtioCap(_ type: UInt8, _ offset: UInt64, _ length: UInt64, extra: [UInt8] = [], writable: [UInt8] = []) -> Int {
            var body: [UInt8] = [UInt8(16 + extra.count), type, 0, 0, 0, 0]
            for v in [UInt32(offset), UInt32(length)] { for i in 0..<4 { body.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
            return config.addCapability(id: 0x09, body: body + extra, writableMask: writable)
        }
        virtioCap(VirtioPCI.capCommon, VirtioPCI.commonOffset, VirtioPCI.commonLength)
        let multiplier = UInt32(VirtioPCI.notifyMultiplier)
        virtioCap(VirtioPCI.capNotify, VirtioPCI.notifyOffset, UInt64(max(queueCount, 1)) * VirtioPCI.notifyMultiplier,
                  extra: (0..<4).map { UInt8(truncatingIfNeeded: multiplier >> (8 * UInt32($0))) })
        virtioCap(VirtioPCI.capISR, VirtioPCI.isrOffset, 4)
        virtioCap(VirtioPCI.capDevice, VirtioPCI.deviceConfigOffset, VirtioPCI.deviceConfigLength)
        // VIRTIO_PCI_CAP_PCI_CFG: a window onto the BAR through configuration cycles;
        // the driver writes bar, offset and length, then reads or writes the data.
        pciConfigCapability = virtioCap(VirtioPCI.capPCIConfig, 0, 0, extra: [0, 0, 0, 0],
                                        writable: [0, 0, 0xFF, 0, 0, 0] + [UInt8](repeating: 0xFF, count: 12))
        state = Mutex(State(common: VirtioTransportState(queueSizes: device.queueSizes), config: config, msix: msix,
                            queueVectors: Array(repeating: VirtioPCI.noVector, count: queueCount), mappedBAR: bar))
        device.attach(to: self)
    }

    /// A request the device finished late (a disk's I/O).
    func complete(queue index: Int, _ finished: [UsedElement]) {
        state.withLock { s in signal(&s, s.common.complete(queue: index, finished, memory: memory, counters: counters), queue: index) }
    }

    /// Interrupts the driver for what serving queue `index` came to.
    private func signal(_ s: inout State, _ served: VirtioTransportState.Served, queue index: Int) {
        switch served {
        case .nothing: break
        case .failed: interrupt(&s, queue: nil)
        case .usedBuffers: interrupt(&s, queue: index)
        }
    }

    /// PCI class codes as QEMU gives virtio functions: storage, network, communication,
    /// otherwise "unclassified".
    static func classCode(_ type: UInt32) -> UInt32 {
        switch type {
        case 1: 0x02_0000
        case 2: 0x01_8000
        case 3: 0x07_8000
        default: 0xFF_0000
        }
    }

    /// What the machine does when the guest moves BAR 0 (re-map the range and the
    /// notification ioeventfds); false if it could not (the old mapping stays).
    public func onBARMove(_ handler: @escaping @Sendable (UInt64) -> Bool) { barMoved.withLock { $0 = handler } }

    public var transportName: String { "pci" }
    public func plugged(slot: Int) { self.slot.store(slot, ordering: .relaxed) }
    /// Bus:device.function, as `lspci` prints it ("00:01.0"); nil until plugged.
    public var pciAddress: String? {
        let s = slot.load(ordering: .relaxed)
        guard s >= 0 else { return nil }
        return "00:" + (s < 16 ? "0" : "") + String(s, radix: 16) + ".0"
    }
    public var statistics: VirtioCounters { counters.withLock { $0 } }
    public var status: UInt32 { state.withLock { $0.common.status } }
    public var negotiatedFeatures: UInt64 { state.withLock { $0.common.driverFeatures } }
    public var barAddress: UInt64 { UInt64(state.withLock { $0.mappedBAR }) }
    public var msixEnabled: Bool { state.withLock { $0.msix.enabled } }
    public var queueCount: Int { device.queueSizes.count }
    var offeredFeatures: UInt64 { VirtioTransportState.offered(device) }

    // MARK: Configuration space

    public func readConfig(offset: Int, size: Int) -> UInt32 {
        let dataOffset = pciConfigCapability + 16
        if offset >= dataOffset && offset < dataOffset + 4 { return pciConfigAccess(write: nil) }
        return state.withLock { $0.config.read(offset: offset, size: size) }
    }

    public func writeConfig(offset: Int, size: Int, value: UInt32) {
        let dataOffset = pciConfigCapability + 16
        if offset >= dataOffset && offset < dataOffset + 4 {
            _ = pciConfigAccess(write: UInt64(value) << (8 * UInt64(offset - dataOffset)))
            return
        }
        let move: UInt32? = state.withLock { s in
            s.config.write(offset: offset, size: size, value: value)
            if offset <= msixCapability + 3 && offset + size > msixCapability + 2 {
                let control = UInt16(truncatingIfNeeded: s.config.read(offset: msixCapability + 2, size: 2))
                for v in s.msix.setControl(control) { send(&s, vector: v) }
            }
            let bar = s.config.barAddress(0)
            guard s.config.memoryEnabled, bar != s.mappedBAR, bar != 0,
                  UInt64(bar) + UInt64(VirtioPCI.barSize) <= 0x1_0000_0000 else { return nil }
            return bar
        }
        guard let move, let handler = barMoved.withLock({ $0 }) else { return }
        if handler(UInt64(move)) { state.withLock { $0.mappedBAR = move } }
    }

    /// A VIRTIO_PCI_CAP_PCI_CFG data access: the BAR access the capability's bar,
    /// offset and length fields describe (lengths 1, 2 or 4; anything else does nothing).
    private func pciConfigAccess(write value: UInt64?) -> UInt32 {
        let (bar, offset, length) = state.withLock { s in
            (s.config.read(offset: pciConfigCapability + 4, size: 1), s.config.read(offset: pciConfigCapability + 8, size: 4),
             s.config.read(offset: pciConfigCapability + 12, size: 4))
        }
        guard bar == 0, length == 1 || length == 2 || length == 4, UInt64(offset) + UInt64(length) <= UInt64(VirtioPCI.barSize) else { return 0 }
        if let value {
            write(region: 0, offset: UInt64(offset), data: AccessData(size: Int(length), value: value))
            return 0
        }
        var data = AccessData(size: Int(length))
        read(region: 0, offset: UInt64(offset), data: &data)
        return UInt32(truncatingIfNeeded: data.value)
    }

    // MARK: BAR 0

    public func read(region: Int, offset: UInt64, data: inout AccessData) {
        switch offset {
        case VirtioPCI.commonOffset..<(VirtioPCI.commonOffset + VirtioPCI.commonLength):
            data.value = state.withLock { readCommon($0, offset: Int(offset - VirtioPCI.commonOffset), size: data.size) }
        case VirtioPCI.isrOffset..<(VirtioPCI.isrOffset + 4):
            // Reading the ISR acknowledges it (virtio 1.2, 4.1.4.5).
            data.value = UInt64(state.withLock { s -> UInt8 in
                let v = s.isr
                s.isr = 0
                intx?.setLevel(false)
                return v
            })
        case VirtioPCI.deviceConfigOffset..<(VirtioPCI.deviceConfigOffset + VirtioPCI.deviceConfigLength):
            data.value = device.readConfig(offset: Int(offset - VirtioPCI.deviceConfigOffset), size: data.size)
        case VirtioPCI.msixTableOffset..<VirtioPCI.msixPendingOffset:
            data.value = state.withLock { $0.msix.read(pba: false, offset: Int(offset - VirtioPCI.msixTableOffset), size: data.size) }
        case VirtioPCI.msixPendingOffset..<UInt64(VirtioPCI.barSize):
            data.value = state.withLock { $0.msix.read(pba: true, offset: Int(offset - VirtioPCI.msixPendingOffset), size: data.size) }
        default:
            data.value = 0
        }
    }

    public func write(region: Int, offset: UInt64, data: AccessData) {
        switch offset {
        case VirtioPCI.commonOffset..<(VirtioPCI.commonOffset + VirtioPCI.commonLength):
            state.withLock { writeCommon(&$0, offset: Int(offset - VirtioPCI.commonOffset), size: data.size, value: data.value) }
        case VirtioPCI.deviceConfigOffset..<(VirtioPCI.deviceConfigOffset + VirtioPCI.deviceConfigLength):
            device.writeConfig(offset: Int(offset - VirtioPCI.deviceConfigOffset), size: data.size, value: data.value)
        case VirtioPCI.notifyOffset..<VirtioPCI.msixTableOffset:
            if let hand = notificationHandoff.withLock({ $0 }) { hand() }
            else { notify(queue: Int((offset - VirtioPCI.notifyOffset) / VirtioPCI.notifyMultiplier)) }
        case VirtioPCI.msixTableOffset..<VirtioPCI.msixPendingOffset:
            state.withLock { s in
                for v in s.msix.write(offset: Int(offset - VirtioPCI.msixTableOffset), size: data.size, value: data.value) { send(&s, vector: v) }
            }
        default:
            break
        }
    }

    /// The common configuration structure (virtio 1.2, 4.1.4.3), laid out as bytes so
    /// that any aligned 1-, 2-, 4- or 8-byte read of it works.
    private func readCommon(_ s: State, offset: Int, size: Int) -> UInt64 {
        var b = [UInt8](repeating: 0, count: Int(VirtioPCI.commonLength))
        func put(_ at: Int, _ v: UInt64, _ n: Int) { for i in 0..<n { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        let c = s.common
        put(0x00, UInt64(c.deviceFeatureSelect), 4)
        put(0x04, UInt64(c.deviceFeatureWord(offeredFeatures)), 4)
        put(0x08, UInt64(c.driverFeatureSelect), 4)
        put(0x0C, c.driverFeatureSelect < 2 ? c.driverFeatures >> (32 * UInt64(c.driverFeatureSelect)) : 0, 4)
        put(0x10, UInt64(s.configVector), 2)
        put(0x12, UInt64(c.queues.count), 2)
        put(0x14, UInt64(c.status), 1)
        put(0x15, UInt64(c.configGeneration), 1)
        put(0x16, UInt64(c.queueSelect), 2)
        if let q = c.selectedQueue {
            let queue = c.queues[q]
            put(0x18, UInt64(queue.size), 2)
            put(0x1A, UInt64(s.queueVectors[q]), 2)
            put(0x1C, queue.ready ? 1 : 0, 2)
            put(0x1E, UInt64(q), 2)
            put(0x20, queue.descriptorTable.value, 8)
            put(0x28, queue.availableRing.value, 8)
            put(0x30, queue.usedRing.value, 8)
        }
        guard [1, 2, 4, 8].contains(size), offset % size == 0, offset + size <= b.count else { return 0 }
        var v: UInt64 = 0
        for i in 0..<size { v |= UInt64(b[offset + i]) << (8 * UInt64(i)) }
        return v
    }

    private func writeCommon(_ s: inout State, offset: Int, size: Int, value: UInt64) {
        // 64-bit queue addresses may come as one 8-byte write or two 4-byte halves.
        if size == 8, [0x20, 0x28, 0x30].contains(offset) {
            writeCommon(&s, offset: offset, size: 4, value: value & 0xFFFF_FFFF)
            writeCommon(&s, offset: offset + 4, size: 4, value: value >> 32)
            return
        }
        let v32 = UInt32(truncatingIfNeeded: value), v16 = UInt16(truncatingIfNeeded: value)
        let q = s.common.configurableQueue
        func address(_ a: GuestAddress, high: Bool) -> GuestAddress {
            high ? GuestAddress((a.value & 0xFFFF_FFFF) | UInt64(v32) << 32) : GuestAddress((a.value & ~0xFFFF_FFFF) | UInt64(v32))
        }
        switch (offset, size) {
        case (0x00, 4): s.common.deviceFeatureSelect = v32
        case (0x08, 4): s.common.driverFeatureSelect = v32
        case (0x0C, 4): s.common.writeDriverFeatureWord(v32)
        case (0x10, 2): s.configVector = Int(v16) < s.msix.count ? v16 : VirtioPCI.noVector
        case (0x14, 1):
            let wasLive = s.common.status & VirtioStatus.driverOK != 0
            if s.common.writeStatus(UInt32(value & 0xFF), offered: offeredFeatures) {
                // Reset: queues, features, vectors, ISR (virtio 1.2, 2.1.1 and 4.1.4.3).
                s.configVector = VirtioPCI.noVector
                s.queueVectors = s.queueVectors.map { _ in VirtioPCI.noVector }
                s.isr = 0
                intx?.setLevel(false)
                device.reset()
            } else if !wasLive && s.common.status & VirtioStatus.driverOK != 0 {
                device.activate(features: s.common.driverFeatures)
            }
        case (0x16, 2): s.common.queueSelect = UInt32(v16)
        case (0x18, 2): if let q { s.common.queues[q].size = v16 }
        case (0x1A, 2):
            if let sel = s.common.selectedQueue { s.queueVectors[sel] = Int(v16) < s.msix.count ? v16 : VirtioPCI.noVector }
        case (0x1C, 2):
            guard v16 == 1 else { break } // the driver never disables a queue this way
            do throws(VirtQueueError) { try s.common.enableQueue(memory) } catch { fail(&s, error) }
        case (0x20, 4), (0x24, 4): if let q { s.common.queues[q].descriptorTable = address(s.common.queues[q].descriptorTable, high: offset == 0x24) }
        case (0x28, 4), (0x2C, 4): if let q { s.common.queues[q].availableRing = address(s.common.queues[q].availableRing, high: offset == 0x2C) }
        case (0x30, 4), (0x34, 4): if let q { s.common.queues[q].usedRing = address(s.common.queues[q].usedRing, high: offset == 0x34) }
        default: break
        }
    }

    // MARK: Interrupts

    /// Interrupts the driver for a configuration change (`queue` nil) or used buffers.
    private func interrupt(_ s: inout State, queue: Int?) {
        if s.msix.enabled {
            let vector = queue.map { s.queueVectors[$0] } ?? s.configVector
            if vector != VirtioPCI.noVector { send(&s, vector: Int(vector)) }
            return
        }
        s.isr |= queue == nil ? 2 : 1
        if s.config.commandRegister & PCIConfigSpace.commandINTxDisable == 0 { intx?.setLevel(true) }
    }

    private func send(_ s: inout State, vector: Int) {
        guard let message = s.msix.signal(vector) else { return }
        vectors?.send(vector: vector, address: message.address, data: message.data)
    }

    private func fail(_ s: inout State, _ error: VirtQueueError) {
        s.common.fail(error, counters: counters)
        interrupt(&s, queue: nil)
    }

    /// The driver notified queue `index` (a write to its notification address, or the
    /// ioeventfd there).
    public func notify(queue index: Int) {
        counters.withLock { $0.notifications += 1 }
        serve(queue: index)
    }

    /// Serves queue `index` because the device has work for it (console input), not
    /// because the driver asked.
    public func serve(queue index: Int) {
        state.withLock { s in signal(&s, s.common.serve(queue: index, device: device, memory: memory, counters: counters), queue: index) }
        // What the device's backend finished at once (io_uring completes page-cache
        // reads during submission) is finished now, not one event-loop round later.
        device.completeReady()
    }

    public func notifyAll() {
        for i in 0..<queueCount { notify(queue: i) }
    }
}

extension VirtioPCI: StatefulDevice {
    /// Negotiation, status and queues; the function's configuration space (BAR and
    /// command as the guest programmed them), its MSI-X table, vectors and ISR; then the
    /// device's own state.
    public func saveState(into w: inout StateWriter) {
        state.withLock { s in
            s.common.encode(into: &w, device: device)
            w.put(bytes: s.config.bytes)
            s.msix.encode(into: &w)
            w.put(s.configVector)
            w.put(UInt32(s.queueVectors.count))
            for v in s.queueVectors { w.put(v) }
            w.put(s.isr)
        }
        device.saveDeviceState(into: &w)
    }

    public func restoreState(from r: inout StateReader) throws(StateError) {
        var common = VirtioTransportState(queueSizes: device.queueSizes)
        try common.restore(from: &r, memory: memory, offered: offeredFeatures)
        let configBytes = try r.getBytes(exactly: PCIConfigSpace.size, "PCI configuration space")
        var msix = MSIXTable(vectors: queueCount + 1)
        try msix.restore(from: &r)
        let configVector: UInt16 = try r.get()
        let n = Int(try r.get(UInt32.self))
        guard n == queueCount else { throw StateError("\(n) queue vectors for \(queueCount) queues") }
        var queueVectors: [UInt16] = []
        for _ in 0..<n { queueVectors.append(try r.get()) }
        let isr: UInt8 = try r.get()
        try device.restoreDeviceState(from: &r)
        let move: UInt32? = state.withLock { s in
            var config = s.config
            config.set(offset: 0, bytes: configBytes)
            s.common = common
            s.config = config
            s.msix = msix
            s.configVector = Int(configVector) < msix.count ? configVector : VirtioPCI.noVector
            s.queueVectors = queueVectors.map { Int($0) < msix.count ? $0 : VirtioPCI.noVector }
            s.isr = isr & 3
            if !msix.enabled, s.isr != 0, config.commandRegister & PCIConfigSpace.commandINTxDisable == 0 { intx?.setLevel(true) }
            let bar = config.barAddress(0)
            guard config.memoryEnabled, bar != s.mappedBAR, bar != 0, UInt64(bar) + UInt64(VirtioPCI.barSize) <= 0x1_0000_0000 else { return nil }
            return bar
        }
        // The guest had moved BAR 0 from where this machine's device manager put it:
        // the bus range and notifications follow, as when the guest moved it.
        if let move, let handler = barMoved.withLock({ $0 }) {
            guard handler(UInt64(move)) else { throw StateError("BAR 0 at 0x\(String(move, radix: 16)) cannot be mapped here") }
            state.withLock { $0.mappedBAR = move }
        }
        if common.status & VirtioStatus.driverOK != 0 { device.activate(features: common.driverFeatures) }
    }
}
