import Devices
import KVM

extension StateReader {
    /// One of KVM's state structs, written as `put(bytes: StateBytes.of(value))`: its
    /// bytes must be exactly the struct's size here (another size is a snapshot from a
    /// KVM whose struct differs); `what` names it in the error.
    mutating func getKVMStruct<T>(_: T.Type, _ what: String) throws(StateError) -> T {
        let b = try getBytes(limit: 1 << 16)
        guard let v = StateBytes.load(T.self, from: b[...]) else {
            throw StateError("\(what): \(b.count) bytes, not \(MemoryLayout<T>.size) (a snapshot from another KVM?)")
        }
        return v
    }
}
