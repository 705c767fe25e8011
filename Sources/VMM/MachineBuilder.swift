import Boot
import CLinux
import Devices
import Glibc
import GuestMemory
import KVM

extension Machine {
    /// Builds a machine, in the order Firecracker's builder uses: check the config and
    /// read what the guest boots, open KVM and create the VM, map guest memory, load
    /// the guest, create the interrupt controller and devices, create the vCPUs.
    /// `console` receives what the guest writes to COM1.
    public static func build(_ config: MachineConfig, console: any SerialOutput) throws(MachineError) -> Machine {
        let started = monotonicNanoseconds()
        do { try config.validate() } catch { throw .config(error) }

        // The guest's files first: a missing or bad file is the likeliest mistake, and
        // is reported before any KVM resource is taken.
        let guest = try BootImage.read(config.boot)

        let kvm: KVMSystem
        do { kvm = try KVMSystem(path: config.kvmPath) } catch {
            throw .kvmUnavailable(error, permission: error.errno == .permissionDenied || error.errno == .notPermitted)
        }
        guard config.vcpuCount <= kvm.maxVCPUs else {
            throw .config(.invalid("cpus", "this host's KVM allows at most \(kvm.maxVCPUs) vCPUs"))
        }

        let vm: VMFileDescriptor
        do {
            vm = try kvm.createVM()
            if kvm.check(.setTSSAddress) != 0 { try vm.setTSSAddress(AddressMap.tss) }
            if kvm.check(.setIdentityMapAddress) != 0 { try vm.setIdentityMapAddress(AddressMap.identityMap) }
        } catch { throw .kvm(error) }

        let memory = try mapMemory(config, kvm: kvm, vm: vm)

        // Kernels get a PC platform: the in-kernel irqchip (PIC, IOAPIC, local APICs,
        // which also start the other vCPUs on INIT/SIPI) and PIT. Flat binaries get
        // none, so that their HLT reaches the VMM (README "HLT").
        let platform = guest.needsPlatform
        if platform {
            do {
                try vm.createIRQChip()
                if config.pit { try vm.createPIT2() }
            } catch { throw .kvm(error) }
        }

        let stopSwitch = StopSwitch()
        let devices: DeviceManager
        do { devices = try wireDevices(config, platform: platform, vm: vm, memory: memory, power: stopSwitch, console: console) }
        catch { throw .device(error.description) }
        let virtio = try addVirtioDevices(config, vm: vm, memory: memory, devices: devices)

        // The guest goes in last: a Linux kernel is told where the virtio devices are.
        let state = try guest.load(into: memory, config: config, announcements: virtio.map(\.announcement))

        var vcpus: [VCPU] = []
        do {
            let cpuid = try kvm.supportedCPUID()
            for index in 0..<config.vcpuCount {
                let vcpu = try vm.createVCPU(id: index)
                try vcpu.setCPUID(CPUIDTable.forVCPU(index, supported: cpuid))
                // With an irqchip only the boot vCPU starts; the others wait for the
                // guest's INIT/SIPI, as on a PC.
                if index == 0 || !platform { try vcpu.apply(state, index: index) }
                vcpus.append(vcpu)
            }
        } catch { throw .kvm(error) }

        return Machine(config: config, memory: memory, devices: devices, kvm: kvm, vm: vm,
                       vcpus: vcpus, stopSwitch: stopSwitch, buildStarted: started, virtio: virtio)
    }

    /// The virtio devices (disks in command-line order, then the entropy device), each a
    /// virtio-mmio window and an interrupt line from the device manager. The driver's
    /// queue notifications land on an ioeventfd (served by the event loop, off the vCPU
    /// threads); completions interrupt the guest through an irqfd.
    static func addVirtioDevices(_ config: MachineConfig, vm: VMFileDescriptor, memory: GuestMemory,
                                 devices: DeviceManager) throws(MachineError) -> [VirtioEndpoint] {
        var made: [(id: String, name: String, device: any VirtioDevice)] = []
        for (i, disk) in config.disks.enumerated() {
            do {
                made.append((disk.id(index: i), "virtio-blk \(disk.path)" + (disk.readOnly ? " (read-only)" : ""),
                             try VirtioBlock(path: disk.path, readOnly: disk.readOnly, serial: disk.serial)))
            } catch { throw .device(error.description) }
        }
        if config.rng {
            do { made.append(("rng", "virtio-rng", try VirtioRNG())) } catch { throw .device(error.description) }
        }
        var endpoints: [VirtioEndpoint] = []
        for m in made {
            do {
                let base = try devices.allocateMMIO(size: VirtioMMIO.windowSize)
                let irq = try devices.allocateIRQ()
                let interrupt = try IRQFDInterrupt(vm: vm, gsi: irq)
                let transport = VirtioMMIO(device: m.device, memory: memory, interrupt: interrupt)
                try devices.add(transport, id: m.id, name: m.name, ranges: [.init(.mmio, base, VirtioMMIO.windowSize)], interrupts: [irq])
                let notify = base + VirtioMMIO.queueNotifyOffset
                let fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
                guard fd >= 0 else { throw KVMError("eventfd", errno: nil, hint: "virtio queue notifications") }
                do { try vm.registerIOEvent(eventFD: fd, address: notify, length: 4, pio: false) } catch { close(fd); throw error }
                endpoints.append(VirtioEndpoint(id: m.id, transport: transport, notifyFD: fd,
                                                announcement: VirtioMMIO.commandLine(base: base, irq: irq)))
            } catch let e as KVMError {
                throw .kvm(e)
            } catch let e as DeviceManager.Failure {
                throw .device(e.description)
            } catch {
                throw .device("\(m.name): \(error)")
            }
        }
        return endpoints
    }

    static func mapMemory(_ config: MachineConfig, kvm: KVMSystem, vm: VMFileDescriptor) throws(MachineError) -> GuestMemory {
        let memory: GuestMemory
        do { memory = try GuestMemory(ranges: AddressMap.ramRanges(memorySize: config.memorySize)) } catch { throw .memory(error) }
        guard memory.regions.count <= kvm.maxMemorySlots else {
            throw .kvm(KVMError("KVM_SET_USER_MEMORY_REGION", errno: nil, hint: "the host allows only \(kvm.maxMemorySlots) memory slots"))
        }
        do {
            for (slot, region) in memory.regions.enumerated() {
                try vm.setUserMemoryRegion(slot: UInt32(slot), guestAddress: region.start.value,
                                           size: region.size, hostAddress: region.hostAddress)
            }
        } catch { throw .kvm(error) }
        return memory
    }

    /// Puts every device on the bus at its place in `AddressMap`, each under a stable
    /// id, its interrupts wired through the in-kernel irqchip when there is one (flat
    /// binaries run without: their devices interrupt nobody).
    static func wireDevices(_ config: MachineConfig, platform: Bool, vm: VMFileDescriptor, memory: GuestMemory,
                            power: any PowerControl, console: any SerialOutput) throws(DeviceManager.Failure) -> DeviceManager {
        let devices = DeviceManager(mmioWindow: (AddressMap.deviceMMIOStart, AddressMap.deviceMMIOEnd),
                                    irqs: platform ? AddressMap.allocatableIRQs : [])
        let irq: (UInt32) -> (any InterruptSource)? = { gsi in platform ? IRQLine(vm: vm, gsi: gsi) : nil }
        try devices.add(Serial8250(output: console, interrupt: irq(AddressMap.com1IRQ)), id: "com1", name: "COM1 8250 UART",
                        ranges: [.ports(AddressMap.com1, Serial8250.registerCount)], interrupts: platform ? [AddressMap.com1IRQ] : [])
        try devices.add(ExitPort(power: power), id: "exit-port", name: "exit port", ranges: [.ports(AddressMap.exitPort, 1)])
        if platform {
            try devices.add(PowerManagement(power: power, s5SleepType: ACPITables.s5SleepType, s3SleepType: ACPITables.s3SleepType,
                                            sci: irq(AddressMap.sciIRQ)),
                            id: "acpi-pm", name: "ACPI PM (timer, PM1)", ranges: [.ports(AddressMap.pmBlock, PowerManagement.portCount)],
                            interrupts: [AddressMap.sciIRQ])
            try devices.add(CMOS(memorySize: config.memorySize, interrupt: irq(AddressMap.rtcIRQ)), id: "cmos", name: "CMOS/RTC",
                            ranges: [.ports(AddressMap.cmos, CMOS.portCount)], interrupts: [AddressMap.rtcIRQ])
            try devices.add(I8042(power: power), id: "i8042", name: "i8042", ranges: [
                .ports(AddressMap.i8042Data, 1, region: I8042.Region.data.rawValue, name: "i8042 data"),
                .ports(AddressMap.i8042Command, 1, region: I8042.Region.command.rawValue, name: "i8042 command")])
        }
        if config.testDevices {
            try devices.add(DebugExit(power: power), id: "isa-debug-exit", name: "isa-debug-exit",
                            ranges: [.ports(AddressMap.debugExit, DebugExit.portCount)])
            try devices.add(FirmwareConfig(cpus: config.vcpuCount, ramSize: config.memorySize), id: "fw-cfg", name: "fw_cfg",
                            ranges: [.ports(AddressMap.firmwareConfig, FirmwareConfig.portCount)])
            let lines: [any InterruptSource] = platform ? (0..<UInt32(PCTestDevice.irqCount)).map { IRQLine(vm: vm, gsi: $0) } : []
            typealias R = PCTestDevice.Region
            try devices.add(PCTestDevice(memory: memory, irqLines: lines), id: "pc-testdev", name: "pc-testdev", ranges: [
                .ports(AddressMap.testDeviceScratch, 4, region: R.scratch.rawValue),
                .ports(AddressMap.testDeviceFlush, 4, region: R.flush.rawValue, name: "pc-testdev flush"),
                .ports(AddressMap.testDeviceBytes, 4, region: R.bytes.rawValue),
                .ports(AddressMap.testDeviceIRQs, PCTestDevice.irqCount, region: R.irq.rawValue, name: "pc-testdev IRQ lines"),
                .init(.mmio, AddressMap.testDeviceMemory, AddressMap.testDeviceMemorySize, region: R.memory.rawValue, name: "pc-testdev memory")])
        }
        return devices
    }
}

/// What the machine boots, read from disk and recognised, before any VM exists.
enum BootImage {
    case flat(FlatBinary)
    case multiboot(Multiboot, commandLine: String, module: (bytes: [UInt8], name: String)?)
    case linux(LinuxKernel, commandLine: String, initrd: [UInt8]?)

    /// Kernels need the PC platform (irqchip, ACPI); flat binaries run bare.
    var needsPlatform: Bool { if case .flat = self { false } else { true } }

    static func read(_ source: BootSource) throws(MachineError) -> BootImage {
        switch source {
        case .demo:
            return .flat(FlatBinary(bytes: DemoGuest.bytes, mode: .real, loadAddress: DemoGuest.loadAddress))
        case let .flat(path, mode, load, entry):
            let bytes = try FileContents.read(path)
            guard !bytes.isEmpty else { throw .boot(.emptyImage) }
            return .flat(FlatBinary(bytes: bytes, mode: mode, loadAddress: load, entry: entry))
        case let .flatImage(image):
            return .flat(image)
        case let .kernel(path, commandLine, initrd):
            let bytes = try FileContents.read(path)
            guard !bytes.isEmpty else { throw .boot(.emptyImage) }
            let module = try initrd.map { p throws(MachineError) in (bytes: try FileContents.read(p), name: p) }
            do {
                if try Multiboot.findHeader(bytes) != nil {
                    // Like GRUB and QEMU, the kernel's own name comes first: programs
                    // such as kvm-unit-tests take it as argv[0].
                    let line = commandLine.isEmpty ? path : path + " " + commandLine
                    return .multiboot(try Multiboot(bytes), commandLine: line, module: module)
                }
                if LinuxKernel.recognises(bytes) {
                    return .linux(try LinuxKernel(bytes), commandLine: commandLine, initrd: module?.bytes)
                }
            } catch { throw .boot(error) }
            throw .boot(.malformed("\(path) is neither a Multiboot kernel nor a Linux kernel (bzImage or 64-bit vmlinux)"))
        }
    }

    func load(into memory: GuestMemory, config: MachineConfig, announcements: [String] = []) throws(MachineError) -> InitialCPUState {
        do {
            switch self {
            case let .flat(image):
                return try image.load(into: memory)
            case let .multiboot(kernel, commandLine, module):
                try ACPITables.write(into: memory, cpus: config.vcpuCount)
                let map = PlatformMemoryMap.entries(ramRanges: AddressMap.ramRanges(memorySize: config.memorySize))
                let entry = try kernel.load(into: memory, commandLine: commandLine, modules: module.map { [$0] } ?? [], memoryMap: map)
                return try LegacyFirmware.wrap(entry, memory: memory)
            case let .linux(kernel, commandLine, initrd):
                var commandLine = commandLine
                if config.hostQuirks {
                    // Appended, so that they win over anything the user wrote.
                    commandLine += (commandLine.isEmpty ? "" : " ") + HostQuirks.emulatedKernelMode.kernelCommandLine.joined(separator: " ")
                }
                for a in announcements { commandLine += (commandLine.isEmpty ? "" : " ") + a }
                let rsdp = try ACPITables.write(into: memory, cpus: config.vcpuCount)
                let map = PlatformMemoryMap.entries(ramRanges: AddressMap.ramRanges(memorySize: config.memorySize))
                if config.pvh { return try kernel.loadPVH(into: memory, commandLine: commandLine, initrd: initrd, memoryMap: map, rsdp: rsdp) }
                return try kernel.load(into: memory, commandLine: commandLine, initrd: initrd, memoryMap: map, rsdp: rsdp)
            }
        } catch { throw .boot(error) }
    }
}
