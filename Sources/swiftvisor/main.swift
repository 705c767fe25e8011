// swiftvisor: the command users type, and the process that runs one virtual machine
// for its whole life.
//
//     swiftvisor run [OPTIONS]          a VM the option table (RunFlags) describes alone:
//                                       run here, in this process (the fast path)
//     swiftvisor --config FILE | --config-fd N
//                                       a VM described by a launch document (README
//                                       "Config files"), which swiftvisor-cli wrote
//     swiftvisor ANYTHING ELSE          exec swiftvisor-cli (ArgumentParser) with it
//
// This program links no argument parser and no Foundation, so the tiny VMs users start
// by the thousand cost one small process, and what stays resident while a guest runs
// is the VMM library and the Swift runtime (README "Two executables"). One event loop
// waits on signals, the machine's stop, console input and the API.
import CLinux
import Control
import Devices
import Glibc
import GuestMemory
import Synchronization
import VMM

func fail(_ message: String, code: Int32, json: Bool) -> Never {
    StandardStream.failure(message, code: code, json: json)
    exit(code)
}

/// A named VM lives in the state directory (the `swiftvisor` command created its
/// folder and config.json): it records its pid and result there and serves the API.
struct Registration {
    let state: StateDirectory
    let name: String

    func record(_ text: String, _ file: String) { try? state.write(text, to: name, file) }
}

/// The launch this command line asks for; for anything but a fast-path `run` or a
/// launch document, this process becomes `swiftvisor-cli`.
func readLaunch(_ arguments: [String]) -> VMMLaunch {
    if arguments.first != "--config" && arguments.first != "--config-fd" {
        if let launch = RunFlags.fastPathLaunch(arguments) { return launch }
        fail(Companion.cli.exec(arguments), code: ProcessExitCode.vmmFailure, json: arguments.contains("--json"))
    }
    let usage = "usage: swiftvisor --config FILE | --config-fd N (a VM description from swiftvisor-cli)"
    guard arguments.count == 2 else { fail(usage, code: ProcessExitCode.usage, json: false) }
    do {
        switch arguments[0] {
        case "--config":
            let text = String(decoding: try FileContents.read(arguments[1], limit: 1 << 20), as: UTF8.self)
            return try VMMLaunch.parse(text)
        case "--config-fd":
            guard let fd = Int32(arguments[1]), fd >= 0 else { fail(usage, code: ProcessExitCode.usage, json: false) }
            defer { close(fd) }
            return try VMMLaunch.read(fd: fd)
        default:
            fail(usage, code: ProcessExitCode.usage, json: false)
        }
    } catch let e as MachineError {
        fail(e.description, code: ProcessExitCode.forError(e), json: false)
    } catch {
        fail("\(error)", code: ProcessExitCode.usage, json: false)
    }
}

/// Everything the loop's handlers share, all touched on the loop's thread.
final class Session: @unchecked Sendable {
    // Sound to share: only the event loop's thread reads and writes these.
    let launch: VMMLaunch
    let loop: EventLoop
    let registration: Registration?
    let console: any SerialOutput
    var instance: VMInstance!
    var result: MachineResult?
    var lastMachine: Machine?
    var done = false
    /// A stop signal, remembered: one that arrives while the guest reboots must end the
    /// VM rather than be lost between two machines.
    var stopSignal: Int32?

    init(launch: VMMLaunch, loop: EventLoop, registration: Registration?, console: any SerialOutput) {
        self.launch = launch
        self.loop = loop
        self.registration = registration
        self.console = console
    }

    /// A snapshot to restore at the first boot (`swiftvisor restore`); a reboot after
    /// it boots the description afresh.
    var pendingRestore: String?

    /// Builds the machine (or restores the pending snapshot) and starts its vCPUs; the
    /// loop watches it from then on.
    func boot(_ d: VMDescription) -> Result<Machine, VMInstance.BootFailure> {
        let machine: Machine
        do {
            if let path = pendingRestore {
                pendingRestore = nil
                machine = try restore(path, config: d.config)
            } else {
                machine = try Machine.build(d.config, console: console)
            }
        } catch {
            let code = ProcessExitCode.forError(error)
            return .failure(.init(message: error.description, status: code == ProcessExitCode.vmmFailure ? 503 : 400, exitCode: code))
        }
        lastMachine = machine
        if d.config.memoryOptions.hugePages && !machine.memory.hugeTLB {
            let size = d.config.memorySize, pages = (size + MemoryRegion.hugePageSize - 1) / MemoryRegion.hugePageSize
            let why = size % MemoryRegion.hugePageSize != 0 ? "\(size >> 10) KiB of guest RAM is not a multiple of 2 MiB"
                : "the host has fewer than \(pages) free 2 MiB huge pages"
            StandardStream.error("swiftvisor: warning: --hugepages: \(why); guest RAM uses ordinary pages (transparent huge pages where the kernel gives them). Reserve them with: echo \(pages) | sudo tee /proc/sys/vm/nr_hugepages\n")
        }
        if launch.verbose {
            if let p = machine.placement { StandardStream.error("swiftvisor: boot: \(p)\n") }
            for e in machine.devices.entries { StandardStream.error("swiftvisor: device " + VMAPI.deviceLine(e) + "\n") }
        }
        machine.start(on: loop, timeLimit: d.timeoutNanoseconds)
        loop.add(machine.stopEventFD) { [self] _ in stopped(machine) }
        return .success(machine)
    }

    /// The snapshot in `path`, checked whole (sizes, checksums, this host's CPU), its
    /// memory file mapped copy-on-write into a machine of `config`.
    func restore(_ path: String, config: MachineConfig) throws(MachineError) -> Machine {
        let started = monotonicNanoseconds()
        let loaded: SnapshotFolder.Loaded
        // The CPU is checked by the build, with the KVM it opens anyway.
        do { loaded = try SnapshotFolder.read(path) } catch { throw .snapshot(error) }
        let fd = open(loaded.memoryPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .snapshot(SnapshotError(.corrupt, "\(loaded.memoryPath): \(String(cString: strerror(errno)))")) }
        // The mapping keeps the file; the fd is not needed past the build.
        defer { close(fd) }
        return try Machine.build(config, console: console, restoring: (loaded.state, fd), startedAt: started)
    }

    /// The machine is stopping: collect it, and boot again after a reboot if asked.
    func stopped(_ machine: Machine) {
        loop.remove(machine.stopEventFD)
        var r = machine.finish(loop: loop)
        if let s = stopSignal, r.reason == .reset { r = r.with(reason: .signal(s)) }
        if instance.description.restartOnReboot && r.reason == .reset {
            StandardStream.error("\r\nswiftvisor: the guest rebooted; starting it again\r\n")
            switch boot(instance.description) {
            case let .success(m): instance.replaceMachine(m); return
            case let .failure(f):
                // The VM cannot go on: that is the VMM failing, not the guest's clean end.
                StandardStream.error("swiftvisor: \(f.message)\n")
                r = r.with(reason: .vmmFailure("restarting after the guest's reboot: \(f.message)"))
            }
        }
        result = r
        instance.ended()
        done = true
    }
}

/// `swiftvisor --seccomp-check KIND CALL [MODE]`: makes system call CALL (no
/// arguments) on a thread of KIND (main, vcpu, block-worker, stdin-reader) under that
/// kind's filter in MODE (default kill), and says whether it was let through. How the
/// tests (and a curious user) see a filter refuse a call; it boots nothing.
func seccompCheck(_ arguments: [String]) -> Never {
    let usage = "usage: swiftvisor --seccomp-check main|vcpu|block-worker|stdin-reader CALL [kill|log|off]"
    let kinds: [String: ThreadKind] = ["main": .main, "vcpu": .vcpu, "block-worker": .blockWorker, "stdin-reader": .stdinReader]
    guard arguments.count == 2 || arguments.count == 3, let kind = kinds[arguments[0]],
          let number = Seccomp.number(arguments[1]) else { fail(usage, code: ProcessExitCode.usage, json: false) }
    let mode = arguments.count == 3 ? SeccompMode(rawValue: arguments[2]) : .kill
    guard let mode else { fail(usage, code: ProcessExitCode.usage, json: false) }
    do { try Seccomp.configure(mode, exitCode: ProcessExitCode.vmmFailure) } catch { fail(error.description, code: ProcessExitCode.vmmFailure, json: false) }
    guard let thread = HostThread.spawn(kind: kind, { _ = clinux_syscall0(number) }) else {
        fail("cannot start a thread", code: ProcessExitCode.vmmFailure, json: false)
    }
    HostThread.join(thread)
    StandardStream.output("\(arguments[1]): let through on a \(kind.name) thread (--seccomp \(mode.rawValue))\n")
    exit(0)
}

/// The jail the description asks for: in the process the user started, the jailed
/// VMM is started as a child (this program again, handed the same description) and
/// supervised, and this never returns; in that child (`syncFD` set), the jail is
/// entered and the VMM's pid as the host sees it returned.
func jail(_ settings: JailSettings, launch: VMMLaunch, registration: Registration?, syncFD: Int32?) -> pid_t {
    let here: String = {
        guard let p = getcwd(nil, 0) else { return "/" }
        defer { free(p) }
        return String(cString: p)
    }()
    let plan = settings.plan(for: launch.vm, stateFolder: registration.map { $0.state.folder($0.name) }, workingDirectory: here,
                             cgroupName: launch.vm.name ?? "vmm-\(getpid())")
    do {
        if let syncFD { return try Jail.enter(plan, syncFD: syncFD) }
        let description: Int32
        switch launch.memfd() {
        case let .success(fd): description = fd
        case let .failure(e): fail("jail: cannot hand the VM description on: \(e.description)", code: ProcessExitCode.vmmFailure, json: launch.json)
        }
        try Jail.start(plan, arguments: { ["--jailed", String($0), "--config-fd", String(description)] },
                       note: { if launch.verbose { StandardStream.error("swiftvisor: jail: \($0)\n") } })
    } catch {
        let code = error.missingFile ? ProcessExitCode.fileNotFound : ProcessExitCode.vmmFailure
        registration?.record(JSONValue.object([("exitCode", .int(Int64(code))), ("error", .string(error.description))]).rendered + "\n", "result.json")
        fail(error.description, code: code, json: launch.json)
    }
}

func main() -> Never {
    var arguments = Array(CommandLine.arguments.dropFirst())
    if arguments.first == "--seccomp-check" { seccompCheck(Array(arguments.dropFirst())) }
    // `--jailed FD`: this process is the jailed VMM a supervisor started (Jail.start).
    var syncFD: Int32? = nil
    if arguments.count > 2, arguments[0] == "--jailed" {
        syncFD = Int32(arguments[1])
        arguments.removeFirst(2)
    }
    // Only now that this process is a VMM (not about to become swiftvisor-cli, which
    // would inherit a blocked mask and ignore Ctrl-C): SIGINT, SIGTERM and SIGHUP stop
    // the VM cleanly through a signalfd on the loop; they are held for the whole
    // process, so one that arrives between two machines (a reboot) is not fatal but
    // stops the next.
    let launch = readLaunch(arguments)
    var stopSignals = EventLoop.stopSignals
    pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
    let json = launch.json
    // The filters' mode, before any thread starts; each thread installs its own.
    do { try Seccomp.configure(launch.vm.seccomp, exitCode: ProcessExitCode.vmmFailure) } catch {
        fail(error.description, code: ProcessExitCode.vmmFailure, json: json)
    }
    let registration = launch.vm.name.flatMap { n in launch.stateDirectory.map { Registration(state: StateDirectory(root: $0), name: n) } }
    // The output files, before any jail: a path that cannot be written is said at once;
    // the profile's fd is kept (so the main thread needs no open at the end, and a jail
    // need not hold the file); the trace file, which each boot's machine opens, exists
    // (so a jail can bind it).
    if let t = launch.vm.config.tracePath {
        let fd = open(t, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { fail("cannot write the exit trace to \(t): \(String(cString: strerror(errno)))", code: ProcessExitCode.fileNotFound, json: json) }
        close(fd)
    }
    var profileFD: Int32 = -1
    if let p = launch.vm.config.profile?.path {
        profileFD = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard profileFD >= 0 else { fail("cannot write the profile to \(p): \(String(cString: strerror(errno)))", code: ProcessExitCode.fileNotFound, json: json) }
    }
    // Jailed, this process forks: the child goes on as the VMM, the parent supervises.
    let pid = launch.vm.jail.map { jail($0, launch: launch, registration: registration, syncFD: syncFD) } ?? getpid()
    registration?.record("\(pid)\n", "pid")
    let loop: EventLoop
    do { loop = try EventLoop() } catch { fail(error.description, code: ProcessExitCode.vmmFailure, json: json) }

    // Detached, the console is the state directory's log and socket; otherwise the
    // terminal (with --json, stdout carries only the report and the console is stderr).
    var hub: ConsoleHub? = nil
    let output: any SerialOutput
    if launch.detached, let registration {
        do {
            hub = try ConsoleHub(logPath: registration.state.path(registration.name, "console.log"),
                                 socketPath: registration.state.path(registration.name, "console.sock"))
        } catch {
            fail(error.description, code: ProcessExitCode.vmmFailure, json: json)
        }
        output = hub!
    } else {
        output = FileDescriptorOutput(fd: json ? 2 : 1)
    }

    let session = Session(launch: launch, loop: loop, registration: registration, console: output)
    session.pendingRestore = launch.restore
    let instance = VMInstance(name: launch.vm.name ?? "vm", description: launch.vm,
                              configured: { d in registration?.record(d.json.rendered + "\n", "config.json") },
                              boot: { d in session.boot(d) })
    session.instance = instance

    _ = loop.watch(signals: stopSignals) { signal in
        session.stopSignal = signal
        if let m = instance.machine, instance.phase == .booted { m.requestStop(.signal(signal)) } else { session.done = true }
    }

    // Console input goes to whichever machine is current (a reboot makes a new one).
    let deliver: @Sendable ([UInt8]) -> Void = { bytes in instance.machine?.sendConsoleInput(bytes) }
    let terminal = launch.detached || json ? nil : TerminalConsole()
    terminal?.start(on: loop, deliver: deliver, quit: { instance.machine?.requestStop(.hostStop) })
    hub?.start(on: loop, deliver: deliver)

    var server: APIServer? = nil
    if let registration {
        let api = VMAPI(vm: instance, endProcess: { loop.post { session.done = true } })
        do {
            server = try APIServer(path: registration.state.path(registration.name, "api.sock"), handler: { api.handle($0) })
        } catch {
            fail(error.description, code: ProcessExitCode.vmmFailure, json: json)
        }
        server?.start(on: loop)
    }

    if launch.start {
        do { try instance.start() } catch {
            let code = error.exitCode
            registration?.record(JSONValue.object([("exitCode", .int(Int64(code))), ("error", .string(error.message))]).rendered + "\n", "result.json")
            terminal?.restore()
            fail(error.message, code: code, json: json)
        }
    }

    // Set-up is done: from here the main thread makes only the calls its list allows
    // (the vCPU threads installed theirs as they started).
    Seccomp.enter(.main)
    loop.run(until: { session.done })

    terminal?.restore()
    server?.close()
    hub?.close()
    guard let result = session.result, let machine = session.lastMachine else {
        // Ended before it ever booted (stopped through the API, or a signal).
        registration?.record(JSONValue.object([("exitCode", .int(0)), ("stop", .object([("reason", .string("stopped before boot"))]))]).rendered + "\n", "result.json")
        exit(0)
    }
    if profileFD >= 0, let profile = machine.profile {
        let symbols = machine.symbols
        FileSystem.writeAll(profileFD, Array(profile.folded(symbols: symbols).utf8))
        close(profileFD)
        StandardStream.error(profile.table(symbols: symbols) + "  folded stacks in \(machine.config.profile?.path ?? "")\n")
    }
    // The full report only where it is shown or kept: a tiny VM that just ran needs
    // neither /proc/self/status read nor its summary rendered.
    let summaryShown = launch.stats || (launch.vm.config.boot == .demo && !launch.detached)
    let wholeReport = json || registration != nil || summaryShown
    let report = RunReport(result: result, config: machine.config, portName: { machine.portName($0) },
                           vmmResident: wholeReport ? ProcessMemory.resident() : nil)
    registration?.record(report.json.rendered + "\n", "result.json")

    if json {
        StandardStream.output(report.json.rendered + "\n")
    } else if summaryShown {
        StandardStream.error(report.text)
    } else {
        switch result.reason {
        case .guestFailure, .vmmFailure, .tripleFault, .timeLimit, .hostStop, .signal:
            StandardStream.error(report.stopLines)
        default:
            break
        }
    }
    exit(report.exitCode)
}

main()
