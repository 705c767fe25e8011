import GuestMemory
import Synchronization

/// One vCPU's exit-trace ring: a single-producer, single-consumer queue of fixed-size
/// records. The vCPU's thread pushes (no allocation, no lock: a few bounds-checked
/// stores into a preallocated mapping and one release store); the tracer drains on the
/// event loop's thread. A full ring drops the new record and counts it: the vCPU never
/// waits for the writer.
final class TraceRing: Sendable {
    /// Records the ring holds (a power of two): 32768 records, 1.5 MiB, whose pages the
    /// host backs only as they are written.
    static let capacity: UInt64 = 1 << 15
    private let storage: GuestMemory
    private let head = Atomic<UInt64>(0)
    private let tail = Atomic<UInt64>(0)
    private let droppedCount = Atomic<UInt64>(0)

    init?() {
        // The same bounds-checked mapping guest RAM uses, here as plain host memory.
        guard let region = try? MemoryRegion(start: GuestAddress(0), size: TraceRing.capacity * UInt64(TraceRecord.size)),
              let memory = try? GuestMemory(regions: [region]) else { return nil }
        storage = memory
    }

    var dropped: UInt64 { droppedCount.load(ordering: .relaxed) }

    /// On the vCPU's thread only.
    func push(time: UInt64, rip: UInt64, address: UInt64, data: UInt64, handling: UInt64, vcpu: UInt16, kind: UInt8, size: UInt8, flags: UInt8) {
        let h = head.load(ordering: .relaxed)
        guard h &- tail.load(ordering: .acquiring) < TraceRing.capacity else {
            droppedCount.wrappingAdd(1, ordering: .relaxed)
            return
        }
        let at = (h & (TraceRing.capacity - 1)) * UInt64(TraceRecord.size)
        // In range by construction; a failure would only lose this record.
        try? storage.write(time, at: GuestAddress(at))
        try? storage.write(rip, at: GuestAddress(at + 8))
        try? storage.write(address, at: GuestAddress(at + 16))
        try? storage.write(data, at: GuestAddress(at + 24))
        try? storage.write(UInt32(min(handling, UInt64(UInt32.max))), at: GuestAddress(at + 32))
        try? storage.write(vcpu, at: GuestAddress(at + 36))
        try? storage.write(UInt32(kind) | UInt32(size) << 8 | UInt32(flags) << 16, at: GuestAddress(at + 38))
        head.store(h &+ 1, ordering: .releasing)
    }

    /// On the draining thread only: every record pushed so far, as file bytes.
    func drain(into out: inout [UInt8]) {
        let t = tail.load(ordering: .relaxed)
        let h = head.load(ordering: .acquiring)
        var next = t
        while next != h {
            let slot = next & (TraceRing.capacity - 1)
            let run = min(h &- next, TraceRing.capacity - slot)
            if let bytes = try? storage.read(bytes: Int(run) * TraceRecord.size, at: GuestAddress(slot * UInt64(TraceRecord.size))) {
                out += bytes
            }
            next &+= run
        }
        tail.store(h, ordering: .releasing)
    }
}
