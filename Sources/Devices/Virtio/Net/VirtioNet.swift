import CLinux
import Glibc
import GuestMemory
import Synchronization

/// Where a virtio-net device's frames go and come from: a TAP interface, or in tests any
/// fd that carries one frame (virtio net header first) per read and write, such as a
/// datagram socket pair.
public protocol NetBackend: AnyObject, Sendable {
    /// Non-blocking.
    var fd: Int32 { get }
    /// TUN_F_* offloads the host accepts on the receive side.
    var supportedOffloads: UInt32 { get }
    /// Applies the offloads the guest's driver accepted.
    func setOffloads(_ flags: UInt32) -> Bool
}

extension TapDevice: NetBackend {}

/// virtio-net (type 1; virtio 1.2, 5.1): one receive and one transmit queue, over a TAP.
///
/// Frames move between guest memory and the TAP with `readv`/`writev` on host I/O
/// vectors into the guest's own buffers: no copy in the VMM on either path. The one
/// exception is a receive when the buffers the guest has posted cannot hold the largest
/// frame the TAP may hand over: that frame is read into a buffer of the device's own and
/// copied once there is room, so it is never truncated or lost for want of a buffer.
///
/// What a guest can do wrong is counted, not fatal: a transmit request shorter than the
/// net header or longer than the largest frame, a header the kernel refuses. Each pass
/// over a queue handles at most `budget` frames and then comes back through the event
/// loop, so a guest flooding the network (or a host flooding the guest) shares the
/// loop's thread with every other device.
public final class VirtioNet: VirtioDevice {
    public static let receiveQueue = 0, transmitQueue = 1

    /// Feature bits (virtio 1.2, 5.1.3).
    public enum Feature {
        public static let checksum: UInt64 = 1 << 0
        public static let guestChecksum: UInt64 = 1 << 1
        public static let mac: UInt64 = 1 << 5
        public static let guestTSO4: UInt64 = 1 << 7
        public static let guestTSO6: UInt64 = 1 << 8
        public static let guestECN: UInt64 = 1 << 9
        public static let guestUFO: UInt64 = 1 << 10
        public static let hostTSO4: UInt64 = 1 << 11
        public static let hostTSO6: UInt64 = 1 << 12
        public static let hostECN: UInt64 = 1 << 13
        public static let hostUFO: UInt64 = 1 << 14
        public static let mergeableReceiveBuffers: UInt64 = 1 << 15
        public static let status: UInt64 = 1 << 16
    }

    /// The largest frame after the header: a 64 KiB segmentation-offload packet with
    /// its Ethernet and VLAN headers.
    public static let maximumFrame = 65_535 + 14 + 4
    /// Without receive offloads the TAP hands over what fits its MTU; Linux's small
    /// receive buffers hold 1518 bytes (Ethernet, VLAN, 1500 of payload).
    public static let smallFrame = 1518
    /// Frames each way per pass over a queue before the loop's other work.
    public static let budget = 64

    public let deviceType: UInt32 = 1
    public let offeredFeatures: UInt64
    public let queueSizes: [UInt16] = [256, 256]
    public let mac: MACAddress
    public let backend: any NetBackend

    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    /// What `inspect` and the API show: frames and bytes each way, and what went wrong.
    public struct Statistics: Sendable, Equatable {
        public var receivedFrames: UInt64 = 0
        public var receivedBytes: UInt64 = 0
        public var transmittedFrames: UInt64 = 0
        public var transmittedBytes: UInt64 = 0
        /// Transmit requests not a frame: shorter than the header, longer than the
        /// largest frame, or a header the host kernel refused.
        public var malformedFrames: UInt64 = 0
        /// Frames the host dropped on transmit (its queue full), or received frames
        /// larger than the guest's buffers.
        public var droppedFrames: UInt64 = 0
        /// Times a received frame had to wait for the guest to post buffers.
        public var receiveStalls: UInt64 = 0
        /// Received frames that went through the device's own buffer (see above).
        public var copiedFrames: UInt64 = 0
    }

    private struct State {
        var features: UInt64 = 0
        /// The TAP said readable and no read has said EAGAIN since (it is watched
        /// edge-triggered).
        var backendReadable = true
        /// A frame read into the device's buffer, waiting for room in the guest's.
        var pending: [UInt8]? = nil
        var statistics = Statistics()
    }
    private let state = Mutex(State())
    /// Receive chains taken and not used yet (touched only while serving the receive
    /// queue, under the transport's lock, and at reset).
    private let held = Mutex(Held())
    private let receiveLimiter: RateLimitTimer
    private let transmitLimiter: RateLimitTimer
    /// Written when a pass stopped at its budget: the loop comes back for the rest.
    private let moreWork: Int32
    private let completer = Mutex<VirtioCompleter?>(nil)

    public init(backend: any NetBackend, mac: MACAddress, receiveLimit: RateLimit = RateLimit(),
                transmitLimit: RateLimit = RateLimit()) throws(Failure) {
        self.backend = backend
        self.mac = mac
        do {
            receiveLimiter = try RateLimitTimer(receiveLimit)
            transmitLimiter = try RateLimitTimer(transmitLimit)
        } catch { throw Failure(description: "virtio-net: \(error.description)") }
        moreWork = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard moreWork >= 0 else { throw Failure(description: "virtio-net: eventfd: \(String(cString: strerror(errno)))") }
        // The guest may always send offloaded frames (the TAP takes any with a
        // header); it is offered to receive them only as far as this host's TAP does.
        var features = Feature.mac | Feature.status | Feature.mergeableReceiveBuffers
            | Feature.checksum | Feature.hostTSO4 | Feature.hostTSO6 | Feature.hostECN
        let host = backend.supportedOffloads
        if host & CLINUX_TUN_F_UFO != 0 { features |= Feature.hostUFO }
        if host & CLINUX_TUN_F_CSUM != 0 {
            features |= Feature.guestChecksum
            if host & CLINUX_TUN_F_TSO4 != 0 { features |= Feature.guestTSO4 }
            if host & CLINUX_TUN_F_TSO6 != 0 { features |= Feature.guestTSO6 }
            if host & CLINUX_TUN_F_TSO_ECN != 0 { features |= Feature.guestECN }
            if host & CLINUX_TUN_F_UFO != 0 { features |= Feature.guestUFO }
        }
        offeredFeatures = features
    }

    deinit { close(moreWork) }

    public var statistics: Statistics { state.withLock { $0.statistics } }
    public var receiveRateLimit: RateLimit { receiveLimiter.limit }
    public var transmitRateLimit: RateLimit { transmitLimiter.limit }
    public var throttled: UInt64 { receiveLimiter.throttled &+ transmitLimiter.throttled }

    /// TUN_F_* offloads for the features the driver accepted.
    static func offloads(for features: UInt64) -> UInt32 {
        guard features & Feature.guestChecksum != 0 else { return 0 }
        var flags = CLINUX_TUN_F_CSUM
        if features & Feature.guestTSO4 != 0 { flags |= CLINUX_TUN_F_TSO4 }
        if features & Feature.guestTSO6 != 0 { flags |= CLINUX_TUN_F_TSO6 }
        if features & Feature.guestECN != 0 { flags |= CLINUX_TUN_F_TSO_ECN }
        if features & Feature.guestUFO != 0 { flags |= CLINUX_TUN_F_UFO }
        return flags
    }

    /// The largest frame (header included) the TAP may hand over with these features.
    static func largestReceive(for features: UInt64) -> Int {
        let gso = Feature.guestTSO4 | Feature.guestTSO6 | Feature.guestUFO
        return TapDevice.headerSize + (features & gso != 0 ? maximumFrame : smallFrame)
    }

    // MARK: VirtioDevice

    public var eventFDs: [Int32] {
        [backend.fd, moreWork] + [receiveLimiter.fd, transmitLimiter.fd].filter { $0 >= 0 }
    }

    public func triggersOnEdge(_ fd: Int32) -> Bool { fd == backend.fd }

    public func attach(_ completer: VirtioCompleter) { self.completer.withLock { $0 = completer } }

    public func eventReady(_ fd: Int32) {
        let c = completer.withLock { $0 }
        switch fd {
        case backend.fd:
            state.withLock { $0.backendReadable = true }
            c?.serve(queue: VirtioNet.receiveQueue)
        case receiveLimiter.fd:
            receiveLimiter.fired()
            c?.serve(queue: VirtioNet.receiveQueue)
        case transmitLimiter.fd:
            transmitLimiter.fired()
            c?.serve(queue: VirtioNet.transmitQueue)
        default:
            var count: UInt64 = 0
            _ = read(moreWork, &count, 8)
            c?.serve(queue: VirtioNet.transmitQueue)
            c?.serve(queue: VirtioNet.receiveQueue)
        }
    }

    /// Configuration (virtio 1.2, 5.1.4): mac[6], status (LINK_UP), max_virtqueue_pairs.
    public func readConfig(offset: Int, size: Int) -> UInt64 {
        let space = mac.bytes + [1, 0, 1, 0]
        guard offset >= 0, size > 0, size <= 8, offset < space.count else { return 0 }
        var v: UInt64 = 0
        for i in 0..<size where offset + i < space.count { v |= UInt64(space[offset + i]) << (8 * UInt64(i)) }
        return v
    }

    /// The MAC is read-only with VERSION_1 (no VIRTIO_NET_F_CTRL_MAC_ADDR).
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    public func activate(features: UInt64) {
        state.withLock { $0.features = features }
        _ = backend.setOffloads(VirtioNet.offloads(for: features))
    }

    /// The TAP goes to the next machine (see `TapDevice.keepForNextMachine`).
    public func release() {
        if let tap = backend as? TapDevice { TapDevice.keepForNextMachine(tap) }
    }

    public func reset() {
        state.withLock { s in
            s.features = 0
            s.pending = nil
        }
        held.withLock { $0 = Held() }
        _ = backend.setOffloads(0)
    }

    public func process(queue index: Int, _ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int {
        switch index {
        case VirtioNet.transmitQueue: return try transmit(&queue, memory: memory)
        case VirtioNet.receiveQueue: return try receive(&queue, memory: memory)
        default: return 0
        }
    }

    private func comeBack() {
        var one: UInt64 = 1
        _ = write(moreWork, &one, 8)
    }

    // MARK: Transmit

    private func transmit(_ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int {
        var done = 0
        // Counted here and added once a pass.
        var sent: UInt64 = 0, bytes: UInt64 = 0, malformed: UInt64 = 0, dropped: UInt64 = 0
        defer {
            state.withLock { s in
                s.statistics.transmittedFrames &+= sent
                s.statistics.transmittedBytes &+= bytes
                s.statistics.malformedFrames &+= malformed
                s.statistics.droppedFrames &+= dropped
            }
        }
        while done < VirtioNet.budget, let chain = try queue.pop(memory) {
            let readable = chain.readable
            let length = readable.reduce(0) { $0 + UInt64($1.length) }
            guard transmitLimiter.admit(bytes: length) else {
                queue.undoPop()
                return done
            }
            switch send(readable, length: length, memory: memory) {
            case .sent:
                sent += 1
                bytes += length - UInt64(TapDevice.headerSize)
            case .malformed: malformed += 1
            case .dropped: dropped += 1
            }
            try queue.push(memory, head: chain.head, written: 0)
            done += 1
        }
        if done == VirtioNet.budget, (try? queue.hasAvailable(memory)) == true { comeBack() }
        return done
    }

    private enum SendOutcome { case sent, malformed, dropped }

    private func send(_ readable: [DescriptorChain.Buffer], length: UInt64, memory: GuestMemory) -> SendOutcome {
        guard length >= UInt64(TapDevice.headerSize), length <= UInt64(TapDevice.headerSize + VirtioNet.maximumFrame) else { return .malformed }
        guard let vectors = try? memory.ioVectors(readable.map { ($0.address, UInt64($0.length)) }) else { return .malformed }
        while true {
            let n = vectors.vectors.withUnsafeBufferPointer { writev(backend.fd, $0.baseAddress, Int32($0.count)) }
            if n >= 0 { return .sent }
            switch errno {
            case EINTR: continue
            case EINVAL, EFAULT: return .malformed
            default: return .dropped // EAGAIN, ENOBUFS, EIO (the interface is down)
            }
        }
    }

    // MARK: Receive

    private func receive(_ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int {
        let features = state.withLock { $0.features }
        let mergeable = features & Feature.mergeableReceiveBuffers != 0
        let largest = UInt64(VirtioNet.largestReceive(for: features))
        var done = 0
        while done < VirtioNet.budget {
            let (pending, readable) = state.withLock { ($0.pending, $0.backendReadable) }
            guard pending != nil || readable else { break }
            if pending == nil { guard receiveLimiter.admit(bytes: 0) else { break } }
            // Buffers for one frame: one chain, or with mergeable buffers as many as it
            // takes to hold the largest frame (or the one waiting). Chains taken and not
            // used stay held for the next frame: a small frame does not pay for taking
            // and returning the buffers a large one would need.
            let wanted = pending.map { UInt64($0.count) } ?? largest
            try topUp(to: wanted, mergeable: mergeable, &queue, memory: memory)
            let (count, room) = held.withLock { h in mergeable ? (h.chains.count, h.room) : (min(h.chains.count, 1), h.chains.first?.room ?? 0) }
            guard count > 0 else {
                state.withLock { $0.statistics.receiveStalls &+= 1 }
                break
            }
            if let frame = pending {
                guard room >= wanted else {
                    if mergeable {
                        state.withLock { $0.statistics.receiveStalls &+= 1 }
                        break
                    }
                    // One chain is all a driver without mergeable buffers gives a frame.
                    state.withLock { s in s.pending = nil; s.statistics.droppedFrames &+= 1 }
                    continue
                }
                try deliver(copying: frame, chains: count, queue: &queue, memory: memory)
                state.withLock { s in s.pending = nil; s.statistics.copiedFrames &+= 1 }
                done += 1
                continue
            }
            if room < wanted {
                // Not room for the largest frame: read this one aside, then see.
                guard let frame = readAside() else { break }
                state.withLock { $0.pending = frame }
                continue
            }
            // Straight into the held buffers: their vectors are kept ready, flat.
            let n = held.withLock { h in
                let vectors = mergeable ? h.vectors.count : h.chains[0].vectorCount
                return h.vectors.withUnsafeBufferPointer { readv(backend.fd, $0.baseAddress, Int32(vectors)) }
            }
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == EFAULT {
                    // A frame larger than the buffers: the kernel dropped it.
                    state.withLock { $0.statistics.droppedFrames &+= 1 }
                    continue
                }
                state.withLock { $0.backendReadable = false }
                break
            }
            try finish(n, queue: &queue, memory: memory)
            done += 1
        }
        if done == VirtioNet.budget { comeBack() }
        return done
    }

    /// A receive chain the device has taken from the ring and not used yet.
    struct HeldChain {
        let chain: DescriptorChain
        let room: UInt64
        /// How many of `Held.vectors` are its buffers'.
        let vectorCount: Int
    }

    struct Held {
        var chains: [HeldChain] = []
        var room: UInt64 = 0
        /// The host I/O vectors of every held chain's buffers, in order and flat, ready
        /// for `readv`: a frame costs no gathering.
        var vectors: [iovec] = []
        /// Keeps guest memory (where `vectors` point) alive while any are held.
        var memory: IOVectors?

        /// The first `count` chains are used: they go, with their vectors.
        mutating func drop(_ count: Int) {
            let vectorCount = chains.prefix(count).reduce(0) { $0 + $1.vectorCount }
            vectors.removeFirst(vectorCount)
            for c in chains.prefix(count) { room -= c.room }
            chains.removeFirst(count)
            if chains.isEmpty { memory = nil }
        }
    }

    /// Takes receive chains until those held can hold `wanted` bytes (one chain without
    /// mergeable buffers), or the ring is empty.
    private func topUp(to wanted: UInt64, mergeable: Bool, _ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) {
        while held.withLock({ $0.room < wanted && (mergeable || $0.chains.isEmpty) }), let chain = try queue.pop(memory) {
            let writable = chain.writable
            let vectors: IOVectors
            do { vectors = try memory.ioVectors(writable.map { ($0.address, UInt64($0.length)) }) }
            catch { throw .bufferOutsideMemory(writable.first?.address.value ?? 0, chain.writableLength) }
            let room = UInt64(vectors.length)
            held.withLock { h in
                h.chains.append(HeldChain(chain: chain, room: room, vectorCount: vectors.vectors.count))
                h.vectors += vectors.vectors
                h.memory = vectors
                h.room += room
            }
        }
    }

    /// Reads one frame into the device's own buffer; nil when there is none.
    private func readAside() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: TapDevice.headerSize + VirtioNet.maximumFrame)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(backend.fd, $0.baseAddress, $0.count) }
            if n >= 0 { return Array(buffer.prefix(n)) }
            if errno == EINTR { continue }
            state.withLock { $0.backendReadable = false }
            return nil
        }
    }

    /// A frame of `n` bytes (header included) now fills the held chains in order: each
    /// gets what fits, the header's num_buffers says how many were used, and those go
    /// to the used ring (the rest stay held).
    private func finish(_ n: Int, queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) {
        var left = UInt64(n)
        var used: [(head: UInt16, written: UInt32)] = []
        var first: DescriptorChain?
        held.withLock { h in
            for c in h.chains where left > 0 || used.isEmpty {
                let here = min(left, c.room)
                used.append((c.chain.head, UInt32(here)))
                left -= here
            }
            first = h.chains.first?.chain
            h.drop(used.count)
        }
        let count = UInt16(truncatingIfNeeded: used.count)
        try first?.write([UInt8(truncatingIfNeeded: count), UInt8(truncatingIfNeeded: count >> 8)], at: 10, to: memory)
        for u in used { try queue.push(memory, head: u.head, written: u.written) }
        receiveLimiter.charge(bytes: UInt64(n))
        state.withLock { s in
            s.statistics.receivedFrames &+= 1
            s.statistics.receivedBytes &+= UInt64(max(n - TapDevice.headerSize, 0))
        }
    }

    /// A frame read aside goes into the first `count` held chains.
    private func deliver(copying frame: [UInt8], chains count: Int, queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) {
        let chains = held.withLock { Array($0.chains.prefix(count)) }
        var rest = frame[...]
        for c in chains where !rest.isEmpty {
            let n = try c.chain.write(rest, to: memory)
            rest = rest.dropFirst(n)
        }
        try finish(frame.count, queue: &queue, memory: memory)
    }
}

extension VirtioNet {
    /// The receive buffers kept for the next frame: saved as not taken. (A frame read
    /// aside, waiting for room, is not saved: to the guest it is a frame the network
    /// dropped.)
    public func heldRequests(queue index: Int) -> UInt16 {
        guard index == VirtioNet.receiveQueue else { return 0 }
        return UInt16(truncatingIfNeeded: held.withLock { $0.chains.count })
    }
}
