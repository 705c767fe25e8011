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
    ///
    /// `restoring` brings a snapshot back instead of booting: the same configuration's
    /// machine, its memory mapped copy-on-write from the snapshot's memory file (read
    /// as the guest touches it), then the VM's, devices' and vCPUs' saved state
    /// written in KVM's order; nothing of the guest's image is read.
    /// `startedAt`: when the work began, for the set-up figures (a restore counts
    /// reading its snapshot).
    public static func build(_ config: MachineConfig, console: any SerialOutput,
                             restoring: (state: MachineSnapshot, memoryFD: Int32)? = nil,
                             startedAt: UInt64? = nil) throws(MachineError) -> Machine {
        let started = startedAt ?? monotonicNanoseconds()
        do { try config.validate() } catch { throw .config(error) }

        // The guest's files first: a missing or bad file is the likeliest mistake, and
        // is reported before any KVM resource is taken.
        let guest = restoring == nil ? try BootImage.read(config.boot) : nil
        // Decoded before any KVM resource is taken, too: a damaged file is said at once.
        var saved: (vcpus: [VCPUState], vm: VMState)? = nil
        if let restoring {
            guard restoring.state.vcpus.count == config.vcpuCount else {
                throw .snapshot(SnapshotError(.corrupt, "the snapshot has \(restoring.state.vcpus.count) vCPU states for \(config.vcpuCount) vCPUs"))
            }
            do throws(StateError) {
                var states: [VCPUState] = []
                for (i, bytes) in restoring.state.vcpus.enumerated() {
                    do { states.append(try VCPUState(encoded: bytes)) } catch { throw StateError("vCPU \(i): \(error.description)") }
                    guard states[i].complete != nil else { throw StateError("vCPU \(i): the state is not a snapshot's") }
                }
                saved = (states, try VMState(encoded: restoring.state.vm))
            } catch { throw .snapshot(SnapshotError(.corrupt, error.description)) }
        }

        let kvm: KVMSystem
        do { kvm = try KVMSystem(path: config.kvmPath) } catch {
            throw .kvmUnavailable(error, permission: error.errno == .permissionDenied || error.errno == .notPermitted)
        }
        guard config.vcpuCount <= kvm.maxVCPUs else {
            throw .config(.invalid("cpus", "this host's KVM allows at most \(kvm.maxVCPUs) vCPUs"))
        }
        let supportedCPUID: [CPUIDEntry]
        do { supportedCPUID = try kvm.supportedCPUID() } catch { throw .kvm(error) }
        // A snapshot's guest keeps the CPUID it had: this host must offer all of it.
        if let guestCPUID = saved?.vcpus.first?.complete?.cpuid,
           let why = CPUFeatures.incompatibility(vendor: CPUFeatures.vendor(guestCPUID), features: CPUFeatures.of(guestCPUID), host: supportedCPUID) {
            throw .snapshot(SnapshotError(.incompatible, "it cannot run here: \(why)"))
        }

        let vm: VMFileDescriptor
        do {
            vm = try kvm.createVM()
            if kvm.check(.setTSSAddress) != 0 { try vm.setTSSAddress(AddressMap.tss) }
            if kvm.check(.setIdentityMapAddress) != 0 { try vm.setIdentityMapAddress(AddressMap.identityMap) }
        } catch { throw .kvm(error) }

        let memory = try mapMemory(config, kvm: kvm, vm: vm, snapshotFD: restoring?.memoryFD)

        // Kernels get a PC platform: the in-kernel irqchip (PIC, IOAPIC, local APICs,
        // which also start the other vCPUs on INIT/SIPI) and PIT. Flat binaries get
        // none, so that their HLT reaches the VMM (README "HLT").
        let platform = config.boot.needsPlatform
        if platform {
            do {
                try vm.createIRQChip()
                if config.pit { try vm.createPIT2() }
            } catch { throw .kvm(error) }
        }

        let stopSwitch = StopSwitch()
        let devices: DeviceManager
        do {
            devices = try wireDevices(config, platform: platform, memory: memory, power: stopSwitch, console: console,
                                      irq: { gsi in platform ? IRQLine(vm: vm, gsi: gsi) : nil })
        }
        catch { throw .device(error.description) }
        let virtio = try addVirtioDevices(config, vm: vm, memory: memory, devices: devices, console: console)

        // The guest goes in last: a Linux kernel is told where the virtio devices are.
        let state = try guest?.load(into: memory, config: config, virtio: virtio)
        var placement: FlatBinary.Placement? = nil
        if case let .flat(image) = guest, let state { placement = image.placement(state) }

        var vcpus: [VCPU] = []
        do {
            let cpuid = supportedCPUID
            for index in 0..<config.vcpuCount {
                let vcpu = try vm.createVCPU(id: index)
                if let s = saved?.vcpus[index].complete {
                    // What the guest saw before, not what this host would offer now;
                    // the TSC at the rate the guest calibrated.
                    try vcpu.setCPUID(s.cpuid)
                    if try vcpu.tscKHz() != s.tscKHz { try vcpu.setTSCKHz(s.tscKHz) }
                } else {
                    try vcpu.setCPUID(CPUIDTable.forVCPU(index, supported: cpuid))
                }
                // With an irqchip only the boot vCPU starts; the others wait for the
                // guest's INIT/SIPI, as on a PC.
                if let state, index == 0 || !platform { try vcpu.apply(state, index: index) }
                vcpus.append(vcpu)
            }
            if let saved, let restoring {
                // The VM's state, the devices', then each vCPU's (its LAPIC after the
                // irqchip exists and is set).
                try saved.vm.write(to: vm)
                do { try restoreDevices(restoring.state.devices, into: devices) } catch { throw MachineError.snapshot(error) }
                for (vcpu, s) in zip(vcpus, saved.vcpus) { try s.write(to: vcpu) }
            }
        } catch let e as KVMError {
            throw .kvm(e)
        } catch let e as MachineError {
            throw e
        } catch {
            throw .device("\(error)")
        }

        // The exit trace: RIP comes from the registers KVM copies into kvm_run at each
        // exit (0 in the trace where this KVM cannot).
        var tracer: ExitTracer? = nil
        if let path = config.tracePath {
            do { tracer = try ExitTracer(path: path, vcpus: vcpus.count) }
            catch { throw .device(error.description) }
            if kvm.check(.syncRegisters) & 1 != 0 { for v in vcpus { v.syncRegistersOnExit(true) } }
        }

        return Machine(config: config, memory: memory, devices: devices, kvm: kvm, vm: vm,
                       vcpus: vcpus, stopSwitch: stopSwitch, buildStarted: started, virtio: virtio, tracer: tracer, placement: placement)
    }

    /// The virtio devices (disks in command-line order, network devices, the vsock,
    /// then the entropy device and the console) on the
    /// configured transport: each a PCI function behind the host bridge (a BAR and an
    /// INTx line from the device manager, MSI-X through KVM routes and irqfds) or a
    /// virtio-mmio window with an interrupt line. The driver's queue notifications land
    /// on an ioeventfd (served by the event loop, off the vCPU threads); completions
    /// interrupt the guest through an irqfd.
    static func addVirtioDevices(_ config: MachineConfig, vm: VMFileDescriptor, memory: GuestMemory,
                                 devices: DeviceManager, console: any SerialOutput) throws(MachineError) -> [VirtioEndpoint] {
        var made: [(id: String, name: String, device: any VirtioDevice)] = []
        for (i, disk) in config.disks.enumerated() {
            do {
                // One queue per vCPU (up to the device's limit), all sharing one backend.
                let queues = min(config.vcpuCount, VirtioBlock.maximumQueues)
                made.append((disk.id(index: i), "virtio-blk \(disk.path)" + (disk.readOnly ? " (read-only)" : ""),
                             try VirtioBlock(path: disk.path, readOnly: disk.readOnly, serial: disk.serial, direct: disk.direct, queues: queues,
                                             rateLimit: RateLimit(bytesPerSecond: disk.bytesPerSecond, operationsPerSecond: disk.operationsPerSecond),
                                             memory: memory, backend: BlockBackends.make(queueDepth: 256 * queues))))
            } catch { throw .device(error.description) }
        }
        for (i, net) in config.nets.enumerated() {
            do {
                let tap = try TapDevice.open(name: net.interfaceName(index: i, vm: config.name))
                let mac = net.address(index: i, vm: config.name)
                made.append((net.id(index: i), "virtio-net \(tap.name) \(mac)",
                             try VirtioNet(backend: tap, mac: mac, receiveLimit: net.receive, transmitLimit: net.transmit)))
            } catch let e as TapDevice.Failure {
                throw .device(e.description)
            } catch let e as VirtioNet.Failure {
                throw .device(e.description)
            } catch {
                throw .device("virtio-net: \(error)")
            }
        }
        if let v = config.vsock {
            do { made.append(("vsock", "virtio-vsock cid \(v.cid) \(v.socketPath)", try VirtioVsock(guestCID: v.cid, socketPath: v.socketPath))) }
            catch { throw .device(error.description) }
        }
        if config.rng {
            do { made.append(("rng", "virtio-rng", try VirtioRNG(bytesPerSecond: config.rngBytesPerSecond))) } catch { throw .device(error.description) }
        }
        if config.virtioConsole { made.append(("hvc0", "virtio-console", VirtioConsole(output: console))) }
        guard !made.isEmpty else { return [] }
        do {
            switch config.virtioTransport {
            case .mmio: return try made.map { m throws(any Error) in try addMMIO(m, vm: vm, memory: memory, devices: devices) }
            case .pci:
                let bridge = PCIHostBridge()
                typealias R = PCIHostBridge.Region
                try devices.add(bridge, id: "pci-host", name: "PCI host bridge", ranges: [
                    .ports(AddressMap.pciConfigAddress, 4, region: R.address.rawValue, name: "PCI config address"),
                    .ports(AddressMap.pciConfigData, 4, region: R.data.rawValue, name: "PCI config data"),
                    .init(.mmio, AddressMap.pciECAM, PCIHostBridge.ecamSize, region: R.ecam.rawValue, name: "PCI ECAM")])
                let routing = InterruptRouting(vm: vm)
                return try made.map { m throws(any Error) in
                    try addPCI(m, bridge: bridge, routing: routing, vm: vm, memory: memory, devices: devices)
                }
            }
        } catch let e as KVMError {
            throw .kvm(e)
        } catch let e as DeviceManager.Failure {
            throw .device(e.description)
        } catch let e as MachineError {
            throw e
        } catch {
            throw .device("virtio: \(error)")
        }
    }

    static func addMMIO(_ m: (id: String, name: String, device: any VirtioDevice), vm: VMFileDescriptor, memory: GuestMemory,
                        devices: DeviceManager) throws(any Error) -> VirtioEndpoint {
        let base = try devices.allocateMMIO(size: VirtioMMIO.windowSize)
        let irq = try devices.allocateIRQ()
        let transport = VirtioMMIO(device: m.device, memory: memory, interrupt: try IRQFDInterrupt(vm: vm, gsi: irq))
        try devices.add(transport, id: m.id, name: m.name, ranges: [.init(.mmio, base, VirtioMMIO.windowSize)], interrupts: [irq])
        return try VirtioEndpoint(id: m.id, transport: transport, vm: vm, notifyAt: [(base + VirtioMMIO.queueNotifyOffset, 4)],
                                  mmio: .init(base: base, size: VirtioMMIO.windowSize, irq: irq))
    }

    static func addPCI(_ m: (id: String, name: String, device: any VirtioDevice), bridge: PCIHostBridge, routing: InterruptRouting,
                       vm: VMFileDescriptor, memory: GuestMemory, devices: DeviceManager) throws(any Error) -> VirtioEndpoint {
        let size = UInt64(VirtioPCI.barSize)
        let bar = try devices.allocateMMIO(size: size, alignment: size)
        // INTx is level-triggered: a KVM_IRQ_LINE pin, raised and lowered with the ISR.
        let gsi = try devices.allocateIRQ()
        let transport = VirtioPCI(device: m.device, memory: memory, bar: UInt32(truncatingIfNeeded: bar),
                                  intx: IRQLine(vm: vm, gsi: gsi), intxLine: UInt8(truncatingIfNeeded: gsi),
                                  vectors: MSIXRoutes(vm: vm, routing: routing))
        try devices.add(transport, id: m.id, name: m.name, ranges: [.init(.mmio, bar, size, name: m.name + " BAR0")], interrupts: [gsi])
        guard let slot = bridge.plug(transport) else { throw MachineError.device("\(m.name): no free PCI slot") }
        // Linux notifies with a 16-bit write of the queue index.
        let notify = (0..<transport.queueCount).map { (bar + VirtioPCI.notifyOffset + UInt64($0) * VirtioPCI.notifyMultiplier, UInt32(2)) }
        let endpoint = try VirtioEndpoint(id: m.id, transport: transport, vm: vm, notifyAt: notify, pci: (slot, gsi))
        let id = m.id
        transport.onBARMove { [weak endpoint] newBase in
            guard let endpoint, let old = devices.entries.first(where: { $0.id == id })?.ranges.first?.start else { return false }
            do { try devices.move(id: id, region: 0, to: newBase) } catch { return false }
            guard endpoint.moveNotifications(from: old, to: newBase) else {
                try? devices.move(id: id, region: 0, to: old)
                return false
            }
            return true
        }
        return endpoint
    }

    /// Guest RAM, anonymous or (`snapshotFD`) a snapshot's memory file mapped
    /// copy-on-write, in KVM's memory slots.
    static func mapMemory(_ config: MachineConfig, kvm: KVMSystem, vm: VMFileDescriptor, snapshotFD: Int32? = nil) throws(MachineError) -> GuestMemory {
        let memory: GuestMemory
        let ranges = AddressMap.ramRanges(memorySize: config.memorySize)
        do {
            if let snapshotFD { memory = try GuestMemory(ranges: ranges, privateFile: snapshotFD) }
            else { memory = try GuestMemory(ranges: ranges, options: config.memoryOptions) }
        } catch { throw .memory(error) }
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
    /// binaries run without: their devices interrupt nobody). `irq` makes a GSI's line;
    /// public so the device-bus fuzz target drives exactly the machine's set of devices.
    public static func wireDevices(_ config: MachineConfig, platform: Bool, memory: GuestMemory, power: any PowerControl,
                                   console: any SerialOutput,
                                   irq: (UInt32) -> (any InterruptSource)?) throws(DeviceManager.Failure) -> DeviceManager {
        let devices = DeviceManager(mmioWindow: (AddressMap.deviceMMIOStart, AddressMap.deviceMMIOEnd),
                                    irqs: platform ? AddressMap.allocatableIRQs : [])
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
            let lines: [any InterruptSource] = platform ? (0..<UInt32(PCTestDevice.irqCount)).compactMap { irq($0) } : []
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
    /// Whether a Linux command line turns ACPI off (`acpi=off`; the last one counts).
    static func disablesACPI(_ commandLine: String) -> Bool {
        let values = commandLine.split(separator: " ").filter { $0.hasPrefix("acpi=") }
        return values.last == "acpi=off"
    }

    case flat(FlatBinary)
    case multiboot(Multiboot, commandLine: String, module: (bytes: [UInt8], name: String)?)
    case linux(LinuxKernel, commandLine: String, initrd: [UInt8]?)


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

    func load(into memory: GuestMemory, config: MachineConfig, virtio: [VirtioEndpoint] = []) throws(MachineError) -> InitialCPUState {
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
                // virtio-mmio windows are announced once: in the DSDT, or on the command
                // line for a kernel told to ignore ACPI.
                var acpi = ACPIDevices()
                if BootImage.disablesACPI(commandLine) {
                    for a in virtio.compactMap(\.commandLineAnnouncement) { commandLine += (commandLine.isEmpty ? "" : " ") + a }
                } else {
                    acpi.virtioMMIO = virtio.compactMap(\.mmio)
                }
                var reserved: [(start: UInt64, size: UInt64)] = []
                let slots = virtio.compactMap(\.pci)
                if !slots.isEmpty {
                    acpi.pci = .init(ecam: AddressMap.pciECAM, ecamSize: PCIHostBridge.ecamSize,
                                     memoryWindow: AddressMap.deviceMMIOStart...(AddressMap.deviceMMIOEnd - 1),
                                     interrupts: slots.map { ($0.slot, $0.gsi) })
                    reserved.append((AddressMap.pciECAM, PCIHostBridge.ecamSize))
                }
                let rsdp = try ACPITables.write(into: memory, cpus: config.vcpuCount, devices: acpi)
                let map = PlatformMemoryMap.entries(ramRanges: AddressMap.ramRanges(memorySize: config.memorySize), reserved: reserved)
                if config.pvh { return try kernel.loadPVH(into: memory, commandLine: commandLine, initrd: initrd, memoryMap: map, rsdp: rsdp) }
                return try kernel.load(into: memory, commandLine: commandLine, initrd: initrd, memoryMap: map, rsdp: rsdp)
            }
        } catch { throw .boot(error) }
    }
}
