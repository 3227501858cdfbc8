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

/* permessage-deflate (RFC 7692) done by Herald, not by lws's own extension (which corrupts large
 * messages and asserts on bad input in 4.1.6). lws must still know an extension of that name,
 * or it refuses every frame with RSV1 set; this one passes payloads through untouched, so the
 * still-compressed bytes reach LWS_CALLBACK_RECEIVE, and Herald inflates them.
 * Contract (lws 4.1.6, lib/roles/ws/ext/extension.c, ops-ws.c): CONSTRUCT stores a pointer to a
 * NULL-terminated options array (lws walks it when the client offers parameters); PAYLOAD_RX
 * leaves the buffers alone and returns 0 (1 would mean "dropped"); everything else returns 0. */
static const struct lws_ext_options herald_pmd_options[] = { { NULL, EXTARG_NONE } };

static inline int herald_pmd_callback(struct lws_context *context, const struct lws_extension *ext,
                                      struct lws *wsi, enum lws_extension_callback_reasons reason,
                                      void *user, void *in, size_t len) {
    (void)context; (void)ext; (void)wsi; (void)user; (void)len;
    if (reason == LWS_EXT_CB_CONSTRUCT && in != NULL)
        *(const struct lws_ext_options **)in = herald_pmd_options;
    return 0;
}

static const struct lws_extension herald_extensions[] = {
    { "permessage-deflate", herald_pmd_callback, "permessage-deflate" },
    { NULL, NULL, NULL }
};

static inline const struct lws_extension *herald_extension_table(void) { return herald_extensions; }

/* In LWS_CALLBACK_ADD_HEADERS: replace the "Sec-WebSocket-Extensions: ..." line lws has just
 * written (it can only echo the extension's name and valueless options the client offered) by
 * `line` (a whole "Name: value\r\n"). The line ends right where args->p points; it is searched
 * for in the `budget` bytes before. Returns 0, or -1 when the line is not there or `line` does
 * not fit (the handshake then fails rather than send two headers). */
static inline int herald_replace_extensions_header(void *in, const char *line, int budget) {
    struct lws_process_html_args *args = (struct lws_process_html_args *)in;
    static const char name[] = "\r\nSec-WebSocket-Extensions: ";
    size_t n = sizeof(name) - 1, want = strlen(line);
    char *end = args->p;
    if (end == NULL || budget < (int)n) return -1;
    for (char *c = end - n; c >= end - budget; c--) {
        if (memcmp(c, name, n) != 0) continue;
        char *start = c + 2;                       /* keep the CRLF that ends the header before */
        int room = args->max_len + (int)(end - start);
        if ((int)want >= room) return -1;
        memcpy(start, line, want);
        args->max_len = room - (int)want;
        args->p = start + want;
        return 0;
    }
    return -1;
}

#endif
