import Synchronization
import VMM

/// A VM inside its VMM process, from before it boots to after it stops: what the
/// control API reads and changes. Before boot it is only a description, which `PUT
/// /vm/config` may replace; `start()` boots it (through the process's `boot` closure)
/// and from then on the machine answers.
public final class VMInstance: Sendable {
    public let name: String
    public enum Phase: String, Sendable { case created, booting, booted, ended }

    private struct State {
        var description: VMDescription
        var machine: Machine?
        var phase: Phase = .created
        var failure: String?
    }
    private let state: Mutex<State>
    /// Builds and starts the machine from a description (the VMM process's job); throws
    /// a message the API returns.
    public typealias Boot = @Sendable (VMDescription) -> Result<Machine, BootFailure>
    private let boot: Boot
    /// Told each new description (the VMM records it in the state directory).
    private let configured: @Sendable (VMDescription) -> Void

    public struct BootFailure: Error, Sendable {
        public let message: String
        /// The HTTP status the API answers with.
        public let status: Int
        /// The process exit code when the boot was the VMM's first job (`run`).
        public let exitCode: Int32
        public init(message: String, status: Int = 400, exitCode: Int32 = ProcessExitCode.usage) {
            self.message = message
            self.status = status
            self.exitCode = exitCode
        }
    }

    public init(name: String, description: VMDescription, configured: @escaping @Sendable (VMDescription) -> Void = { _ in },
                boot: @escaping Boot) {
        self.name = name
        self.boot = boot
        self.configured = configured
        state = Mutex(State(description: description))
    }

    public var description: VMDescription { state.withLock { $0.description } }
    public var machine: Machine? { state.withLock { $0.machine } }
    public var phase: Phase { state.withLock { $0.phase } }

    /// The state the API and `ls` show: created, running, paused, stopped.
    public var stateName: String {
        let (phase, machine) = state.withLock { ($0.phase, $0.machine) }
        switch phase {
        case .created, .booting: return "created"
        case .ended: return "stopped"
        case .booted: return machine?.state.rawValue ?? "stopped"
        }
    }

    /// Replaces the whole description; only before boot.
    public func configure(_ d: VMDescription) throws(BootFailure) {
        try state.withLock { (s: inout State) throws(BootFailure) in
            guard s.phase == .created else { throw BootFailure(message: "the VM has booted: its configuration is fixed (stop it and create another)", status: 409) }
            // The process applied these when it started; it cannot take them back.
            guard d.seccomp == s.description.seccomp, d.jail == s.description.jail else {
                throw BootFailure(message: "seccomp and jail belong to the VMM process and are fixed when it starts: keep them as GET /vm/config shows them (create another VM to change them)", status: 409)
            }
            s.description = d
        }
        configured(d)
    }

    /// Boots a created VM. Answers 409 for one that has booted already.
    public func start() throws(BootFailure) {
        let d = try state.withLock { (s: inout State) throws(BootFailure) -> VMDescription in
            guard s.phase == .created else { throw BootFailure(message: "the VM is \(s.phase == .ended ? "stopped" : "already started")", status: 409) }
            s.phase = .booting
            return s.description
        }
        switch boot(d) {
        case let .success(m):
            state.withLock { $0.machine = m; $0.phase = .booted }
        case let .failure(f):
            state.withLock { $0.phase = .created; $0.failure = f.message }
            throw f
        }
    }

    /// A new machine after a guest reboot (`onReboot: restart`).
    public func replaceMachine(_ m: Machine) { state.withLock { $0.machine = m; $0.phase = .booted } }

    /// The VM has ended for good.
    public func ended() { state.withLock { $0.phase = .ended } }
}
