import ArgumentParser
import Control
import Glibc
import VMM

/// `swiftvisor create NAME [run's options]`: a VM that exists before it boots. Its VMM
/// process starts with its API and state directory, and waits (`ls` shows `created`)
/// until `swiftvisor start NAME` or the API (`PUT /vm/config` first, if you like)
/// boots it.
struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a named VM without booting it; `start` boots it.",
        discussion: """
            Takes the options of `run` (except --name and --detach: the VM is named NAME \
            and always runs in the background). Until it is started, its configuration \
            can be replaced through its API: PUT /vm/config with the JSON description.

            --from-snapshot DIR takes the VM from a snapshot instead (its description, \
            checked as `restore` checks it): `start` restores it where it was saved.

            Examples:
              swiftvisor create web --kernel vmlinux --initrd initrd.cpio --memory 256M
              swiftvisor start web
              swiftvisor create web-2 --from-snapshot /var/lib/snapshots/web-1
            """
    )

    @Argument(help: "The VM's name (letters, digits, '-', '_', '.').") var name: String
    @Option(name: .long, help: ArgumentHelp("A snapshot to restore when the VM is started (no other option of `run` with it).", valueName: "dir"))
    var fromSnapshot: String?
    @OptionGroup var flags: VMFlags

    func run() throws {
        try verb(flags.json) {
            if let fromSnapshot {
                let others = RunCommand.words(after: "create").filter { $0.hasPrefix("--") && !["--from-snapshot", "--json", "--state-dir"].contains($0) }
                guard others.isEmpty else {
                    throw RunFlags.Failure("--from-snapshot takes the VM's whole description from the snapshot: drop \(others.joined(separator: " "))")
                }
                let path = absolutePath(fromSnapshot)
                var d = try RestoreCommand.description(path)
                d.name = name
                try RunCommand.launch(d, stateDir: flags.stateDir, detach: true, create: true, stats: false, json: flags.json,
                                      verbose: false, restore: path)
                return
            }
            var settings = try RunFlags.parse(RunCommand.words(after: "create"))
            settings.positionals.removeAll { $0 == name }
            if let extra = settings.positionals.first { throw RunFlags.Failure("unexpected argument '\(extra)'") }
            guard settings.name == nil || settings.name == name, !settings.detach else {
                throw RunFlags.Failure("create names the VM itself and always detaches: drop --name and --detach")
            }
            settings.name = name
            try RunCommand.launch(settings, create: true)
        }
    }
}

/// `swiftvisor start NAME`: boots a VM made with `create`.
struct StartCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start", abstract: "Boot a VM made with `create` (`resume` un-pauses a running one).")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String

    func run() throws {
        try verb(state.json) {
            let s = try status(name, state)
            guard s.state == .created || s.state == .unresponsive else {
                throw CLIFailure(message: "VM '\(name)' is \(s.state.rawValue), not created" + (s.state == .paused ? "; `swiftvisor resume \(name)` un-pauses it" : ""),
                                 code: ProcessExitCode.conflict)
            }
            try requireAlive(s)
            try call(name, state, "POST", "/vm/actions", .object([("action", .string("start"))]))
            StandardStream.output(name + "\n")
        }
    }
}
