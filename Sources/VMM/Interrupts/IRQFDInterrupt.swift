import CLinux
import Devices
import Glibc
import KVM
import SystemPackage

/// An interrupt carried by an irqfd: an eventfd that KVM turns into an interrupt on
/// `gsi` in the kernel, so a device thread that completes work never needs a vCPU or an
/// ioctl to tell the guest (how virtio completions reach it). With an MSI route on the
/// GSI (`InterruptRouting`) it is an MSI; on an irqchip pin, an edge.
final class IRQFDInterrupt: InterruptSource {
    let vm: VMFileDescriptor
    let gsi: UInt32
    let eventFD: Int32

    init(vm: VMFileDescriptor, gsi: UInt32) throws(KVMError) {
        let fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard fd >= 0 else { throw KVMError("eventfd", errno: Errno(rawValue: errno), hint: "irqfd for gsi \(gsi)") }
        do throws(KVMError) { try vm.registerIRQFD(eventFD: fd, gsi: gsi) } catch { close(fd); throw error }
        self.vm = vm
        self.gsi = gsi
        eventFD = fd
    }

    deinit {
        try? vm.unregisterIRQFD(eventFD: eventFD, gsi: gsi)
        close(eventFD)
    }

    func trigger() {
        var one: UInt64 = 1
        _ = write(eventFD, &one, 8)
    }

    /// An irqfd has no level: rising is an interrupt, falling nothing.
    func setLevel(_ high: Bool) { if high { trigger() } }
}
