// swiftvisor-vmm: the process that runs one virtual machine for its whole life.
//
// `swiftvisor run` validates its command line and then execs (or, detached, spawns)
// this program with the same flags, so what stays resident while a guest runs is only
// the VMM library and the Swift runtime, not the argument parser and Foundation
// (README "Two executables").
// Usage: swiftvisor-vmm [--demo | --image FILE --mode real|protected|long
//        [--load-address A] [--entry A] | --kernel FILE [--cmdline S] [--initrd FILE]]
//        [--memory SIZE] [--cpus N] [--test-devices] [--no-pit] [--timeout SECONDS]
//        [--name NAME [--state-dir DIR] [--detached]] [--stats] [--json]
import Control
import Devices
import Glibc
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

func console(for options: RunOptions, registration: Registration?) -> (any SerialOutput, ConsoleHub?) {
    // Detached, the console is the state directory's log and socket; otherwise the
    // terminal (with --json, stdout carries only the report and the console is stderr).
    if options.detached, let registration {
        do {
            let hub = try ConsoleHub(logPath: registration.state.path(registration.name, "console.log"),
                                     socketPath: registration.state.path(registration.name, "console.sock"))
            return (hub, hub)
        } catch {
            fail(error.description, code: ProcessExitCode.vmmFailure, json: options.json)
        }
    }
    return (FileDescriptorOutput(fd: options.json ? 2 : 1), nil)
}

func build(_ options: RunOptions, console: any SerialOutput, registration: Registration?) -> Machine {
    do {
        return try Machine.build(options.config, console: console)
    } catch {
        let code = ProcessExitCode.forError(error)
        registration?.record(JSONValue.object([("exitCode", .int(Int64(code))), ("error", .string(error.description))]).rendered + "\n", "result.json")
        fail(error.description, code: code, json: options.json)
    }
}

func serve(_ machine: Machine, options: RunOptions, registration: Registration) -> APIServer {
    let api = VMAPI(name: registration.name, description: VMDescription(name: registration.name, options: options), machine: machine)
    let server: APIServer
    do {
        server = try APIServer(path: registration.state.path(registration.name, "api.sock"), handler: { api.handle($0) })
    } catch {
        fail(error.description, code: ProcessExitCode.vmmFailure, json: options.json)
    }
    server.start()
    return server
}

func main() -> Never {
    // SIGINT, SIGTERM and SIGHUP stop the VM cleanly (Machine.run reads them from a
    // signalfd): hold them for the whole process, so one that arrives between two
    // machines (a reboot) is not fatal but stops the next.
    var stopSignals = sigset_t()
    sigemptyset(&stopSignals)
    for s in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&stopSignals, s) }
    pthread_sigmask(SIG_BLOCK, &stopSignals, nil)

    let arguments = Array(CommandLine.arguments.dropFirst())
    let wantsJSON = arguments.contains("--json")
    let options: RunOptions
    do {
        options = try RunOptions(arguments: arguments)
    } catch {
        fail(error.description, code: ProcessExitCode.usage, json: wantsJSON)
    }

    let registration = options.name.map { Registration(state: StateDirectory.resolve(options.stateDirectory), name: $0) }
    registration?.record("\(getpid())\n", "pid")
    let (output, hub) = console(for: options, registration: registration)
    // In the foreground, the terminal is the console's keyboard too. Input goes to
    // whichever machine is current (a reboot with --on-reboot restart makes a new one).
    let terminal = options.detached || options.json ? nil : TerminalConsole()
    let current = Mutex<Machine?>(nil)

    var machine: Machine
    var result: MachineResult
    var boots = 0
    repeat {
        if boots > 0 { StandardStream.error("\r\nswiftvisor: the guest rebooted; starting it again\r\n") }
        boots += 1
        machine = build(options, console: output, registration: registration)
        current.withLock { $0 = machine }
        if boots == 1 { // input readers start once there is a machine to read for
            terminal?.start(deliver: { bytes in current.withLock { $0 }?.sendConsoleInput(bytes) },
                            quit: { current.withLock { $0 }?.requestStop(.hostStop) })
            hub?.start { bytes in current.withLock { $0 }?.sendConsoleInput(bytes) }
        }
        let server = registration.map { serve(machine, options: options, registration: $0) }
        result = machine.run(timeLimit: options.timeoutSeconds.map { UInt64($0 * 1e9) })
        server?.close()
    } while options.restartOnReboot && result.reason == .reset
    terminal?.restore()
    let finalMachine = machine
    let report = RunReport(result: result, config: options.config, portName: { finalMachine.portName($0) },
                           vmmResident: ProcessMemory.resident())
    hub?.close()
    registration?.record(report.json.rendered + "\n", "result.json")

    if options.json {
        StandardStream.output(report.json.rendered + "\n")
    } else if options.stats || (options.config.boot == .demo && !options.detached) {
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
