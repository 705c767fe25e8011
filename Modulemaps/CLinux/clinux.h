// CLinux: Linux-only libc headers that Swift's Glibc module does not include
// (eventfd, signalfd, epoll), needed to wait for vCPU, signal and device events, and
// the CPUID instruction, which Swift cannot emit. No logic lives here.
#ifndef CLINUX_H
#define CLINUX_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <cpuid.h>

/// posix_spawn's POSIX_SPAWN_SETSID (glibc 2.26+), which glibc only declares under
/// _GNU_SOURCE, invisible to Swift's Glibc module.
static const short CLINUX_POSIX_SPAWN_SETSID = 0x80;

/// CPUID on the host: regs receives EAX, EBX, ECX, EDX.
static inline void clinux_cpuid(unsigned leaf, unsigned subleaf, unsigned regs[4]) {
    __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
}
#endif
