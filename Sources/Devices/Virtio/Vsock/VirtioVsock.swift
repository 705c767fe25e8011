import CLinux
import Glibc
import GuestMemory
import Synchronization

/// virtio-vsock (type 19; virtio 1.2, 5.10) served in user space, with Firecracker's
/// host-side convention so the same host tools work with both VMMs:
///
/// - a host program connects to the Unix socket `socketPath`, writes `CONNECT PORT\n`
///   and, once the guest accepted, reads `OK HOSTPORT\n`; after that the stream is the
///   connection to the guest's port PORT;
/// - a guest connecting to the host (CID 2) on port P reaches the Unix socket
///   `socketPath_P`, if something listens there.
///
/// Flow control is the specification's credit scheme both ways: the device tells the
/// guest how much of each connection's buffer (`bufferAllocation`) it may fill and never
/// sends the guest more than the guest's own credit allows. Data goes between guest
/// buffers and the sockets with `readv`/`writev`; only what a host socket would not take
/// at once is copied, and a guest that sends beyond its credit has the connection reset.
///
/// The device's sockets come and go with connections, so it keeps them in an epoll set
/// of its own, whose fd the machine's event loop watches. A device reset (the guest
/// rebooting) closes every connection.
public final class VirtioVsock: VirtioDevice {
    public static let receiveQueue = 0, transmitQueue = 1, eventQueue = 2
    public static let hostCID: UInt64 = 2
    /// Per connection: what the guest may send before the host socket takes it.
    public static let bufferAllocation: UInt32 = 256 * 1024
    /// The largest payload in one packet, either way.
    public static let maximumPayload: UInt32 = 64 * 1024
    public static let maximumConnections = 1024
    /// Packets each way per pass before the loop's other work.
    public static let budget = 64
    /// A host connection that has not said `CONNECT PORT\n` in this many bytes is closed.
    static let maximumConnectLine = 64
    /// How long a closing connection waits for the guest's RST.
    static let closeTimeout: UInt64 = 2_000_000_000
    /// Control packets waiting for receive buffers, at most.
    static let maximumControlBacklog = 4096

    public let deviceType: UInt32 = 19
    public let offeredFeatures: UInt64 = 0
    public let queueSizes: [UInt16] = [256, 256, 64]
    public let guestCID: UInt64
    public let socketPath: String

    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    public struct Statistics: Sendable, Equatable {
        public var open: UInt64 = 0
        public var opened: UInt64 = 0
        public var resets: UInt64 = 0
        public var bytesToHost: UInt64 = 0
        public var bytesToGuest: UInt64 = 0
        /// Packets that were no packet: too short, a length beyond the buffer, a wrong
        /// CID or type, an unknown operation, data beyond the credit.
        public var malformedPackets: UInt64 = 0
        /// Host connections refused: a bad CONNECT line, too many connections.
        public var refusedHostConnections: UInt64 = 0
        public var droppedControlPackets: UInt64 = 0
    }

    struct Connection {
        enum Phase: Equatable {
            /// Accepted on the listener; reading `CONNECT PORT\n`.
            case awaitingConnectLine
            /// REQUEST sent to the guest; waiting for its RESPONSE.
            case connecting
            case established
            /// SHUTDOWN sent to the guest; waiting for its RST until the deadline.
            case closing(deadline: UInt64)
        }
        let fd: Int32
        var phase: Phase
        var hostPort: UInt32 = 0
        var guestPort: UInt32 = 0
        var line: [UInt8] = []
        /// The host socket has data (or EOF) not read yet (it is watched edge-triggered).
        var hostReadable = false
        /// Guest data the host socket did not take yet (at most `bufferAllocation`).
        var pendingToHost: [UInt8] = []
        /// The guest said it sends no more: shut the socket's write side once flushed.
        var guestDoneSending = false
        var forwardCount: UInt32 = 0
        var announcedForwardCount: UInt32 = 0
        var sentToGuest: UInt32 = 0
        var peerBufferAllocation: UInt32 = 0
        var peerForwardCount: UInt32 = 0
        var creditRequested = false
        /// Counted in `Statistics.open`.
        var counted = false

        /// What the guest can still take (5.10.6.3), in wrapping 32-bit arithmetic.
        var guestCredit: UInt32 {
            let inFlight = sentToGuest &- peerForwardCount
            return inFlight >= peerBufferAllocation ? 0 : peerBufferAllocation - inFlight
        }
        var key: UInt64 { UInt64(hostPort) << 32 | UInt64(guestPort) }
    }

    struct State {
        var connections: [Int32: Connection] = [:]
        var byPorts: [UInt64: Int32] = [:]
        var control: [VsockHeader] = []
        var nextHostPort: UInt32 = 1 << 30
        var cursor: Int32 = -1
        /// A packet from the guest gave credit to a connection with host data waiting.
        var receiveWaiting = false
        /// A restore happened: the driver is to be told, on the event queue.
        var transportResetPending = false
        var statistics = Statistics()
    }

    private let state = Mutex(State())
    private let listener: Int32
    private let poller: Int32
    private let closeTimer: Int32
    /// Written when a pass had more to do (its budget ran out, or sending produced
    /// answers): the loop comes back and serves both queues. (A device may not serve a
    /// queue from inside `process`: the transport's lock is held.)
    private let moreWork: Int32
    private let completer = Mutex<VirtioCompleter?>(nil)
    /// The listening socket's file (device and inode), so that only ours is removed:
    /// a restarted machine's device may have put a new one at the same path.
    private let socketFile: (UInt64, UInt64)
    /// `release` ran: sockets closed, the file removed.
    private let released = Mutex(false)

    /// Listens on `socketPath` (a stale socket file there is replaced).
    public init(guestCID: UInt64, socketPath: String) throws(Failure) {
        guard guestCID >= 3, guestCID <= 0xFFFF_FFFE else {
            throw Failure(description: "vsock: CID \(guestCID) is reserved; give 3 to 4294967294")
        }
        self.guestCID = guestCID
        self.socketPath = socketPath
        var st = stat()
        if lstat(socketPath, &st) == 0 && st.st_mode & S_IFMT == S_IFSOCK { unlink(socketPath) }
        let l = clinux_unix_listen(socketPath, 128)
        guard l >= 0 else { throw Failure(description: "vsock: cannot listen on \(socketPath): \(String(cString: strerror(-l)))") }
        listener = l
        var bound = stat()
        socketFile = lstat(socketPath, &bound) == 0 ? (UInt64(bound.st_dev), UInt64(bound.st_ino)) : (0, 0)
        poller = epoll_create1(Int32(EPOLL_CLOEXEC))
        closeTimer = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC | TFD_NONBLOCK))
        moreWork = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard poller >= 0, closeTimer >= 0, moreWork >= 0 else {
            let e = errno
            for fd in [l, poller, closeTimer, moreWork] where fd >= 0 { close(fd) }
            throw Failure(description: "vsock: \(String(cString: strerror(e)))")
        }
        watch(listener, UInt32(EPOLLIN.rawValue))
        watch(closeTimer, UInt32(EPOLLIN.rawValue))
        watch(moreWork, UInt32(EPOLLIN.rawValue))
    }

    deinit {
        release()
        close(closeTimer)
        close(moreWork)
        close(poller)
    }

    /// Closes every connection and the listener and removes the socket file (if it is
    /// still ours): host programs see the VM's vsock go as the machine stops.
    public func release() {
        let first = released.withLock { r in defer { r = true }; return !r }
        guard first else { return }
        reset()
        close(listener)
        var st = stat()
        if lstat(socketPath, &st) == 0, (UInt64(st.st_dev), UInt64(st.st_ino)) == socketFile { unlink(socketPath) }
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    private func watch(_ fd: Int32, _ events: UInt32) {
        var e = epoll_event(events: events, data: epoll_data_t(fd: fd))
        epoll_ctl(poller, EPOLL_CTL_ADD, fd, &e)
    }

    // MARK: VirtioDevice

    public var eventFDs: [Int32] { [poller] }
    public func attach(_ completer: VirtioCompleter) { self.completer.withLock { $0 = completer } }

    public func readConfig(offset: Int, size: Int) -> UInt64 {
        guard offset >= 0, offset < 8, size > 0, size <= 8 else { return 0 }
        let shift = UInt64(offset) * 8
        let value = guestCID >> shift
        return size == 8 ? value : value & ((1 << (UInt64(size) * 8)) - 1)
    }

    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    /// The guest reset the device (or rebooted): every connection ends.
    public func reset() {
        state.withLock { s in
            for c in s.connections.values { close(c.fd) }
            s.statistics.resets &+= UInt64(s.connections.count)
            s.connections.removeAll()
            s.byPorts.removeAll()
            s.control.removeAll()
            s.statistics.open = 0
        }
    }

    public func eventReady(_ fd: Int32) {
        var events = [epoll_event](repeating: epoll_event(), count: VirtioVsock.budget)
        let n = events.withUnsafeMutableBufferPointer { epoll_wait(poller, $0.baseAddress, Int32($0.count), 0) }
        guard n > 0 else { return }
        var transmitToo = false
        state.withLock { s in
            for e in events.prefix(Int(n)) {
                let fd = e.data.fd
                if fd == listener { accept(&s) }
                else if fd == closeTimer { expireClosing(&s) }
                else if fd == moreWork {
                    var count: UInt64 = 0
                    _ = read(moreWork, &count, 8)
                    transmitToo = true
                }
                else { hostEvent(fd, e.events, &s) }
            }
        }
        let c = completer.withLock { $0 }
        if transmitToo { c?.serve(queue: VirtioVsock.transmitQueue) }
        c?.serve(queue: VirtioVsock.receiveQueue)
        if state.withLock({ $0.transportResetPending }) { c?.serve(queue: VirtioVsock.eventQueue) }
    }

    private func comeBack() {
        var one: UInt64 = 1
        _ = write(moreWork, &one, 8)
    }

    public func process(queue index: Int, _ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int {
        switch index {
        case VirtioVsock.transmitQueue:
            let done = try transmit(&queue, memory: memory)
            // What the guest sent may have produced answers (RESPONSE, RST, credit) or
            // given credit to host data that waits.
            let receive = state.withLock { s in
                defer { s.receiveWaiting = false }
                return !s.control.isEmpty || s.receiveWaiting
            }
            if receive { comeBack() }
            return done
        case VirtioVsock.receiveQueue: return try receive(&queue, memory: memory)
        default:
            // The event queue: one event to report, after a restore.
            guard state.withLock({ $0.transportResetPending }), let chain = try queue.pop(memory) else { return 0 }
            let written = (try? chain.write([0, 0, 0, 0] as [UInt8], to: memory)) ?? 0 // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
            try queue.push(memory, head: chain.head, written: UInt32(written))
            state.withLock { $0.transportResetPending = false }
            return 1
        }
    }

    // MARK: Host side

    private func accept(_ s: inout State) {
        for _ in 0..<VirtioVsock.budget {
            let fd = clinux_accept_nonblocking(listener)
            guard fd >= 0 else { return }
            guard s.connections.count < VirtioVsock.maximumConnections else {
                close(fd)
                s.statistics.refusedHostConnections &+= 1
                continue
            }
            var c = Connection(fd: fd, phase: .awaitingConnectLine)
            s.connections[fd] = c
            watch(fd, UInt32(EPOLLIN.rawValue) | UInt32(EPOLLOUT.rawValue) | UInt32(EPOLLRDHUP.rawValue) | UInt32(EPOLLET.rawValue))
            // The line is often there already.
            readConnectLine(&c, &s)
        }
    }

    private func hostEvent(_ fd: Int32, _ events: UInt32, _ s: inout State) {
        guard var c = s.connections[fd] else { return }
        if events & UInt32(EPOLLOUT.rawValue) != 0 { flush(&c, &s) }
        if events & (UInt32(EPOLLIN.rawValue) | UInt32(EPOLLRDHUP.rawValue) | UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLERR.rawValue)) != 0 {
            c.hostReadable = true
            if c.phase == .awaitingConnectLine {
                readConnectLine(&c, &s)
                return
            }
        }
        if s.connections[fd] != nil { s.connections[fd] = c }
    }

    /// `CONNECT PORT\n` from a host program: ask the guest.
    private func readConnectLine(_ c: inout Connection, _ s: inout State) {
        var byte: UInt8 = 0
        while c.line.count <= VirtioVsock.maximumConnectLine {
            let n = read(c.fd, &byte, 1)
            if n < 0 && errno == EAGAIN { c.hostReadable = false; s.connections[c.fd] = c; return }
            guard n == 1 else { return drop(c.fd, &s) }
            if byte == UInt8(ascii: "\n") { break }
            c.line.append(byte)
        }
        let text = String(decoding: c.line, as: UTF8.self)
        guard text.hasPrefix("CONNECT "), let port = UInt32(text.dropFirst(8).trimmingSuffix()) else {
            s.statistics.refusedHostConnections &+= 1
            return drop(c.fd, &s)
        }
        var hostPort = s.nextHostPort
        while s.byPorts[UInt64(hostPort) << 32 | UInt64(port)] != nil { hostPort &+= 1 }
        s.nextHostPort = hostPort &+ 1 < 1 << 30 ? 1 << 30 : hostPort &+ 1
        c.hostPort = hostPort
        c.guestPort = port
        c.phase = .connecting
        c.line = []
        s.connections[c.fd] = c
        s.byPorts[c.key] = c.fd
        queue(header(c, .request), &s)
    }

    /// Writes what the guest sent and the socket did not take yet.
    private func flush(_ c: inout Connection, _ s: inout State) {
        while !c.pendingToHost.isEmpty {
            let n = c.pendingToHost.withUnsafeBytes { write(c.fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            c.pendingToHost.removeFirst(n)
            forwarded(n, &c, &s)
        }
        if c.pendingToHost.isEmpty && c.guestDoneSending { shutdown(c.fd, Int32(SHUT_WR)) }
    }

    /// `n` guest bytes reached the host socket: the guest gets that credit back, told in
    /// a CREDIT_UPDATE once a quarter of the buffer is free again.
    private func forwarded(_ n: Int, _ c: inout Connection, _ s: inout State) {
        c.forwardCount &+= UInt32(truncatingIfNeeded: n)
        s.statistics.bytesToHost &+= UInt64(n)
        if c.forwardCount &- c.announcedForwardCount >= VirtioVsock.bufferAllocation / 4 {
            queue(header(c, .creditUpdate), &s)
            c.announcedForwardCount = c.forwardCount
        }
    }

    private func expireClosing(_ s: inout State) {
        var expirations: UInt64 = 0
        _ = read(closeTimer, &expirations, 8)
        let now = monotonicNanoseconds()
        var stillClosing = false
        for c in s.connections.values {
            guard case let .closing(deadline) = c.phase else { continue }
            if deadline <= now {
                queue(header(c, .reset), &s)
                drop(c.fd, &s)
            } else {
                stillClosing = true
            }
        }
        if stillClosing { armCloseTimer() }
    }

    private func armCloseTimer() {
        var spec = itimerspec()
        spec.it_value.tv_nsec = 500_000_000
        timerfd_settime(closeTimer, 0, &spec, nil)
    }

    /// The host side is done (EOF): tell the guest both directions are shut and wait
    /// for its RST (or the deadline).
    private func beginClosing(_ c: inout Connection, _ s: inout State) {
        c.phase = .closing(deadline: monotonicNanoseconds() &+ VirtioVsock.closeTimeout)
        c.hostReadable = false
        var h = header(c, .shutdown)
        h.flags = VsockHeader.shutdownReceive | VsockHeader.shutdownSend
        queue(h, &s)
        s.connections[c.fd] = c
        armCloseTimer()
    }

    private func drop(_ fd: Int32, _ s: inout State) {
        guard let c = s.connections.removeValue(forKey: fd) else { return }
        if c.phase != .awaitingConnectLine, s.byPorts[c.key] == fd { s.byPorts[c.key] = nil }
        if c.counted { s.statistics.open -= 1 }
        epoll_ctl(poller, EPOLL_CTL_DEL, fd, nil)
        close(fd)
    }

    private func establish(_ c: inout Connection, _ s: inout State) {
        c.phase = .established
        c.counted = true
        s.statistics.open &+= 1
        s.statistics.opened &+= 1
    }

    // MARK: Packets

    private func header(_ c: Connection, _ op: VsockHeader.Operation) -> VsockHeader {
        VsockHeader(sourceCID: VirtioVsock.hostCID, destinationCID: guestCID, sourcePort: c.hostPort, destinationPort: c.guestPort,
                    operation: op, bufferAllocation: VirtioVsock.bufferAllocation, forwardCount: c.forwardCount)
    }

    private func queue(_ h: VsockHeader, _ s: inout State) {
        guard s.control.count < VirtioVsock.maximumControlBacklog else { s.statistics.droppedControlPackets &+= 1; return }
        s.control.append(h)
    }

    /// An RST for a packet that belongs to no connection (5.10.6.4: the device answers
    /// a stray packet with RST, but never an RST with an RST).
    private func refuse(_ h: VsockHeader, _ s: inout State) {
        guard h.operation != VsockHeader.Operation.reset.rawValue else { return }
        queue(VsockHeader(sourceCID: VirtioVsock.hostCID, destinationCID: guestCID, sourcePort: h.destinationPort,
                          destinationPort: h.sourcePort, operation: .reset), &s)
    }

    private func transmit(_ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int {
        var done = 0
        while done < VirtioVsock.budget, let chain = try queue.pop(memory) {
            let head = try chain.readBytes(count: UInt64(VsockHeader.size), memory: memory)
            state.withLock { s in
                guard let h = VsockHeader(head), UInt64(h.length) <= chain.readableLength - UInt64(VsockHeader.size),
                      h.length <= VirtioVsock.maximumPayload, h.sourceCID == guestCID else {
                    s.statistics.malformedPackets &+= 1
                    return
                }
                guard h.destinationCID == VirtioVsock.hostCID, h.type == VsockHeader.stream else {
                    s.statistics.malformedPackets &+= 1
                    refuse(h, &s)
                    return
                }
                handle(h, chain: chain, memory: memory, &s)
            }
            try queue.push(memory, head: chain.head, written: 0)
            done += 1
        }
        if done == VirtioVsock.budget, (try? queue.hasAvailable(memory)) == true { comeBack() }
        return done
    }

    private func handle(_ h: VsockHeader, chain: DescriptorChain, memory: GuestMemory, _ s: inout State) {
        let key = UInt64(h.destinationPort) << 32 | UInt64(h.sourcePort)
        guard let op = VsockHeader.Operation(rawValue: h.operation) else {
            s.statistics.malformedPackets &+= 1
            refuse(h, &s)
            if let fd = s.byPorts[key] { drop(fd, &s) }
            return
        }
        if op == .request {
            guard s.byPorts[key] == nil else { return refuse(h, &s) }
            connectToHost(h, &s)
            return
        }
        guard let fd = s.byPorts[key], var c = s.connections[fd] else { return refuse(h, &s) }
        c.peerBufferAllocation = h.bufferAllocation
        c.peerForwardCount = h.forwardCount
        if c.guestCredit > 0 {
            // Host data held back for want of credit may go now.
            if c.creditRequested || c.hostReadable { s.receiveWaiting = true }
            c.creditRequested = false
        }
        switch op {
        case .request: break
        case .response:
            guard c.phase == .connecting else {
                s.connections[fd] = c
                queue(header(c, .reset), &s)
                return drop(fd, &s)
            }
            let reply = Array("OK \(c.hostPort)\n".utf8)
            let n = reply.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n == reply.count else {
                queue(header(c, .reset), &s)
                return drop(fd, &s)
            }
            establish(&c, &s)
        case .readWrite:
            guard c.phase == .established, !c.guestDoneSending,
                  UInt64(c.pendingToHost.count) + UInt64(h.length) <= UInt64(VirtioVsock.bufferAllocation) else {
                s.statistics.malformedPackets &+= 1
                queue(header(c, .reset), &s)
                return drop(fd, &s)
            }
            deliverToHost(h.length, chain: chain, memory: memory, &c, &s)
        case .creditUpdate: break
        case .creditRequest: queue(header(c, .creditUpdate), &s)
        case .shutdown:
            if h.flags & VsockHeader.shutdownSend != 0 { c.guestDoneSending = true }
            if h.flags & VsockHeader.shutdownReceive != 0 { c.hostReadable = false }
            if h.flags & (VsockHeader.shutdownSend | VsockHeader.shutdownReceive) == VsockHeader.shutdownSend | VsockHeader.shutdownReceive {
                // Both ways shut: flush what is left, then end it with the RST the
                // guest waits for.
                flush(&c, &s)
                queue(header(c, .reset), &s)
                return drop(fd, &s)
            }
            flush(&c, &s)
        case .reset:
            return drop(fd, &s)
        }
        s.connections[fd] = c
    }

    /// The guest connects to host port P: the Unix socket `socketPath_P`.
    private func connectToHost(_ h: VsockHeader, _ s: inout State) {
        guard s.connections.count < VirtioVsock.maximumConnections else { return refuse(h, &s) }
        let fd = clinux_unix_connect("\(socketPath)_\(h.destinationPort)")
        guard fd >= 0 else { return refuse(h, &s) }
        var c = Connection(fd: fd, phase: .connecting, hostPort: h.destinationPort, guestPort: h.sourcePort)
        c.peerBufferAllocation = h.bufferAllocation
        c.peerForwardCount = h.forwardCount
        c.hostReadable = true
        establish(&c, &s)
        s.connections[fd] = c
        s.byPorts[c.key] = fd
        watch(fd, UInt32(EPOLLIN.rawValue) | UInt32(EPOLLOUT.rawValue) | UInt32(EPOLLRDHUP.rawValue) | UInt32(EPOLLET.rawValue))
        queue(header(c, .response), &s)
    }

    /// A RW packet's payload to the host socket: straight from guest memory while the
    /// socket takes it, the rest copied aside until it is writable again.
    private func deliverToHost(_ length: UInt32, chain: DescriptorChain, memory: GuestMemory, _ c: inout Connection, _ s: inout State) {
        guard length > 0 else { return }
        var written = 0
        if c.pendingToHost.isEmpty, let vectors = try? memory.ioVectors(DescriptorChain.ranges(of: chain.readable, from: UInt64(VsockHeader.size), count: UInt64(length))) {
            let n = vectors.vectors.withUnsafeBufferPointer { writev(c.fd, $0.baseAddress, Int32($0.count)) }
            if n > 0 { written = n; forwarded(n, &c, &s) }
        }
        if written < Int(length), let rest = try? chain.readBytes(from: UInt64(VsockHeader.size + written), count: UInt64(Int(length) - written), memory: memory) {
            c.pendingToHost += rest
        }
    }

    private func receive(_ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int {
        var done = 0
        while done < VirtioVsock.budget {
            // Control packets first: they open, close and unblock connections.
            if let h = state.withLock({ $0.control.first }) {
                guard let chain = try queue.pop(memory) else { break }
                guard chain.writableLength >= UInt64(VsockHeader.size) else {
                    state.withLock { $0.statistics.malformedPackets &+= 1 }
                    try queue.push(memory, head: chain.head, written: 0)
                    continue
                }
                try chain.write(h.bytes, to: memory)
                try queue.push(memory, head: chain.head, written: UInt32(VsockHeader.size))
                state.withLock { _ = $0.control.removeFirst() }
                done += 1
                continue
            }
            guard let fd = state.withLock({ nextReadable(&$0) }) else {
                // Looking may have asked a guest for credit: send that first.
                if state.withLock({ !$0.control.isEmpty }) { continue }
                break
            }
            guard let chain = try queue.pop(memory) else { break }
            let outcome = state.withLock { s in readFromHost(fd, into: chain, memory: memory, &s) }
            switch outcome {
            case let .sent(n):
                try queue.push(memory, head: chain.head, written: UInt32(VsockHeader.size + n))
                done += 1
            case .nothing:
                queue.undoPop()
            case .unusable:
                state.withLock { $0.statistics.malformedPackets &+= 1 }
                try queue.push(memory, head: chain.head, written: 0)
            }
        }
        if done == VirtioVsock.budget { comeBack() }
        return done
    }

    /// The next established connection with host data and guest credit, round-robin.
    private func nextReadable(_ s: inout State) -> Int32? {
        let ready = s.connections.values.filter { $0.phase == .established && $0.hostReadable }.map(\.fd).sorted()
        guard !ready.isEmpty else { return nil }
        var candidates = ready.filter { $0 > s.cursor } + ready.filter { $0 <= s.cursor }
        while let fd = candidates.first {
            candidates.removeFirst()
            guard var c = s.connections[fd] else { continue }
            if c.guestCredit > 0 {
                s.cursor = fd
                return fd
            }
            if !c.creditRequested {
                c.creditRequested = true
                queue(header(c, .creditRequest), &s)
                s.connections[fd] = c
            }
        }
        return nil
    }

    private enum ReadOutcome { case sent(Int), nothing, unusable }

    private func readFromHost(_ fd: Int32, into chain: DescriptorChain, memory: GuestMemory, _ s: inout State) -> ReadOutcome {
        guard var c = s.connections[fd] else { return .nothing }
        let room = chain.writableLength
        guard room > UInt64(VsockHeader.size) else { return .unusable }
        let want = min(room - UInt64(VsockHeader.size), UInt64(c.guestCredit), UInt64(VirtioVsock.maximumPayload))
        guard let vectors = try? memory.ioVectors(DescriptorChain.ranges(of: chain.writable, from: UInt64(VsockHeader.size), count: want)) else { return .unusable }
        let n = vectors.vectors.withUnsafeBufferPointer { readv(fd, $0.baseAddress, Int32($0.count)) }
        if n > 0 {
            var h = header(c, .readWrite)
            h.length = UInt32(n)
            guard (try? chain.write(h.bytes, to: memory)) != nil else { return .unusable }
            c.sentToGuest &+= UInt32(n)
            c.announcedForwardCount = c.forwardCount
            s.statistics.bytesToGuest &+= UInt64(n)
            s.connections[fd] = c
            return .sent(n)
        }
        if n < 0 && (errno == EAGAIN || errno == EINTR) {
            c.hostReadable = false
            s.connections[fd] = c
            return .nothing
        }
        beginClosing(&c, &s)
        return .nothing
    }
}

private extension Substring {
    func trimmingSuffix() -> Substring {
        var s = self
        while let last = s.last, last == "\r" || last == " " { s = s.dropLast() }
        return s
    }
}

extension VirtioVsock {
    /// Nothing of the connections is saved (their host sockets belong to the process
    /// that was snapshotted). A restored device tells the driver its transport was reset
    /// (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue, as after a migration): the
    /// guest closes every connection and reads its CID again, which may be a clone's new
    /// one (virtio 1.2, 5.10.6.5).
    public func restoreDeviceState(from reader: inout StateReader) throws(StateError) {
        state.withLock { $0.transportResetPending = true }
        comeBack()
    }
}
