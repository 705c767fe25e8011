// swiftvisor-vmm: the process that runs one virtual machine for its whole life.
//
// `swiftvisor run` validates its command line and then execs this program with the
// same flags, so what stays resident while a guest runs is only the VMM library and
// the Swift runtime, not the argument parser and Foundation (README "Two executables").
// Usage: swiftvisor-vmm [--demo | --image FILE --mode real|protected|long
//        [--load-address A] [--entry A] | --kernel FILE [--cmdline S] [--initrd FILE]]
//        [--memory SIZE] [--cpus N] [--test-devices] [--timeout SECONDS] [--stats] [--json]
import Glibc
import VMM

func fail(_ message: String, code: Int32, json: Bool) -> Never {
    StandardStream.failure(message, code: code, json: json)
    exit(code)
}

let arguments = Array(CommandLine.arguments.dropFirst())
let wantsJSON = arguments.contains("--json")
let options: RunOptions
do {
    options = try RunOptions(arguments: arguments)
} catch {
    fail(error.description, code: ProcessExitCode.usage, json: wantsJSON)
}

// With --json, stdout carries only the report: the guest console goes to stderr.
let console = FileDescriptorOutput(fd: options.json ? 2 : 1)
let machine: Machine
do {
    machine = try Machine.build(options.config, console: console)
} catch {
    fail(error.description, code: ProcessExitCode.forError(error), json: options.json)
}

let result = machine.run(timeLimit: options.timeoutSeconds.map { UInt64($0 * 1e9) })
let report = RunReport(result: result, config: options.config, portName: { machine.portName($0) },
                       vmmResident: ProcessMemory.resident())

if options.json {
    StandardStream.output(report.json.rendered + "\n")
} else if options.stats || options.config.boot == .demo {
    StandardStream.error(report.text)
} else {
    switch result.reason {
    case .guestFailure, .vmmFailure, .tripleFault, .timeLimit:
        StandardStream.error("swiftvisor: \(result.reason.summary)\n")
    default:
        break
    }
}
exit(report.exitCode)
