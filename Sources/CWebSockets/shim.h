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

#endif
