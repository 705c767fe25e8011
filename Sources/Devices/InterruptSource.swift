/// One way a device interrupts the guest, whatever carries it: a level-triggered line
/// of the in-kernel PIC/IOAPIC (`KVM_IRQ_LINE`), an edge on such a line, an irqfd
/// (an eventfd KVM turns into an interrupt without a round trip to user space), or a
/// message-signalled interrupt. The VMM implements it (Cloud Hypervisor's
/// `InterruptSourceGroup`), so devices never talk to KVM.
///
/// Devices call these while holding their own lock, so that two threads changing one
/// device's state can never apply its levels out of order (kvmtool's serial does the
/// same); implementations must therefore never call back into a device.
public protocol InterruptSource: Sendable {
    /// Level-triggered use: the line follows `high` (implementations pass on changes
    /// only).
    func setLevel(_ high: Bool)
    /// Edge or message use: one interrupt (a pulse, an irqfd write, an MSI).
    func trigger()
}
