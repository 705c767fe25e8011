import Boot
import Devices
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
        let guest = try GuestImage.read(config.boot)

        let kvm: KVMSystem
        do { kvm = try KVMSystem(path: config.kvmPath) } catch {
            throw .kvmUnavailable(error, permission: error.errno == .permissionDenied || error.errno == .notPermitted)
        }
        guard config.vcpuCount <= kvm.maxVCPUs else {
            throw .config(.invalid("cpus", "this host's KVM allows at most \(kvm.maxVCPUs) vCPUs"))
        }

        let vm: VirtualMachine
        do {
            vm = try kvm.createVM()
            if kvm.check(.setTSSAddress) != 0 { try vm.setTSSAddress(RAMLayout.tssAddress) }
            if kvm.check(.setIdentityMapAddress) != 0 { try vm.setIdentityMapAddress(RAMLayout.identityMapAddress) }
        } catch { throw .kvm(error) }

        let memory = try mapMemory(config, kvm: kvm, vm: vm)
        let state = try guest.load(into: memory, config: config)

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

        let control = MachineControl()
        let bus: Bus, pm: PowerManagement?, serial: Serial8250
        do { (bus, pm, serial) = try wireDevices(config, platform: platform, vm: vm, memory: memory, control: control, console: console) }
        catch { throw .device(error.description) }

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

        return Machine(config: config, memory: memory, bus: bus, kvm: kvm, vm: vm,
                       vcpus: vcpus, control: control, buildStarted: started, powerButton: pm, serial: serial)
    }

    static func mapMemory(_ config: MachineConfig, kvm: KVMSystem, vm: VirtualMachine) throws(MachineError) -> GuestMemory {
        let memory: GuestMemory
        do { memory = try GuestMemory(ranges: RAMLayout.ranges(memorySize: config.memorySize)) } catch { throw .memory(error) }
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

    static func wireDevices(_ config: MachineConfig, platform: Bool, vm: VirtualMachine, memory: GuestMemory,
                            control: MachineControl, console: any SerialOutput) throws(Bus.OverlapError) -> (Bus, PowerManagement?, Serial8250) {
        var devices = Bus.Builder()
        let irq: (UInt32) -> (any InterruptLine)? = { gsi in platform ? KVMInterruptLine(vm: vm, gsi: gsi) : nil }
        let serial = Serial8250(output: console, interrupt: irq(Serial8250.com1IRQ))
        try devices.register(serial, port: Serial8250.com1, count: Serial8250.registerCount, name: "COM1 8250 UART")
        try devices.register(ExitPort(power: control), port: ExitPort.port, count: 1, name: "exit port")
        var pm: PowerManagement? = nil
        if platform {
            let device = PowerManagement(power: control, s5SleepType: ACPITables.s5SleepType,
                                         sci: KVMInterruptLine(vm: vm, gsi: UInt32(ACPITables.sciIRQ)))
            try devices.register(device, port: ACPITables.pmBase, count: PowerManagement.portCount, name: "ACPI PM (timer, PM1)")
            pm = device
            try devices.register(CMOS(memorySize: config.memorySize), port: CMOS.port, count: CMOS.portCount, name: "CMOS/RTC")
            let i8042 = I8042(power: control)
            try devices.register(i8042.window(I8042.dataPort), port: I8042.dataPort, count: 1, name: "i8042 data")
            try devices.register(i8042.window(I8042.commandPort), port: I8042.commandPort, count: 1, name: "i8042 command")
        }
        if config.testDevices {
            try devices.register(DebugExit(power: control), port: DebugExit.port, count: DebugExit.portCount, name: "isa-debug-exit")
            try devices.register(FirmwareConfig(cpus: config.vcpuCount, ramSize: config.memorySize),
                                 port: FirmwareConfig.port, count: FirmwareConfig.portCount, name: "fw_cfg")
            let lines: [any InterruptLine] = platform ? (0..<UInt32(PCTestDevice.irqCount)).map { KVMInterruptLine(vm: vm, gsi: $0) } : []
            let testdev = PCTestDevice(memory: memory, irqLines: lines)
            try devices.register(testdev.window(.scratch), port: PCTestDevice.scratchPort, count: 4, name: "pc-testdev")
            try devices.register(testdev.window(.flush), port: PCTestDevice.flushPort, count: 4, name: "pc-testdev flush")
            try devices.register(testdev.window(.bytes), port: PCTestDevice.bytePort, count: 4, name: "pc-testdev")
            try devices.register(testdev.window(.irq), port: PCTestDevice.irqPort, count: PCTestDevice.irqCount, name: "pc-testdev IRQ lines")
            try devices.register(testdev, address: PCTestDevice.mmioBase, length: PCTestDevice.mmioSize, name: "pc-testdev memory")
        }
        return (devices.build(), pm, serial)
    }
}

/// What the machine boots, read from disk and recognised, before any VM exists.
enum GuestImage {
    case flat(FlatBinary)
    case multiboot(Multiboot, commandLine: String, module: (bytes: [UInt8], name: String)?)
    case linux(LinuxKernel, commandLine: String, initrd: [UInt8]?)

    /// Kernels need the PC platform (irqchip, ACPI); flat binaries run bare.
    var needsPlatform: Bool { if case .flat = self { false } else { true } }

    static func read(_ source: BootSource) throws(MachineError) -> GuestImage {
        switch source {
        case .demo:
            return .flat(FlatBinary(bytes: DemoGuest.bytes, mode: .real, loadAddress: DemoGuest.loadAddress))
        case let .flat(path, mode, load, entry):
            let bytes = try ImageFile.read(path)
            guard !bytes.isEmpty else { throw .boot(.emptyImage) }
            return .flat(FlatBinary(bytes: bytes, mode: mode, loadAddress: load, entry: entry))
        case let .flatImage(image):
            return .flat(image)
        case let .kernel(path, commandLine, initrd):
            let bytes = try ImageFile.read(path)
            guard !bytes.isEmpty else { throw .boot(.emptyImage) }
            let module = try initrd.map { p throws(MachineError) in (bytes: try ImageFile.read(p), name: p) }
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

    func load(into memory: GuestMemory, config: MachineConfig) throws(MachineError) -> InitialCPUState {
        do {
            switch self {
            case let .flat(image):
                return try image.load(into: memory)
            case let .multiboot(kernel, commandLine, module):
                try ACPITables.write(into: memory, cpus: config.vcpuCount)
                let map = PlatformMemoryMap.entries(ramRanges: RAMLayout.ranges(memorySize: config.memorySize))
                let entry = try kernel.load(into: memory, commandLine: commandLine, modules: module.map { [$0] } ?? [], memoryMap: map)
                return try LegacyFirmware.wrap(entry, memory: memory)
            case let .linux(kernel, commandLine, initrd):
                var commandLine = commandLine
                if config.hostQuirks {
                    // Appended, so that they win over anything the user wrote.
                    commandLine += (commandLine.isEmpty ? "" : " ") + HostQuirks.emulatedKernelMode.kernelCommandLine.joined(separator: " ")
                }
                let rsdp = try ACPITables.write(into: memory, cpus: config.vcpuCount)
                let map = PlatformMemoryMap.entries(ramRanges: RAMLayout.ranges(memorySize: config.memorySize))
                if config.pvh { return try kernel.loadPVH(into: memory, commandLine: commandLine, initrd: initrd, memoryMap: map, rsdp: rsdp) }
                return try kernel.load(into: memory, commandLine: commandLine, initrd: initrd, memoryMap: map, rsdp: rsdp)
            }
        } catch { throw .boot(error) }
    }
}
