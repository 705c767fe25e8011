import GuestMemory
import Synchronization

/// virtio-console (type 3; virtio 1.2, 5.3) with a single port: the guest's `hvc0`.
/// What the guest transmits goes to the same console output as the 8250's; what the
/// user types is held (up to `maximumPending` bytes, the rest dropped and counted)
/// until the guest offers receive buffers. Emergency writes (`emerg_wr`, for output
/// before the queues are up) are offered too.
public final class VirtioConsole: VirtioDevice {
    public static let receiveQueue = 0, transmitQueue = 1
    public static let featureEmergencyWrite: UInt64 = 1 << 2
    /// Input held while the guest has no receive buffers.
    public static let maximumPending = 64 * 1024
    /// One transmit buffer is written out at most this much at a time.
    static let maximumChunk: UInt64 = 64 * 1024

    public let deviceType: UInt32 = 3
    public let offeredFeatures: UInt64 = VirtioConsole.featureEmergencyWrite
    public let queueSizes: [UInt16] = [256, 256]

    private let output: any SerialOutput
    private struct Input {
        var pending: [UInt8] = []
        var dropped: UInt64 = 0
    }
    private let input = Mutex(Input())

    public init(output: any SerialOutput) { self.output = output }

    /// Bytes typed at the console; the transport then serves the receive queue.
    public func enqueue(_ bytes: [UInt8]) {
        input.withLock { i in
            let room = max(0, VirtioConsole.maximumPending - i.pending.count)
            i.pending += bytes.prefix(room)
            i.dropped += UInt64(bytes.count - min(room, bytes.count))
        }
    }

    /// Input bytes dropped because the guest was not reading.
    public var droppedInput: UInt64 { input.withLock { $0.dropped } }

    // Configuration: cols, rows (u16 each; no VIRTIO_CONSOLE_F_SIZE, so 0),
    // max_nr_ports (u32; no MULTIPORT), emerg_wr (u32, write-only).
    public func readConfig(offset: Int, size: Int) -> UInt64 { 0 }

    public func writeConfig(offset: Int, size: Int, value: UInt64) {
        if offset == 8 { output.write(UInt8(truncatingIfNeeded: value)) }
    }

    public func reset() { input.withLock { $0.pending.removeAll() } }

    public func process(queue index: Int, _ queue: inout VirtQueue, memory: GuestMemory) throws(VirtQueueError) -> Int {
        var done = 0
        switch index {
        case VirtioConsole.transmitQueue:
            while let chain = try queue.pop(memory) {
                var offset: UInt64 = 0
                while offset < chain.readableLength {
                    let bytes = try chain.readBytes(from: offset, count: VirtioConsole.maximumChunk, memory: memory)
                    if bytes.isEmpty { break }
                    for b in bytes { output.write(b) }
                    offset += UInt64(bytes.count)
                }
                try queue.push(memory, head: chain.head, written: 0)
                done += 1
            }
        case VirtioConsole.receiveQueue:
            // Take a buffer only when there is something to put in it.
            while input.withLock({ !$0.pending.isEmpty }), let chain = try queue.pop(memory) {
                let written = try input.withLock { (i: inout Input) throws(VirtQueueError) -> Int in
                    let n = try chain.write(i.pending, to: memory)
                    i.pending.removeFirst(n)
                    return n
                }
                try queue.push(memory, head: chain.head, written: UInt32(written))
                done += 1
                if written == 0 { break } // a chain with no writable bytes: do not spin
            }
        default:
            break
        }
        return done
    }
}

extension VirtioConsole {
    /// Input typed and not yet given to the guest.
    public func saveDeviceState(into w: inout StateWriter) { w.put(bytes: input.withLock { $0.pending }) }

    public func restoreDeviceState(from r: inout StateReader) throws(StateError) {
        let pending = try r.getBytes(limit: VirtioConsole.maximumPending)
        input.withLock { $0.pending = pending }
    }
}
