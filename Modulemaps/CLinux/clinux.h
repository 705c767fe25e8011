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
#endif
