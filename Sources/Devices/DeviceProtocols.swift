/// A device reached through x86 I/O ports. `offset` is relative to the first port the
/// device was registered at, so one device type can sit at any base (COM1, COM2...).
/// Called from vCPU threads: implementations guard their own state.
public protocol PortIODevice: AnyObject, Sendable {
    func read(offset: UInt16, size: Int) -> UInt32
    func write(offset: UInt16, size: Int, value: UInt32)
}

/// A device reached through guest-physical addresses no RAM backs.
public protocol MMIODevice: AnyObject, Sendable {
    func read(offset: UInt64, size: Int) -> UInt64
    func write(offset: UInt64, size: Int, value: UInt64)
}

/// One interrupt input of the guest's interrupt controller. Devices raise and lower
/// it; the VMM decides how (in-kernel irqchip, irqfd, or nothing at all), so devices
/// never talk to KVM.
public protocol InterruptLine: Sendable {
    func setLevel(_ high: Bool)
}

/// How a device asks the machine to end: the exit port, a reset controller, ACPI S5.
/// The VMM implements it; the first request wins.
public protocol PowerControl: Sendable {
    /// The guest asked to stop with `code` as its exit status.
    func guestExit(code: Int32)
    /// The guest asked for a reset (keyboard controller pulse, triple fault...).
    func guestReset()
    /// The guest powered off (ACPI S5 and the like).
    func guestPowerOff()
}
