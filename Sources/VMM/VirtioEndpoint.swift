import Devices
import Glibc

/// A virtio device as the machine serves it: its transport, the ioeventfd its queue
/// notifications arrive on, and how the guest is told where it is.
final class VirtioEndpoint: Sendable {
    let id: String
    let transport: VirtioMMIO
    let notifyFD: Int32
    /// `virtio_mmio.device=4K@BASE:IRQ` for a Linux command line.
    let announcement: String

    init(id: String, transport: VirtioMMIO, notifyFD: Int32, announcement: String) {
        self.id = id
        self.transport = transport
        self.notifyFD = notifyFD
        self.announcement = announcement
    }

    deinit { close(notifyFD) }

    /// The loop saw the ioeventfd: drain it and serve every queue.
    func serviceNotification() {
        var count: UInt64 = 0
        _ = read(notifyFD, &count, 8)
        transport.notifyAll()
    }
}
