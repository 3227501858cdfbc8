#ifndef HERALD_CLIBEV_SHIM_H
#define HERALD_CLIBEV_SHIM_H
/* libev (Debian's libev-dev, which libwebsockets-dev pulls in): the epoll loop the WebSocket
 * service thread hands to libwebsockets. Macros and struct set-up Swift cannot import. */
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
#endif
