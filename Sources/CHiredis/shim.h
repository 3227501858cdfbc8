#ifndef HERALD_CHIREDIS_SHIM_H
#define HERALD_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <stdint.h>

/* An eventfd another thread writes to, to wake a thread waiting on a PUB/SUB connection. */
static inline int herald_redis_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
static inline void herald_redis_wake(int fd) { uint64_t one = 1; ssize_t n = write(fd, &one, sizeof one); (void)n; }
static inline void herald_redis_close_fd(int fd) { if (fd >= 0) close(fd); }

/* Waits up to timeout_ms for the Redis socket or the eventfd (drained here) to be readable.
   Returns bit 1 when the socket is readable (or hung up), bit 2 when woken, 0 on timeout. */
static inline int herald_redis_wait(int redis_fd, int wake_fd, int timeout_ms) {
    struct pollfd fds[2] = {{redis_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    int n = poll(fds, wake_fd >= 0 ? 2 : 1, timeout_ms);
    if (n <= 0) return 0;
    int result = 0;
    if (fds[0].revents) result |= 1;
    if (wake_fd >= 0 && fds[1].revents) {
        uint64_t v;
        ssize_t r = read(wake_fd, &v, sizeof v);
        (void)r;
        result |= 2;
    }
    return result;
}
#endif
