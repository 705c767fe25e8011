import CLinux
import Boot
import Devices
import Glibc
import KVM
import Synchronization

/// A virtio device as the machine serves it: its transport, the ioeventfd its queue
/// notifications arrive on (registered at each queue's notification address, and
/// registered again where the guest moves a PCI BAR), and how the guest is told where
/// it is.
final class VirtioEndpoint: Sendable {
    let id: String
    let transport: any VirtioTransport
    let notifyFD: Int32
    let vm: VMFileDescriptor
    /// A virtio-mmio window, for the DSDT or a `virtio_mmio.device=` announcement.
    let mmio: ACPIDevices.MMIODevice?
    /// A PCI function: its slot on bus 0 and its INTx line.
    let pci: (slot: Int, gsi: UInt32)?
    /// Where the notification ioeventfd is registered: (address, length).
    private let notifyAddresses: Mutex<[(UInt64, UInt32)]>

    init(id: String, transport: any VirtioTransport, vm: VMFileDescriptor, notifyAt addresses: [(UInt64, UInt32)],
         mmio: ACPIDevices.MMIODevice? = nil, pci: (slot: Int, gsi: UInt32)? = nil) throws(KVMError) {
        let fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard fd >= 0 else { throw KVMError("eventfd", errno: nil, hint: "virtio queue notifications") }
        var registered: [(UInt64, UInt32)] = []
        do throws(KVMError) {
            for (a, n) in addresses {
                try vm.registerIOEvent(eventFD: fd, address: a, length: n, pio: false)
                registered.append((a, n))
            }
        } catch {
            for (a, n) in registered { try? vm.unregisterIOEvent(eventFD: fd, address: a, length: n, pio: false) }
            close(fd)
            throw error
        }
        self.id = id
        self.transport = transport
        self.vm = vm
        self.mmio = mmio
        self.pci = pci
        notifyFD = fd
        notifyAddresses = Mutex(registered)
        // Notifications that miss the ioeventfd go through it all the same.
        transport.handNotificationsOff { var one: UInt64 = 1; _ = write(fd, &one, 8) }
    }

    deinit {
        for (a, n) in notifyAddresses.withLock({ $0 }) { try? vm.unregisterIOEvent(eventFD: notifyFD, address: a, length: n, pio: false) }
        close(notifyFD)
    }

    /// `virtio_mmio.device=4K@BASE:IRQ` for a Linux command line (kernels without ACPI).
    var commandLineAnnouncement: String? {
        mmio.map { "virtio_mmio.device=\($0.size >> 10)K@0x\(String($0.base, radix: 16)):\($0.irq)" }
    }

    /// The guest moved the BAR holding the notification addresses by `delta` bytes:
    /// the ioeventfd follows. False (and the old registrations kept) if KVM refused.
    func moveNotifications(from oldBase: UInt64, to newBase: UInt64) -> Bool {
        notifyAddresses.withLock { current in
            let moved = current.map { (newBase &+ ($0.0 &- oldBase), $0.1) }
            for (a, n) in current { try? vm.unregisterIOEvent(eventFD: notifyFD, address: a, length: n, pio: false) }
            var done: [(UInt64, UInt32)] = []
            for (a, n) in moved {
                guard (try? vm.registerIOEvent(eventFD: notifyFD, address: a, length: n, pio: false)) != nil else {
                    for (a, n) in done { try? vm.unregisterIOEvent(eventFD: notifyFD, address: a, length: n, pio: false) }
                    for (a, n) in current { try? vm.registerIOEvent(eventFD: notifyFD, address: a, length: n, pio: false) }
                    return false
                }
                done.append((a, n))
            }
            current = moved
            return true
        }
    }

    /// The loop saw the ioeventfd: drain it and serve every queue.
    func serviceNotification() {
        var count: UInt64 = 0
        _ = read(notifyFD, &count, 8)
        transport.notifyAll()
    }
}
