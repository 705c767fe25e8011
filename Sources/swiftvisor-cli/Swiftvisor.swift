import ArgumentParser
import VMM

/// The `swiftvisor` command: runs virtual machines on KVM. Users type `swiftvisor`,
/// the small executable every VM runs in; it runs a `run` command line the option
/// table (`RunFlags`) reads alone itself, and execs this program, `swiftvisor-cli`,
/// with the same words for everything else: help, errors, named VMs, kernels and the
/// other verbs (README "Two executables").
@main
struct Swiftvisor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftvisor",
        abstract: "Run virtual machines on Linux KVM.",
        discussion: """
            `swiftvisor run` with no options boots the built-in demo guest and shows which \
            of its operations trapped to the VMM. `swiftvisor doctor` checks whether this \
            host can run VMs.

            Exit codes: 0 success; a guest's own exit code (port 0x501) is passed through; \
            64 usage error; 65 bad image; 66 file not found; 69 KVM unavailable; \
            70 guest failure (triple fault, emulation failure); 71 VMM failure; \
            67 no such VM; 73 conflict (name taken, wrong state); 75 VMM not answering; \
            77 no permission on /dev/kvm; 124 time limit; 137 stopped from the host; \
            128+N stopped by signal N.
            """,
        version: VMMVersion.current,
        subcommands: [RunCommand.self, CreateCommand.self, StartCommand.self, DoctorCommand.self, ListCommand.self, InspectCommand.self, PauseCommand.self,
                      ResumeCommand.self, StopCommand.self, KillCommand.self, WaitCommand.self, LogsCommand.self,
                      ConsoleCommand.self, RemoveCommand.self, TraceCommand.self, TopCommand.self, SnapshotCommand.self,
                      RestoreCommand.self]
    )
}
