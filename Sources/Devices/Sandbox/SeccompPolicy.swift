/// The system calls each kind of VMM thread may make once its filter is on: the one
/// place to read (and extend) what the VMM does after set-up. Derived from runs of the
/// whole test suite and the Linux boots with `--seccomp log` (the kernel logs every
/// call outside these lists: `dmesg | grep 'type=1326'`), as Firecracker derives its
/// filters. Filters are per thread, so a vCPU thread cannot open a file or a socket
/// even though the main thread can. Threads inherit their creator's filter and add
/// their own (the stricter wins), so the main thread's list includes every list of a
/// thread it may start after its own filter is on (vCPUs at a pre-boot `start`, a
/// restart on reboot).
///
/// Not covered: io_uring submissions (the kernel performs them; only
/// `io_uring_enter` itself is filtered, and the ring is registered on disks the VMM
/// opened) and the arguments of allowed calls (`ioctl` is allowed whole).
public enum SeccompPolicy {
    /// What the Swift runtime, glibc's allocator and threads need everywhere.
    static let runtime: [Syscall] = [
        .futex, .mmap, .munmap, .mremap, .madvise, .mprotect, .brk,
        .rt_sigprocmask, .rt_sigreturn, .sigaltstack, .sched_yield, .sched_getaffinity,
        .clock_gettime, .clock_nanosleep, .nanosleep, .gettimeofday, .getpid, .gettid, .tgkill,
        .getrandom, .restart_syscall, .`exit`, .exit_group, .`write`, .`close`, .rseq, .set_robust_list,
    ]

    /// Running the guest: KVM_RUN and the vCPU's other ioctls, eventfds (wakeups, irqfd
    /// and ioeventfd companions), the console (stdout, console clients), devices served
    /// on the vCPU when a notification bypasses its ioeventfd (disk reads and writes,
    /// the entropy source, a TAP), kicking other vCPUs, and a failure report's symbol lookup
    /// through the fd the machine opened.
    static let vcpu: [Syscall] = runtime + [
        .ioctl, .`read`, .pread64, .pwrite64, .preadv, .pwritev, .fsync, .fdatasync, .fallocate,
        .io_uring_enter, .sendto, .`poll`, .ppoll, .lseek, .fstat, .newfstatat, .readv, .writev,
    ]

    /// A disk's worker: jobs and completions on eventfds, the I/O itself.
    static let blockWorker: [Syscall] = runtime + [
        .`read`, .pread64, .pwrite64, .preadv, .pwritev, .fsync, .fdatasync, .fallocate,
    ]

    /// Standard input that epoll cannot watch (a file, /dev/null): read, hand over.
    static let stdinReader: [Syscall] = runtime + [.`read`]

    /// Everything else the VMM process does after set-up: the event loop and its
    /// timers and signals, the API and console sockets, disks opened or reconfigured
    /// before boot, state files, building (or rebuilding, on reboot) the machine and
    /// starting its threads.
    static let main: [Syscall] = Array(Set(vcpu + blockWorker + stdinReader + [
        .openat, .`open`, .stat, .fstat, .lstat, .newfstatat, .statx, .access, .faccessat2, .readlink,
        .lseek, .readv, .dup, .dup3, .fcntl, .pipe2, .getdents64, .getcwd, .uname,
        .epoll_create1, .epoll_ctl, .epoll_wait, .epoll_pwait, .eventfd2, .signalfd4, .timerfd_create, .timerfd_settime,
        .socket, .bind, .listen, .accept4, .connect, .sendmsg, .recvfrom, .recvmsg, .shutdown,
        .getsockopt, .setsockopt, .getsockname, .getpeername,
        .unlink, .unlinkat, .rename, .renameat, .renameat2, .mkdir, .mkdirat, .rmdir, .ftruncate, .flock,
        .chmod, .fchmod, .umask,
        .io_uring_setup, .io_uring_register, .memfd_create,
        .clone, .clone3, .prctl, .seccomp, .rt_sigaction, .`kill`, .sched_setaffinity,
        .getuid, .geteuid, .getgid, .getegid, .getppid, .prlimit64, .wait4, .mincore,
    ])).sorted { $0.rawValue < $1.rawValue }

    /// The list for `kind`.
    public static func allowed(_ kind: ThreadKind) -> [Syscall] {
        switch kind {
        case .main: main
        case .vcpu: vcpu
        case .blockWorker: blockWorker
        case .stdinReader: stdinReader
        }
    }
}
