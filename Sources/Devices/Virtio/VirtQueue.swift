import GuestMemory

/// A split virtqueue (virtio 1.2, 2.7): the driver's descriptor table and available
/// ring, the device's used ring, all in guest memory. Every address and length the
/// driver supplies goes through `GuestMemory`'s bounds checks; every chain is bounded
/// by the queue size (which also catches loops); indirect tables are followed once,
/// never nested. What this type keeps is the device's side: where it is in the rings.
public struct VirtQueue: Sendable, Equatable {
    /// The largest queue the device offers (QueueNumMax), a power of two.
    public let maximumSize: UInt16
    /// The size the driver chose (QueueNum): a power of two, at most `maximumSize`.
    public var size: UInt16
    public var ready = false
    public var descriptorTable = GuestAddress(0)
    public var availableRing = GuestAddress(0)
    public var usedRing = GuestAddress(0)
    /// VIRTIO_RING_F_EVENT_IDX negotiated: notifications and interrupts follow the
    /// used_event/avail_event fields instead of the flags.
    public var eventIndex = false
    /// The next available-ring entry the device will take (last_avail_idx).
    public private(set) var nextAvailable: UInt16 = 0
    /// The next used-ring entry the device will fill.
    public private(set) var nextUsed: UInt16 = 0
    /// The used index when the driver was last interrupted (for EVENT_IDX).
    private var signalledUsed: UInt16 = 0

    static let descriptorSize: UInt64 = 16
    static let flagNext: UInt16 = 1, flagWrite: UInt16 = 2, flagIndirect: UInt16 = 4
    static let availNoInterrupt: UInt16 = 1, usedNoNotify: UInt16 = 1

    public init(maximumSize: UInt16) {
        self.maximumSize = maximumSize
        size = maximumSize
    }

    /// Back to the state after a device reset (the driver sets it up again).
    public mutating func reset() { self = VirtQueue(maximumSize: maximumSize) }

    /// Whether the size is one the device accepts (a power of two up to the maximum).
    public var sizeIsValid: Bool { size > 0 && size <= maximumSize && size & (size - 1) == 0 }

    /// Byte lengths of the three areas for the current size.
    var descriptorTableLength: UInt64 { UInt64(size) * VirtQueue.descriptorSize }
    var availableRingLength: UInt64 { 6 + 2 * UInt64(size) }
    var usedRingLength: UInt64 { 6 + 8 * UInt64(size) }

    /// Checks that the three areas lie in guest RAM (when the driver sets QueueReady).
    public func validate(_ memory: GuestMemory) throws(VirtQueueError) {
        guard sizeIsValid else { throw .descriptorIndexOutOfRange(size, size: maximumSize) }
        for (what, a, n) in [("descriptor table", descriptorTable, descriptorTableLength),
                             ("available ring", availableRing, availableRingLength), ("used ring", usedRing, usedRingLength)]
        where !memory.isValid(a, length: n) {
            throw .ringOutsideMemory(what, a.value)
        }
    }

    func u16(_ memory: GuestMemory, _ base: GuestAddress, _ offset: UInt64, _ what: String) throws(VirtQueueError) -> UInt16 {
        guard let a = base.adding(offset), let v = try? memory.read(UInt16.self, at: a) else { throw .ringOutsideMemory(what, base.value) }
        return v
    }

    /// The driver's available index (how far it has filled the ring).
    func availableIndex(_ memory: GuestMemory) throws(VirtQueueError) -> UInt16 { try u16(memory, availableRing, 2, "available ring") }

    /// Puts the last request taken back, for the device to take again later (its rate
    /// limiter said wait).
    public mutating func undoPop() { nextAvailable &-= 1 }

    /// Puts the last `count` requests taken back (a receive that needed fewer buffers
    /// than it gathered, or found nothing to receive).
    public mutating func undoPops(_ count: Int) { nextAvailable &-= UInt16(truncatingIfNeeded: count) }

    /// Whether the driver has put requests the device has not taken yet.
    public func hasAvailable(_ memory: GuestMemory) throws(VirtQueueError) -> Bool {
        guard ready else { return false }
        return try availableIndex(memory) != nextAvailable
    }

    /// Takes the next request, or nil when there is none. A malformed one throws (and
    /// is consumed, so the device can report it and go on or stop).
    public mutating func pop(_ memory: GuestMemory) throws(VirtQueueError) -> DescriptorChain? {
        guard ready else { throw .notReady }
        let available = try availableIndex(memory)
        let pending = available &- nextAvailable
        guard pending != 0 else { return nil }
        guard pending <= size else { throw .availIndexJumped(from: nextAvailable, to: available, size: size) }
        let slot = UInt64(nextAvailable % size)
        let head = try u16(memory, availableRing, 4 + 2 * slot, "available ring")
        nextAvailable &+= 1
        if eventIndex {
            // avail_event: "notify me when you go past this one".
            try? memory.write(nextAvailable, at: GuestAddress(usedRing.value + 4 + 8 * UInt64(size)))
        }
        return try chain(from: head, memory)
    }

    /// Reads the chain starting at descriptor `head`.
    func chain(from head: UInt16, _ memory: GuestMemory) throws(VirtQueueError) -> DescriptorChain {
        guard head < size else { throw .descriptorIndexOutOfRange(head, size: size) }
        var buffers: [DescriptorChain.Buffer] = []
        var table = descriptorTable, tableSize = size, index = head
        var inIndirect = false
        var seenWritable = false
        let limit = Int(size)
        var visited = 0
        while true {
            visited += 1
            guard visited <= limit else { throw .chainTooLong(limit: limit) }
            guard index < tableSize else { throw .descriptorIndexOutOfRange(index, size: tableSize) }
            let at = GuestAddress(table.value + UInt64(index) * VirtQueue.descriptorSize)
            let address: UInt64, length: UInt32, flags: UInt16, next: UInt16
            do {
                address = try memory.read(UInt64.self, at: at)
                length = try memory.read(UInt32.self, at: GuestAddress(at.value + 8))
                flags = try memory.read(UInt16.self, at: GuestAddress(at.value + 12))
                next = try memory.read(UInt16.self, at: GuestAddress(at.value + 14))
            } catch {
                throw .ringOutsideMemory("descriptor table", at.value)
            }
            if flags & VirtQueue.flagIndirect != 0 {
                guard !inIndirect else { throw .nestedIndirectTable }
                guard flags & VirtQueue.flagNext == 0 else { throw .indirectWithNext }
                guard length > 0, UInt64(length) % VirtQueue.descriptorSize == 0, UInt64(length) / VirtQueue.descriptorSize <= UInt64(size) else {
                    throw .badIndirectTable(length: length)
                }
                guard memory.isValid(GuestAddress(address), length: UInt64(length)) else { throw .bufferOutsideMemory(address, UInt64(length)) }
                table = GuestAddress(address)
                tableSize = UInt16(UInt64(length) / VirtQueue.descriptorSize)
                index = 0
                inIndirect = true
                continue
            }
            let writable = flags & VirtQueue.flagWrite != 0
            if !writable && seenWritable { throw .readableAfterWritable }
            seenWritable = seenWritable || writable
            if length > 0 {
                guard memory.isValid(GuestAddress(address), length: UInt64(length)) else { throw .bufferOutsideMemory(address, UInt64(length)) }
                buffers.append(.init(address: GuestAddress(address), length: length, writable: writable))
            }
            guard flags & VirtQueue.flagNext != 0 else { break }
            index = next
        }
        guard !buffers.isEmpty else { throw .emptyChain }
        return DescriptorChain(head: head, buffers: buffers)
    }

    /// Returns request `head` to the driver, `written` bytes of it filled in.
    public mutating func push(_ memory: GuestMemory, head: UInt16, written: UInt32) throws(VirtQueueError) {
        let slot = UInt64(nextUsed % size)
        let entry = GuestAddress(usedRing.value + 4 + 8 * slot)
        do {
            try memory.write(UInt32(head), at: entry)
            try memory.write(written, at: GuestAddress(entry.value + 4))
            nextUsed &+= 1
            // The index last, after the entry (x86 stores are ordered).
            try memory.write(nextUsed, at: GuestAddress(usedRing.value + 2))
        } catch {
            throw .ringOutsideMemory("used ring", usedRing.value)
        }
    }

    /// Whether the driver wants an interrupt for what was pushed since the last one:
    /// with EVENT_IDX, when the used index passed its used_event (vring_need_event);
    /// otherwise unless it set VIRTQ_AVAIL_F_NO_INTERRUPT.
    public mutating func needsInterrupt(_ memory: GuestMemory) -> Bool {
        let old = signalledUsed, new = nextUsed
        signalledUsed = new
        guard old != new else { return false }
        if eventIndex {
            guard let usedEvent = try? u16(memory, availableRing, 4 + 2 * UInt64(size), "available ring") else { return true }
            return new &- usedEvent &- 1 < new &- old
        }
        guard let flags = try? u16(memory, availableRing, 0, "available ring") else { return true }
        return flags & VirtQueue.availNoInterrupt == 0
    }
}

extension VirtQueue {
    /// The device's side of the queue for a snapshot: its set-up and where it is in the
    /// rings. `held` requests the device took and has not used (virtio-net's receive
    /// buffers it keeps) are saved as not taken, so the restored device takes them again.
    func encode(into w: inout StateWriter, held: UInt16) {
        w.put(maximumSize); w.put(size); w.put(ready)
        w.put(descriptorTable.value); w.put(availableRing.value); w.put(usedRing.value)
        w.put(eventIndex); w.put(nextAvailable &- held); w.put(nextUsed); w.put(signalledUsed)
    }

    /// Reads what `encode` wrote, for a queue of this maximum size; a ready queue's
    /// areas must lie in `memory`, as when the driver enabled it.
    mutating func restore(from r: inout StateReader, memory: GuestMemory) throws(StateError) {
        let maximum: UInt16 = try r.get()
        guard maximum == maximumSize else { throw StateError("a queue of \(maximum) entries where the device has \(maximumSize)") }
        var q = VirtQueue(maximumSize: maximum)
        q.size = try r.get(); q.ready = try r.getBool()
        q.descriptorTable = GuestAddress(try r.get()); q.availableRing = GuestAddress(try r.get()); q.usedRing = GuestAddress(try r.get())
        q.eventIndex = try r.getBool(); q.nextAvailable = try r.get(); q.nextUsed = try r.get(); q.signalledUsed = try r.get()
        if q.ready {
            do { try q.validate(memory) } catch { throw StateError("a ready queue: \(error.description)") }
        }
        self = q
    }
}
