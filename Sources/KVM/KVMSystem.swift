import CKVM
import Glibc
import SystemPackage

/// `/dev/kvm`: the system file, owned here and closed once when this object goes.
///
/// Everything a VMM asks the kernel before it has a VM lives here: the API version,
/// capabilities, the size of each vCPU's shared `kvm_run` page and the CPUID the host
/// can offer guests.
public final class KVMSystem: Sendable {
    /// The only API version KVM has ever shipped; anything else is not a KVM we know.
    public static let expectedAPIVersion: Int32 = 12

    let fd: FileDescriptor

    /// Opens `path` (normally `/dev/kvm`) close-on-exec and checks the API version.
    public init(path: String = "/dev/kvm") throws(KVMError) {
        let raw = open(path, O_RDWR | O_CLOEXEC)
        guard raw >= 0 else {
            let err = Errno(rawValue: Glibc.errno)
            throw KVMError("open \(path)", errno: err, hint: KVMSystem.hint(for: err, path: path))
        }
        fd = FileDescriptor(rawValue: raw)
        let version = ckvm_ioctl_val(raw, CKVM_GET_API_VERSION, 0)
        guard version == KVMSystem.expectedAPIVersion else {
            try? fd.close()
            throw KVMError("KVM_GET_API_VERSION", errno: nil,
                           hint: "kernel reports KVM API version \(version), Swiftvisor needs \(KVMSystem.expectedAPIVersion)")
        }
    }

    deinit { try? fd.close() }

    /// What to tell a user whose `open("/dev/kvm")` failed with `errno`.
    public static func hint(for errno: Errno, path: String = "/dev/kvm") -> String {
        switch errno {
        case .noSuchFileOrDirectory:
            return "KVM is not available: load the module (`modprobe kvm_intel` or `modprobe kvm_amd`) and enable virtualization in the firmware; `swiftvisor doctor` checks this host"
        case .permissionDenied, .notPermitted:
            return "no permission on \(path): add yourself to its group (`sudo usermod -aG kvm $USER`, then log in again) or run as root; `swiftvisor doctor` checks this host"
        case .noSuchAddressOrDevice:
            return "\(path) exists but no KVM driver answers: load kvm_intel or kvm_amd"
        default:
            return "`swiftvisor doctor` checks this host"
        }
    }

    /// `KVM_GET_API_VERSION`.
    public var apiVersion: Int32 { ckvm_ioctl_val(fd.rawValue, CKVM_GET_API_VERSION, 0) }

    /// `KVM_CHECK_EXTENSION`: 0 when absent, otherwise 1 or a capability-specific number.
    public func check(_ capability: Capability) -> Int {
        let r = ckvm_ioctl_val(fd.rawValue, CKVM_CHECK_EXTENSION, UInt(capability.rawValue))
        return r < 0 ? 0 : Int(r)
    }

    /// Memory slots per VM; api.rst: assume 32 where the kernel does not say.
    public var maxMemorySlots: Int { let n = check(.nrMemorySlots); return n > 0 ? n : 32 }

    /// vCPUs per VM; api.rst: fall back to NR_VCPUS, then to 4.
    public var maxVCPUs: Int {
        let n = check(.maxVCPUs)
        if n > 0 { return n }
        let r = check(.nrVCPUs)
        return r > 0 ? r : 4
    }

    /// `KVM_GET_VCPU_MMAP_SIZE`: bytes to map from each vCPU fd (kvm_run plus the PIO page).
    public func vcpuMmapSize() throws(KVMError) -> Int {
        let r = ckvm_ioctl_val(fd.rawValue, CKVM_GET_VCPU_MMAP_SIZE, 0)
        guard r > 0 else { throw KVMError.last("KVM_GET_VCPU_MMAP_SIZE") }
        return Int(r)
    }

    /// `KVM_GET_SUPPORTED_CPUID`: what the host's KVM can let a guest see.
    public func supportedCPUID() throws(KVMError) -> [CPUIDEntry] {
        var capacity = 128
        while true {
            var buffer = CPUIDBuffer(capacity: capacity)
            let r = buffer.withHeader { ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_SUPPORTED_CPUID, $0) }
            if r == 0 { return buffer.entries }
            if Glibc.errno == E2BIG && capacity < 4096 { capacity *= 2; continue }
            throw KVMError.last("KVM_GET_SUPPORTED_CPUID")
        }
    }

    /// `KVM_GET_MSR_INDEX_LIST`: the MSRs KVM says a VMM must save and restore to
    /// move a vCPU (api.rst).
    public func msrIndexList() throws(KVMError) -> [UInt32] {
        var capacity = 256
        while true {
            var buffer = [UInt32](repeating: 0, count: capacity + 1)
            buffer[0] = UInt32(capacity)
            let r = buffer.withUnsafeMutableBytes { ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_MSR_INDEX_LIST, $0.baseAddress) }
            if r == 0 { return Array(buffer[1...].prefix(Int(min(buffer[0], UInt32(capacity))))) }
            if Glibc.errno == E2BIG && capacity < 16384 { capacity = max(capacity * 2, Int(buffer[0])); continue }
            throw KVMError.last("KVM_GET_MSR_INDEX_LIST")
        }
    }

    /// `KVM_CREATE_VM` (machine type 0: the default x86 VM).
    public func createVM() throws(KVMError) -> VMFileDescriptor {
        let r = ckvm_ioctl_val(fd.rawValue, CKVM_CREATE_VM, 0)
        guard r >= 0 else {
            throw KVMError.last("KVM_CREATE_VM", hint: "the host refused a new VM (out of memory, or KVM disabled)")
        }
        return VMFileDescriptor(fd: FileDescriptor(rawValue: r), mmapSize: try vcpuMmapSize())
    }
}
