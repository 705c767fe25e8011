import Boot
import GuestMemory
import KVM

/// Why a machine could not be built, each case a class of failure with its own exit code.
public enum MachineError: Error, Sendable, CustomStringConvertible {
    case config(ConfigError)
    /// `/dev/kvm` could not be used; `permission` separates "no access" from "no KVM".
    case kvmUnavailable(KVMError, permission: Bool)
    case kvm(KVMError)
    case memory(GuestMemoryError)
    case boot(BootError)
    case file(path: String, why: String, missing: Bool)
    case device(String)
    /// A snapshot could not be brought back (damaged, foreign, or not supported).
    case snapshot(SnapshotError)

    public var description: String {
        switch self {
        case let .config(e): e.description
        case let .kvmUnavailable(e, _): e.description
        case let .kvm(e): e.description
        case let .memory(e): e.description
        case let .boot(e): "cannot boot the image: \(e.description)"
        case let .file(path, why, _): "cannot read \(path): \(why)"
        case let .device(why): why
        case let .snapshot(e): "snapshot: \(e.description)"
        }
    }
}
