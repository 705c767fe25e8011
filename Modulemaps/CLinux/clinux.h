// CLinux: Linux-only libc headers that Swift's Glibc module does not include
// (eventfd, signalfd, epoll), needed to wait for vCPU, signal and device events.
// No logic lives here.
#ifndef CLINUX_H
#define CLINUX_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#endif
