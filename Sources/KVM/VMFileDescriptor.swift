import CKVM
import Glibc
import SystemPackage

/// One chip of the in-kernel irqchip (`struct kvm_irqchip`).
public typealias IRQChipState = kvm_irqchip
/// The in-kernel PIT (`struct kvm_pit_state2`).
public typealias PITState = kvm_pit_state2
/// kvmclock (`struct kvm_clock_data`).
public typealias ClockState = kvm_clock_data

/// A VM file descriptor from `KVM_CREATE_VM`, owned here and closed once (rust-vmm's
/// `VmFd`). Not the whole machine: that is the VMM's `Machine`.
///
/// The kernel serialises VM ioctls itself, so one `VMFileDescriptor` may be used from
/// any thread.
public final class VMFileDescriptor: Sendable {
    let fd: FileDescriptor
    let mmapSize: Int

    init(fd: FileDescriptor, mmapSize: Int) {
        self.fd = fd
        self.mmapSize = mmapSize
    }

    deinit { try? fd.close() }

    /// Memory-slot flags (`KVM_MEM_*`).
    public struct MemoryFlags: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let logDirtyPages = MemoryFlags(rawValue: UInt32(KVM_MEM_LOG_DIRTY_PAGES))
        public static let readOnly = MemoryFlags(rawValue: UInt32(KVM_MEM_READONLY))
    }

    /// `KVM_SET_USER_MEMORY_REGION`: guest-physical `[guestAddress, +size)` is backed by
    /// host memory at `hostAddress` (a mapping the caller keeps alive). Size 0 deletes.
    public func setUserMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64,
                                    hostAddress: UInt64, flags: MemoryFlags = []) throws(KVMError) {
        var region = kvm_userspace_memory_region(slot: slot, flags: flags.rawValue,
                                                 guest_phys_addr: guestAddress,
                                                 memory_size: size, userspace_addr: hostAddress)
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_USER_MEMORY_REGION, &region) == 0 else {
            throw KVMError.last("KVM_SET_USER_MEMORY_REGION",
                                hint: "slot \(slot) at guest 0x\(String(guestAddress, radix: 16)), \(size) bytes")
        }
    }

    /// `KVM_SET_TSS_ADDR`: three pages below 4 GiB that Intel hosts use for real-mode
    /// emulation; they must not overlap guest RAM or MMIO.
    public func setTSSAddress(_ address: UInt64) throws(KVMError) {
        guard ckvm_ioctl_val(fd.rawValue, CKVM_SET_TSS_ADDR, UInt(address)) == 0 else {
            throw KVMError.last("KVM_SET_TSS_ADDR")
        }
    }

    /// `KVM_SET_IDENTITY_MAP_ADDR`: one page for Intel's real-mode identity map.
    public func setIdentityMapAddress(_ address: UInt64) throws(KVMError) {
        var a = address
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_IDENTITY_MAP_ADDR, &a) == 0 else {
            throw KVMError.last("KVM_SET_IDENTITY_MAP_ADDR")
        }
    }

    /// `KVM_CREATE_IRQCHIP`: in-kernel PIC, IOAPIC and local APICs. Must precede vCPUs.
    public func createIRQChip() throws(KVMError) {
        guard ckvm_ioctl_val(fd.rawValue, CKVM_CREATE_IRQCHIP, 0) == 0 else {
            throw KVMError.last("KVM_CREATE_IRQCHIP")
        }
    }

    /// `KVM_CREATE_PIT2`: the in-kernel i8254 timer (needs the irqchip first).
    public func createPIT2() throws(KVMError) {
        var config = kvm_pit_config()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_CREATE_PIT2, &config) == 0 else {
            throw KVMError.last("KVM_CREATE_PIT2")
        }
    }

    /// `KVM_IRQ_LINE`: drives a GSI of the in-kernel irqchip high or low.
    public func setIRQLine(_ irq: UInt32, level: Bool) throws(KVMError) {
        var line = kvm_irq_level()
        line.irq = irq
        line.level = level ? 1 : 0
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_IRQ_LINE, &line) == 0 else {
            throw KVMError.last("KVM_IRQ_LINE", hint: "irq \(irq)")
        }
    }

    /// `KVM_SIGNAL_MSI`: delivers a message-signalled interrupt to the in-kernel local
    /// APICs, as a device (or another vCPU's ICR) would. True if a vCPU accepted it.
    public func signalMSI(address: UInt64, data: UInt32) throws(KVMError) -> Bool {
        var msi = kvm_msi()
        msi.address_lo = UInt32(truncatingIfNeeded: address)
        msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
        msi.data = data
        let n = ckvm_ioctl_ptr(fd.rawValue, CKVM_SIGNAL_MSI, &msi)
        guard n >= 0 else { throw KVMError.last("KVM_SIGNAL_MSI") }
        return n > 0
    }

    /// `KVM_IOEVENTFD`: a guest write to `address` signals `eventFD` without an exit.
    public func registerIOEvent(eventFD: Int32, address: UInt64, length: UInt32, pio: Bool) throws(KVMError) {
        var event = kvm_ioeventfd()
        event.addr = address
        event.len = length
        event.fd = eventFD
        event.flags = pio ? UInt32(1 << kvm_ioeventfd_flag_nr_pio) : 0
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_IOEVENTFD, &event) == 0 else {
            throw KVMError.last("KVM_IOEVENTFD")
        }
    }

    /// `KVM_IOEVENTFD` with `KVM_IOEVENTFD_FLAG_DEASSIGN`: undoes `registerIOEvent`.
    public func unregisterIOEvent(eventFD: Int32, address: UInt64, length: UInt32, pio: Bool) throws(KVMError) {
        var event = kvm_ioeventfd()
        event.addr = address
        event.len = length
        event.fd = eventFD
        event.flags = UInt32(1 << kvm_ioeventfd_flag_nr_deassign) | (pio ? UInt32(1 << kvm_ioeventfd_flag_nr_pio) : 0)
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_IOEVENTFD, &event) == 0 else {
            throw KVMError.last("KVM_IOEVENTFD (deassign)")
        }
    }

    /// `KVM_IRQFD`: a write to `eventFD` raises `gsi` without a user-space round trip.
    public func registerIRQFD(eventFD: Int32, gsi: UInt32) throws(KVMError) {
        var irqfd = kvm_irqfd()
        irqfd.fd = UInt32(eventFD)
        irqfd.gsi = gsi
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_IRQFD, &irqfd) == 0 else {
            throw KVMError.last("KVM_IRQFD", hint: "gsi \(gsi)")
        }
    }

    /// `KVM_IRQFD` with `KVM_IRQFD_FLAG_DEASSIGN`: undoes `registerIRQFD`.
    public func unregisterIRQFD(eventFD: Int32, gsi: UInt32) throws(KVMError) {
        var irqfd = kvm_irqfd()
        irqfd.fd = UInt32(eventFD)
        irqfd.gsi = gsi
        irqfd.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_IRQFD, &irqfd) == 0 else {
            throw KVMError.last("KVM_IRQFD (deassign)", hint: "gsi \(gsi)")
        }
    }

    /// `KVM_SET_GSI_ROUTING`: replaces the whole routing table. Start from
    /// `GSIRoute.pcDefaults` to keep the PIC and IOAPIC lines working.
    public func setGSIRouting(_ routes: [(gsi: UInt32, route: GSIRoute)]) throws(KVMError) {
        var buffer = GSIRoutingBuffer(routes)
        guard buffer.withHeader({ ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_GSI_ROUTING, $0) }) == 0 else {
            throw KVMError.last("KVM_SET_GSI_ROUTING", hint: "\(routes.count) routes")
        }
    }

    /// `KVM_GET_IRQCHIP`: one chip of the in-kernel irqchip (0 PIC master, 1 PIC
    /// slave, 2 IOAPIC), as a snapshot stores it.
    public func irqChip(_ chip: UInt32) throws(KVMError) -> IRQChipState {
        var c = IRQChipState()
        c.chip_id = chip
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_IRQCHIP, &c) == 0 else { throw KVMError.last("KVM_GET_IRQCHIP", hint: "chip \(chip)") }
        return c
    }

    /// `KVM_SET_IRQCHIP` (the chip is the one `state.chip_id` names).
    public func setIRQChip(_ state: IRQChipState) throws(KVMError) {
        var c = state
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_IRQCHIP, &c) == 0 else { throw KVMError.last("KVM_SET_IRQCHIP", hint: "chip \(state.chip_id)") }
    }

    /// `KVM_GET_PIT2`: the in-kernel 8254's counters and speaker gate.
    public func pit() throws(KVMError) -> PITState {
        var p = PITState()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_PIT2, &p) == 0 else { throw KVMError.last("KVM_GET_PIT2") }
        return p
    }

    /// `KVM_SET_PIT2`.
    public func setPIT(_ state: PITState) throws(KVMError) {
        var p = state
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_PIT2, &p) == 0 else { throw KVMError.last("KVM_SET_PIT2") }
    }

    /// `KVM_GET_CLOCK`: kvmclock's nanoseconds, what the guest's paravirtual clock reads.
    public func clock() throws(KVMError) -> ClockState {
        var c = ClockState()
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_CLOCK, &c) == 0 else { throw KVMError.last("KVM_GET_CLOCK") }
        return c
    }

    /// `KVM_SET_CLOCK`: only the clock value is set (flags cleared, as KVM wants).
    public func setClock(_ state: ClockState) throws(KVMError) {
        var c = ClockState()
        c.clock = state.clock
        guard ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_CLOCK, &c) == 0 else { throw KVMError.last("KVM_SET_CLOCK") }
    }

    /// `KVM_CREATE_VCPU`, then maps its `kvm_run` page.
    public func createVCPU(id: Int) throws(KVMError) -> VCPU {
        let r = ckvm_ioctl_val(fd.rawValue, CKVM_CREATE_VCPU, UInt(id))
        guard r >= 0 else { throw KVMError.last("KVM_CREATE_VCPU", hint: "vCPU \(id)") }
        return try VCPU(fd: FileDescriptor(rawValue: r), id: id, mmapSize: mmapSize, vm: self)
    }
}
