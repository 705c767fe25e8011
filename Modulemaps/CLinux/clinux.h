// CLinux: Linux-only libc headers that Swift's Glibc module does not include
// (eventfd, signalfd, epoll), needed to wait for vCPU, signal and device events,
// getrandom (virtio-rng's source), and the CPUID instruction, which Swift cannot emit.
// No logic lives here.
#ifndef CLINUX_H
#define CLINUX_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <errno.h>
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

/// posix_spawn's POSIX_SPAWN_SETSID (glibc 2.26+), which glibc only declares under
/// _GNU_SOURCE, invisible to Swift's Glibc module.
static const short CLINUX_POSIX_SPAWN_SETSID = 0x80;

/// CPUID on the host: regs receives EAX, EBX, ECX, EDX.
static inline void clinux_cpuid(unsigned leaf, unsigned subleaf, unsigned regs[4]) {
    __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
}
/// accept4(2) with SOCK_CLOEXEC | SOCK_NONBLOCK (glibc declares accept4 only under
/// _GNU_SOURCE): a connection for the event loop, never inherited by a child.
/// (sys/socket.h is not included here: it would take the socket constants away from
/// Swift's Glibc module in the modules that import both.)
struct sockaddr;
extern int accept4(int fd, struct sockaddr *address, unsigned int *length, int flags);
static inline int clinux_accept_nonblocking(int fd) {
    return accept4(fd, 0, 0, 02000000 /* SOCK_CLOEXEC */ | 04000 /* SOCK_NONBLOCK */);
}

/// O_DIRECT (glibc declares it only under _GNU_SOURCE): a disk opened with `direct` or
/// `cache=none` bypasses the host page cache. The x86-64 value.
static const int CLINUX_O_DIRECT = 040000;

/// fallocate(2) (declared by glibc only under _GNU_SOURCE): virtio-blk's discard and
/// write-zeroes punch holes in, or zero, ranges of a disk image without changing its
/// size. Returns 0 or -errno.
#include <linux/falloc.h>
static inline int clinux_fallocate(int fd, int mode, long long offset, long long length) {
    long r = syscall(SYS_fallocate, fd, mode, offset, length);
    return r == 0 ? 0 : -errno;
}

/// memfd_create(2), which Swift's Glibc module does not declare: an anonymous file the
/// `swiftvisor` command writes a VM's JSON description into and hands to the VMM
/// process it execs.
static inline int clinux_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

/// pidfd_open(2): an fd that polls readable when process `pid` ends, so `swiftvisor
/// wait` wakes when a VMM that is not its child exits instead of polling its pid.
/// The fd, or -errno (ENOSYS before Linux 5.3, ESRCH if it is already gone).
static inline int clinux_pidfd_open(int pid) {
#ifdef SYS_pidfd_open
    long r = syscall(SYS_pidfd_open, pid, 0);
    return r >= 0 ? (int)r : -errno;
#else
    (void)pid;
    return -ENOSYS;
#endif
}

/// Seccomp (per-thread system-call filters, as Firecracker installs them): the filter
/// program's types and constants, and the calls Swift cannot make itself (prctl and
/// syscall are variadic; siginfo's si_syscall sits inside a union).
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/audit.h>
#include <sys/prctl.h>
#include <signal.h>
/// no_new_privs, then the filter on the calling thread only. 0 or -errno.
static inline int clinux_seccomp_install(struct sock_filter *filter, unsigned short count) {
    struct sock_fprog program = { .len = count, .filter = filter };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) == 0 ? 0 : -errno;
}
/// Whether the kernel filters system calls (PR_GET_SECCOMP answers rather than EINVAL).
static inline int clinux_seccomp_available(void) { return prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0; }
/// Names the calling thread (pthread_setname_np is declared only under _GNU_SOURCE).
static inline void clinux_set_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }
/// The system call a SIGSYS from a SECCOMP_RET_TRAP filter reports.
static inline int clinux_siginfo_syscall(const siginfo_t *info) { return info->si_syscall; }
/// A raw system call with no arguments (for checking a filter from a test).
static inline long clinux_syscall0(long number) { return syscall(number, 0, 0, 0, 0, 0, 0); }
/// The kind of thread (an index into the seccomp policy's kinds) this thread runs as,
/// for the SIGSYS handler's report: thread-local, readable in a signal handler.
static __thread int clinux_thread_kind_value = -1;
static inline void clinux_set_thread_kind(int kind) { clinux_thread_kind_value = kind; }
static inline int clinux_thread_kind(void) { return clinux_thread_kind_value; }

/// The jailed launch (namespaces, a private root, no capabilities): the calls glibc
/// declares only under _GNU_SOURCE or not at all (pivot_root, capset), and the flag
/// values Swift cannot see. Each returns 0 or -errno.
#include <linux/capability.h>
static const int CLINUX_CLONE_NEWNS = 0x00020000;
static const int CLINUX_CLONE_NEWCGROUP = 0x02000000;
static const int CLINUX_CLONE_NEWUTS = 0x04000000;
static const int CLINUX_CLONE_NEWIPC = 0x08000000;
static const int CLINUX_CLONE_NEWPID = 0x20000000;
static const int CLINUX_CLONE_NEWNET = 0x40000000;
static const int CLINUX_O_PATH = 010000000;
static const int CLINUX_RLIMIT_NPROC = 6;
static inline int clinux_pipe_cloexec(int fds[2]) { return syscall(SYS_pipe2, fds, 02000000 /* O_CLOEXEC */) == 0 ? 0 : -errno; }
static inline int clinux_unshare(int flags) { return syscall(SYS_unshare, flags) == 0 ? 0 : -errno; }
static inline int clinux_setns(int fd, int type) { return syscall(SYS_setns, fd, type) == 0 ? 0 : -errno; }
static inline int clinux_pivot_root(const char *new_root, const char *put_old) {
    return syscall(SYS_pivot_root, new_root, put_old) == 0 ? 0 : -errno;
}
/// The signal this process gets when its parent dies (the jail's supervisor).
static inline int clinux_set_parent_death_signal(int signal) { return prctl(PR_SET_PDEATHSIG, signal, 0, 0, 0) == 0 ? 0 : -errno; }
static inline int clinux_set_no_new_privileges(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno; }
/// Gives up every capability for good: the bounding set (so no exec can regain one),
/// the ambient set, then the effective, permitted and inheritable sets.
static inline int clinux_drop_all_capabilities(void) {
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return -errno;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) return -errno;
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2] = { { 0, 0, 0 }, { 0, 0, 0 } };
    return syscall(SYS_capset, &header, data) == 0 ? 0 : -errno;
}
#endif
