import ArgumentParser

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
            77 no permission on /dev/kvm; 128+N stopped by signal N.
            """,
        version: "0.1.0",
        subcommands: [RunCommand.self]
    )
}
