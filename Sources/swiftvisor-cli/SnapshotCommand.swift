import ArgumentParser
import Control
import Glibc
import VMM

/// `swiftvisor snapshot NAME DIR`: a running (or paused) VM saved into a new folder.
struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Save a running VM's complete state into a new folder; `restore` brings it back.",
        discussion: """
            The VM is paused while its vCPUs, interrupt controllers, timers, devices and \
            memory are written (memory as a sparse file: only what the guest touched takes \
            disk space), then resumed (--stop ends it instead). The folder is written beside \
            DIR and renamed into place, so a snapshot that exists is whole. Disks are not \
            part of a snapshot; VMs with virtio devices cannot be snapshotted yet.

            Examples:
              swiftvisor snapshot web /var/lib/snapshots/web-1
              swiftvisor restore /var/lib/snapshots/web-1 --name web-clone --detach
            """
    )
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String
    @Argument(help: "The snapshot's folder (new, or empty).") var directory: String
    @Flag(name: .long, help: "End the VM once it is saved (it goes on from the snapshot).") var stop = false

    func run() throws {
        try verb(state.json) {
            try requireAlive(try status(name, state))
            let summary = try call(name, state, "PUT", "/vm/snapshot",
                                   .object([("path", .string(absolutePath(directory))), ("stop", .bool(stop))]))
            StandardStream.output(state.json ? summary.rendered + "\n" : (summary["path"]?.string ?? directory) + "\n")
        }
    }
}

/// `swiftvisor restore DIR`: a new VM (a new VMM process) from a snapshot.
struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Start a VM from a snapshot, where it was when it was saved.",
        discussion: """
            The snapshot is checked whole first (its format, every state file's size and \
            CRC-32, the memory file's size, and that this host's CPU offers what the guest \
            uses): a damaged, truncated, foreign or incompatible snapshot is one error line \
            and exit code 65. Guest memory is mapped copy-on-write from the snapshot's \
            memory file, read as the guest touches it, so restoring costs the same for any \
            guest size, and many VMs restored from one snapshot share its pages.

            Like `run`, the VM stays attached to your terminal unless --detach (or --name) \
            makes it a named VM. A restored VM takes the snapshot's name unless --name gives \
            another; two VMs cannot share a name, so clones need --name.

            Examples:
              swiftvisor restore /var/lib/snapshots/web-1
              swiftvisor restore /var/lib/snapshots/web-1 --name web-2 --detach
            """
    )
    @Argument(help: "The snapshot's folder.") var directory: String
    @Option(name: .long, help: "The restored VM's name (default: the snapshot's, if it had one).") var name: String?
    @Flag(name: .long, help: "Run in the background as a named VM (--name, the snapshot's or a generated one).") var detach = false
    @Flag(name: .long, help: "Print exit statistics when the VM stops.") var stats = false
    @Flag(name: .long, help: "List the devices once the machine is restored.") var verbose = false
    @OptionGroup var state: StateOptions

    func run() throws {
        try verb(state.json) {
            let path = absolutePath(directory)
            var d: VMDescription
            do throws(SnapshotError) { d = try SnapshotFolder.read(path, kvmPath: MachineConfig().kvmPath).description }
            catch { throw CLIFailure(message: "snapshot: \(error.description)", code: error.kind == .failed ? ProcessExitCode.vmmFailure : ProcessExitCode.badImage) }
            if let name { d.name = name }
            guard d.jail == nil else {
                throw CLIFailure(message: "restore: the snapshot's VM ran in a jail; restoring into a jail is not supported yet", code: ProcessExitCode.usage)
            }
            try RunCommand.launch(d, stateDir: state.stateDir, detach: detach, create: false, stats: stats, json: state.json,
                                  verbose: verbose, restore: path)
        }
    }
}

/// `path` made absolute against the working directory: the VMM (and its API) may run
/// elsewhere.
func absolutePath(_ path: String) -> String {
    guard !path.hasPrefix("/"), let cwd = getcwd(nil, 0) else { return path }
    defer { free(cwd) }
    return String(cString: cwd) + "/" + path
}
