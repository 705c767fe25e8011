/// Why `KVM_RUN` returned: the typed form of `kvm_run.exit_reason` and its union.
///
/// The `IOData` inside `.io` and `.mmio` points into the vCPU's shared `kvm_run`
/// page and is valid only until that vCPU runs again; that is what lets the exit path
/// work without allocating.
public enum VMExit: Sendable {
    /// `KVM_EXIT_IO`: port I/O, possibly a string instruction (`rep outsb`) moving
    /// `count` elements of `size` bytes each.
    case io(IOExit)
    /// `KVM_EXIT_MMIO`: an access to guest-physical memory no slot backs.
    case mmio(MMIOExit)
    /// `KVM_EXIT_HLT`, only seen without an in-kernel irqchip. `interruptsEnabled` is
    /// the guest's RFLAGS.IF at the time (`kvm_run.if_flag`).
    case hlt(interruptsEnabled: Bool)
    /// `KVM_EXIT_SHUTDOWN`: the guest triple-faulted (or asked for a reset that way).
    case shutdown
    /// `KVM_EXIT_SYSTEM_EVENT`: shutdown, reset or crash requested through PSCI-like paths.
    case systemEvent(type: UInt32)
    /// `KVM_EXIT_INTERNAL_ERROR`: KVM could not go on (e.g. its emulator failed).
    case internalError(InternalError)
    /// `KVM_EXIT_FAIL_ENTRY`: the hardware refused to enter the guest.
    case failEntry(hardwareReason: UInt64, cpu: UInt32)
    /// `KVM_RUN` was interrupted (`EINTR` or `KVM_EXIT_INTR`): a kick from another thread.
    case interrupted
    /// `KVM_EXIT_EXCEPTION`.
    case exception(vector: UInt32, errorCode: UInt32)
    /// `KVM_EXIT_DEBUG`.
    case debug
    /// Anything else, with the raw reason (and for `KVM_EXIT_UNKNOWN` the hardware's).
    case unknown(reason: UInt32, hardwareReason: UInt64)
}

public struct IOExit: Sendable {
    public enum Direction: Sendable { case `in`, out }
    public let port: UInt16
    public let direction: Direction
    /// Bytes per element: 1, 2 or 4.
    public let size: Int
    /// Elements moved; more than 1 for string I/O with a `rep` prefix.
    public let count: Int
    /// `count * size` bytes: what the guest wrote, or where to put what it reads.
    public let data: IOData

    public init(port: UInt16, direction: Direction, size: Int, count: Int, data: IOData) {
        self.port = port
        self.direction = direction
        self.size = size
        self.count = count
        self.data = data
    }
}

public struct MMIOExit: Sendable {
    public let address: UInt64
    public let isWrite: Bool
    /// 1 to 8 bytes.
    public let length: Int
    /// What the guest wrote, or where to put what it reads.
    public let data: IOData

    public init(address: UInt64, isWrite: Bool, length: Int, data: IOData) {
        self.address = address
        self.isWrite = isWrite
        self.length = length
        self.data = data
    }
}

/// Details of `KVM_EXIT_INTERNAL_ERROR`.
public struct InternalError: Sendable, CustomStringConvertible {
    /// `KVM_INTERNAL_ERROR_*`: 1 emulation, 2 exception while delivering one,
    /// 3 event delivery, 4 unexpected exit reason.
    public let suberror: UInt32
    public let data: [UInt64]
    /// For emulation failures with `KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES`:
    /// the bytes KVM fetched at the failing RIP.
    public let instructionBytes: [UInt8]?

    public init(suberror: UInt32, data: [UInt64] = [], instructionBytes: [UInt8]? = nil) {
        self.suberror = suberror
        self.data = data
        self.instructionBytes = instructionBytes
    }

    public var suberrorName: String {
        switch suberror {
        case 1: "emulation failure"
        case 2: "exception while delivering an exception"
        case 3: "event delivery failed"
        case 4: "unexpected exit reason"
        default: "suberror \(suberror)"
        }
    }

    public var description: String {
        var s = "internal error: \(suberrorName)"
        if !data.isEmpty { s += " data [" + data.map { "0x" + String($0, radix: 16) }.joined(separator: " ") + "]" }
        return s
    }
}

/// A bounded window into the `kvm_run` page for I/O data. All access is checked
/// against its length, so a confused caller cannot read or write past it.
public struct IOData: @unchecked Sendable {
    // Sound to share: it points into the kvm_run mapping, which lives as long as its
    // VCPU, and is only touched by the thread that runs that VCPU.
    let base: UnsafeMutableRawPointer
    public let count: Int

    init(base: UnsafeMutableRawPointer, count: Int) {
        self.base = base
        self.count = count
    }

    public subscript(i: Int) -> UInt8 {
        get { precondition(i >= 0 && i < count); return base.load(fromByteOffset: i, as: UInt8.self) }
        nonmutating set { precondition(i >= 0 && i < count); base.storeBytes(of: newValue, toByteOffset: i, as: UInt8.self) }
    }

    /// The little-endian value of `size` bytes at `offset` (size 1...8).
    public func load(offset: Int = 0, size: Int) -> UInt64 {
        precondition(size >= 1 && size <= 8 && offset >= 0 && offset + size <= count)
        var v: UInt64 = 0
        for i in 0..<size { v |= UInt64(base.load(fromByteOffset: offset + i, as: UInt8.self)) << (8 * i) }
        return v
    }

    /// Stores the low `size` bytes of `value` little-endian at `offset`.
    public func store(_ value: UInt64, offset: Int = 0, size: Int) {
        precondition(size >= 1 && size <= 8 && offset >= 0 && offset + size <= count)
        for i in 0..<size { base.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * i)), toByteOffset: offset + i, as: UInt8.self) }
    }

    /// Copies the bytes out (for slow paths and tests; the hot path uses `load`).
    public var bytes: [UInt8] { (0..<count).map { self[$0] } }
}

/// Memory of its own for `IOData`, standing in for a `kvm_run` page: what exit
/// handling is tested with when there is no KVM (and what a trace replays into).
public final class ExitDataBuffer: @unchecked Sendable {
    // Sound to share: the allocation lives as long as this object, and like a kvm_run
    // page it is used by one thread at a time.
    private let base: UnsafeMutableRawPointer
    public let count: Int

    public init(bytes: [UInt8]) {
        count = max(bytes.count, 1)
        base = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 8)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: count)
        for (i, b) in bytes.enumerated() { base.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
    }

    public convenience init(count: Int) { self.init(bytes: [UInt8](repeating: 0, count: count)) }

    deinit { base.deallocate() }

    /// A window on all of it (valid while this buffer lives).
    public var data: IOData { IOData(base: base, count: count) }
}
