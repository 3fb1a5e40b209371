/* repl: a node's replication machinery, as the proxy drives it. Owns the
 * journal (replication/journal), the HLC, the key locks, and the I/O around
 * them: the write path of container writes (writepath.c), the peer port's
 * endpoints (peer.c), shipping to the hub (shipper.c), following the hub's
 * confirmed log (follower.c) and applying it to the backend (applier.c);
 * reads and writes routed by consistency level and session token
 * (readpath.c, writewait.c, session.c, docread.c); custom resolution and the
 * conflicts feed (conflicts.c); failover to the next region (failover.c).
 * The decisions and storage live in replication/ and resolver/, which never
 * see a socket; this part never decides a conflict itself. */
#ifndef MERIDIAN_REPL_H
#define MERIDIAN_REPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "../config/conf.h"
#include "../replication/consistency.h"
#include "../replication/hlc.h"
#include "../replication/journal.h"
#include "../replication/session_token.h"
#include "headers.h"
#include "stats.h"

struct node;
struct downstream;
struct keylock;
struct upstream_pool;
struct upstream_exchange;
struct listener;
struct peer_stream;
struct write_op;
struct read_route;
struct ship_collect;
struct ship_kept;
struct event;
struct write_wait;
struct failover;
struct policy_table;
struct upstream_pool;

#define REPL_MAX_REGIONS 64

/* This region's role (topology.c). */
enum region_state { REGION_SERVING, REGION_JOINING, REGION_TAKING_OVER, REGION_RETIRED };
struct topology;

TAILQ_HEAD(peer_stream_list, peer_stream);

/* A confirmed-log entry the follower received and checked, handed to the
 * applier so that it neither waits for the entry to be stored nor reads and
 * parses it again. `prev` is the crts of the entry before it in the hub's
 * log: the applier takes it only right after that one. */
struct fresh_entry {
    struct fresh_entry *next;
    uint64_t prev;
    struct clog_entry e;
};
#define REPL_FRESH_MAX 1024

struct repl_stats {
    uint64_t writes_committed, writes_aborted, writes_unknown;
    uint64_t forged;                            /* writes refused for a forged metadata field */
    uint64_t conflicts[4][LWW_OUTCOMES];        /* by lww_conflict and lww_outcome */
    uint64_t procedure_runs, procedure_failures, procedure_ms;
    uint64_t conflicts_dismissed;
    uint64_t reads[CONS_STRONG + 1][5];         /* by level and enum read_served */
    uint64_t write_gate[5];                     /* writes by how their token was met */
    uint64_t writes_throttled;                  /* 429: staleness bound */
    uint64_t write_waits, write_wait_timeouts;  /* X-Meridian-Wait */
    uint64_t ship_batches, ship_errors, ship_writes;
    uint64_t ship_kept;                         /* writes shipped from memory (shipper_keep) */
    uint64_t frames_rejected;
    uint64_t applied, apply_backend_writes, apply_errors;
    uint64_t apply_log_reads;     /* entries the applier read back from the log */
    uint64_t recovered_committed, recovered_aborted;
    uint64_t clock_refusals;
    struct histogram replication_seconds[REPL_MAX_REGIONS]; /* by source region index */
    struct histogram confirm_seconds;
};

struct repl {
    struct node *node;
    struct journal *j;
    struct hlc hlc;
    struct keylock *locks;
    bool is_hub;
    const struct conf_region *self, *hub;
    struct listener *peer_listener;
    struct repl_stats stats;
    uint32_t topology;
    enum region_state state;       /* topology.c */
    struct topology *topo;
    bool join_known;               /* joining: the hub's head is known (join_target) */
    uint64_t join_target;
    uint64_t history_from;         /* joined by snapshot: the log is whole from here on */
    uint64_t fence_lsn;            /* no longer the hub: own writes from here on are shipped */
    uint32_t writes_tagged;        /* own writes with an LSN, not finished (writepath.c) */
    uint32_t fence_wait;           /* ... of them, those that started before the fence */
    bool fence_submitted, fenced;  /* ... and every decision it started is durable */
    uint64_t hub_changes;
    struct policy_table *policies; /* conflicts.c: the containers' policies in force */
    struct failover *failover;     /* failover.c: HTTP backend health; NULL for embedded */
    /* reads by consistency level (readpath.c) */
    struct session_token applied;  /* .confirmed: applied crts; v[]: per origin, the highest
                                      LSN whose decision is applied here */
    struct hub_window hub_applied; /* which of the hub's recent writes are applied here */
    TAILQ_HEAD(, read_route) read_waits;
    struct upstream_pool *peer_pools[REPL_MAX_REGIONS]; /* by region index, made on demand */
    bool ignore_session_tokens;    /* debug: MERIDIAN_DEBUG_IGNORE_SESSION_TOKENS=1 */
    uint64_t hub_hb_clock, hub_hb_last; /* the hub's last heartbeat: its clock, its log head */
    int64_t unapplied_n;           /* log entries stored here, not applied yet (the
                                      staleness lag in versions; counted, never scanned) */
    /* writes held for X-Meridian-Wait (writewait.c) */
    TAILQ_HEAD(, write_wait) write_waits;
    uint64_t peer_applied[REPL_MAX_REGIONS];  /* other regions' applied crts, as polled */
    uint32_t status_polls;                    /* polls in flight */

    /* satellites: the hub's peer port */
    struct upstream_pool *hub_pool;
    struct upstream_pool *follow_pool; /* where the log is followed from: the hub's, or
                                          while taking over, the region caught up from */
    const char *follow_name;
    /* shipper */
    bool ship_inflight;
    struct ship_collect *ship_build; /* the batch being framed, a slice per loop iteration */
    struct ship_kept *ship_kept;   /* frames of the latest committed writes (shipper.c) */
    struct event *ship_ev;         /* frames its next slice */
    struct event *pump_ev;         /* writes the log streams' next slices (peer.c) */
    uint32_t ship_gen;             /* answers of an earlier hub's generation are ignored */
    uint64_t ship_after;           /* the hub decided everything up to here */
    uint64_t ship_retry_ms, ship_backoff_ms;
    /* follower */
    struct upstream_exchange *follow;
    struct sbuf follow_buf;        /* bytes of a line not yet complete */
    struct sbuf follow_batch;      /* complete lines waiting to be stored */
    uint64_t follow_batch_last;    /* crts of the batch's last line */
    uint64_t follow_submitted;     /* crts of the last line handed to the committer
                                      to store: no fresh entry after it is applied */
    size_t follow_batch_n;
    bool follow_storing, follow_paused;
    struct fresh_entry *fresh_head, *fresh_tail; /* received, in log order */
    size_t fresh_n;
    uint64_t follow_retry_ms, follow_backoff_ms;
    uint64_t hub_last_crts, hub_heard_ms;
    /* applier: entries in flight, in crts order */
    struct apply_op *apply_head, *apply_tail;
    uint32_t apply_inflight, apply_window;
    bool apply_blocked;            /* the last entry dispatched waits for its key */
    bool apply_granting;           /* inside keylock_acquire: a grant now is synchronous */
    uint64_t apply_dispatched;     /* crts of the last entry taken up */
    uint64_t apply_persisted;      /* applied position last written to LMDB */
    uint64_t apply_retry_ms;
    /* hub: confirmed-log streams being served */
    struct peer_stream_list streams;
    uint64_t last_heartbeat_ms;
    uint32_t recovering;           /* journal entries being resolved at start-up */
    bool recover_again;            /* some could not be resolved yet */
    bool closing;                  /* shutting down: start nothing new */
};

int repl_init(struct node *n, struct err *err) MUST_CHECK;
/* A reload is about to put `next` in force: -1 with a reason to refuse it. */
int repl_reload(struct repl *r, const struct conf *next, struct err *err) MUST_CHECK;
void repl_start(struct repl *r);
/* SIGTERM: stop serving peers (streams end, the peer port closes). */
void repl_drain(struct repl *r);
/* Resolves journal entries left in the intent state (crash, lost backend answer). */
void repl_recover(struct repl *r);
/* A journaled write's backend call succeeded / failed. */
void repl_commit_write(struct repl *r, const struct repl_write *w,
                       void (*done)(void *, int, const char *), void *arg);
void repl_abort_write(struct repl *r, uint64_t lsn, void (*done)(void *, int, const char *),
                      void *arg);
/* Embedded store: the write itself (`sop`, from embedded_write_prepare), its
 * journal entry, already committed, and at the hub its decision, in one
 * durable job. When the store refuses the write (its status is not 2xx),
 * nothing is journaled. done gets rc -1 when the job failed and nothing of
 * it stays; the caller finishes `sop` with done's rc and reason. */
struct embedded_op;
void repl_commit_store_write(struct repl *r, const struct repl_write *w, struct embedded_op *sop,
                             void (*done)(void *, int, const char *), void *arg);
/* Shutdown, first step: start nothing new, stop peers, fail calls to the hub. */
void repl_stop(struct repl *r);
/* Last step, after the backend is closed: the journal's last completions run. */
void repl_close(struct repl *r);
/* The maintenance timer's share: retries, reconnects, heartbeats. */
void repl_tick(struct repl *r, uint64_t now_ms);
int repl_render(struct repl *r, struct sbuf *out);

/* The key of a document in journal and lock tables. */
size_t repl_key(const char *container, const char *id, char *buf, size_t cap);
uint64_t repl_hlc_now(struct repl *r);
int repl_region_index(const struct repl *r, uint32_t region_id);
const char *repl_region_name(const struct repl *r, uint32_t region_id);

/* writepath.c: container writes from clients. */
void writepath_start(struct downstream *c, const struct conf_container *ct);
void writepath_detach(struct write_op *w);
/* The document id of `target` under container route, or NULL/0. */
const char *writepath_doc_id(const struct conf_container *ct, const char *target, size_t tlen,
                             size_t *id_len);

/* A read of a container document: annotated with X-Meridian-Version,
 * X-Meridian-Confirmed and X-Meridian-Crts, then `proceed` sends it to the
 * backend. When a write to the key is in progress the read waits for it, so
 * a client reads its own write with the headers of that write. Returns
 * false when the caller should proceed at once (annotated already). */
struct read_wait;
bool repl_read(struct repl *r, struct downstream *c, const struct conf_container *ct,
               const char *id, void (*proceed)(struct downstream *c));
void repl_read_cancel(struct read_wait *rw);
/* GET {route}_changes */
void repl_changes(struct repl *r, struct downstream *c, const struct conf_container *ct);

/* peer.c: the peer port. */
void peer_handle(struct downstream *c);
void peer_stream_cancel(struct peer_stream *s);
void peer_stream_writable(struct peer_stream *s);
struct downstream *peer_stream_client(struct peer_stream *s);
struct ship_req;
/* The shipping satellite went away: the batch is still decided, unanswered. */
void peer_ship_detach(struct ship_req *s);
void peer_streams_pump(struct repl *r);
void peer_streams_heartbeat(struct repl *r);

/* shipper.c / follower.c / applier.c */
void shipper_kick(struct repl *r);
/* Keeps the frame of a write just committed, for the next batch. */
void shipper_keep(struct repl *r, const struct repl_write *w);
void shipper_close(struct repl *r);
void follower_kick(struct repl *r);
void follower_stop(struct repl *r);
/* Drops the received entries not yet taken by the applier. */
void follower_fresh_clear(struct repl *r);
void applier_kick(struct repl *r);
/* Hands a log entry held in memory (moved: *e is emptied) to the applier,
 * with the crts of the entry before it; when too many wait already, the
 * applier reads it back from the log instead. */
void applier_fresh_push(struct repl *r, uint64_t prev, struct clog_entry *e);
/* The same for the hub's decisions kept by a batch (keep_decided). */
struct confirm_batch;
void applier_take_decided(struct repl *r, struct confirm_batch *b);
/* Retries entries whose backend write failed. */
void applier_tick(struct repl *r, uint64_t now_ms);
void applier_close(struct repl *r);

/* The hub decides the writes of `b` (owned) and then calls done. */
struct confirm_batch;
typedef void (*repl_decided_fn)(void *arg, struct confirm_batch *b, int rc, const char *reason);
int repl_decide(struct repl *r, struct confirm_batch *b, repl_decided_fn done, void *arg);

/* conflicts.c: custom conflict resolution and the conflicts feed. */
struct dismiss_req;
/* Records each container's policy, refusing one that changed. */
int conflicts_init(struct repl *r, struct err *err) MUST_CHECK;
/* A reload: checks `conf`'s containers against their fixed policies and
 * puts its policy table in force; -1 (nothing changed) when one differs. */
int conflicts_reload(struct repl *r, const struct conf *conf, struct err *err) MUST_CHECK;
void conflicts_close(struct repl *r);
/* Gives a batch about to be decided the containers' policies. */
void conflicts_prepare(struct repl *r, struct confirm_batch *b);
/* Adds a decided batch's counts to the metrics. */
void conflicts_count(struct repl *r, const struct confirm_batch *b);
/* {route}_conflicts...: true when it was one (and is answered or in flight). */
bool conflicts_route(struct downstream *c, const struct conf_container *ct);
/* Peer port: DELETE /_meridian/v1/conflicts/ + rest ("CONTAINER/ID"). */
void conflicts_peer_dismiss(struct repl *r, struct downstream *c, const char *rest, size_t len);
/* The client went away. */
void conflicts_detach(struct dismiss_req *d);
int conflicts_render(struct repl *r, struct sbuf *out);

/* readpath.c: container reads by consistency level and session token. */
enum read_served {
    SERVED_LOCAL, SERVED_AFTER_WAIT, SERVED_FORWARDED, SERVED_REFUSED,
    SERVED_FOR_PEER,   /* answered (served or refused) for another region that forwarded it */
};
typedef void (*readpath_serve_fn)(struct downstream *c);
/* Routes a container read (document, listing, change feed, conflicts feed):
 * `serve` serves it from this region when the level and token allow.
 * Always takes the request (answered, or in flight). */
bool readpath_start(struct downstream *c, readpath_serve_fn serve);
void readpath_cancel(struct read_route *rr);
/* Apply progressed or the timer ticked: waiting reads decide again. */
void readpath_wake(struct repl *r, uint64_t now_ms);
/* The request's level (account's, relaxed by X-Consistency-Level); -1 when
 * refused, and then answered 400. */
int readpath_level(struct downstream *c, enum consistency *out);
/* This region's progress as replication/consistency sees it. */
void readpath_progress(struct repl *r, struct region_progress *p, bool with_lag);
bool readpath_is_forwarded(const struct downstream *c);
bool readpath_is_failover(const struct downstream *c);
int readpath_render(struct repl *r, struct sbuf *out);

/* The write gate: level, token (wait for apply, else 404/1002), the
 * staleness bound (429), the single write region (forwarded to the hub);
 * `serve` starts the write here when it may. */
bool readpath_gate_write(struct downstream *c, readpath_serve_fn serve);

/* writewait.c: X-Meridian-Wait. */
struct writewait_spec {
    bool wait;
    uint32_t regions;              /* 0: until confirmed */
    uint32_t timeout_ms;
};
/* The request's wait (out may be NULL: only checks); -1 with why. */
int writewait_parse(struct downstream *c, struct writewait_spec *out, char *why, size_t cap);
/* Holds a successful write's answer when the request asked to wait: true
 * when held (the client is the wait's from now on). */
bool writewait_hold(struct repl *r, struct downstream *c, uint64_t lsn, int status,
                    const char *headers, size_t hlen, const char *body, size_t blen);
/* An own write's decision is applied here. */
void writewait_decided(struct repl *r, const struct clog_entry *e);
void writewait_tick(struct repl *r, uint64_t now_ms);
void writewait_cancel(struct write_wait *ww);
void writewait_close(struct repl *r);
int writewait_render(struct repl *r, struct sbuf *out);

/* Forwards the request to the hub (a change feed older than this region's
 * history); always takes it. */
void readpath_to_hub(struct downstream *c, const char *why);

/* A container request sent to the next region because this region's
 * backend is down (failover.c decides); always takes the request. */
bool readpath_failover(struct downstream *c);

/* failover.c */
int failover_init(struct repl *r, struct err *err) MUST_CHECK;
void failover_close(struct repl *r);
void failover_tick(struct repl *r, uint64_t now_ms);
bool failover_active(const struct repl *r);
/* The regions after this one in the configuration's order, wrapping. */
void failover_candidates(const struct repl *r, struct read_decision *d);
void failover_count(struct repl *r);
int failover_render(struct repl *r, struct sbuf *out);

/* topology.c: this region's role, and topology changes at run time. */
int topology_init(struct repl *r, struct err *err) MUST_CHECK;
void topology_start(struct repl *r);
int topology_reload_check(struct repl *r, const struct conf *next, struct err *err) MUST_CHECK;
/* node->conf is the new one (`old` stays allocated): pointers into the
 * configuration move to it; `self` is this region in it (NULL: removed). */
void topology_swapped(struct repl *r, const struct conf *old, const struct conf_region *self);
void topology_tick(struct repl *r, uint64_t now_ms);
void topology_close(struct repl *r);
int topology_render(struct repl *r, struct sbuf *out);
const char *topology_state_name(enum region_state s);
/* An own write with an LSN is finished (committed, aborted or failed). */
void topology_write_done(struct repl *r, uint64_t lsn);
/* Whether an own write is decided in the transaction that commits it. */
bool topology_decides_own(const struct repl *r, uint64_t lsn);
/* The follower heard the stream's first heartbeat / a snapshot's start. */
void topology_heartbeat(struct repl *r, uint64_t hub_last);
void topology_snapshot(struct repl *r, uint64_t upto, uint64_t entries);
/* The applied position moved. */
void topology_applied(struct repl *r);

/* A new pool to region g's peer port (NULL, logged, when it cannot be made). */
struct upstream_pool *repl_peer_link(struct repl *r, const struct conf_region *g);
/* The peer pool of region `id` (NULL for this region or an unknown one). */
struct upstream_pool *repl_peer_pool(struct repl *r, uint32_t id);
/* session.c: the per-origin applied marks, from the log at start-up. */
void repl_applied_rebuild(struct repl *r);
/* The applier finished an entry: the per-origin applied marks move on. */
void repl_note_applied(struct repl *r, const struct clog_entry *e);
/* Answers with the JSON text of `j` (released). */
void repl_reply_json(struct downstream *c, int status, json_t *j);
/* Adds X-Session-Token to a read's answer: the request's token merged with
 * this region's progress (and own tentative write `lsn`, if not 0), its
 * confirmed position at least `crts` (the confirmed document the answer
 * shows, 0 for none). */
void repl_add_token(struct repl *r, struct downstream *c, uint64_t lsn, uint64_t crts);

/* Counts the entries stored and not applied, once (start, role changes). */
void repl_count_unapplied(struct repl *r);

/* After new entries are in this region's confirmed log. */
void repl_log_grew(struct repl *r, uint64_t last_crts);

/* The request's X-Session-Token (or x-ms-session-token); the empty token
 * when it has none; -1 with the reason when malformed. */
int repl_request_token(const struct hdr_block *req, struct session_token *t,
                       struct err *err) MUST_CHECK;

/* Session token of an answer: the request's token merged with this region's
 * progress and, for a write, its version; its confirmed position at least
 * `crts`. A document the applier has just committed is readable before its
 * completion moves this region's applied position, so a read's token names
 * the crts of what it returned, not only that position: else another region
 * could serve an older version to the same session. */
int repl_session_token(struct repl *r, const struct hdr_block *req, uint64_t lsn, uint64_t crts,
                       char *out, struct err *err) MUST_CHECK;

#endif
