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
            part of a snapshot (they are reopened from their paths); a vsock device's \
            connections are not saved (the restored guest is told its transport was reset).

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
            another; two VMs cannot share a name, so clones need --name. Disks are reopened \
            from the paths the snapshot records; --disk gives others (a clone's own copy: \
            two VMs cannot open one writable image).

            Examples:
              swiftvisor restore /var/lib/snapshots/web-1
              swiftvisor restore /var/lib/snapshots/web-1 --name web-2 --detach
              swiftvisor restore /var/lib/snapshots/db-1 --name db-2 --disk root.img --disk db-2.img
            """
    )
    @Argument(help: "The snapshot's folder.") var directory: String
    @Option(name: .long, help: "The restored VM's name (default: the snapshot's, if it had one).") var name: String?
    @Flag(name: .long, help: "Run in the background as a named VM (--name, the snapshot's or a generated one).") var detach = false
    @Option(name: .long, help: ArgumentHelp("Stop the restored VM after this many seconds (exit code 124), counted from the restore; default: the snapshot's own limit.", valueName: "seconds"))
    var timeout: Double?
    @Option(name: .long, help: ArgumentHelp("The file for the snapshot's next disk, in order (repeatable): the first --disk replaces the first disk's file, and so on; its other settings stay. Each clone needs its own writable disk.", valueName: "path"))
    var disk: [String] = []
    @Option(name: .long, help: ArgumentHelp("A new guest CID for the snapshot's vsock device (a clone's own; the guest reads it again after the restore).", valueName: "cid"))
    var vsockCid: UInt64?
    @Option(name: .long, help: ArgumentHelp("A new Unix socket for the snapshot's vsock device (a clone's own: two VMs cannot listen on one).", valueName: "path"))
    var vsockSocket: String?
    @Flag(name: .long, help: "Print exit statistics when the VM stops.") var stats = false
    @Flag(name: .long, help: "List the devices once the machine is restored.") var verbose = false
    @OptionGroup var state: StateOptions

    func run() throws {
        try verb(state.json) {
            let path = absolutePath(directory)
            var d = try RestoreCommand.description(path)
            if let name { d.name = name }
            guard disk.count <= d.config.disks.count else {
                throw CLIFailure(message: "--disk: the snapshot's VM has \(d.config.disks.count) disk(s), \(disk.count) given", code: ProcessExitCode.usage)
            }
            for (i, path) in disk.enumerated() { d.config.disks[i].path = absolutePath(path) }
            if vsockCid != nil || vsockSocket != nil {
                guard var v = d.config.vsock else {
                    throw CLIFailure(message: "--vsock-cid, --vsock-socket: the snapshot's VM has no vsock device", code: ProcessExitCode.usage)
                }
                if let vsockCid { v.cid = vsockCid }
                if let vsockSocket { v.socketPath = absolutePath(vsockSocket) }
                d.config.vsock = v
                do { try d.validate() } catch { throw CLIFailure(message: "\(error)", code: ProcessExitCode.usage) }
            }
            if let timeout {
                guard timeout > 0, timeout.isFinite else { throw CLIFailure(message: "--timeout must be a positive number of seconds", code: ProcessExitCode.usage) }
                d.timeoutSeconds = timeout
            }
            try RunCommand.launch(d, stateDir: state.stateDir, detach: detach, create: false, stats: stats, json: state.json,
                                  verbose: verbose, restore: path)
        }
    }
}

extension RestoreCommand {
    /// The description of the VM in the snapshot at `path`, the snapshot checked whole
    /// first (exit 65 for a damaged or foreign one).
    static func description(_ path: String) throws -> VMDescription {
        let d: VMDescription
        do throws(SnapshotError) { d = try SnapshotFolder.read(path, kvmPath: MachineConfig().kvmPath).description }
        catch { throw CLIFailure(message: "snapshot: \(error.description)", code: error.kind == .failed ? ProcessExitCode.vmmFailure : ProcessExitCode.badImage) }
        guard d.jail == nil else {
            throw CLIFailure(message: "restore: the snapshot's VM ran in a jail; restoring into a jail is not supported yet", code: ProcessExitCode.usage)
        }
        return d
    }
}

/// `path` made absolute against the working directory: the VMM (and its API) may run
/// elsewhere.
func absolutePath(_ path: String) -> String {
    guard !path.hasPrefix("/"), let cwd = getcwd(nil, 0) else { return path }
    defer { free(cwd) }
    return String(cString: cwd) + "/" + path
}
