import ArgumentParser
import Boot
import VMM

/// `swiftvisor run`: boots a guest and stays attached to its serial console.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Boot a virtual machine and attach to its serial console.",
        discussion: """
            With no --image, boots the built-in demo guest: it starts in 16-bit real mode, \
            switches itself to long mode, computes a checksum in ring 3 and exits, and \
            Swiftvisor then prints which of its operations trapped to the VMM and why.

            --image FILE loads a flat binary (raw machine code, no header) at --load-address \
            and starts it at --entry in the --mode you name: Swiftvisor builds the GDT and \
            identity page tables for protected and long mode. The guest's COM1 (0x3F8) is \
            your terminal; writing a byte to port 0x501 ends the VM with that exit code.

            Examples:
              swiftvisor run
              swiftvisor run --image boot.bin --mode real
              swiftvisor run --image kernel64.bin --mode long --memory 256M --stats
              swiftvisor run --image test.bin --json | jq .exitCode
            """
    )

    @Option(name: .long, help: ArgumentHelp("A flat binary to boot instead of the demo guest.", valueName: "file"))
    var image: String?

    @Option(name: .long, help: ArgumentHelp("The mode the flat binary starts in: real, protected or long (default: long).", valueName: "mode"))
    var mode: CPUMode?

    @Option(name: .long, help: ArgumentHelp("Where the image goes in guest memory (default 0x7c00 in real mode, 0x100000 otherwise).", valueName: "address"),
            transform: RunCommand.address)
    var loadAddress: UInt64?

    @Option(name: .long, help: ArgumentHelp("Where execution starts (default: the load address).", valueName: "address"),
            transform: RunCommand.address)
    var entry: UInt64?

    @Option(name: .long, help: ArgumentHelp("A kernel to boot: a Multiboot image (e.g. a kvm-unit-tests .flat file).", valueName: "file"))
    var kernel: String?

    @Option(name: .long, help: ArgumentHelp("The kernel's command line.", valueName: "text"))
    var cmdline: String?

    @Option(name: .long, help: ArgumentHelp("An initial RAM disk: a Multiboot kernel's module.", valueName: "file"))
    var initrd: String?

    @Flag(name: .long, help: "Add the devices QEMU offers test suites: isa-debug-exit (0xf4), pc-testdev, fw_cfg.")
    var testDevices = false

    @Flag(name: .long, help: "Leave out the i8254 timer (PIT) that kernels otherwise get.")
    var noPit = false

    @Option(name: .long, help: ArgumentHelp("Stop a guest still running after this many seconds (exit code 124).", valueName: "seconds"))
    var timeout: Double?

    @Option(name: .long, help: ArgumentHelp("Guest RAM, e.g. 64M or 2G.", valueName: "size"), transform: RunCommand.size)
    var memory: UInt64 = MachineConfig.defaultMemorySize

    @Option(name: .long, help: "Number of vCPUs (each starts at the entry point with its index in RDI).")
    var cpus: Int = 1

    @Flag(name: .long, help: "Print what trapped to the VMM and where the time went, after the guest stops.")
    var stats = false

    @Flag(name: .long, help: "Print the run report as JSON on stdout (the guest console then goes to stderr).")
    var json = false

    @Option(name: .long, help: ArgumentHelp("The KVM device to use.", valueName: "path", visibility: .hidden))
    var kvmDevice: String = "/dev/kvm"

    static func address(_ text: String) throws -> UInt64 {
        guard let v = RunOptions.parseAddress(text) else {
            throw ValidationError("'\(text)' is not an address (use 0x7c00 or 31744)")
        }
        return v
    }

    static func size(_ text: String) throws -> UInt64 {
        guard let v = ByteSize.parse(text) else { throw ValidationError("'\(text)' is not a size (use 64M, 1G or a byte count)") }
        return v
    }

    func options() throws -> RunOptions {
        if image == nil, mode != nil || loadAddress != nil || entry != nil {
            throw ValidationError("--mode, --load-address and --entry need --image")
        }
        if kernel == nil, cmdline != nil || initrd != nil {
            throw ValidationError("--cmdline and --initrd need --kernel")
        }
        if kernel != nil, image != nil { throw ValidationError("--kernel excludes --image") }
        if let timeout, !(timeout > 0) || !timeout.isFinite { throw ValidationError("--timeout must be a positive number of seconds") }
        let boot: BootSource
        if let kernel {
            boot = .kernel(path: kernel, commandLine: cmdline ?? "", initrd: initrd)
        } else {
            boot = image.map { .flat(path: $0, mode: mode ?? .long, loadAddress: loadAddress, entry: entry) } ?? .demo
        }
        let config = MachineConfig(memorySize: memory, vcpuCount: cpus, boot: boot, kvmPath: kvmDevice, testDevices: testDevices, pit: !noPit)
        do { try config.validate() } catch { throw ValidationError(error.description) }
        return RunOptions(config: config, stats: stats, json: json, timeoutSeconds: timeout)
    }

    /// The options of `swiftvisor run ARGS` when the VMM's parser reads `ARGS` as they
    /// are and they pass validation; nil whenever ArgumentParser should handle them.
    static func fastPath(_ arguments: [String]) -> RunOptions? {
        guard arguments.first == "run" else { return nil }
        let rest = Array(arguments.dropFirst())
        guard !rest.contains(where: { $0 == "-h" || $0 == "--help" || $0 == "help" || $0 == "--demo" }),
              let options = try? RunOptions(arguments: rest),
              (try? options.config.validate()) != nil else { return nil }
        return options
    }

    func run() throws {
        let options = try options()
        // The VM itself runs in swiftvisor-vmm, which replaces this process: it keeps
        // our pid, terminal and signals, and its exit status is ours.
        try VMMProcess.exec(arguments: options.arguments, json: json)
    }
}

extension CPUMode: ExpressibleByArgument {}
