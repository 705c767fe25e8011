import Control
import ArgumentParser
import Glibc
import HostCheck
import VMM

/// `swiftvisor doctor`: can this host run VMs, how well, and what to do if not.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check whether and how well this host can run VMs, and how to fix it.",
        discussion: """
            Checks the CPU's virtualization extensions, the KVM modules, access to /dev/kvm, \
            the KVM API and the capabilities Swiftvisor uses, then runs a live probe: a few \
            tiny guests that measure the exit round trip and guest instruction speed in \
            kernel and user mode (telling a hardware-assisted host from one whose KVM \
            emulates guest kernel mode) and whether a guest system call reaches the guest \
            kernel. Each probe has its own time limit.

            Exit codes: 0 VMs can run (warnings may remain); 10 no hardware virtualization; \
            11 KVM module not loaded; 12 /dev/kvm missing; 13 no permission on /dev/kvm; \
            14 KVM present but unusable (API, required capability, or a failed probe).
            """
    )

    @Flag(name: .long, help: "Print the report as JSON (schema in the README).")
    var json = false

    @Flag(name: .shortAndLong, help: "Print nothing; the exit code says it all.")
    var quiet = false

    @Flag(name: .long, help: "Skip the live probe (no guest is run).")
    var noProbe = false

    @Option(name: .long, help: ArgumentHelp("The KVM device to check.", valueName: "path"))
    var device: String = "/dev/kvm"

    func run() throws {
        let facts = HostFacts.gather(devicePath: device, probe: !noProbe)
        let diagnosis = HostDiagnosis.diagnose(facts)
        if json {
            var o: [(String, JSONValue)] = []
            if case let .object(fields) = diagnosis.json { o = fields }
            o.append(("probe", HostDiagnosis.probeJSON(facts.probe)))
            StandardStream.output(JSONValue.object(o).rendered + "\n")
        } else if !quiet {
            StandardStream.output(DoctorCommand.render(diagnosis, colour: isatty(1) != 0))
        }
        if diagnosis.exitCode != 0 { throw ExitCode(diagnosis.exitCode) }
    }

    static func render(_ d: HostDiagnosis, colour: Bool) -> String {
        func paint(_ s: String, _ code: String) -> String { colour ? "\u{1B}[\(code)m\(s)\u{1B}[0m" : s }
        let width = min(max(d.checks.map { $0.title.count }.max() ?? 10, 10), 26)
        var out = "swiftvisor doctor\n"
        for c in d.checks {
            let label: String
            switch c.status {
            case .pass: label = paint("PASS", "32")
            case .warn: label = paint("WARN", "33")
            case .fail: label = paint("FAIL", "31")
            case .info: label = paint("INFO", "36")
            }
            let title = c.title.count >= width ? c.title : c.title + String(repeating: " ", count: width - c.title.count)
            out += "  \(label)  \(title)  \(c.detail)\n"
            if let fix = c.fix, c.status != .pass {
                out += "        \(String(repeating: " ", count: width))  fix: \(fix)\n"
            }
        }
        out += "\n" + paint(d.verdict, d.canRunVMs ? "1;32" : "1;31") + "\n"
        return out
    }
}
