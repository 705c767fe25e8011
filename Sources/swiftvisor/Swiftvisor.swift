import ArgumentParser
import Control
import Glibc
import VMM

/// The `swiftvisor` command: runs virtual machines on KVM.
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
        version: "0.1.0",
        subcommands: [RunCommand.self, CreateCommand.self, StartCommand.self, DoctorCommand.self, ListCommand.self, InspectCommand.self, PauseCommand.self,
                      ResumeCommand.self, StopCommand.self, KillCommand.self, WaitCommand.self, LogsCommand.self,
                      ConsoleCommand.self, RemoveCommand.self, TraceCommand.self, TopCommand.self]
    )

    /// Starting ArgumentParser (and the FoundationEssentials it brings) costs a few
    /// milliseconds, a large part of a VM's start-up budget. A `run` command line that
    /// the option table (`RunFlags`) reads and validates alone is handed straight to
    /// swiftvisor-vmm; everything else (help, named VMs, kernels, any error) goes
    /// through ArgumentParser, so users see the same options, help and messages.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let launch = RunCommand.fastPath(arguments) {
            // exec only returns on failure, which it has already reported.
            do { try VMMProcess.exec(launch) } catch { Glibc.exit(ProcessExitCode.vmmFailure) }
        }
        main(arguments)
    }
}
