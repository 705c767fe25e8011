import KVM

/// What a snapshot's guest depends on in the host's CPU: the vendor, and the feature
/// words of its CPUID. A guest restored on a CPU without a feature it was using would
/// fault (or worse, compute wrong) on its next such instruction, so a restore checks
/// each word against what this host's KVM can give, before any VM exists.
public enum CPUFeatures {
    /// The CPUID words that hold feature flags: (leaf, sub-leaf, register: 0 EAX, 1
    /// EBX, 2 ECX, 3 EDX).
    static let words: [(name: String, leaf: UInt32, index: UInt32, register: Int)] = [
        ("1.ecx", 1, 0, 2), ("1.edx", 1, 0, 3),
        ("7.ebx", 7, 0, 1), ("7.ecx", 7, 0, 2), ("7.edx", 7, 0, 3),
        ("d.eax", 0xD, 0, 0),
        ("80000001.ecx", 0x8000_0001, 0, 2), ("80000001.edx", 0x8000_0001, 0, 3),
    ]

    /// Bits the VMM or the guest's own state sets, not the host: OSXSAVE (CR4.OSXSAVE's
    /// mirror) and the APIC flag follow the vCPU; the hypervisor bit is the VMM's.
    static let dynamic: [String: UInt32] = ["1.ecx": 1 << 27 | 1 << 31, "1.edx": 1 << 9]

    /// The vendor string ("GenuineIntel", "AuthenticAMD") of leaf 0.
    public static func vendor(_ cpuid: [CPUIDEntry]) -> String {
        guard let l = cpuid.first(where: { $0.function == 0 }) else { return "" }
        let bytes = [l.ebx, l.edx, l.ecx].flatMap { r in (0..<4).map { UInt8(truncatingIfNeeded: r >> (8 * UInt32($0))) } }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The feature words of `cpuid`, by name.
    public static func of(_ cpuid: [CPUIDEntry]) -> [(name: String, value: UInt32)] {
        words.map { w in
            let e = cpuid.first { $0.function == w.leaf && $0.index == w.index }
            return (w.name, e.map { [$0.eax, $0.ebx, $0.ecx, $0.edx][w.register] } ?? 0)
        }
    }

    /// The same question for this host, asking its KVM (`kvmPath`) what it supports;
    /// nil too when KVM cannot be asked (building the machine will say why).
    public static func incompatibility(vendor: String, features: [(name: String, value: UInt32)], kvmPath: String) -> String? {
        guard let kvm = try? KVMSystem(path: kvmPath), let host = try? kvm.supportedCPUID() else { return nil }
        return incompatibility(vendor: vendor, features: features, host: host)
    }

    /// Why a guest with `vendor` and `features` cannot run on a host whose KVM
    /// supports `host`, or nil when it can.
    public static func incompatibility(vendor: String, features: [(name: String, value: UInt32)], host: [CPUIDEntry]) -> String? {
        let hostVendor = CPUFeatures.vendor(host)
        guard vendor == hostVendor else { return "it was taken on a \(vendor) CPU; this host's is \(hostVendor)" }
        let available = Dictionary(CPUFeatures.of(host).map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        for f in features {
            let missing = f.value & ~(available[f.name] ?? 0) & ~(dynamic[f.name] ?? 0)
            if missing != 0 {
                return "its guest uses CPU features this host's KVM does not offer (CPUID \(f.name) bits 0x\(String(missing, radix: 16)))"
            }
        }
        return nil
    }
}
