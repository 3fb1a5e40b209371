#include "repl.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <jansson.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../replication/confirm.h"
#include "../store/embedded.h"
#include "../util/log.h"
#include "backend.h"
#include "downstream.h"
#include "keylock.h"
#include "listener.h"
#include "node.h"
#include "route.h"
#include "upstream.h"

/* Bytes read from a peer link per callback: about a dozen confirmed-log
 * entries of 1 KiB documents, so that following the hub's log never holds
 * this region's clients up for more than a fraction of a millisecond. */
#define PEER_READ_MAX 16384

size_t repl_key(const char *container, const char *id, char *buf, size_t cap)
{
    return journal_key(container, id, buf, cap);
}

uint64_t repl_hlc_now(struct repl *r)
{
    return hlc_now(&r->hlc, hlc_wall_ms());
}

int repl_region_index(const struct repl *r, uint32_t region_id)
{
    const struct conf *conf = r->node->conf;
    for (size_t i = 0; i < conf->n_regions && i < REPL_MAX_REGIONS; i++)
        if (conf->regions[i].id == region_id)
            return (int)i;
    return -1;
}

const char *repl_region_name(const struct repl *r, uint32_t region_id)
{
    int i = repl_region_index(r, region_id);
    return i < 0 ? node_region_name_ever(r->node, region_id) : r->node->conf->regions[i].name;
}

/* Until the peer port has TLS, it only binds where strangers cannot reach. */
static bool address_is_private(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (a6.s6_addr[0] & 0xfe) == 0xfc;
    if (inet_pton(AF_INET, host, &a4) != 1)
        return false;
    uint32_t ip = ntohl(a4.s_addr);
    return (ip >> 24) == 127 || (ip >> 24) == 10 || (ip >> 20) == 0xac1 || (ip >> 16) == 0xc0a8;
}

/* --- the hub's decisions ----------------------------------------------------- */

struct decide_job {
    struct repl *r;
    struct confirm_batch *b;
    repl_decided_fn done;
    void *arg;
    uint64_t submitted_ms;
};

static int decide_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct decide_job *dj = arg;
    return confirm_apply(txn, dj->r->j, dj->b, err);
}

static void decide_done(void *arg, int rc, const char *reason)
{
    struct decide_job *dj = arg;
    struct repl *r = dj->r;
    if (rc == 0) {
        conflicts_count(r, dj->b);
        stats_observe(&r->stats.confirm_seconds,
                      (hlc_wall_ms() - dj->submitted_ms) / 1000.0);
        applier_take_decided(r, dj->b);
        if (dj->b->n_decided)
            repl_log_grew(r, dj->b->last_crts);
    }
    dj->done(dj->arg, dj->b, rc, reason);
    free(dj);
}

int repl_decide(struct repl *r, struct confirm_batch *b, repl_decided_fn done, void *arg)
{
    struct decide_job *dj = calloc(1, sizeof *dj);
    if (!dj)
        return -1;
    *dj = (struct decide_job){ r, b, done, arg, hlc_wall_ms() };
    b->crts_floor = repl_hlc_now(r);
    b->keep_decided = true;
    conflicts_prepare(r, b);
    if (committer_submit(r->j->committer, decide_apply, decide_done, dj, true) < 0) {
        free(dj);
        return -1;
    }
    return 0;
}

static int count_one(void *arg, uint64_t crts, const char *json, size_t len)
{
    (void)crts, (void)json, (void)len;
    (*(int64_t *)arg)++;
    return 0;
}

void repl_count_unapplied(struct repl *r)
{
    r->unapplied_n = 0;
    if (r->j->stored_crts > r->j->applied_crts)
        journal_scan_clog(r->j, r->j->applied_crts, r->j->stored_crts, SIZE_MAX, count_one,
                          &r->unapplied_n);
}

void repl_log_grew(struct repl *r, uint64_t last_crts)
{
    if (last_crts > r->j->stored_crts)
        r->j->stored_crts = last_crts;
    peer_streams_pump(r);
    applier_kick(r);
}

/* --- start-up recovery ---------------------------------------------------------- */

struct recover_op {
    struct repl *r;
    struct repl_write w;
    char key[512];
    size_t klen;
};


static void recover_finish(void *arg, int rc, const char *reason)
{
    struct recover_op *op = arg;
    if (rc < 0)
        log_error("recovery of lsn %llu: %s", (unsigned long long)op->w.lsn, reason);
    keylock_release(op->r->locks, op->key, op->klen);
    op->r->recovering--;
    if (op->r->recovering == 0 && !op->r->closing) {
        log_info("recovery done: %llu committed, %llu aborted",
                 (unsigned long long)op->r->stats.recovered_committed,
                 (unsigned long long)op->r->stats.recovered_aborted);
        shipper_kick(op->r);
    }
    repl_write_clear(&op->w);
    free(op);
}

/* Whether the backend holds exactly this write (its metadata names it). */
static bool backend_holds(const struct repl *r, const struct repl_write *w,
                          const struct backend_answer *a, const char *meta_field)
{
    if (w->is_delete)
        return a->status == 404;
    if (a->status < 200 || a->status > 299)
        return false;
    json_t *doc = json_loadb(a->body, a->body_len, 0, NULL);
    json_t *m = json_object_get(doc, meta_field);
    bool holds = json_integer_value(json_object_get(m, "lsn")) == (json_int_t)w->lsn &&
                 json_integer_value(json_object_get(m, "regionId")) == (json_int_t)r->self->id;
    json_decref(doc);
    return holds;
}

static void recover_read(void *arg, const struct backend_answer *a)
{
    struct recover_op *op = arg;
    struct repl *r = op->r;
    const struct conf_container *ct = conf_container_by_name(r->node->conf, op->w.container);
    if (r->closing) {
        recover_finish(op, 0, NULL);
        return;
    }
    if (a->status == 0) {
        /* The backend is unreachable: try again from the maintenance timer. */
        log_warn("recovery of lsn %llu waits for the backend: %s", (unsigned long long)op->w.lsn,
                 a->error);
        r->recover_again = true;
        recover_finish(op, 0, NULL);
        return;
    }
    if (ct && backend_holds(r, &op->w, a, ct->metadata_field)) {
        r->stats.recovered_committed++;
        repl_commit_write(r, &op->w, recover_finish, op);
    } else {
        r->stats.recovered_aborted++;
        repl_abort_write(r, op->w.lsn, recover_finish, op);
    }
}

static void recover_locked(void *arg)
{
    struct recover_op *op = arg;
    if (op->r->closing) {
        recover_finish(op, 0, NULL);
        return;
    }
    const struct conf_container *ct = conf_container_by_name(op->r->node->conf, op->w.container);
    char path[1024];
    snprintf(path, sizeof path, "%s%s", ct ? ct->route : "/", op->w.id);
    backend_request(op->r->node, "GET", path, NULL, NULL, NULL, 0, recover_read, op);
}

struct recover_list {
    struct recover_op **v;
    size_t n, cap;
    struct repl *r;
};

static int recover_collect(void *arg, const struct repl_write *w)
{
    struct recover_list *l = arg;
    if (w->state != WRITE_INTENT)
        return 0;
    struct recover_op *op = calloc(1, sizeof *op);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct recover_op **v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            free(op);
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    if (!op || repl_write_copy(&op->w, w) < 0) {
        free(op);
        return 1;
    }
    op->r = l->r;
    op->klen = repl_key(w->container, w->id, op->key, sizeof op->key);
    l->v[l->n++] = op;
    return 0;
}

/* Intent entries are writes whose backend call may or may not have happened:
 * read the document back and decide by its metadata. Collected first, then
 * resolved, because a journal scan must not run other journal reads. */
void repl_recover(struct repl *r)
{
    r->recover_again = false;
    struct recover_list l = { .r = r };
    journal_scan_writes(r->j, 0, SIZE_MAX, recover_collect, &l);
    if (l.n)
        log_info("recovery: %zu journal entries were in flight at the last stop", l.n);
    r->recovering += (uint32_t)l.n;
    for (size_t i = 0; i < l.n; i++)
        if (keylock_acquire(r->locks, l.v[i]->key, l.v[i]->klen, recover_locked, l.v[i]) < 0)
            recover_finish(l.v[i], -1, "out of memory");
    free(l.v);
}

/* --- commit and abort of a journaled write ------------------------------------ */

struct commit_job {
    struct repl *r;
    struct repl_write w;
    struct confirm_batch *b;      /* at the hub: the write is decided in the same step */
    struct embedded_op *sop;      /* embedded store: the write itself, in the same step */
    bool refused;                 /* ... and the store refused it: nothing was journaled */
    void (*done)(void *, int, const char *);
    void *arg;
};

/* The journal entry of a write the embedded store holds: with the store's
 * key instead of a second copy of the document when the store keeps the
 * journaled bytes. */
static int commit_journal(MDB_txn *txn, struct commit_job *cj, struct err *err)
{
    size_t klen, slen;
    const char *sdoc = cj->sop ? embedded_write_doc(cj->sop, &slen) : NULL;
    if (!sdoc || !cj->w.doc || slen != strlen(cj->w.doc) || memcmp(sdoc, cj->w.doc, slen) != 0)
        return journal_put_write(txn, cj->r->j, &cj->w, err);
    const char *key = embedded_write_key(cj->sop, &klen);
    return journal_put_write_ref(txn, cj->r->j, &cj->w, key, klen, err);
}

static int commit_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct commit_job *cj = arg;
    struct journal *j = cj->r->j;
    struct head_rec h;
    journal_get_head_txn(txn, j, cj->w.container, cj->w.id, &h);
    if (cj->sop) {
        /* The store's document changes: this region's last write of the key,
         * still journaled, may refer to it (others of the key never write
         * the store while it is pending). */
        if (h.exists && h.pending && h.version.region == cj->r->self->id &&
            journal_keep_doc(txn, j, h.version.lsn, err) < 0)
            return -1;
        if (embedded_write_apply(cj->r->node->store, txn, cj->sop, err) < 0)
            return -1;
        int status = embedded_write_status(cj->sop);
        cj->refused = status < 200 || status > 299;
        if (cj->refused)
            return 0;
    }
    struct head_rec nh = { .exists = true, .version = repl_write_version(&cj->w),
                           .hlc = cj->w.hlc, .crts = 0, .pending = h.pending + 1,
                           .deleted = cj->w.is_delete };
    cj->w.state = WRITE_COMMITTED;
    if (commit_journal(txn, cj, err) < 0 ||
        journal_put_head(txn, j, cj->w.container, cj->w.id, &nh, err) < 0)
        return -1;
    return cj->b ? confirm_apply(txn, j, cj->b, err) : 0;
}

static void commit_done(void *arg, int rc, const char *reason)
{
    struct commit_job *cj = arg;
    struct repl *r = cj->r;
    if (rc == 0 && !cj->refused) {
        r->stats.writes_committed++;
        if (cj->b) {
            conflicts_count(r, cj->b);
            applier_take_decided(r, cj->b);
            repl_log_grew(r, cj->b->last_crts);
        } else {
            shipper_keep(r, &cj->w);
            shipper_kick(r);
        }
    }
    cj->done(cj->arg, rc, reason);
    repl_write_clear(&cj->w);
    if (cj->b) {
        cj->b->ws = NULL;
        cj->b->n = 0;
        confirm_batch_free(cj->b);
    }
    free(cj);
}

static void commit_submit(struct repl *r, const struct repl_write *w, struct embedded_op *sop,
                          void (*done)(void *, int, const char *), void *arg)
{
    struct commit_job *cj = calloc(1, sizeof *cj);
    if (!cj || repl_write_copy(&cj->w, w) < 0) {
        free(cj);
        done(arg, -1, "out of memory");
        return;
    }
    *cj = (struct commit_job){ .r = r, .w = cj->w, .sop = sop, .done = done, .arg = arg };
    bool decide = topology_decides_own(r, w->lsn);
    if (decide) {
        cj->b = calloc(1, sizeof *cj->b);
        if (cj->b) {
            *cj->b = (struct confirm_batch){ .origin = r->self->id, .ws = &cj->w, .n = 1,
                                             .crts_floor = repl_hlc_now(r), .own = true,
                                             .keep_decided = true };
            conflicts_prepare(r, cj->b);
        }
    }
    if ((decide && !cj->b) ||
        committer_submit(r->j->committer, commit_apply, commit_done, cj, decide || sop) < 0) {
        repl_write_clear(&cj->w);
        free(cj->b);
        free(cj);
        done(arg, -1, "out of memory");
    }
}

/* Marks a journaled write committed (its backend call succeeded); at the hub
 * it is decided in the same transaction, durably, so it is never tentative. */
void repl_commit_write(struct repl *r, const struct repl_write *w,
                       void (*done)(void *, int, const char *), void *arg)
{
    commit_submit(r, w, NULL, done, arg);
}

void repl_commit_store_write(struct repl *r, const struct repl_write *w, struct embedded_op *sop,
                             void (*done)(void *, int, const char *), void *arg)
{
    commit_submit(r, w, sop, done, arg);
}

struct abort_job {
    struct repl *r;
    uint64_t lsn;
    void (*done)(void *, int, const char *);
    void *arg;
};

static int abort_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct abort_job *aj = arg;
    return journal_del_write(txn, aj->r->j, aj->lsn, err);
}

static void abort_done(void *arg, int rc, const char *reason)
{
    struct abort_job *aj = arg;
    if (rc == 0)
        aj->r->stats.writes_aborted++;
    aj->done(aj->arg, rc, reason);
    shipper_kick(aj->r); /* an intent ahead of committed entries may have held them back */
    free(aj);
}

/* The backend refused the write: it never happened. */
void repl_abort_write(struct repl *r, uint64_t lsn, void (*done)(void *, int, const char *),
                      void *arg)
{
    struct abort_job *aj = calloc(1, sizeof *aj);
    if (!aj) {
        done(arg, -1, "out of memory");
        return;
    }
    *aj = (struct abort_job){ r, lsn, done, arg };
    if (committer_submit(r->j->committer, abort_apply, abort_done, aj, false) < 0) {
        free(aj);
        done(arg, -1, "out of memory");
    }
}

/* --- life cycle ----------------------------------------------------------------- */

static int repl_peer_port(struct repl *r, struct err *err)
{
    const struct conf_addr *a = &r->self->peer_listen;
    if (!address_is_private(a->host))
        return err_set(err,
                       "peer_listen %s: until the peer port has TLS it binds only to loopback "
                       "or private addresses",
                       a->text);
    return listener_open(r->node, a->host, a->port, true, &r->peer_listener, err);
}

struct upstream_pool *repl_peer_link(struct repl *r, const struct conf_region *g)
{
    char url[300];
    struct upstream_pool *pool = NULL;
    struct err err;
    snprintf(url, sizeof url, "http://%s (peer port of region %s)", g->peer_listen.text, g->name);
    if (upstream_pool_new(r->node, url, g->peer_listen.host, g->peer_listen.port, &pool, &err) < 0)
        log_warn("peer link to %s: %s", g->name, err.msg);
    else
        upstream_pool_set_read_max(pool, PEER_READ_MAX);
    return pool;
}

struct upstream_pool *repl_peer_pool(struct repl *r, uint32_t id)
{
    int i = repl_region_index(r, id);
    if (i < 0 || id == r->self->id || r->closing)
        return NULL;
    if (id == r->hub->id)
        return r->hub_pool;
    if (!r->peer_pools[i])
        r->peer_pools[i] = repl_peer_link(r, &r->node->conf->regions[i]);
    return r->peer_pools[i];
}

static const char *repl_store_doc(void *store, MDB_txn *txn, const char *key, size_t klen,
                                  size_t *len)
{
    return embedded_doc_in(store, txn, key, klen, len);
}

/* With the embedded store the journal lives in the store's environment, so
 * that a write, its journal entry and (hub) its decision are one transaction
 * and one fsync; otherwise in its own, DATA_DIR/replication. */
static int repl_journal_open(struct repl *r, struct err *err)
{
    struct node *n = r->node;
    char old[1100];
    struct stat sb;
    if (!n->store)
        return journal_open(n->base, n->data_dir, r->self->id, &r->j, err);
    snprintf(old, sizeof old, "%s/replication/data.mdb", n->data_dir);
    if (stat(old, &sb) == 0)
        return err_set(err,
                       "%s holds a replication journal in the layout of an earlier build (its "
                       "own environment); this build keeps it inside the embedded store's, so "
                       "it would start over at LSN 1: use a new data_dir for this region",
                       old);
    if (journal_open_in(embedded_env(n->store), embedded_committer(n->store), r->self->id,
                        &r->j, err) < 0)
        return -1;
    journal_set_doc_source(r->j, repl_store_doc, n->store);
    return 0;
}

int repl_init(struct node *n, struct err *err)
{
    struct repl *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(err, "out of memory");
    n->repl = r;
    r->node = n;
    r->self = n->region;
    r->hub = &n->conf->regions[0];
    r->follow_name = r->hub->name;
    /* The embedded store applies queued writes in order, so entries can be in
     * flight together without changing the order they become visible in; an
     * HTTP backend's pooled connections could reorder them. */
    r->apply_window = n->store ? 128 : 1;
    r->is_hub = r->self == r->hub;
    r->topology = 1;
    TAILQ_INIT(&r->streams);
    TAILQ_INIT(&r->read_waits);
    TAILQ_INIT(&r->write_waits);
    const char *ignore = getenv("MERIDIAN_DEBUG_IGNORE_SESSION_TOKENS");
    r->ignore_session_tokens = ignore && strcmp(ignore, "1") == 0;
    if (r->ignore_session_tokens)
        log_warn("MERIDIAN_DEBUG_IGNORE_SESSION_TOKENS=1: session tokens are ignored when "
                 "routing reads; session guarantees do NOT hold (debugging only)");
    hlc_init(&r->hlc, n->conf->max_clock_drift_ms);
    if (repl_journal_open(r, err) < 0)
        return -1;
    r->hlc.last = r->j->hlc_persisted;
    repl_applied_rebuild(r);
    repl_count_unapplied(r);
    if (conflicts_init(r, err) < 0 || failover_init(r, err) < 0 || topology_init(r, err) < 0)
        return -1;
    r->locks = keylock_new();
    if (!r->locks)
        return err_set(err, "out of memory");
    if (repl_peer_port(r, err) < 0)
        return -1;
    if (!r->is_hub && !(r->hub_pool = repl_peer_link(r, r->hub)))
        return err_set(err, "the link to hub %s could not be made (see the log)", r->hub->name);
    r->follow_pool = r->hub_pool;
    log_info("replication: region %s is %s (%s); journal next lsn %llu, applied crts %llu",
             r->self->name, r->is_hub ? "the hub" : "a satellite", topology_state_name(r->state),
             (unsigned long long)r->j->next_lsn, (unsigned long long)r->j->applied_crts);
    return 0;
}

int repl_reload(struct repl *r, const struct conf *next, struct err *err)
{
    return conflicts_reload(r, next, err);
}

/* Starts the background work once the node is fully up. */
void repl_start(struct repl *r)
{
    repl_recover(r);
    topology_start(r);
    applier_kick(r);
    if (!r->is_hub) {
        follower_kick(r);
        shipper_kick(r);
    }
}

void repl_stop(struct repl *r)
{
    if (!r || r->closing)
        return;
    r->closing = true;
    failover_close(r);
    topology_close(r);
    follower_stop(r);
    while (!TAILQ_EMPTY(&r->streams))
        peer_stream_cancel(TAILQ_FIRST(&r->streams));
    listener_close(r->peer_listener);
    r->peer_listener = NULL;
    /* In-flight calls to the hub fail now, and their owners clean up. */
    for (int i = 0; i < REPL_MAX_REGIONS; i++) {
        if (r->peer_pools[i] != r->hub_pool)
            upstream_pool_free(r->peer_pools[i]);
        r->peer_pools[i] = NULL;
    }
    upstream_pool_free(r->hub_pool);
    r->hub_pool = NULL;
    r->follow_pool = NULL;
}

void repl_close(struct repl *r)
{
    if (!r)
        return;
    repl_stop(r);
    /* Completions of queued jobs run here and see `closing` (with the
     * embedded store they ran in embedded_stop: the committer is its). */
    journal_close(r->j);
    shipper_close(r);
    if (r->pump_ev)
        event_free(r->pump_ev);
    applier_close(r);
    writewait_close(r);
    keylock_free(r->locks);
    sbuf_free(&r->follow_buf);
    sbuf_free(&r->follow_batch);
    conflicts_close(r);
    free(r);
}

void repl_tick(struct repl *r, uint64_t now)
{
    if (r->hub_pool)
        upstream_sweep(r->hub_pool, now);
    if (r->recover_again && r->recovering == 0)
        repl_recover(r);
    topology_tick(r, now);
    if (!r->is_hub) {
        if (!r->ship_inflight && r->ship_retry_ms && now >= r->ship_retry_ms)
            shipper_kick(r);
        if (!r->follow && r->follow_retry_ms && now >= r->follow_retry_ms)
            follower_kick(r);
    }
    applier_tick(r, now);
    readpath_wake(r, now);
    writewait_tick(r, now);
    failover_tick(r, now);
    for (int i = 0; i < REPL_MAX_REGIONS; i++)
        if (r->peer_pools[i] && r->peer_pools[i] != r->hub_pool)
            upstream_sweep(r->peer_pools[i], now);
    if (now - r->last_heartbeat_ms >= 1000) {
        r->last_heartbeat_ms = now;
        peer_streams_heartbeat(r);
    }
}

void repl_drain(struct repl *r)
{
    if (!r)
        return;
    listener_close(r->peer_listener);
    r->peer_listener = NULL;
    while (!TAILQ_EMPTY(&r->streams)) {
        struct peer_stream *s = TAILQ_FIRST(&r->streams);
        struct downstream *c = peer_stream_client(s);
        peer_stream_cancel(s);
        downstream_stream_abort(c);
    }
}

/* --- metrics ---------------------------------------------------------------------- */

static int render_counter(struct sbuf *out, const char *name, const char *help, uint64_t v,
                          const char *region)
{
    return sbuf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s{region=\"%s\"} %llu\n", name,
                       help, name, name, region, (unsigned long long)v);
}

static int render_value(struct sbuf *out, const char *name, const char *type, const char *help,
                        double v, const char *region)
{
    return sbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s{region=\"%s\"} %g\n", name, help,
                       name, type, name, region, v);
}

static int render_gauge(struct sbuf *out, const char *name, const char *help, double v,
                        const char *region)
{
    return render_value(out, name, "gauge", help, v, region);
}

static int render_conflicts(struct repl *r, struct sbuf *out, const char *region)
{
    if (sbuf_adds(out, "# HELP meridian_conflicts_total Decisions of the hub on conflicting "
                       "writes, by container kind and outcome (hub only).\n"
                       "# TYPE meridian_conflicts_total counter\n") < 0)
        return -1;
    for (int k = LWW_INSERT; k <= LWW_DELETE; k++)
        for (int o = 0; o < LWW_DISMISSED; o++)
            if (sbuf_printf(out, "meridian_conflicts_total{region=\"%s\",kind=\"%s\",outcome=\"%s\"} %llu\n",
                            region, lww_conflict_name((enum lww_conflict)k),
                            clog_outcome_name((enum lww_outcome)o),
                            (unsigned long long)r->stats.conflicts[k][o]) < 0)
                return -1;
    return 0;
}

static int render_replication_latency(struct repl *r, struct sbuf *out, const char *region)
{
    const struct conf *conf = r->node->conf;
    int rc = sbuf_adds(out, "# HELP meridian_replication_seconds Time from a write's HLC at its "
                            "origin to its application here, by (source, target) region.\n"
                            "# TYPE meridian_replication_seconds histogram\n");
    for (size_t i = 0; rc == 0 && i < conf->n_regions && i < REPL_MAX_REGIONS; i++) {
        char labels[200];
        snprintf(labels, sizeof labels, "source=\"%s\",target", conf->regions[i].name);
        rc = stats_render_histogram_series(out, "meridian_replication_seconds", labels, region,
                                           &r->stats.replication_seconds[i]);
    }
    return rc;
}

int repl_render(struct repl *r, struct sbuf *out)
{
    const char *region = r->self->name;
    struct repl_stats *st = &r->stats;
    uint64_t backlog, oldest;
    journal_backlog(r->j, &backlog, &oldest);
    uint64_t wall = hlc_wall_ms();
    double backlog_age = oldest && wall > HLC_MS(oldest) ? (wall - HLC_MS(oldest)) / 1000.0 : 0;
    uint64_t lag = r->is_hub ? r->j->stored_crts - r->j->applied_crts
                             : (r->hub_last_crts > r->j->applied_crts ? r->hub_last_crts - r->j->applied_crts : 0);
    struct committer_stats cs;
    committer_stats(r->j->committer, &cs);
    if (render_counter(out, "meridian_commit_batches_total", "LMDB write transactions of the committer thread (the embedded store's and the journal's).", cs.batches, region) < 0 ||
        render_counter(out, "meridian_commit_jobs_total", "Jobs (writes, applies, log appends, ...) in those transactions.", cs.jobs, region) < 0 ||
        render_value(out, "meridian_commit_seconds_total", "counter", "Time in those transactions' commits (page writes, the fsync of the data pages before the meta page is written).", cs.commit_seconds, region) < 0 ||
        render_counter(out, "meridian_commit_syncs_total", "The syncer's fsyncs of the committer's environment (for the meta pages of transactions holding a durable job).", cs.syncs, region) < 0 ||
        render_value(out, "meridian_commit_sync_seconds_total", "counter", "Time spent in those fsyncs.", cs.sync_seconds, region) < 0 ||
        render_counter(out, "meridian_commit_syncs_covered_total", "Times the syncer needed no fsync: the next transaction's commit, which fsyncs its data pages, made what it held durable.", cs.covered, region) < 0 ||
        render_counter(out, "meridian_commit_gathers_total", "Transactions of jobs needing no fsync held back (up to 1 ms) to share the next durable job's.", cs.gathers, region) < 0 ||
        render_value(out, "meridian_commit_gather_seconds_total", "counter", "Time those transactions were held back.", cs.gather_seconds, region) < 0 ||
        render_counter(out, "meridian_writes_committed_total", "Container writes committed in this region.", st->writes_committed, region) < 0 ||
        render_counter(out, "meridian_writes_aborted_total", "Container writes the backend refused (journal entry dropped).", st->writes_aborted, region) < 0 ||
        render_counter(out, "meridian_writes_unknown_total", "Container writes whose backend answer was lost (resolved by read-back).", st->writes_unknown, region) < 0 ||
        render_counter(out, "meridian_writes_forged_total", "Writes refused because the client set Meridian's metadata field.", st->forged, region) < 0 ||
        render_counter(out, "meridian_ship_batches_total", "Batches shipped to the hub.", st->ship_batches, region) < 0 ||
        render_counter(out, "meridian_ship_writes_total", "Writes shipped to the hub (a write sent again after a failed batch counts again).", st->ship_writes, region) < 0 ||
        render_counter(out, "meridian_ship_kept_writes_total", "Of those, writes shipped from memory (framed when committed) instead of read back from the journal.", st->ship_kept, region) < 0 ||
        render_counter(out, "meridian_ship_errors_total", "Failed shipments to the hub.", st->ship_errors, region) < 0 ||
        render_counter(out, "meridian_frames_rejected_total", "Shipped frames the hub rejected.", st->frames_rejected, region) < 0 ||
        render_counter(out, "meridian_clock_refusals_total", "Peer clocks refused for drifting too far ahead.", st->clock_refusals, region) < 0 ||
        render_counter(out, "meridian_applied_total", "Confirmed-log entries applied here.", st->applied, region) < 0 ||
        render_counter(out, "meridian_apply_backend_writes_total", "Backend writes made by the applier.", st->apply_backend_writes, region) < 0 ||
        render_counter(out, "meridian_apply_log_reads_total", "Entries the applier read back from the log (the others it took from memory: the follower's, or the hub's decisions).", st->apply_log_reads, region) < 0 ||
        render_counter(out, "meridian_apply_errors_total", "Failed attempts to apply an entry (retried).", st->apply_errors, region) < 0 ||
        render_counter(out, "meridian_applied_crts", "Confirmed-log position applied here (a crts; only grows).", r->j->applied_crts, region) < 0 ||
        render_gauge(out, "meridian_region_lag_ms", "How far this region's applied position trails the hub's log, in HLC milliseconds.", (double)(lag >> 16), region) < 0 ||
        render_gauge(out, "meridian_tentative_backlog", "Own writes journaled and not yet decided by the hub and applied here.", (double)backlog, region) < 0 ||
        render_gauge(out, "meridian_tentative_backlog_age_seconds", "Age of the oldest write in the tentative backlog.", backlog_age, region) < 0 ||
        render_conflicts(r, out, region) < 0 || conflicts_render(r, out) < 0 ||
        readpath_render(r, out) < 0 || writewait_render(r, out) < 0 ||
        failover_render(r, out) < 0 || topology_render(r, out) < 0 ||
        render_replication_latency(r, out, region) < 0)
        return -1;
    if (sbuf_adds(out, "# HELP meridian_confirm_seconds Time for the hub to decide a shipped "
                       "batch, durably.\n# TYPE meridian_confirm_seconds histogram\n") < 0)
        return -1;
    return stats_render_histogram_series(out, "meridian_confirm_seconds", NULL, region,
                                         &st->confirm_seconds);
}
