/// How a device asks the machine to end: the exit port, a reset controller, ACPI S5.
/// The VMM implements it; the first request wins.
public protocol PowerControl: Sendable {
    /// The guest asked to stop with `code` as its exit status.
    func guestExit(code: Int32)
    /// The guest asked for a reset (keyboard controller pulse, triple fault...).
    func guestReset()
    /// The guest powered off (ACPI S5 and the like).
    func guestPowerOff()
    /// The guest entered ACPI S3 (suspend to RAM): its vCPUs stop, its memory stays,
    /// until a wake event.
    func guestSuspend()
}

/// A device that takes what the user types at the VM's console (the 8250, later
/// virtio-console): the machine hands input to whichever device is the console,
/// without knowing its type.
public protocol ConsoleDevice: BusDevice {
    func receive(_ bytes: [UInt8])
}

/// A device with a power button the host can press (ACPI's PM block), asking the guest
/// to shut down. Returns whether the guest listens for it.
public protocol PowerButtonDevice: BusDevice {
    func pressPowerButton() -> Bool
}
