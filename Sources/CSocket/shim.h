#ifndef HERALD_CSOCKET_SHIM_H
#define HERALD_CSOCKET_SHIM_H
/* Sockets and epoll for the load generator's own clients (HeraldLoadClients) and the server's
 * listening socket (HeraldWebSocket's Acceptor): no library, only the macros and packed
 * structs Swift cannot import. */
#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <poll.h>

/* epoll for EpollClientPool: struct epoll_event is packed,
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
/* A listening TCP socket on host:port; "0.0.0.0" (or "") listens on every address, IPv6 and
 * IPv4 on one socket where the kernel has IPv6. Returns the fd, or -errno (-EADDRINUSE: taken;
 * -EINVAL: host does not resolve). */
static inline int herald_tcp_listen(const char *host, uint16_t port, int backlog) {
    int any = host == NULL || host[0] == 0 || strcmp(host, "0.0.0.0") == 0;
    struct addrinfo hints, *list = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    hints.ai_family = AF_UNSPEC;
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    const char *candidates[2] = { any ? "::" : host, any ? "0.0.0.0" : NULL };
    int last = -EINVAL;
    for (int c = 0; c < 2 && candidates[c]; c++) {
        if (getaddrinfo(candidates[c], service, &hints, &list) != 0) continue;
        for (struct addrinfo *a = list; a; a = a->ai_next) {
            int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
            if (fd < 0) { last = -errno; continue; }
            int one = 1, zero = 0;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (a->ai_family == AF_INET6 && any) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
            if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, backlog) == 0 &&
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0) {
                freeaddrinfo(list);
                return fd;
            }
            last = -errno;
            close(fd);
        }
        freeaddrinfo(list);
        list = NULL;
    }
    return last;
}
/* One accepted connection, or -errno (-EAGAIN: no more waiting; the listener is non-blocking).
 * Set up as lws's own accept path does (lws_adopt_socket does not): close-on-exec and Nagle off,
 * or small writes wait for the peer's delayed ACK; lws makes it non-blocking. */
static inline int herald_tcp_accept(int listener) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) return -errno;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}
/* 1: readable (or closed), 0: timed out, -errno: error. A negative fd only waits. */
static inline int herald_wait_readable(int fd, int timeout_ms) {
    struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
    int n = poll(&p, 1, timeout_ms);
    return n < 0 ? -errno : n;
}
static inline int herald_close(int fd) { return close(fd); }

/* errno, read in one place per Swift module (HeraldLoadClients' OSError). */
static inline int herald_errno(void) { return errno; }
/* The HTTP front (HeraldWebSocket's Acceptor): non-blocking reads and writes of accepted sockets. */
static inline int herald_set_nonblocking(int fd) { return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }
/* Bytes read (0: the peer closed), or -errno. */
static inline long herald_recv(int fd, void *buf, size_t len) {
    ssize_t n = recv(fd, buf, len, 0);
    return n < 0 ? -(long)errno : (long)n;
}
/* Bytes written, or -errno; never SIGPIPE. */
static inline long herald_send(int fd, const void *buf, size_t len) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    return n < 0 ? -(long)errno : (long)n;
}
static inline int herald_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
static inline int herald_epoll_delete(int ep, int fd) { return epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); }
static inline void herald_eventfd_signal(int fd) { uint64_t one = 1; ssize_t n = write(fd, &one, sizeof one); (void)n; }
static inline void herald_eventfd_drain(int fd) { uint64_t v; ssize_t n = read(fd, &v, sizeof v); (void)n; }
/* The peer's address as text ("127.0.0.1", "::1"; an IPv4 client of a dual-stack socket
 * without its ::ffff: prefix), or "?" when it cannot be had. */
static inline void herald_peer_name(int fd, char *out, size_t len) {
    struct sockaddr_storage a;
    socklen_t alen = sizeof a;
    snprintf(out, len, "?");
    if (getpeername(fd, (struct sockaddr *)&a, &alen) != 0) return;
    if (a.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&a)->sin_addr, out, (socklen_t)len);
    } else if (a.ss_family == AF_INET6) {
        struct in6_addr *v6 = &((struct sockaddr_in6 *)&a)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(v6)) inet_ntop(AF_INET, &v6->s6_addr[12], out, (socklen_t)len);
        else inet_ntop(AF_INET6, v6, out, (socklen_t)len);
    }
}
static inline int herald_shutdown_write(int fd) { return shutdown(fd, SHUT_WR); }
/* The first address of host (a name, an IPv4 or an IPv6 address without brackets) with port,
 * as a sockaddr in out; its length, or 0 when it does not resolve. */
static inline int herald_resolve(const char *host, uint16_t port, void *out, int outlen) {
    struct addrinfo hints, *list = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    if (getaddrinfo(host, service, &hints, &list) != 0 || list == NULL) return 0;
    int len = (int)list->ai_addrlen;
    if (len > outlen) { freeaddrinfo(list); return 0; }
    memcpy(out, list->ai_addr, (size_t)len);
    freeaddrinfo(list);
    return len;
}
/* A non-blocking TCP socket connecting to a resolved address; -1 on failure (errno set). */
static inline int herald_tcp_connect_to(const void *address, int len) {
    const struct sockaddr *sa = (const struct sockaddr *)address;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, sa, (socklen_t)len) != 0 && errno != EINPROGRESS) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}
/* Herald's outbound HTTP client: wait for one socket (POLLIN 1, POLLOUT 4); revents, 0 on
 * timeout, -errno on error; and a connect's outcome (0 or the errno it failed with). */
static inline int herald_poll_one(int fd, short events, int timeout_ms) {
    struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
    int n = poll(&p, 1, timeout_ms);
    return n < 0 ? -errno : (n == 0 ? 0 : (p.revents ? p.revents : events));
}
static inline int herald_connect_error(int fd) {
    int e = 0;
    socklen_t l = sizeof e;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) != 0) return errno;
    return e;
}
static inline const char *herald_strerror(int e) { return strerror(e); }
#endif
