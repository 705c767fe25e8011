import CLinux
import Glibc
import Synchronization

/// Per-thread seccomp filters (Firecracker's model): once set-up is done, each thread
/// the VMM runs installs the filter of its kind (`SeccompPolicy`), so a guest that
/// takes over a vCPU thread through a device bug still cannot open a file, make a
/// socket or start a process. The VMM process picks the mode once (`configure`), before
/// any thread starts; `HostThread.spawn(kind:)` installs a thread's filter before its
/// work, the main thread calls `enter(.main)` before its event loop.
///
/// In `kill` mode a call outside the list is SECCOMP_RET_TRAP: the kernel sends the
/// thread SIGSYS, and the handler here prints which thread made which call and ends the
/// process (RET_KILL would die without a word). An x86-64 filter refuses other ABIs
/// (i386, x32) outright.
public enum Seccomp {
    private static let modeValue = Atomic<UInt8>(2)
    private static let exitCodeValue = Atomic<Int32>(71)

    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    /// The process's mode (`off` until `configure` says otherwise: a library user's
    /// threads are never filtered by surprise).
    public static var mode: SeccompMode {
        switch modeValue.load(ordering: .acquiring) {
        case 0: .kill
        case 1: .log
        default: .off
        }
    }

    /// Sets the mode for every thread started from now on, and in `kill` mode the
    /// SIGSYS handler that reports a refused call and exits with `exitCode`. Fails
    /// where the kernel has no seccomp filters (say so rather than run unfiltered).
    public static func configure(_ mode: SeccompMode, exitCode: Int32) throws(Failure) {
        if mode != .off {
            guard clinux_seccomp_available() != 0 else {
                throw Failure(description: "this kernel has no seccomp (CONFIG_SECCOMP_FILTER); use --seccomp off to run without filters")
            }
        }
        exitCodeValue.store(exitCode, ordering: .releasing)
        if mode == .kill {
            var action = sigaction()
            action.__sigaction_handler.sa_sigaction = refused
            action.sa_flags = SA_SIGINFO
            sigemptyset(&action.sa_mask)
            sigaction(SIGSYS, &action, nil)
        }
        modeValue.store(mode == .kill ? 0 : mode == .log ? 1 : 2, ordering: .releasing)
    }

    /// Each kind's program, built once.
    private static let programs: [[sock_filter]] = ThreadKind.allCases.map { filter(allowing: SeccompPolicy.allowed($0), otherwise: retTrap) }

    /// Installs the calling thread's filter for `kind` (nothing in `off` mode). A
    /// failure to install in `kill` mode ends the process: running unfiltered after
    /// being asked not to would be worse.
    public static func enter(_ kind: ThreadKind) {
        clinux_set_thread_kind(kind.rawValue)
        let mode = self.mode
        guard mode != .off else { return }
        var program = programs[Int(kind.rawValue)]
        if mode == .log { program[program.count - 1].k = retLog }
        let r = program.withUnsafeMutableBufferPointer { clinux_seccomp_install($0.baseAddress, UInt16($0.count)) }
        guard r == 0 else {
            let message = "swiftvisor: seccomp: cannot filter the \(kind.name) thread: \(String(cString: strerror(-r)))\n"
            _ = message.withCString { Glibc.write(2, $0, strlen($0)) }
            if mode == .kill { _exit(exitCodeValue.load(ordering: .acquiring)) }
            return
        }
    }

    /// The number of the call named `name` (for `--seccomp-check`).
    public static func number(_ name: String) -> Int? { Syscall(named: name)?.rawValue }

    /// The name of call `number` ("syscall N" for one the headers do not know).
    public static func name(_ number: Int) -> String { Syscall.name(number).map { "\($0)" } ?? "syscall \(number)" }

    static let retKillProcess: UInt32 = 0x8000_0000, retTrap: UInt32 = 0x0003_0000
    static let retLog: UInt32 = 0x7FFC_0000, retAllow: UInt32 = 0x7FFF_0000
    static let auditArchX86_64: UInt32 = 0xC000_003E
    static let x32Bit: UInt32 = 0x4000_0000

    /// The classic-BPF program: check the ABI, then each allowed number in turn.
    static func filter(allowing calls: [Syscall], otherwise action: UInt32) -> [sock_filter] {
        func statement(_ code: UInt16, _ k: UInt32) -> sock_filter { sock_filter(code: code, jt: 0, jf: 0, k: k) }
        func jump(_ code: UInt16, _ k: UInt32, _ jt: UInt8, _ jf: UInt8) -> sock_filter { sock_filter(code: code, jt: jt, jf: jf, k: k) }
        let load: UInt16 = 0x20, jumpEqual: UInt16 = 0x15, jumpGreaterOrEqual: UInt16 = 0x35, ret: UInt16 = 0x06
        var p: [sock_filter] = [
            statement(load, 4),                                   // seccomp_data.arch
            jump(jumpEqual, auditArchX86_64, 1, 0),
            statement(ret, retKillProcess),
            statement(load, 0),                                   // seccomp_data.nr
            jump(jumpGreaterOrEqual, x32Bit, 0, 1),
            statement(ret, retKillProcess),
        ]
        for n in Set(calls.map(\.rawValue)).sorted() {
            p.append(jump(jumpEqual, UInt32(n), 0, 1))
            p.append(statement(ret, retAllow))
        }
        p.append(statement(ret, action))
        return p
    }

    /// The SIGSYS handler of `kill` mode: one line naming the thread and the call, then
    /// the process ends (every thread's list has write and exit_group).
    private static let refused: @convention(c) (Int32, UnsafeMutablePointer<siginfo_t>?, UnsafeMutableRawPointer?) -> Void = { _, info, _ in
        let number = info.map { Int(clinux_siginfo_syscall($0)) } ?? -1
        let kind = ThreadKind(rawValue: clinux_thread_kind())?.name ?? "unnamed"
        let message = "swiftvisor: seccomp: the \(kind) thread made the system call \(Seccomp.name(number)) (\(number)), "
            + "which its filter does not allow; stopping the VMM (--seccomp log lets it through and has the kernel log it)\n"
        _ = message.withCString { Glibc.write(2, $0, strlen($0)) }
        _exit(exitCodeValue.load(ordering: .acquiring))
    }
}
