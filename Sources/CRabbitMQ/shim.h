#ifndef HERALD_CRABBITMQ_SHIM_H
#define HERALD_CRABBITMQ_SHIM_H
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <amqp_framing.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* amqp_login is variadic: Swift cannot call it. SASL PLAIN with fixed arguments, announcing the
   connection.blocked capability so RabbitMQ tells the client when a resource alarm stops its
   publishes (rabbitmq-c merges it with its own capabilities). */
static inline amqp_rpc_reply_t herald_amqp_login_plain(amqp_connection_state_t state,
        const char *vhost, int channel_max, int frame_max, int heartbeat,
        const char *user, const char *password) {
    amqp_table_entry_t capability;
    capability.key = amqp_cstring_bytes("connection.blocked");
    capability.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capability.value.value.boolean = 1;
    amqp_table_entry_t property;
    property.key = amqp_cstring_bytes("capabilities");
    property.value.kind = AMQP_FIELD_KIND_TABLE;
    property.value.value.table.num_entries = 1;
    property.value.value.table.entries = &capability;
    amqp_table_t properties;
    properties.num_entries = 1;
    properties.entries = &property;
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, &properties,
                                      AMQP_SASL_METHOD_PLAIN, user, password);
}

/* Waits until the connection's socket or `wake_fd` is readable, at most `timeout_ms`.
   Returns 1: the socket; 2: the wake fd (socket not readable); 0: neither; -1: poll failed. */
static inline int herald_amqp_wait(amqp_connection_state_t state, int wake_fd, int timeout_ms) {
    struct pollfd fds[2];
    fds[0].fd = amqp_get_sockfd(state);
    fds[0].events = POLLIN;
    fds[0].revents = 0;
    fds[1].fd = wake_fd;
    fds[1].events = POLLIN;
    fds[1].revents = 0;
    int n;
    do { n = poll(fds, 2, timeout_ms); } while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    if (fds[0].revents) return 1;
    if (fds[1].revents) return 2;
    return 0;
}

static inline int herald_amqp_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
static inline void herald_amqp_eventfd_signal(int fd) { uint64_t one = 1; ssize_t r = write(fd, &one, sizeof one); (void)r; }
static inline void herald_amqp_eventfd_drain(int fd) { uint64_t v; ssize_t r = read(fd, &v, sizeof v); (void)r; }
static inline void herald_amqp_eventfd_close(int fd) { close(fd); }
#endif
