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

/* Waits up to timeout_ms for any of n Redis sockets or the eventfd (drained here) to be
   readable. Sets ready[i] to 1 for each readable (or hung up) socket. Returns the number of
   ready sockets, plus 1000 when woken; 0 on timeout. n is at most 64. */
static inline int herald_redis_wait_many(const int *redis_fds, int n, int *ready, int wake_fd, int timeout_ms) {
    struct pollfd fds[65];
    if (n > 64) n = 64;
    for (int i = 0; i < n; i++) { fds[i].fd = redis_fds[i]; fds[i].events = POLLIN; fds[i].revents = 0; ready[i] = 0; }
    fds[n].fd = wake_fd; fds[n].events = POLLIN; fds[n].revents = 0;
    int got = poll(fds, wake_fd >= 0 ? n + 1 : n, timeout_ms);
    if (got <= 0) return 0;
    int result = 0;
    for (int i = 0; i < n; i++) if (fds[i].revents) { ready[i] = 1; result++; }
    if (wake_fd >= 0 && fds[n].revents) {
        uint64_t v;
        ssize_t r = read(wake_fd, &v, sizeof v);
        (void)r;
        result += 1000;
    }
    return result;
}
#endif
