import ArgumentParser
import Boot
import Control
import Glibc
import KernelImage
import HostCheck
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
            your terminal (raw mode: keys go to the guest; Ctrl-A x quits); writing a byte to \
            port 0x501 ends the VM with that exit code.

            --detach starts the VM in the background as a named VM (--name, or a generated \
            one) and returns once it runs; `swiftvisor ls`, `inspect`, `pause`, `resume`, \
            `stop`, `kill`, `wait`, `logs`, `console` and `rm` then manage it. --config \
            FILE reads the VM's description (the control API's JSON schema); flags override it.

            Examples:
              swiftvisor run
              swiftvisor run --image boot.bin --mode real
              swiftvisor run --image kernel64.bin --mode long --memory 256M --stats
              swiftvisor run --image test.bin --json | jq .exitCode
              swiftvisor run --detach --name web --config web.json
            """
    )

    @Option(name: .long, help: ArgumentHelp("A flat binary to boot instead of the demo guest.", valueName: "file"))
    var image: String?

    @Option(name: .long, help: ArgumentHelp("Read the VM's description from this JSON file (schema in the README); flags override it.", valueName: "file"))
    var config: String?

    @Flag(name: .long, help: "Run in the background as a named VM; print its name once it runs.")
    var detach = false

    @Option(name: .long, help: ArgumentHelp("Name the VM (letters, digits, '-', '_', '.'), so the lifecycle verbs can reach it.", valueName: "name"))
    var name: String?

    @Option(name: .long, help: ArgumentHelp("Where named VMs live.", valueName: "dir"))
    var stateDir: String?

    @Option(name: .long, help: ArgumentHelp("The mode the flat binary starts in: real, protected or long (default: long).", valueName: "mode"))
    var mode: CPUMode?

    @Option(name: .long, help: ArgumentHelp("Where the image goes in guest memory (default 0x7c00 in real mode, 0x100000 otherwise).", valueName: "address"),
            transform: RunCommand.address)
    var loadAddress: UInt64?

    @Option(name: .long, help: ArgumentHelp("Where execution starts (default: the load address).", valueName: "address"),
            transform: RunCommand.address)
    var entry: UInt64?

    @Option(name: .long, help: ArgumentHelp("A kernel to boot: a Linux bzImage or vmlinux, or a Multiboot image (e.g. a kvm-unit-tests .flat file).", valueName: "file"))
    var kernel: String?

    @Option(name: .long, help: ArgumentHelp("The kernel's System.map (or an unstripped vmlinux), to name the kernel function in failure reports. Default: the kernel's own symbol table, or System.map-VERSION beside vmlinuz-VERSION.", valueName: "file"))
    var systemMap: String?

    @Option(name: .long, help: ArgumentHelp("The kernel's command line.", valueName: "text"))
    var cmdline: String?

    @Option(name: .long, help: ArgumentHelp("An initial RAM disk: a Multiboot kernel's module.", valueName: "file"))
    var initrd: String?

    @Flag(name: .long, help: "Add the devices QEMU offers test suites: isa-debug-exit (0xf4), pc-testdev, fw_cfg.")
    var testDevices = false

    enum Quirks: String, ExpressibleByArgument, CaseIterable { case auto, on, off }

    @Option(name: .long, help: ArgumentHelp("Work-arounds for hosts whose KVM emulates guest kernel mode (see `swiftvisor doctor`): auto turns them on for kernels (Linux and Multiboot) where the probe finds such a host; flat binaries get them only with on.", valueName: "auto|on|off"))
    var quirks: Quirks = .auto

    enum OnReboot: String, ExpressibleByArgument, CaseIterable { case exit, restart }

    @Option(name: .long, help: ArgumentHelp("What a guest reboot (i8042 reset, ACPI reset) does: end the VM (exit code 0) or start the guest again.", valueName: "exit|restart"))
    var onReboot: OnReboot = .exit

    @Flag(name: .long, help: "Boot a vmlinux through its PVH entry (32-bit, hvm_start_info) instead of the 64-bit boot protocol.")
    var pvh = false

    @Flag(name: .long, help: "List the host quirks in use before the VM starts.")
    var verbose = false

    @Flag(name: .long, help: "Leave out the i8254 timer (PIT) that kernels otherwise get.")
    var noPit = false

    @Option(name: .long, help: ArgumentHelp("Stop a guest still running after this many seconds (exit code 124).", valueName: "seconds"))
    var timeout: Double?

    @Option(name: .long, help: ArgumentHelp("Guest RAM, e.g. 64M or 2G.", valueName: "size"), transform: RunCommand.size)
    var memory: UInt64?

    @Option(name: .long, help: "Number of vCPUs (for flat binaries each starts at the entry point with its index in RDI; kernels start the others with INIT/SIPI).")
    var cpus: Int?

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
        // A config file first, then the flags on top of it.
        var base = RunOptions(config: MachineConfig())
        var fileName: String? = nil
        if let config {
            let text: String
            do { text = String(decoding: try ImageFile.read(config), as: UTF8.self) }
            catch { throw ValidationError(error.description) }
            do {
                let d = try VMDescription.parse(try JSONValue.parse(text))
                base = d.options
                fileName = d.name
            } catch let e as JSONValue.ParseError {
                throw ValidationError("\(config): \(e.description)")
            } catch {
                throw ValidationError("\(config): \(error)")
            }
        }
        if image == nil, mode != nil || loadAddress != nil || entry != nil {
            throw ValidationError("--mode, --load-address and --entry need --image")
        }
        if kernel == nil, cmdline != nil || initrd != nil {
            throw ValidationError("--cmdline and --initrd need --kernel")
        }
        if kernel != nil, image != nil { throw ValidationError("--kernel excludes --image") }
        if let timeout, !(timeout > 0) || !timeout.isFinite { throw ValidationError("--timeout must be a positive number of seconds") }
        var options = base
        if let kernel {
            let (path, linux) = try RunCommand.bootable(kernel, verbose: verbose)
            options.config.boot = .kernel(path: path, commandLine: cmdline ?? "", initrd: initrd)
            options.config.symbolFile = systemMap ?? RunCommand.systemMap(besides: kernel)
            options.config.hostQuirks = quirks == .on || (quirks == .auto &&
                HostProbe.cachedClass(devicePath: kvmDevice, cacheDirectory: KernelCache.standard().directory + "/..") == .emulatedKernelMode)
            if verbose {
                let q = HostQuirks.emulatedKernelMode
                let commandLine = linux ? "kernel command line += \(q.kernelCommandLine.joined(separator: " ")); " : ""
                StandardStream.error(options.config.hostQuirks
                    ? "swiftvisor: host quirks on: \(commandLine)completed by the VMM: \(q.emulatedInstructions.joined(separator: ", "))\n"
                    : "swiftvisor: host quirks off\n")
            }
        } else {
            if let image { options.config.boot = .flat(path: image, mode: mode ?? .long, loadAddress: loadAddress, entry: entry) }
            options.config.hostQuirks = quirks == .on
        }
        if let memory { options.config.memorySize = memory }
        if let cpus { options.config.vcpuCount = cpus }
        if kvmDevice != "/dev/kvm" { options.config.kvmPath = kvmDevice }
        if testDevices { options.config.testDevices = true }
        if noPit { options.config.pit = false }
        if let timeout { options.timeoutSeconds = timeout }
        options.stats = stats
        options.json = json
        options.restartOnReboot = onReboot == .restart
        if pvh { options.config.pvh = true }
        options.name = name ?? fileName
        do { try options.config.validate() } catch { throw ValidationError(error.description) }
        return options
    }

    /// The file to hand the VMM for `kernel` (a bzImage's kernel decompressed on the
    /// host and cached, anything else as it is), and whether it is Linux.
    static func bootable(_ kernel: String, verbose: Bool = false) throws -> (path: String, linux: Bool) {
        do {
            let started = monotonicNanoseconds()
            switch try KernelCache.standard().prepare(kernel) {
            case let .unchanged(linux): return (kernel, linux)
            case let .extracted(path, cached, format):
                if verbose {
                    let ms = Double(monotonicNanoseconds() - started) / 1e6
                    StandardStream.error("swiftvisor: kernel: the bzImage's \(format.rawValue) payload, "
                        + (cached ? "already decompressed" : "decompressed now") + " (\(Int(ms.rounded())) ms): \(path)\n")
                }
                return (path, true)
            }
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// `System.map-VERSION` beside `vmlinuz-VERSION`, as distributions install them,
    /// when it is a real map (Debian's package ships a one-line placeholder; the real one
    /// is in `linux-image-*-dbg`).
    static func systemMap(besides kernel: String) -> String? {
        let slash = kernel.lastIndex(of: "/")
        let directory = slash.map { String(kernel[...$0]) } ?? ""
        let file = slash.map { String(kernel[kernel.index(after: $0)...]) } ?? kernel
        guard file.hasPrefix("vmlinuz-") || file.hasPrefix("vmlinux-") else { return nil }
        let map = directory + "System.map-" + file.dropFirst("vmlinuz-".count)
        var st = stat()
        guard stat(map, &st) == 0, st.st_size > 4096 else { return nil }
        return map
    }

    /// `vm-` and six hex digits: short enough to type, unlikely to clash.
    static func generatedName() -> String {
        "vm-" + String(UInt32.random(in: 0x10_0000...0xFF_FFFF), radix: 16)
    }

    /// The options of `swiftvisor run ARGS` when the VMM's parser reads `ARGS` as they
    /// are and they pass validation; nil whenever ArgumentParser should handle them.
    static func fastPath(_ arguments: [String]) -> RunOptions? {
        guard arguments.first == "run" else { return nil }
        let rest = Array(arguments.dropFirst())
        // Named and detached VMs need the state directory set up here first.
        // Kernels may need host-side decompression first.
        let cliOnly: Set<String> = ["-h", "--help", "help", "--demo", "--name", "--state-dir", "--detached", "--detach", "--config", "--kernel"]
        guard !rest.contains(where: { cliOnly.contains($0) }),
              let options = try? RunOptions(arguments: rest),
              (try? options.config.validate()) != nil else { return nil }
        return options
    }

    func run() throws {
        var options = try options()
        guard detach || options.name != nil else {
            // The VM itself runs in swiftvisor-vmm, which replaces this process: it keeps
            // our pid, terminal and signals, and its exit status is ours.
            try VMMProcess.exec(arguments: options.arguments, json: json)
        }
        // A named VM: register it in the state directory first, so the name is ours.
        let directory = StateDirectory.resolve(stateDir)
        let vmName = options.name ?? RunCommand.generatedName()
        try verb(json) {
            do {
                try directory.create(vmName)
                try directory.write(VMDescription(name: vmName, options: options).json.rendered + "\n", to: vmName, "config.json")
                try directory.write("\(time(nil))\n", to: vmName, "started")
            } catch let e as StateDirectory.Failure { throw CLIFailure.from(e) }
        }
        options.name = vmName
        options.stateDirectory = directory.root
        guard detach else { try VMMProcess.exec(arguments: options.arguments, json: json) }

        options.detached = true
        options.stats = false
        options.json = false
        try verb(json) {
            let pid: pid_t
            do { pid = try VMMLauncher.spawnDetached(executable: VMMProcess.path(), arguments: options.arguments, logPath: directory.path(vmName, "vmm.log")) }
            catch { throw CLIFailure(message: "\(error)", code: ProcessExitCode.vmmFailure) }
            // Return once it runs: its API answers, or it has already ended.
            for _ in 0..<400 {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    let s = try? VMStatus.read(vmName, in: directory)
                    if let error = s?.result?["error"]?.string {
                        throw CLIFailure(message: error, code: s?.exitCode ?? ProcessExitCode.vmmFailure)
                    }
                    break // it ran and already finished: still a success to start it
                }
                if let s = try? VMStatus.read(vmName, in: directory), s.live != nil { break }
                usleep(25_000)
            }
            StandardStream.output(vmName + "\n")
        }
    }
}

extension CPUMode: ExpressibleByArgument {}
