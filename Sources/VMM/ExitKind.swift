/// The kinds of VM exit the statistics count, in report order.
public enum ExitKind: Int, CaseIterable, Sendable {
    case ioIn, ioOut, mmioRead, mmioWrite, hlt, shutdown, systemEvent, interrupted, internalError, emulated, failEntry, other

    public var name: String {
        switch self {
        case .ioIn: "io-in"
        case .ioOut: "io-out"
        case .mmioRead: "mmio-read"
        case .mmioWrite: "mmio-write"
        case .hlt: "hlt"
        case .shutdown: "shutdown"
        case .systemEvent: "system-event"
        case .interrupted: "interrupted"
        case .internalError: "internal-error"
        case .emulated: "emulated"
        case .failEntry: "fail-entry"
        case .other: "other"
        }
    }

    /// Why this kind of exit reaches the VMM at all.
    public var explanation: String {
        switch self {
        case .ioIn, .ioOut: "port I/O is sensitive: the device behind the port is emulated here"
        case .mmioRead, .mmioWrite: "an access to guest-physical memory with no RAM behind it: emulated device registers"
        case .hlt: "HLT with no in-kernel interrupt controller: the VMM decides when the vCPU wakes"
        case .shutdown: "the guest triple-faulted"
        case .systemEvent: "the guest asked for a power-off or reset"
        case .interrupted: "the VMM kicked the vCPU out of the guest (stop, pause, signal)"
        case .internalError: "KVM could not go on (e.g. its instruction emulator failed)"
        case .emulated: "instructions the host's emulator rejected, completed by Swiftvisor (host quirks)"
        case .failEntry: "the hardware refused to enter the guest"
        case .other: "other reasons"
        }
    }
}
