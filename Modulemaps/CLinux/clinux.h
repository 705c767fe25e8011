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
/// TAP devices (virtio-net's host side): `struct ifreq` and the TUN ioctls, which Swift
/// cannot reach without net/if.h (whose socket declarations clash with Glibc's module).
/// The layout is the kernel's: a 16-byte name, then a union whose first member is the
/// flags. Each returns 0 (or an fd) or -errno.
#include <sys/ioctl.h>
struct clinux_ifreq { char name[16]; short flags; char pad[22]; };
static const int CLINUX_IFF_TAP = 0x0002, CLINUX_IFF_NO_PI = 0x1000, CLINUX_IFF_VNET_HDR = 0x4000, CLINUX_IFF_MULTI_QUEUE = 0x0100;
static const unsigned CLINUX_TUN_F_CSUM = 0x01, CLINUX_TUN_F_TSO4 = 0x02, CLINUX_TUN_F_TSO6 = 0x04, CLINUX_TUN_F_TSO_ECN = 0x08, CLINUX_TUN_F_UFO = 0x10;
/// TUNSETIFF on an open /dev/net/tun: attaches to (or creates) the interface `name`
/// ("" lets the kernel pick); the name it got is copied to `actual` (16 bytes).
static inline int clinux_tun_set_interface(int fd, const char *name, int flags, char actual[16]) {
    struct clinux_ifreq r = { 0 };
    for (int i = 0; i < 15 && name[i]; i++) r.name[i] = name[i];
    r.flags = (short)flags;
    if (ioctl(fd, 0x400454ca /* TUNSETIFF */, &r) != 0) return -errno;
    for (int i = 0; i < 16; i++) actual[i] = r.name[i];
    actual[15] = 0;
    return 0;
}
static inline int clinux_tun_set_offload(int fd, unsigned flags) {
    return ioctl(fd, 0x400454d0 /* TUNSETOFFLOAD */, (unsigned long)flags) == 0 ? 0 : -errno;
}
static inline int clinux_tun_set_header_size(int fd, int size) {
    return ioctl(fd, 0x400454d8 /* TUNSETVNETHDRSZ */, &size) == 0 ? 0 : -errno;
}
/// Whether interface `name` exists in this thread's network namespace (SIOCGIFINDEX on
/// a socket made here: /sys may show another namespace's). 1, 0, or -errno.
static inline int clinux_interface_exists(const char *name) {
    int s = (int)syscall(SYS_socket, 2 /* AF_INET */, 2 /* SOCK_DGRAM */ | 02000000 /* SOCK_CLOEXEC */, 0);
    if (s < 0) return -errno;
    struct clinux_ifreq r = { 0 };
    for (int i = 0; i < 15 && name[i]; i++) r.name[i] = name[i];
    int result = ioctl(s, 0x8933 /* SIOCGIFINDEX */, &r) == 0 ? 1 : (errno == ENODEV ? 0 : -errno);
    close(s);
    return result;
}
/// Sets IFF_UP on interface `name` (a TAP the VMM created for `tap=auto`).
static inline int clinux_interface_up(const char *name) {
    int s = (int)syscall(SYS_socket, 2 /* AF_INET */, 2 /* SOCK_DGRAM */ | 02000000 /* SOCK_CLOEXEC */, 0);
    if (s < 0) return -errno;
    struct clinux_ifreq r = { 0 };
    for (int i = 0; i < 15 && name[i]; i++) r.name[i] = name[i];
    int result = 0;
    if (ioctl(s, 0x8913 /* SIOCGIFFLAGS */, &r) != 0) result = -errno;
    else { r.flags |= 1 /* IFF_UP */; if (ioctl(s, 0x8914 /* SIOCSIFFLAGS */, &r) != 0) result = -errno; }
    close(s);
    return result;
}
/// Unix stream sockets by path for virtio-vsock's host side (sockaddr_un's fixed-size
/// path array is out of Swift's easy reach). Non-blocking and close-on-exec; the fd, or
/// -errno (ENAMETOOLONG for a path longer than sun_path holds). Through syscall(2):
/// declaring bind and connect here would clash with Glibc's declarations.
struct clinux_sockaddr_un { unsigned short family; char path[108]; };
static inline int clinux_unix_address(const char *path, struct clinux_sockaddr_un *a) {
    a->family = 1 /* AF_UNIX */;
    int i = 0;
    for (; path[i]; i++) { if (i >= 107) return -36 /* ENAMETOOLONG */; a->path[i] = path[i]; }
    a->path[i] = 0;
    return 0;
}
static inline int clinux_unix_connect(const char *path) {
    struct clinux_sockaddr_un a = { 0 };
    int r = clinux_unix_address(path, &a);
    if (r < 0) return r;
    int fd = (int)syscall(SYS_socket, 1, 1 /* SOCK_STREAM */ | 04000 /* SOCK_NONBLOCK */ | 02000000 /* SOCK_CLOEXEC */, 0);
    if (fd < 0) return -errno;
    if (syscall(SYS_connect, fd, &a, sizeof a) != 0) { int e = errno; close(fd); return -e; }
    return fd;
}
static inline int clinux_unix_listen(const char *path, int backlog) {
    struct clinux_sockaddr_un a = { 0 };
    int r = clinux_unix_address(path, &a);
    if (r < 0) return r;
    int fd = (int)syscall(SYS_socket, 1, 1 | 04000 | 02000000, 0);
    if (fd < 0) return -errno;
    if (syscall(SYS_bind, fd, &a, sizeof a) != 0 || syscall(SYS_listen, fd, backlog) != 0) { int e = errno; close(fd); return -e; }
    return fd;
}
/// A raw packet socket on interface `name` (AF_PACKET, every protocol): the far side of a
/// TAP for `scripts/bench --virtio-net`, which sends frames the TAP's reader receives and
/// receives what it writes. The fd, or -errno.
struct clinux_ifreq_index { char name[16]; int index; char pad[20]; };
struct clinux_sockaddr_ll { unsigned short family; unsigned short protocol; int index; unsigned short type; unsigned char packet_type; unsigned char length; unsigned char address[8]; };
static inline int clinux_packet_socket(const char *name) {
    int fd = (int)syscall(SYS_socket, 17 /* AF_PACKET */, 3 /* SOCK_RAW */ | 02000000, 0x0300 /* htons(ETH_P_ALL) */);
    if (fd < 0) return -errno;
    struct clinux_ifreq_index r = { 0 };
    for (int i = 0; i < 15 && name[i]; i++) r.name[i] = name[i];
    if (ioctl(fd, 0x8933 /* SIOCGIFINDEX */, &r) != 0) { int e = errno; close(fd); return -e; }
    struct clinux_sockaddr_ll a = { .family = 17, .protocol = 0x0300, .index = r.index };
    if (syscall(SYS_bind, fd, &a, sizeof a) != 0) { int e = errno; close(fd); return -e; }
    return fd;
}
#endif
