/// KVM's state structures (`kvm_lapic_state`, `kvm_irqchip`, `kvm_pit_state2`, ...) as
/// the bytes a snapshot stores and back. They are plain C structs (no pointers, no
/// references; Swift does not infer `BitwiseCopyable` for those holding a union, so
/// the constraint is this promise), so their bytes are their whole value; reading one
/// back checks the size first, so a truncated or foreign file is an error, never a
/// partial value.
public enum StateBytes {
    public static func of<T>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value) { Array($0) }
    }

    /// The value stored in `bytes`, or nil when their size is not `T`'s.
    public static func load<T>(_: T.Type, from bytes: ArraySlice<UInt8>) -> T? {
        guard bytes.count == MemoryLayout<T>.size, !bytes.isEmpty else { return nil }
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(1, MemoryLayout<T>.size), alignment: MemoryLayout<T>.alignment)
        defer { p.deallocate() }
        bytes.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return p.load(as: T.self)
    }
}
