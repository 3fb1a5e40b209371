#include "node.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "../store/embedded.h"
#include "../util/log.h"
#include "downstream.h"
#include "listener.h"
#include "repl.h"
#include "upstream.h"

#define NODE_TICK_MS 100

uint64_t node_now_ms(struct node *n)
{
    struct timeval tv;
    event_base_gettimeofday_cached(n->base, &tv);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* The end of a loop iteration: first the output queued by this iteration's
 * callbacks is written, then the objects they let go of are freed. */
static void node_reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    for (size_t i = 0; i < n->n_flush; i++)
        downstream_flush(n->flush[i]);
    n->n_flush = 0;
    /* Frees may defer more frees: take the list first. */
    while (n->n_reap) {
        size_t count = n->n_reap;
        struct deferred *list = n->reap;
        n->reap = NULL;
        n->n_reap = n->cap_reap = 0;
        for (size_t i = 0; i < count; i++)
            list[i].fn(list[i].p);
        free(list);
    }
}

void node_flush_later(struct node *n, struct downstream *c)
{
    if (n->n_flush == n->cap_flush) {
        size_t cap = n->cap_flush ? n->cap_flush * 2 : 64;
        struct downstream **f = realloc(n->flush, cap * sizeof *f);
        if (!f) {
            downstream_flush(c); /* no room to wait: write now */
            return;
        }
        n->flush = f;
        n->cap_flush = cap;
    }
    n->flush[n->n_flush++] = c;
    event_active(n->ev_reap, EV_TIMEOUT, 0);
}

int node_soon(struct node *n, struct event **ev, void (*cb)(evutil_socket_t, short, void *),
              void *arg)
{
    static const struct timeval now = { 0, 0 };
    if (!*ev && !(*ev = evtimer_new(n->base, cb, arg)))
        return -1;
    return evtimer_add(*ev, &now);
}

void node_defer_free(struct node *n, void (*fn)(void *), void *p)
{
    if (n->n_reap == n->cap_reap) {
        size_t cap = n->cap_reap ? n->cap_reap * 2 : 64;
        struct deferred *d = realloc(n->reap, cap * sizeof *d);
        if (!d) {
            /* Leaking beats a use-after-free. */
            log_error("out of memory deferring a free");
            return;
        }
        n->reap = d;
        n->cap_reap = cap;
    }
    n->reap[n->n_reap++] = (struct deferred){ fn, p };
    event_active(n->ev_reap, EV_TIMEOUT, 0);
}

static void node_maybe_stop(struct node *n)
{
    if (n->state == NODE_DRAINING && TAILQ_EMPTY(&n->clients)) {
        log_info("drained: every in-flight request answered, exiting");
        n->state = NODE_STOPPED;
        event_base_loopexit(n->base, NULL);
    }
}

void node_client_gone(struct node *n)
{
    node_maybe_stop(n);
}

void node_drain(struct node *n)
{
    if (n->state != NODE_RUNNING)
        return;
    n->state = NODE_DRAINING;
    n->drain_deadline_ms = node_now_ms(n) + n->conf->limits.drain_timeout_ms;
    listener_close(n->listener);
    n->listener = NULL;
    repl_drain(n->repl);
    downstream_drain_all(n);
    log_info("draining: stopped accepting; waiting for in-flight requests (up to %u ms)",
             n->conf->limits.drain_timeout_ms);
    node_maybe_stop(n);
}

static void node_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    uint64_t now = node_now_ms(n);
    downstream_sweep(n, now);
    if (n->pool)
        upstream_sweep(n->pool, now);
    node_sweep_retired(n, now);
    if (n->repl)
        repl_tick(n->repl, now);
    if (n->state == NODE_RUNNING)
        node_watch_config(n);
    if (n->state == NODE_DRAINING && now >= n->drain_deadline_ms) {
        log_warn("drain timeout: closing %s", "the connections still open");
        n->state = NODE_STOPPED;
        event_base_loopexit(n->base, NULL);
    }
}

static void node_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct node *n = arg;
    if (sig == SIGTERM && n->state == NODE_RUNNING) {
        log_info("SIGTERM: draining (send SIGTERM again to exit at once)");
        node_drain(n);
        return;
    }
    if (sig == SIGHUP) {
        node_reload(n, "SIGHUP");
        return;
    }
    log_info("%s: exiting at once", sig == SIGINT ? "SIGINT" : "second SIGTERM");
    n->exit_code = 1;
    n->state = NODE_STOPPED;
    event_base_loopbreak(n->base);
}

static int node_events(struct node *n, struct err *err)
{
    n->ev_term = evsignal_new(n->base, SIGTERM, node_signal_cb, n);
    n->ev_int = evsignal_new(n->base, SIGINT, node_signal_cb, n);
    n->ev_hup = evsignal_new(n->base, SIGHUP, node_signal_cb, n);
    n->ev_tick = event_new(n->base, -1, EV_PERSIST, node_tick_cb, n);
    n->ev_reap = event_new(n->base, -1, 0, node_reap_cb, n);
    if (!n->ev_term || !n->ev_int || !n->ev_hup || !n->ev_tick || !n->ev_reap)
        return err_set(err, "out of memory creating events");
    struct timeval tick = { 0, NODE_TICK_MS * 1000 };
    event_add(n->ev_term, NULL);
    event_add(n->ev_int, NULL);
    event_add(n->ev_hup, NULL);
    event_add(n->ev_tick, &tick);
    return 0;
}

static int node_backend(struct node *n, struct err *err)
{
    const struct conf_region *r = n->region;
    if (r->backend_embedded)
        /* Room for the replication journal, which shares the environment. */
        return embedded_open_sized(n->base, n->data_dir, EMBEDDED_MAP_SIZE + JOURNAL_MAP_SIZE,
                                   &n->store, err);
    return upstream_pool_new(n, r->backend_url, r->backend.host, r->backend.port, &n->pool, err);
}

int node_init(struct node *n, struct conf *conf, const char *region_name,
              const char *data_dir_override, struct err *err)
{
    memset(n, 0, sizeof *n);
    TAILQ_INIT(&n->clients);
    n->conf = conf;
    n->region = conf_region_by_name(conf, region_name);
    if (!n->region)
        return err_set(err, "%s: no region named '%s' in the configuration", conf->path,
                       region_name);
    n->data_dir = strdup(data_dir_override ? data_dir_override : n->region->data_dir);
    snprintf(n->via, sizeof n->via, "1.1 meridian-%s", n->region->name);
    signal(SIGPIPE, SIG_IGN);
    n->base = event_base_new();
    if (!n->data_dir || !n->base)
        return err_set(err, "out of memory");
    if (node_events(n, err) < 0 || node_backend(n, err) < 0 || repl_init(n, err) < 0)
        return -1;
    return listener_open(n, n->region->listen.host, n->region->listen.port, false, &n->listener, err);
}

int node_run(struct node *n)
{
    const struct conf_region *r = n->region;
    log_info("region %s (id %u%s) serving on %s, backend %s", r->name, r->id,
             r == &n->conf->regions[0] ? ", hub" : "", r->listen.text,
             r->backend_embedded ? "embedded" : r->backend_url);
    repl_start(n->repl);
    node_watch_config(n); /* the file as loaded: changes from now on reload */
    event_base_dispatch(n->base);
    return n->exit_code;
}

void node_free(struct node *n)
{
    listener_close(n->listener);
    n->listener = NULL;
    if (n->base)
        downstream_close_all(n);
    /* Owners of in-flight work see `closing` in their callbacks and clean up:
     * first the calls to peers and the backend fail, then the store and the
     * journal deliver their last completions. */
    repl_stop(n->repl);
    upstream_pool_free(n->pool);
    n->pool = NULL;
    n->state = NODE_STOPPED;
    node_sweep_retired(n, 0);
    /* The journal shares the store's environment and committer: the
     * committer stops first (delivering both parts' completions), the
     * environment closes last. */
    embedded_stop(n->store);
    repl_close(n->repl);
    n->repl = NULL;
    embedded_close(n->store);
    n->store = NULL;
    if (n->ev_reap)
        node_reap_cb(-1, 0, n);
    struct event *evs[] = { n->ev_term, n->ev_int, n->ev_hup, n->ev_tick, n->ev_reap };
    for (size_t i = 0; i < sizeof evs / sizeof *evs; i++)
        if (evs[i])
            event_free(evs[i]);
    if (n->base)
        event_base_free(n->base);
    free(n->flush);
    free(n->data_dir);
    conf_free(n->conf);
    node_free_retired(n);
}
