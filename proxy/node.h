/* node: one region's running Meridian process. Owns the event loop, the
 * configuration in force, the listener, the backend (upstream pool or
 * embedded store), the client connection list, signals and the one periodic
 * maintenance timer. Never does work in a signal handler; never blocks the
 * loop. */
#ifndef MERIDIAN_NODE_H
#define MERIDIAN_NODE_H

#include <stdbool.h>
#include <stdint.h>
#include <event2/util.h>
#include <sys/queue.h>

#include "../config/conf.h"
#include "../util/err.h"
#include "stats.h"

struct event_base;
struct event;
struct listener;
struct upstream_pool;
struct embedded;
struct downstream;
struct repl;
struct retired;
struct retired_pool;

enum node_state { NODE_RUNNING, NODE_DRAINING, NODE_STOPPED };

struct deferred {
    void (*fn)(void *);
    void *p;
};

TAILQ_HEAD(downstream_list, downstream);

struct node {
    struct event_base *base;
    struct conf *conf;
    const struct conf_region *region;
    char *data_dir;
    enum node_state state;
    struct stats stats;
    struct listener *listener;
    struct upstream_pool *pool;      /* HTTP backend, or NULL */
    struct embedded *store;          /* embedded backend, or NULL */
    struct repl *repl;               /* replication: journal, peers, applier */
    struct downstream_list clients;
    struct event *ev_term, *ev_int, *ev_hup, *ev_tick, *ev_reap;
    struct deferred *reap;           /* freed at the end of the loop iteration */
    size_t n_reap, cap_reap;
    struct downstream **flush;       /* connections with output to write */
    size_t n_flush, cap_flush;
    uint64_t drain_deadline_ms;
    int exit_code;
    char via[96];                    /* "1.1 meridian" */
    struct retired *retired;         /* configurations replaced by reloads (reload.c) */
    struct retired_pool *retired_pools; /* backend pools replaced, finishing their work */
    struct {
        unsigned long ino;
        long long size, mtime_ns;
    } watch;                         /* the file as last seen */
};

/* Loads nothing itself: takes ownership of `conf`, finds `region_name` in it,
 * opens the backend and binds the client listener. */
int node_init(struct node *n, struct conf *conf, const char *region_name,
              const char *data_dir_override, struct err *err) MUST_CHECK;

/* Runs the loop until drained or stopped; returns the process exit code. */
int node_run(struct node *n);

void node_free(struct node *n);

/* Milliseconds on the loop's cached clock. */
uint64_t node_now_ms(struct node *n);

/* Frees `p` with `fn` once the current loop iteration's callbacks are done,
 * so that a callback still holding it can return safely. */
void node_defer_free(struct node *n, void (*fn)(void *), void *p);

/* Queues `c`'s output to be written at the end of the loop iteration. */
void node_flush_later(struct node *n, struct downstream *c);
/* Runs cb(arg) in the next loop iteration, after the callbacks of the I/O
 * that is ready by then: how work too big for one callback goes on in
 * slices. `*ev` is the caller's timer, made here the first time (freed by
 * the caller with event_free). Returns -1 when it cannot be made. */
int node_soon(struct node *n, struct event **ev, void (*cb)(evutil_socket_t, short, void *),
              void *arg);

/* Starts draining: stop accepting, let in-flight requests finish, then exit 0. */
void node_drain(struct node *n);

/* reload.c: reads the file again and swaps it in, or refuses it (logged,
 * counted) and keeps the running one. -1 when refused. */
int node_reload(struct node *n, const char *cause);
/* Reloads when the file changed on disk since the last look. */
void node_watch_config(struct node *n);
void node_free_retired(struct node *n);
/* The name of region `id` in any configuration this node has had
 * ("unknown" when none named it). */
const char *node_region_name_ever(const struct node *n, uint32_t id);
/* Sweeps replaced backend pools; frees those with nothing in flight (all of
 * them once the node is stopped). */
void node_sweep_retired(struct node *n, uint64_t now_ms);

/* A pool no longer used for new requests: freed once what it has in
 * flight is done (node_sweep_retired). */
void node_retire_pool(struct node *n, struct upstream_pool *pool);

/* Called by downstream when a connection goes away, so a drain can finish. */
void node_client_gone(struct node *n);

#endif
