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
#endif
