import ArgumentParser
import Boot
import Control
import Devices
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

    @OptionGroup var flags: VMFlags

    static func address(_ text: String) throws -> UInt64 {
        guard let v = AddressValue.parse(text) else {
            throw ValidationError("'\(text)' is not an address (use 0x7c00 or 31744)")
        }
        return v
    }

    static func size(_ text: String) throws -> UInt64 {
        guard let v = ByteSize.parse(text) else { throw ValidationError("'\(text)' is not a size (use 64M, 1G or a byte count)") }
        return v
    }

    /// ArgumentParser has checked the command line (and answered --help); what the
    /// flags mean is `RunFlags`, for this path and the fast path alike.
    func run() throws {
        try verb(flags.json) {
            let settings = try RunFlags.parse(RunCommand.words(after: "run"))
            if let extra = settings.positionals.first { throw RunFlags.Failure("unexpected argument '\(extra)'") }
            try RunCommand.launch(settings, create: false)
        }
    }

    /// The words of this process's command line after the subcommand `name`.
    static func words(after name: String) -> [String] {
        let all = Array(CommandLine.arguments.dropFirst())
        guard let i = all.firstIndex(of: name) else { return [] }
        return Array(all[(i + 1)...])
    }

    /// The description a command line gives: its config file, then its flags.
    static func describe(_ s: RunSettings) throws(RunFlags.Failure) -> VMDescription {
        var base = VMDescription()
        if let file = s.configFile {
            let bytes: [UInt8]
            do { bytes = try FileContents.read(file, limit: 1 << 20) }
            catch { throw RunFlags.Failure(error.description, code: ProcessExitCode.forError(error)) }
            do { base = try VMDescription.parse(String(decoding: bytes, as: UTF8.self)) }
            catch { throw RunFlags.Failure("\(file): \(error.description)") }
        }
        // Whether the kernel is Linux is learnt while preparing it (for the quirks line).
        var linux = false
        let d = try s.description(base: base, prepareKernel: { k throws(RunFlags.Failure) in
            let prepared = try bootable(k, verbose: s.verbose)
            linux = prepared.linux
            return prepared
        }, quirksHere: {
            HostProbe.cachedClass(devicePath: s.kvmDevice ?? "/dev/kvm", cacheDirectory: KernelCache.standard().directory + "/..") == .emulatedKernelMode
        })
        if s.verbose {
            let q = HostQuirks.emulatedKernelMode
            let commandLine = linux ? "kernel command line += \(q.kernelCommandLine.joined(separator: " ")); " : ""
            StandardStream.error(d.config.hostQuirks
                ? "swiftvisor: host quirks on: \(commandLine)completed by the VMM: \(q.emulatedInstructions.joined(separator: ", "))\n"
                : "swiftvisor: host quirks off\n")
        }
        return d
    }

    /// Runs (or, for `create`, only creates) the VM the settings describe. Called inside
    /// `verb`, which reports a `RunFlags.Failure` as one line with its exit code.
    static func launch(_ s: RunSettings, create: Bool) throws {
        try launch(try describe(s), stateDir: s.stateDir, detach: s.detach, create: create, stats: s.stats, json: s.json, verbose: s.verbose)
    }

    /// Runs (or creates) the VM `d` describes: in this process's place when it is
    /// unnamed and in the foreground, otherwise registered in the state directory.
    /// `restore`: a snapshot its first boot brings back instead (`swiftvisor restore`).
    static func launch(_ d: VMDescription, stateDir: String?, detach: Bool, create: Bool, stats: Bool, json: Bool, verbose: Bool,
                       restore: String? = nil) throws {
        var d = d
        guard create || detach || d.name != nil else {
            // The VM itself runs in the VMM process (`swiftvisor --config-fd`), which replaces this process: it keeps
            // our pid, terminal and signals, and its exit status is ours.
            try VMMProcess.exec(VMMLaunch(vm: d, stats: stats, json: json, verbose: verbose, restore: restore))
        }
        // A named VM: register it in the state directory first, so the name is ours.
        let directory = StateDirectory.resolve(stateDir)
        let vmName = d.name ?? RunCommand.generatedName()
        d.name = vmName
        let detached = detach || create
        let launch = VMMLaunch(vm: d, stateDirectory: directory.root, detached: detached, start: !create,
                               stats: detached ? false : stats, json: detached ? false : json, verbose: verbose, restore: restore)
        try verb(json) {
            do {
                try directory.create(vmName)
                try directory.write(d.json.rendered + "\n", to: vmName, "config.json")
                try directory.write(launch.jsonValue.rendered + "\n", to: vmName, "vmm.json")
                try directory.write("\(time(nil))\n", to: vmName, "started")
            } catch let e as StateDirectory.Failure { throw CLIFailure.from(e) }
        }
        let arguments = ["--config", directory.path(vmName, "vmm.json")]
        guard detached else { try VMMProcess.exec(arguments: arguments, json: json) }

        try verb(json) {
            let pid: pid_t
            do { pid = try VMMLauncher.spawnDetached(executable: Companion.vmm.path, arguments: arguments, logPath: directory.path(vmName, "vmm.log")) }
            catch { throw CLIFailure(message: "\(error)", code: ProcessExitCode.vmmFailure) }
            // Return once its API answers, or it has already ended.
            for attempt in 0..<500 {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    let st = try? VMStatus.read(vmName, in: directory)
                    if let error = st?.result?["error"]?.string {
                        throw CLIFailure(message: error, code: st?.exitCode ?? ProcessExitCode.vmmFailure)
                    }
                    break // it ran and already finished: still a success to start it
                }
                if let st = try? VMStatus.read(vmName, in: directory), st.live != nil { break }
                // A VMM answers within a few milliseconds: look again soon, then less often.
                usleep(UInt32(min(1_000 << min(attempt, 5), 25_000)))
            }
            StandardStream.output(vmName + "\n")
        }
    }

    /// The file to hand the VMM for `kernel` (a bzImage's kernel decompressed on the
    /// host and cached, anything else as it is), and whether it is Linux.
    static func bootable(_ kernel: String, verbose: Bool = false) throws(RunFlags.Failure) -> (path: String, linux: Bool) {
        // A missing or unreadable kernel is the likeliest mistake: say so plainly.
        do { _ = try FileContents.read(kernel, limit: 1) } catch { throw RunFlags.Failure(error.description, code: ProcessExitCode.forError(error)) }
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
            throw RunFlags.Failure(error.description, code: ProcessExitCode.badImage)
        }
    }

    /// `vm-` and six hex digits: short enough to type, unlikely to clash.
    static func generatedName() -> String {
        "vm-" + String(UInt32.random(in: 0x10_0000...0xFF_FFFF), radix: 16)
    }
}

extension CPUMode: ExpressibleByArgument {}
extension VirtioTransportKind: ExpressibleByArgument {}
extension SeccompMode: ExpressibleByArgument {}

/// The options of `run` and `create`, as ArgumentParser shows and checks them. What
/// they mean is `RunFlags`, the one table the fast path reads too (a test keeps the two
/// lists equal). Options that take a value take the next word unconditionally, so
/// `--cmdline '-pause_filter_test'` is a command line, not an unknown option.
struct VMFlags: ParsableArguments {
    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("A flat binary to boot instead of the demo guest.", valueName: "file"))
    var image: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Read the VM's description from this JSON file (schema in the README); flags override it.", valueName: "file"))
    var config: String?

    @Flag(name: .long, help: "Run in the background as a named VM; print its name once it runs.")
    var detach = false

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Name the VM (letters, digits, '-', '_', '.'), so the lifecycle verbs can reach it.", valueName: "name"))
    var name: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Where named VMs live.", valueName: "dir"))
    var stateDir: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("The mode the flat binary starts in: real, protected or long (default: long).", valueName: "mode"))
    var mode: CPUMode?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Where the image goes in guest memory (default 0x7c00 in real mode, 0x100000 otherwise).", valueName: "address"),
            transform: RunCommand.address)
    var loadAddress: UInt64?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Where execution starts (default: the load address).", valueName: "address"),
            transform: RunCommand.address)
    var entry: UInt64?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("A kernel to boot: a Linux bzImage or vmlinux, or a Multiboot image (e.g. a kvm-unit-tests .flat file).", valueName: "file"))
    var kernel: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("The kernel's System.map (or an unstripped vmlinux), to name the kernel function in failure reports. Default: the kernel's own symbol table, or System.map-VERSION beside vmlinuz-VERSION.", valueName: "file"))
    var systemMap: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("The kernel's command line.", valueName: "text"))
    var cmdline: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("An initial RAM disk: a Multiboot kernel's module.", valueName: "file"))
    var initrd: String?

    @Flag(name: .long, help: "Add the devices QEMU offers test suites: isa-debug-exit (0xf4), pc-testdev, fw_cfg.")
    var testDevices = false

    enum Quirks: String, ExpressibleByArgument, CaseIterable { case auto, on, off }

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Work-arounds for hosts whose KVM emulates guest kernel mode (see `swiftvisor doctor`): auto turns them on for kernels (Linux and Multiboot) where the probe finds such a host; flat binaries get them only with on.", valueName: "auto|on|off"))
    var quirks: Quirks = .auto

    enum OnReboot: String, ExpressibleByArgument, CaseIterable { case exit, restart }

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("What a guest reboot (i8042 reset, ACPI reset) does: end the VM (exit code 0) or start the guest again.", valueName: "exit|restart"))
    var onReboot: OnReboot = .exit

    @Flag(name: .long, help: "Boot a vmlinux through its PVH entry (32-bit, hvm_start_info) instead of the 64-bit boot protocol.")
    var pvh = false

    @Option(name: .long, parsing: .unconditionalSingleValue, help: ArgumentHelp("A virtio-blk disk: a raw image or block device, PATH[,readonly][,id=NAME][,serial=S][,direct][,cache=none|writeback][,bw=SIZE][,iops=N] (direct and cache=none open it with O_DIRECT; bw and iops limit bytes and requests a second); repeat for more (the first is /dev/vda). Kernels only.", valueName: "disk"))
    var disk: [String] = []

    @Option(name: .long, parsing: .unconditionalSingleValue, help: ArgumentHelp("A virtio-net device over a TAP interface: tap=NAME|auto[,mac=MAC][,id=NAME][,bw=SIZE][,pps=N][,rx-bw=SIZE][,rx-pps=N][,tx-bw=SIZE][,tx-pps=N]. NAME is an existing TAP (made, and brought up, if it does not exist and the VMM may: CAP_NET_ADMIN); auto makes one named after the VM. The MAC defaults to one derived from the VM's name (random for an unnamed VM). bw and pps limit bytes and frames a second each way, rx- and tx- one direction. Repeat for more (the first is eth0). Kernels only.", valueName: "net"))
    var net: [String] = []

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("A virtio-vsock device: cid=N,socket=PATH. N is the guest's context id (3 or more). Host programs connect to the Unix socket PATH and write `CONNECT PORT\\n` to reach the guest's port PORT (answered `OK HOSTPORT\\n`); the guest's connections to host port P (CID 2) reach the Unix socket PATH_P (Firecracker's convention). Kernels only.", valueName: "vsock"))
    var vsock: String?

    @Flag(name: .long, help: "Add a virtio-rng entropy device (from the host's /dev/urandom). Kernels only.")
    var rng = false

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("At most this many bytes a second from the entropy device (a token bucket): a guest draining the host's entropy is slowed down.", valueName: "size"))
    var rngLimit: String?

    @Flag(name: .long, help: "Add a virtio console (the guest's hvc0: boot Linux with console=hvc0): its output goes where the 8250's does, and it takes the console's input. Kernels only.")
    var virtioConsole = false

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("How virtio devices reach the guest: PCI functions (the default: stock distribution kernels find them) or virtio-mmio windows (announced in the ACPI DSDT, or on the kernel command line with acpi=off).", valueName: "pci|mmio"))
    var virtioTransport: VirtioTransportKind?

    @Flag(name: .long, help: "List the host quirks in use before the VM starts.")
    var verbose = false

    @Flag(name: .long, help: "Leave out the i8254 timer (PIT) that kernels otherwise get.")
    var noPit = false

    @Flag(name: .long, help: "Back guest RAM with the host's reserved 2 MiB huge pages (/proc/sys/vm/nr_hugepages); without enough of them, ordinary pages that transparent huge pages may merge, with a warning.")
    var hugepages = false

    @Flag(name: .long, help: "Let the kernel's KSM merge identical guest pages across VMs (less memory for many VMs of one image; costs ksmd's scanning and opens a timing side channel between them).")
    var mergeable = false

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Stop a guest still running after this many seconds (exit code 124).", valueName: "seconds"))
    var timeout: Double?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Guest RAM, e.g. 64M or 2G.", valueName: "size"), transform: RunCommand.size)
    var memory: UInt64?

    @Option(name: .long, parsing: .unconditional, help: "Number of vCPUs (for flat binaries each starts at the entry point with its index in RDI; kernels start the others with INIT/SIPI).")
    var cpus: Int?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("The VMM's per-thread system-call filters (see README \"Security\"): kill stops the VMM with a report at a call outside its thread's list (the default), log lets it through and has the kernel log it, off installs none.", valueName: "kill|log|off"))
    var seccomp: SeccompMode?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Sample each vCPU's RIP while the guest runs and write folded stacks (`cpl0;outer;...;leaf COUNT`, flame-graph input) to this file when it stops; the busiest functions go to stderr. Named with the kernel's symbols or --symbols.", valueName: "file"))
    var profile: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Samples a second per vCPU for --profile (1 to 10000; default 99).", valueName: "n"))
    var profileHz: Int?

    @Flag(name: .long, help: "With --profile, walk each sample's frame-pointer chain (RBP) through guest memory, up to 32 frames.")
    var profileStacks = false

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Record every VM exit (time, vCPU, kind, port or address, size, data, RIP, time in the VMM) into this file; `swiftvisor trace FILE` prints and summarises it.", valueName: "file"))
    var trace: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("The guest's symbols, for any guest: an ELF with a symbol table or a System.map (names profiles and failure reports).", valueName: "file"))
    var symbols: String?

    @Flag(name: .long, help: "Run the VMM jailed (needs root): new PID, mount, IPC, UTS, cgroup and network namespaces, a private read-only root holding only the files the VM uses (bound at their own paths; disks writable unless readonly), no capabilities, no_new_privs, resource limits and, where cgroup v2 offers the controllers, a cgroup with memory and CPU limits (README \"Jailed launch\").")
    var jail = false

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Jailed, join this network namespace (e.g. /run/netns/NAME from `ip netns add`) instead of a new, empty one. Implies --jail.", valueName: "path"))
    var netns: String?

    @Flag(name: .long, help: "Print what trapped to the VMM and where the time went, after the guest stops.")
    var stats = false

    @Flag(name: .long, help: "Print the run report as JSON on stdout (the guest console then goes to stderr).")
    var json = false

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("The KVM device to use.", valueName: "path", visibility: .hidden))
    var kvmDevice: String = "/dev/kvm"

}

