import Devices
import KVM
import Synchronization

/// A pin of the in-kernel irqchip driven with `KVM_IRQ_LINE`: the ISA devices' way
/// (COM1, the ACPI SCI). Devices set its level on every register access that may
/// change it; only changes reach KVM.
final class IRQLine: InterruptSource {
    let vm: VMFileDescriptor
    let gsi: UInt32
    private let level = Atomic<Bool>(false)

    init(vm: VMFileDescriptor, gsi: UInt32) {
        self.vm = vm
        self.gsi = gsi
    }

    func setLevel(_ high: Bool) {
        guard level.exchange(high, ordering: .acquiringAndReleasing) != high else { return }
        try? vm.setIRQLine(gsi, level: high)
    }

    /// An edge: the line goes high and back low.
    func trigger() {
        try? vm.setIRQLine(gsi, level: true)
        try? vm.setIRQLine(gsi, level: false)
        level.store(false, ordering: .releasing)
    }
}
