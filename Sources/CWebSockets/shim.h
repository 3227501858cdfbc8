#ifndef HERALD_CWEBSOCKETS_SHIM_H
#define HERALD_CWEBSOCKETS_SHIM_H
#include <libwebsockets.h>

/* LWS_PRE is macro arithmetic Swift cannot import. */
static const size_t herald_lws_pre = LWS_PRE;

/* A timer on the lws loop that remembers its owner (lws hands the callback only the list node). */
#include <stddef.h>
typedef struct herald_timer {
    lws_sorted_usec_list_t sul;
    void *owner;
} herald_timer;

static inline void *herald_timer_owner(lws_sorted_usec_list_t *sul) {
    return ((herald_timer *)((char *)sul - offsetof(herald_timer, sul)))->owner;
}

/* epoll for the bench's own WebSocket client (EpollClientPool): struct epoll_event is packed,
 * so Swift gets plain arrays of keys and event masks instead. */
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <netinet/tcp.h>
static const uint32_t herald_epollin = EPOLLIN;
static const uint32_t herald_epollout = EPOLLOUT;
static const uint32_t herald_epollerr = EPOLLERR;
static const uint32_t herald_epollhup = EPOLLHUP;
static inline int herald_epoll_set(int ep, int op_add, int fd, uint32_t events, uint64_t key) {
    struct epoll_event e;
    e.events = events;
    e.data.u64 = key;
    return epoll_ctl(ep, op_add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &e);
}
static inline int herald_epoll_wait(int ep, uint64_t *keys, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[512];
    if (max > 512) max = 512;
    int n = epoll_wait(ep, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) { keys[i] = evs[i].data.u64; events[i] = evs[i].events; }
    return n;
}
static inline int herald_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
static inline int herald_set_nodelay(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}
static inline int herald_socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return -1;
    return err;
}
/* A non-blocking IPv4 TCP socket, connecting; -1 on failure (errno set). */
static inline int herald_tcp_connect(uint32_t ipv4_network_order, uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = ipv4_network_order;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}
#endif
