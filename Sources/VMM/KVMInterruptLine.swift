import Devices
import KVM
import Synchronization

/// An interrupt input of the in-kernel irqchip (`KVM_IRQ_LINE` on a GSI). Devices call
/// `setLevel` on every register access that may change it; only changes reach KVM.
final class KVMInterruptLine: InterruptLine {
    let vm: VirtualMachine
    let gsi: UInt32
    private let level = Atomic<Bool>(false)

    init(vm: VirtualMachine, gsi: UInt32) {
        self.vm = vm
        self.gsi = gsi
    }

    func setLevel(_ high: Bool) {
        guard level.exchange(high, ordering: .acquiringAndReleasing) != high else { return }
        try? vm.setIRQLine(gsi, level: high)
    }
}
