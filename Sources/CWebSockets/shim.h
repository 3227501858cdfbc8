#ifndef HERALD_CWEBSOCKETS_SHIM_H
#define HERALD_CWEBSOCKETS_SHIM_H
#include <libwebsockets.h>

/* LWS_PRE is macro arithmetic Swift cannot import. */
static const size_t herald_lws_pre = LWS_PRE;

/* Process name for threads (pthread_setname_np is GNU-only and hidden from Swift). */
#include <sys/prctl.h>
static inline void herald_set_thread_name(const char *name) {
    prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}
/* A timer on the lws loop that remembers its owner (lws hands the callback only the list node). */
#include <stddef.h>
typedef struct herald_timer {
    lws_sorted_usec_list_t sul;
    void *owner;
} herald_timer;

static inline void *herald_timer_owner(lws_sorted_usec_list_t *sul) {
    return ((herald_timer *)((char *)sul - offsetof(herald_timer, sul)))->owner;
}

/* A libev loop that lws adopts as a "foreign" loop: Herald drives it one wakeup at a time, so
 * the service thread keeps its own stop check, and lws installs no SIGINT watcher of its own
 * (the main thread owns the signals). EVBACKEND_EPOLL: a wakeup costs what is ready, not what
 * is connected. EVFLAG_NOSIGMASK: leave the thread's signal mask alone. */
#include <ev.h>
static inline void *herald_ev_loop_new(void) {
    return ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOSIGMASK);
}
static inline void herald_ev_loop_destroy(void *loop) { ev_loop_destroy((struct ev_loop *)loop); }
/* Blocks until something is ready, then handles it. */
static inline void herald_ev_run_once(void *loop) { ev_run((struct ev_loop *)loop, EVRUN_ONCE); }
static inline void herald_ev_wake(struct ev_loop *loop, ev_timer *timer, int revents) {
    (void)loop; (void)timer; (void)revents;
}
/* Like herald_ev_run_once, but returns after at most `seconds` even when nothing happened. */
static inline void herald_ev_run_for(void *loop, double seconds) {
    struct ev_loop *l = (struct ev_loop *)loop;
    ev_timer t;
    ev_timer_init(&t, herald_ev_wake, seconds, 0.);
    ev_timer_start(l, &t);
    ev_run(l, EVRUN_ONCE);
    ev_timer_stop(l, &t);
}
/* A one-shot timer on that loop. lws's own timers (lws_sul_schedule) only re-arm libev's timer
 * when it has expired, so an earlier deadline set while a later one is armed fires late; this
 * one is stopped and started again each time it is set. */
typedef void (*herald_ev_timer_fn)(void *owner);
typedef struct herald_ev_timer {
    ev_timer watcher; /* first: the callback casts back */
    herald_ev_timer_fn fn;
    void *owner;
} herald_ev_timer;
static inline void herald_ev_timer_fire(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    herald_ev_timer *t = (herald_ev_timer *)w;
    t->fn(t->owner);
}
static inline void herald_ev_timer_set(void *loop, herald_ev_timer *t, double seconds) {
    ev_timer_stop((struct ev_loop *)loop, &t->watcher);
    ev_timer_init(&t->watcher, herald_ev_timer_fire, seconds, 0.);
    ev_timer_start((struct ev_loop *)loop, &t->watcher);
}
/* The same timer, firing every `seconds` until stopped. */
static inline void herald_ev_timer_every(void *loop, herald_ev_timer *t, double seconds) {
    ev_timer_stop((struct ev_loop *)loop, &t->watcher);
    ev_timer_init(&t->watcher, herald_ev_timer_fire, seconds, seconds);
    ev_timer_start((struct ev_loop *)loop, &t->watcher);
}
static inline void herald_ev_timer_stop(void *loop, herald_ev_timer *t) {
    ev_timer_stop((struct ev_loop *)loop, &t->watcher);
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
