import Boot
import GuestMemory
import KVM
import TestSupport
import VMM

/// One vCPU, one slot of RAM from 0, and a few bytes of machine code: the smallest
/// VM that shows what the KVM layer does with each kind of exit.
final class TestVM {
    let kvm: KVMSystem
    let vm: VMFileDescriptor
    let memory: GuestMemory
    let vcpu: VCPU

    init(mode: CPUMode, code: [UInt8], memorySize: UInt64 = 2 << 20, loadAddress: UInt64? = nil) throws {
        try KVMTestHost.skipUnlessUsable()
        kvm = try KVMSystem()
        vm = try kvm.createVM()
        try vm.setTSSAddress(0xFFFB_D000)
        memory = try GuestMemory(ranges: [(0, memorySize)])
        try vm.setUserMemoryRegion(slot: 0, guestAddress: 0, size: memorySize, hostAddress: memory.regions[0].hostAddress)
        let state = try FlatBinary(bytes: code, mode: mode, loadAddress: loadAddress).load(into: memory)
        vcpu = try vm.createVCPU(id: 0)
        try vcpu.setCPUID(try kvm.supportedCPUID())
        try vcpu.apply(state, index: 0)
    }

    /// Runs until an exit that is not a signal kick.
    func next() throws -> VMExit {
        while true {
            let e = try vcpu.run()
            if case .interrupted = e { continue }
            return e
        }
    }
}
