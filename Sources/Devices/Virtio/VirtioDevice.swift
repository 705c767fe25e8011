import GuestMemory

/// What a virtio device is, whatever transport carries it (MMIO now, PCI later): its
/// type, its own feature bits, its queues, its configuration space, and what it does
/// with a queue's requests. The transport owns feature negotiation, status, queue set-up
/// and interrupts (virtio 1.2, sections 2 and 4).
public protocol VirtioDevice: AnyObject, Sendable {
    /// The device ID (virtio 1.2, 5): 2 block, 4 entropy, 3 console...
    var deviceType: UInt32 { get }
    /// Device-specific feature bits offered (the transport adds VERSION_1,
    /// RING_INDIRECT_DESC and RING_EVENT_IDX).
    var offeredFeatures: UInt64 { get }
    /// Each queue's maximum size (a power of two).
    var queueSizes: [UInt16] { get }
    /// Reads `size` bytes of the configuration space at `offset` (out of range: 0).
    func readConfig(offset: Int, size: Int) -> UInt64
    func writeConfig(offset: Int, size: Int, value: UInt64)
    /// Takes the requests on queue `index` and answers them, pushing each to the used
    /// ring. Returns how many it completed; a malformed chain throws.
    func process(queue index: Int, _ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int
    /// The driver reset the device: forget any request state.
    func reset()
    /// The machine is done with the device (it stopped, or the guest rebooted into a new
    /// machine that opens the same disks, sockets and TAPs): give back at once what it
    /// holds on the host, rather than whenever the last reference goes.
    func release()
    /// The driver set DRIVER_OK having accepted `features`: a device whose host side
    /// depends on them (virtio-net's TAP offloads) sets itself up here.
    func activate(features: UInt64)
    /// Descriptors the machine's event loop watches for the device: its I/O engine's
    /// completions, its rate limiter's timer. Empty for devices that answer every
    /// request at once.
    var eventFDs: [Int32] { get }
    /// One of `eventFDs` became readable (called on the event loop's thread).
    func eventReady(_ fd: Int32)
    /// Whether the loop reports `fd` once each time it becomes readable (edge-triggered)
    /// rather than for as long as it is: for a source the device cannot always drain
    /// (a TAP while the guest has no receive buffers), which would otherwise spin.
    func triggersOnEdge(_ fd: Int32) -> Bool
    /// Finishes what the device's engine has completed, if anything (the transport
    /// calls it after serving a queue: io_uring completes page-cache hits at once).
    func completeReady()
    /// The transport's way to push requests finished after `process` returned.
    func attach(_ completer: VirtioCompleter)

    // Snapshots (DESIGN "Snapshots"): the transport saves negotiation, status and the
    // queues; the device its own state.
    /// Why a snapshot cannot save this device, or nil when it can.
    var snapshotRefusal: String? { get }
    /// Finishes the requests in flight (the vCPUs are paused, so no new ones come):
    /// what a snapshot waits for, so none is lost. False if they did not finish within
    /// `timeoutNanoseconds`.
    func quiesce(timeoutNanoseconds: UInt64) -> Bool
    /// Requests taken from queue `index` and not used (saved as not taken).
    func heldRequests(queue index: Int) -> UInt16
    func saveDeviceState(into writer: inout StateWriter)
    func restoreDeviceState(from reader: inout StateReader) throws(StateError)
}

extension VirtioDevice {
    public var eventFDs: [Int32] { [] }
    public func eventReady(_ fd: Int32) {}
    public func triggersOnEdge(_ fd: Int32) -> Bool { false }
    public func activate(features: UInt64) {}
    public func release() {}
    public func completeReady() {}
    public func attach(_ completer: VirtioCompleter) {}
    public var snapshotRefusal: String? { nil }
    public func quiesce(timeoutNanoseconds: UInt64) -> Bool { true }
    public func heldRequests(queue index: Int) -> UInt16 { 0 }
    public func saveDeviceState(into writer: inout StateWriter) {}
    public func restoreDeviceState(from reader: inout StateReader) throws(StateError) {}
}

/// A finished request as the used ring records it: its head descriptor and the bytes
/// the device wrote into its buffers. (A struct rather than a tuple: arrays of tuples
/// cost a runtime metadata lookup each time they are made.)
public struct UsedElement: Sendable, Equatable {
    public let head: UInt16
    public let written: UInt32
    public init(head: UInt16, written: UInt32) {
        self.head = head
        self.written = written
    }
}

/// How a device finishes a request after `process` returned: the transport pushes it to
/// the used ring and interrupts the driver if it wants, under its own lock. Holds the
/// transport weakly (the transport owns the device).
public final class VirtioCompleter: Sendable {
    private let body: @Sendable (Int, [UsedElement]) -> Void
    private let serveBody: @Sendable (Int) -> Void
    public init(complete: @escaping @Sendable (_ queue: Int, _ finished: [UsedElement]) -> Void,
                serve: @escaping @Sendable (_ queue: Int) -> Void) {
        body = complete
        serveBody = serve
    }
    /// Pushes `finished` requests of `queue` to its used ring together, then interrupts
    /// the driver once if it wants (not once a request).
    public func complete(queue: Int, _ finished: [UsedElement]) { body(queue, finished) }
    /// Serves queue `queue` again (the device stopped taking requests for a while: its
    /// rate limiter).
    public func serve(queue: Int) { serveBody(queue) }
}

/// Feature bits of the transport and rings (virtio 1.2, 6).
public enum VirtioFeature {
    public static let ringIndirectDescriptors: UInt64 = 1 << 28
    public static let ringEventIndex: UInt64 = 1 << 29
    public static let version1: UInt64 = 1 << 32
}

/// Device status bits (virtio 1.2, 2.1).
public enum VirtioStatus {
    public static let acknowledge: UInt32 = 1
    public static let driver: UInt32 = 2
    public static let driverOK: UInt32 = 4
    public static let featuresOK: UInt32 = 8
    public static let needsReset: UInt32 = 64
    public static let failed: UInt32 = 128
}
