import CKVM

/// One CPUID leaf as KVM describes it (`struct kvm_cpuid_entry2`).
public typealias CPUIDEntry = kvm_cpuid_entry2

/// `struct kvm_cpuid2` ends in a flexible array, which Swift cannot size; this keeps
/// the header and its entries in one correctly aligned allocation.
struct CPUIDBuffer {
    private var storage: [UInt64]
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        let bytes = MemoryLayout<kvm_cpuid2>.size + capacity * MemoryLayout<kvm_cpuid_entry2>.stride
        storage = [UInt64](repeating: 0, count: (bytes + 7) / 8)
        storage.withUnsafeMutableBytes { raw in
            // Sound: the buffer is at least as large as the header and 8-byte aligned.
            raw.baseAddress!.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent = UInt32(capacity)
        }
    }

    init(entries: [CPUIDEntry]) {
        self.init(capacity: entries.count)
        storage.withUnsafeMutableBytes { raw in
            let base = raw.baseAddress! + MemoryLayout<kvm_cpuid2>.size
            let typed = base.bindMemory(to: kvm_cpuid_entry2.self, capacity: entries.count)
            for (i, e) in entries.enumerated() { typed[i] = e }
        }
    }

    mutating func withHeader<R>(_ body: (UnsafeMutableRawPointer) -> R) -> R {
        storage.withUnsafeMutableBytes { body($0.baseAddress!) }
    }

    var entries: [CPUIDEntry] {
        storage.withUnsafeBytes { raw in
            let n = Int(raw.baseAddress!.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent)
            let base = raw.baseAddress! + MemoryLayout<kvm_cpuid2>.size
            let typed = base.assumingMemoryBound(to: kvm_cpuid_entry2.self)
            return (0..<min(n, capacity)).map { typed[$0] }
        }
    }
}
