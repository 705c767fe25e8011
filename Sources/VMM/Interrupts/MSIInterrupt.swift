import Devices
import KVM

/// A message-signalled interrupt sent with `KVM_SIGNAL_MSI`: no GSI route needed, for
/// devices that interrupt rarely (a PCI function before its vectors are routed).
final class MSIInterrupt: InterruptSource {
    let vm: VMFileDescriptor
    let address: UInt64
    let data: UInt32

    init(vm: VMFileDescriptor, address: UInt64, data: UInt32) {
        self.vm = vm
        self.address = address
        self.data = data
    }

    func trigger() { _ = try? vm.signalMSI(address: address, data: data) }

    /// A message has no level: rising is an interrupt, falling nothing.
    func setLevel(_ high: Bool) { if high { trigger() } }
}
