// CURing: Debian's liburing (liburing-dev), the io_uring interface virtio-blk's
// asynchronous backend submits disk I/O through. liburing.h defines _GNU_SOURCE and
// _XOPEN_SOURCE before its own includes, which would parse the C library's headers a
// second, different way beside Swift's Glibc module; including them here first, as
// Glibc has them, keeps one definition of each. For the same reason the kernel's
// <linux/io_uring.h> comes first: swift-system's CSystem includes it, and liburing's
// own older copy (same include guard) would define its structs differently.
// No logic lives here.
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <time.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <linux/io_uring.h>
#include <liburing.h>
