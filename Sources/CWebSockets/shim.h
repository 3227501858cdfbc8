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

/* lws's log lines to stderr, but for the one lws 4.1 logs as an error on every socket adopted
 * with its first bytes already read (lws_adopt_socket_readbuf: "calling service"). */
#include <stdio.h>
#include <string.h>
static inline void herald_lws_log(int level, const char *line) {
    (void)level;
    if (line == NULL || strstr(line, "adopt_socket_readbuf") != NULL) return;
    fprintf(stderr, "libwebsockets: %s", line);
}

#endif
