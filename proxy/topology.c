/* topology: which role this region plays in the cluster, and the changes of
 * it while the nodes run (docs/replication.md, "Changing the topology").
 *
 *   serving      the normal state: the hub, or a satellite following it
 *   joining      a new region (empty data directory, the hub's log is not):
 *                the follower asks for a snapshot, then the log; client
 *                writes wait, then 503, until this region has applied the
 *                hub's log head as of the stream's first heartbeat
 *   taking_over  the file made this region the hub: the old hub is asked to
 *                stop deciding (it reports "fenced" once every decision it
 *                started is durable), its log is caught up; if it cannot be
 *                reached for TAKEOVER_LOST_MS, the most advanced log among
 *                the other regions is; then the hub's state is rebuilt from
 *                the log and this region's undecided writes are decided, in
 *                one transaction (replication/handover.c)
 *   retired      this region is no longer in the file: no client writes;
 *                it still ships its undecided writes to the hub and follows
 *                its log
 *
 * A region that stops being the hub decides, at their commit, only its own
 * writes already in flight (LSN below the fence); later ones are tentative
 * and shipped to the new hub like any satellite's. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../replication/confirm.h"
#include "../replication/handover.h"
#include "../util/log.h"
#include "backend.h"
#include "node.h"
#include "repl.h"
#include "upstream.h"

#define TAKEOVER_POLL_MS 200
#define TAKEOVER_LOST_MS 3000
#define TAKEOVER_SURVEY_MS 2000
#define TAKEOVER_NOTE_MS 5000

enum takeover_phase { TK_NONE, TK_FENCE, TK_SURVEY, TK_CATCHUP, TK_BECOME };

struct survey_call {
    struct topology *t;
    uint32_t region;
    struct upstream_pool *pool;
    struct backend_call *call;
    bool answered;
    uint64_t again_ms;  /* a failed question is asked again from then on */
};

struct topology {
    struct repl *r;
    enum takeover_phase phase;
    const struct conf_region *old_hub;   /* NULL: unknown (a restart) */
    struct upstream_pool *old_pool;
    struct backend_call *fence_call;
    uint64_t started_ms, phase_ms, next_try_ms, last_heard_ms, noted_ms;
    uint64_t target;                     /* the log position to hold before deciding */
    uint64_t progress_at, progress_ms;   /* catching up: the position held, since when */
    uint32_t source;                     /* the region it is caught up from (0: none) */
    const char *source_name;
    struct survey_call survey[REPL_MAX_REGIONS];
    size_t n_survey, survey_left;
};

const char *topology_state_name(enum region_state s)
{
    static const char *const names[] = { "serving", "joining", "taking_over", "retired" };
    return s <= REGION_RETIRED ? names[s] : "?";
}

/* --- persisting small marks ----------------------------------------------------- */

struct meta_job {
    struct repl *r;
    const char *name;
    uint64_t v;
    void (*done)(struct repl *r, int rc);
};

static int meta_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct meta_job *mj = arg;
    return journal_put_meta(txn, mj->r->j, mj->name, mj->v, err);
}

static void meta_done(void *arg, int rc, const char *reason)
{
    struct meta_job *mj = arg;
    if (rc < 0)
        log_error("recording %s: %s", mj->name, reason);
    if (mj->done && !mj->r->closing)
        mj->done(mj->r, rc);
    free(mj);
}

static void meta_put(struct repl *r, const char *name, uint64_t v, void (*done)(struct repl *, int))
{
    struct meta_job *mj = calloc(1, sizeof *mj);
    if (!mj)
        return;
    *mj = (struct meta_job){ r, name, v, done };
    if (committer_submit(r->j->committer, meta_apply, meta_done, mj, true) < 0)
        free(mj);
}

/* --- joining ----------------------------------------------------------------------- */

void topology_heartbeat(struct repl *r, uint64_t hub_last)
{
    if (r->state != REGION_JOINING || r->join_known)
        return;
    r->join_known = true;
    r->join_target = hub_last;
    log_info("joining: the hub's log head is crts %llu; client writes wait until it is applied "
             "here", (unsigned long long)hub_last);
    topology_applied(r);
}

void topology_snapshot(struct repl *r, uint64_t upto, uint64_t entries)
{
    r->history_from = upto;
    log_info("joining: the hub sends a snapshot of %llu log entries (the confirmed state at "
             "crts %llu), then its log from there", (unsigned long long)entries,
             (unsigned long long)upto);
    meta_put(r, "history_from", upto, NULL);
}

void topology_applied(struct repl *r)
{
    if (!r->topo || r->state != REGION_JOINING || !r->join_known || r->j->applied_crts < r->join_target)
        return;
    r->state = REGION_SERVING;
    log_info("joined: applied the hub's log up to crts %llu in %llu ms; client writes are taken "
             "from now on", (unsigned long long)r->j->applied_crts,
             (unsigned long long)(node_now_ms(r->node) - r->topo->started_ms));
    meta_put(r, "joined", 1, NULL);
    readpath_wake(r, node_now_ms(r->node));
}

/* --- the old hub's side: the fence ------------------------------------------------- */

static void fenced(struct repl *r, int rc)
{
    if (rc < 0) {
        r->fence_submitted = false; /* tried again by the tick */
        return;
    }
    r->fenced = true;
    log_info("fenced: this region decides nothing more; its log ends at crts %llu",
             (unsigned long long)r->j->stored_crts);
}

static int intent_below(void *arg, const struct repl_write *w)
{
    uint64_t *fence = arg;
    if (w->lsn >= *fence)
        return 1;
    if (w->state == WRITE_INTENT) {
        *fence = 0; /* found one */
        return 1;
    }
    return 0;
}

void topology_write_done(struct repl *r, uint64_t lsn)
{
    r->writes_tagged--;
    if (r->fence_wait && lsn < r->fence_lsn)
        r->fence_wait--;
}

/* The fence is durable once every own write that started while this region
 * was the hub has committed (decided with it): the writes in progress then
 * have finished, and no journal entry below the fence is left in the
 * intent state (recovery commits those); the committer runs jobs in order,
 * so a job queued after them commits after them. */
static void fence_tick(struct repl *r)
{
    if (!r->fence_lsn || r->fenced || r->fence_submitted || r->fence_wait)
        return;
    uint64_t probe = r->fence_lsn;
    journal_scan_writes(r->j, 0, SIZE_MAX, intent_below, &probe);
    if (probe == 0)
        return; /* still in flight */
    r->fence_submitted = true;
    meta_put(r, "hub_of", 0, fenced);
}

bool topology_decides_own(const struct repl *r, uint64_t lsn)
{
    if (r->is_hub)
        return true;
    if (r->fence_lsn && lsn < r->fence_lsn && !r->fence_submitted)
        return true;
    if (r->fence_lsn && lsn < r->fence_lsn)
        log_error("own write lsn %llu was in flight across the hub handover and committed after "
                  "the fence: it is shipped to the new hub, which may take it for decided",
                  (unsigned long long)lsn);
    return false;
}

/* --- the new hub's side: takeover ---------------------------------------------------- */

static void takeover_phase(struct topology *t, enum takeover_phase p)
{
    t->phase = p;
    t->phase_ms = node_now_ms(t->r->node);
    t->next_try_ms = 0;
}

struct takeover_job {
    struct repl *r;
    struct confirm_batch *b;
    struct handover_result res;
};

static int takeover_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct takeover_job *tj = arg;
    return handover_take(txn, tj->r->j, tj->r->self->id, tj->b, &tj->res, err);
}

static void takeover_done(void *arg, int rc, const char *reason)
{
    struct takeover_job *tj = arg;
    struct repl *r = tj->r;
    struct topology *t = r->topo;
    if (rc < 0) {
        log_error("taking over as hub: %s; stopping this node, whose hub state is incomplete",
                  reason);
        node_drain(r->node);
    } else if (!r->closing) {
        conflicts_count(r, tj->b);
        r->state = REGION_SERVING;
        r->hub_changes++;
        t->phase = TK_NONE;
        log_info("took over as hub in %llu ms: %llu log entries, %llu keys, log continues after "
                 "crts %llu (caught up from %s); %zu own undecided writes decided",
                 (unsigned long long)(node_now_ms(r->node) - t->started_ms),
                 (unsigned long long)tj->res.entries, (unsigned long long)tj->res.heads,
                 (unsigned long long)tj->res.last_crts, t->source_name ? t->source_name : "itself",
                 tj->res.own_decided);
        if (tj->b->n_decided)
            repl_log_grew(r, tj->b->last_crts);
        peer_streams_pump(r);
        readpath_wake(r, node_now_ms(r->node));
    }
    confirm_batch_free(tj->b);
    free(tj);
}

/* Caught up: the hub's state from the log, this region's undecided writes
 * decided, and from now on every decision is this region's. */
static void takeover_become(struct repl *r)
{
    struct topology *t = r->topo;
    follower_stop(r);
    if (r->follow_storing || r->follow_batch.len)
        return; /* received entries are still being stored: after them */
    follower_fresh_clear(r);
    r->follow_pool = NULL;
    struct takeover_job *tj = calloc(1, sizeof *tj);
    struct confirm_batch *b = calloc(1, sizeof *b);
    if (!tj || !b) {
        free(tj);
        free(b);
        return; /* tried again by the tick */
    }
    b->crts_floor = repl_hlc_now(r);
    conflicts_prepare(r, b);
    *tj = (struct takeover_job){ .r = r, .b = b };
    if (committer_submit(r->j->committer, takeover_apply, takeover_done, tj, true) < 0) {
        free(b);
        free(tj);
        return;
    }
    takeover_phase(t, TK_BECOME);
    /* Jobs queued from here on (own writes, shipped batches) run after the
     * rebuild, and are decided. */
    r->is_hub = true;
}

static void takeover_catchup(struct repl *r, uint32_t source, const char *name,
                             struct upstream_pool *pool, uint64_t target)
{
    struct topology *t = r->topo;
    t->target = target;
    t->source = source;
    t->source_name = name;
    t->progress_at = r->j->stored_crts;
    t->progress_ms = node_now_ms(r->node);
    log_info("taking over as hub: catching up to crts %llu from %s (holding %llu)",
             (unsigned long long)target, name ? name : "itself",
             (unsigned long long)r->j->stored_crts);
    takeover_phase(t, TK_CATCHUP);
    if (pool && target > r->j->stored_crts) {
        r->follow_pool = pool;
        r->follow_name = name;
        r->follow_retry_ms = node_now_ms(r->node);
        follower_kick(r);
    }
}

static void fence_answer(void *arg, const struct backend_answer *a)
{
    struct topology *t = arg;
    struct repl *r = t->r;
    t->fence_call = NULL;
    if (r->closing || t->phase != TK_FENCE)
        return;
    uint64_t now = node_now_ms(r->node);
    t->next_try_ms = now + TAKEOVER_POLL_MS;
    if (a->status != 200)
        return; /* unreachable: the tick counts the time */
    t->last_heard_ms = now;
    json_t *j = json_loadb(a->body, a->body_len, 0, NULL);
    bool hub = json_is_true(json_object_get(j, "hub"));
    bool is_fenced = json_is_true(json_object_get(j, "fenced"));
    uint64_t stored = (uint64_t)json_integer_value(json_object_get(j, "stored_crts"));
    json_decref(j);
    if (!hub && is_fenced) {
        takeover_catchup(r, t->old_hub->id, t->old_hub->name, t->old_pool, stored);
        return;
    }
    if (now - t->noted_ms >= TAKEOVER_NOTE_MS) {
        t->noted_ms = now;
        log_info("taking over as hub: waiting for %s to stop deciding (%s)", t->old_hub->name,
                 hub ? "its configuration still makes it the hub" : "its last decisions are committing");
    }
}

static void survey_done(struct topology *t);

static void survey_ask(struct survey_call *sc);

static void survey_answer(void *arg, const struct backend_answer *a)
{
    struct survey_call *sc = arg;
    struct topology *t = sc->t;
    sc->call = NULL;
    if (t->phase != TK_SURVEY)
        return;
    if (a->status != 200) {
        /* A region that does not answer in the survey's time is left out,
         * and its log may then hold decisions the new hub's does not (it
         * diverges): a failed question is not its answer. */
        char why[300];
        if (a->status)
            snprintf(why, sizeof why, "answered %d %.*s", a->status,
                     (int)(a->body_len < 200 ? a->body_len : 200), a->body);
        else
            snprintf(why, sizeof why, "%s", a->error ? a->error : "no answer");
        log_warn("taking over as hub: asking region %s for its log position: %s; asking again",
                 repl_region_name(t->r, sc->region), why);
        sc->again_ms = node_now_ms(t->r->node) + TAKEOVER_POLL_MS / 2;
        return;
    }
    sc->answered = true;
    json_t *j = json_loadb(a->body, a->body_len, 0, NULL);
    uint64_t stored = (uint64_t)json_integer_value(json_object_get(j, "stored_crts"));
    json_decref(j);
    log_info("taking over as hub: region %s holds the log up to crts %llu",
             repl_region_name(t->r, sc->region), (unsigned long long)stored);
    if (stored > t->target) {
        t->target = stored;
        t->source = sc->region;
    }
    if (--t->survey_left == 0)
        survey_done(t);
}

static void survey_ask(struct survey_call *sc)
{
    sc->again_ms = 0;
    sc->call = backend_http(sc->t->r->node, sc->pool, "GET", "/_meridian/v1/status", NULL, 0,
                            survey_answer, sc);
}

static void survey_cancel(struct topology *t)
{
    for (size_t i = 0; i < t->n_survey; i++) {
        backend_cancel(t->survey[i].call);
        t->survey[i].call = NULL;
    }
}

static void survey_done(struct topology *t)
{
    struct repl *r = t->r;
    survey_cancel(t);
    if (t->source == r->self->id || !t->source) {
        takeover_catchup(r, 0, NULL, NULL, r->j->stored_crts);
        return;
    }
    for (size_t i = 0; i < t->n_survey; i++)
        if (t->survey[i].region == t->source)
            takeover_catchup(r, t->source, repl_region_name(r, t->source), t->survey[i].pool,
                             t->target);
}

/* The old hub is gone: the most advanced log any other region holds. */
static void survey_start(struct repl *r)
{
    struct topology *t = r->topo;
    const struct conf *conf = r->node->conf;
    takeover_phase(t, TK_SURVEY);
    t->target = r->j->stored_crts;
    t->source = r->self->id;
    t->n_survey = t->survey_left = 0;
    log_warn("taking over as hub: %s cannot be reached; continuing from the most advanced log "
             "among the other regions", t->old_hub ? t->old_hub->name : "the previous hub");
    for (size_t i = 0; i < conf->n_regions && t->n_survey < REPL_MAX_REGIONS; i++) {
        const struct conf_region *g = &conf->regions[i];
        struct upstream_pool *pool = repl_peer_pool(r, g->id);
        if (!pool)
            continue;
        struct survey_call *sc = &t->survey[t->n_survey++];
        *sc = (struct survey_call){ t, g->id, pool, NULL, false, 0 };
        t->survey_left++;
    }
    if (!t->survey_left) {
        survey_done(t);
        return;
    }
    /* Sent after counting, since an answer may come at once. */
    for (size_t i = 0, n = t->n_survey; i < n && t->phase == TK_SURVEY; i++)
        survey_ask(&t->survey[i]);
}

static void takeover_tick(struct repl *r, uint64_t now)
{
    struct topology *t = r->topo;
    switch (t->phase) {
    case TK_NONE:
    case TK_BECOME:
        return;
    case TK_FENCE:
        if (!t->old_pool || now - t->last_heard_ms >= TAKEOVER_LOST_MS) {
            backend_cancel(t->fence_call);
            t->fence_call = NULL;
            survey_start(r);
            return;
        }
        if (!t->fence_call && now >= t->next_try_ms)
            t->fence_call = backend_http(r->node, t->old_pool, "GET", "/_meridian/v1/status",
                                         NULL, 0, fence_answer, t);
        return;
    case TK_SURVEY:
        if (now - t->phase_ms >= TAKEOVER_SURVEY_MS) {
            for (size_t i = 0; i < t->n_survey; i++)
                if (!t->survey[i].answered)
                    log_warn("taking over as hub: region %s did not tell its log position in "
                             "%d ms: left out", repl_region_name(r, t->survey[i].region),
                             TAKEOVER_SURVEY_MS);
            survey_done(t);
            return;
        }
        for (size_t i = 0; i < t->n_survey; i++)
            if (t->survey[i].again_ms && now >= t->survey[i].again_ms && !t->survey[i].call)
                survey_ask(&t->survey[i]);
        return;
    case TK_CATCHUP:
        if (r->j->stored_crts >= t->target) {
            takeover_become(r);
            return;
        }
        if (r->j->stored_crts != t->progress_at) {
            t->progress_at = r->j->stored_crts;
            t->progress_ms = now;
        } else if (now - t->progress_ms >= 2 * TAKEOVER_LOST_MS) {
            log_warn("taking over as hub: no progress from %s for %d ms; asking the regions "
                     "again", t->source_name ? t->source_name : "?", 2 * TAKEOVER_LOST_MS);
            follower_stop(r);
            r->follow_pool = NULL;
            t->old_hub = NULL;
            survey_start(r);
            return;
        }
        if (now - t->noted_ms >= TAKEOVER_NOTE_MS) {
            t->noted_ms = now;
            log_info("taking over as hub: holding crts %llu of %llu",
                     (unsigned long long)r->j->stored_crts, (unsigned long long)t->target);
        }
        return;
    }
}

static void takeover_start(struct repl *r, const struct conf_region *old_hub)
{
    struct topology *t = r->topo;
    uint64_t now = node_now_ms(r->node);
    r->state = REGION_TAKING_OVER;
    r->is_hub = false;
    r->fence_lsn = 0; /* (a hub again: its own writes are decided at commit) */
    r->fence_wait = 0;
    r->fenced = r->fence_submitted = false;
    t->started_ms = t->last_heard_ms = now;
    t->old_hub = old_hub;
    t->source_name = NULL;
    upstream_pool_free(t->old_pool);
    t->old_pool = old_hub ? repl_peer_link(r, old_hub) : NULL;
    log_info("this region becomes the hub%s%s", old_hub ? ", after " : " (the previous hub is "
             "unknown after a restart)", old_hub ? old_hub->name : "");
    takeover_phase(t, old_hub ? TK_FENCE : TK_SURVEY);
    if (!old_hub)
        survey_start(r);
}

/* --- start-up and reload ------------------------------------------------------------ */

int topology_init(struct repl *r, struct err *err)
{
    struct topology *t = calloc(1, sizeof *t);
    if (!t)
        return err_set(err, "out of memory");
    r->topo = t;
    t->r = r;
    t->started_ms = node_now_ms(r->node);
    MDB_txn *txn = journal_rtxn(r->j);
    /* Never written to and never joined: a new region (or one stopped
     * while it joined, which goes on from what it stored). */
    bool fresh = r->j->next_lsn == 1 && (!txn || journal_get_meta(txn, r->j, "joined") == 0);
    r->history_from = txn ? journal_get_meta(txn, r->j, "history_from") : 0;
    journal_rtxn_done(r->j);
    r->state = REGION_SERVING;
    if (!r->is_hub) {
        r->state = fresh ? REGION_JOINING : REGION_SERVING;
        return 0;
    }
    uint32_t hub_of = handover_hub_of(r->j);
    if (hub_of == r->self->id)
        return 0;
    if (r->j->stored_crts == 0) { /* a new cluster's hub */
        meta_put(r, "hub_of", r->self->id, NULL);
        return 0;
    }
    /* The file makes this region the hub, but its journal's hub state is
     * not its own: a takeover that did not finish, or a journal from before
     * hub changes were recorded. Finished now, from the best log around. */
    return 0;
}

void topology_start(struct repl *r)
{
    if (r->is_hub && handover_hub_of(r->j) != r->self->id && r->j->stored_crts > 0)
        takeover_start(r, NULL);
}

/* The regions' fields a running node cannot take from a reload. */
int topology_reload_check(struct repl *r, const struct conf *next, struct err *err)
{
    const struct conf *cur = r->node->conf;
    const struct conf_region *self = r->self;
    for (size_t i = 0; i < next->n_regions; i++) {
        const struct conf_region *y = &next->regions[i];
        const struct conf_region *x = conf_region_by_name(cur, y->name);
        if (!x)
            continue; /* a new region */
        if (x->id != y->id)
            return err_set(err, "%s:%d: regions[%zu].id: region '%s' had id %u; a region's id "
                                "is fixed (it names its writes in every journal): add a region "
                                "under a new name instead", next->path, y->line, i, y->name, x->id);
        if (x != self)
            continue;
        const char *field = strcmp(x->listen.text, y->listen.text)           ? "listen"
                            : strcmp(x->peer_listen.text, y->peer_listen.text) ? "peer_listen"
                            : x->backend_embedded != y->backend_embedded      ? "backend"
                            : (x->data_dir || y->data_dir) &&
                                      !(x->data_dir && y->data_dir &&
                                        strcmp(x->data_dir, y->data_dir) == 0)
                                ? "data_dir"
                                : NULL;
        if (field)
            return err_set(err, "%s:%d: regions[%zu].%s: changed for this region (%s); its "
                                "addresses, data directory and kind of backend need a restart",
                           next->path, y->line, i, field, y->name);
    }
    for (size_t i = 0; i < next->n_regions; i++)
        for (size_t k = 0; k < cur->n_regions; k++)
            if (next->regions[i].id == cur->regions[k].id &&
                strcmp(next->regions[i].name, cur->regions[k].name) != 0)
                return err_set(err, "%s:%d: regions[%zu].id: %u belonged to region '%s'; ids "
                                    "are never reused", next->path, next->regions[i].line, i,
                               next->regions[i].id, cur->regions[k].name);
    return 0;
}

/* Peer pools, histograms and polled positions are kept by region index:
 * they move with their region (by id) to its new index. A region whose
 * peer address changed gets a new pool; old pools finish what they have
 * in flight. */
static void remap_regions(struct repl *r, const struct conf *old)
{
    const struct conf *conf = r->node->conf;
    struct upstream_pool *pools[REPL_MAX_REGIONS] = { 0 };
    struct histogram hist[REPL_MAX_REGIONS];
    uint64_t applied[REPL_MAX_REGIONS] = { 0 };
    memset(hist, 0, sizeof hist);
    for (size_t i = 0; i < old->n_regions && i < REPL_MAX_REGIONS; i++) {
        const struct conf_region *x = &old->regions[i];
        const struct conf_region *y = NULL;
        size_t k;
        for (k = 0; k < conf->n_regions && k < REPL_MAX_REGIONS; k++)
            if (conf->regions[k].id == x->id) {
                y = &conf->regions[k];
                break;
            }
        struct upstream_pool *p = r->peer_pools[i];
        if (y) {
            hist[k] = r->stats.replication_seconds[i];
            applied[k] = r->peer_applied[i];
        }
        if (!p || p == r->hub_pool)
            continue;
        if (y && strcmp(x->peer_listen.text, y->peer_listen.text) == 0)
            pools[k] = p;
        else
            node_retire_pool(r->node, p);
    }
    memcpy(r->peer_pools, pools, sizeof pools);
    memcpy(r->stats.replication_seconds, hist, sizeof hist);
    memcpy(r->peer_applied, applied, sizeof applied);
}

/* This region follows (and ships to) `hub` from now on. */
static void follow_new_hub(struct repl *r)
{
    follower_stop(r);
    follower_fresh_clear(r);
    if (r->hub_pool)
        node_retire_pool(r->node, r->hub_pool);
    r->hub_pool = repl_peer_link(r, r->hub);
    r->follow_pool = r->hub_pool;
    r->follow_name = r->hub->name;
    r->follow_retry_ms = node_now_ms(r->node);
    r->ship_gen++;
    r->ship_after = 0;
    r->ship_retry_ms = 0;
    r->ship_backoff_ms = 0;
    r->ship_inflight = false; /* an answer still on its way is of the old generation */
    shipper_kick(r);
}

void topology_swapped(struct repl *r, const struct conf *old, const struct conf_region *self)
{
    const struct conf *conf = r->node->conf;
    const struct conf_region *old_hub = &old->regions[0];
    const struct conf_region *hub = &conf->regions[0];
    bool was_hub = old_hub->id == r->self->id;
    bool hub_moved = old_hub->id != hub->id ||
                     strcmp(old_hub->peer_listen.text, hub->peer_listen.text) != 0;
    remap_regions(r, old);
    if (self)
        r->self = self; /* a removed region keeps its old entry */
    r->hub = hub;
    if (!self && r->state != REGION_RETIRED) {
        r->state = REGION_RETIRED;
        log_warn("this region (%s) is no longer in the configuration: it takes no more client "
                 "writes; it ships what it holds to %s and keeps following its log",
                 r->self->name, hub->name);
    }
    if (!hub_moved)
        return;
    r->hub_changes++;
    if (r->state == REGION_TAKING_OVER && hub->id != r->self->id && !r->is_hub) {
        /* Another change before this region finished taking over: it never
         * decided anything, so it just follows the new hub. */
        struct topology *t = r->topo;
        backend_cancel(t->fence_call);
        t->fence_call = NULL;
        survey_cancel(t);
        t->phase = TK_NONE;
        r->state = self ? REGION_SERVING : REGION_RETIRED;
        log_warn("taking over as hub: abandoned, %s is the hub now", hub->name);
    }
    log_info("the hub is %s from now on (was %s)", hub->name, old_hub->name);
    if (r->is_hub && hub->id != r->self->id) {
        r->is_hub = false;
        r->fence_lsn = r->j->next_lsn;
        r->fence_wait = r->writes_tagged; /* every write in progress is below the fence */
        r->fenced = r->fence_submitted = false;
        log_info("stopping deciding: own writes from lsn %llu on are shipped to %s",
                 (unsigned long long)r->fence_lsn, hub->name);
        fence_tick(r);
    }
    repl_applied_rebuild(r);
    repl_count_unapplied(r);
    if (hub->id == r->self->id) {
        if (!was_hub) {
            follower_stop(r);
            if (r->hub_pool)
                node_retire_pool(r->node, r->hub_pool);
            r->hub_pool = NULL;
            r->follow_pool = NULL;
            takeover_start(r, old_hub);
        }
        return;
    }
    follow_new_hub(r);
}

void topology_tick(struct repl *r, uint64_t now)
{
    if (!r->topo)
        return;
    fence_tick(r);
    takeover_tick(r, now);
}

void topology_close(struct repl *r)
{
    struct topology *t = r->topo;
    if (!t)
        return;
    backend_cancel(t->fence_call);
    survey_cancel(t);
    upstream_pool_free(t->old_pool);
    free(t);
    r->topo = NULL;
}

int topology_render(struct repl *r, struct sbuf *out)
{
    const char *region = r->self->name;
    if (sbuf_adds(out, "# HELP meridian_region_state This region's role in the cluster (1 for "
                       "the current state).\n# TYPE meridian_region_state gauge\n") < 0)
        return -1;
    for (int s = REGION_SERVING; s <= REGION_RETIRED; s++)
        if (sbuf_printf(out, "meridian_region_state{region=\"%s\",state=\"%s\"} %d\n", region,
                        topology_state_name((enum region_state)s), r->state == (enum region_state)s) < 0)
            return -1;
    return sbuf_printf(out,
                       "# HELP meridian_hub_changes_total Changes of the hub this region saw "
                       "(reloads that moved it, and its own takeover).\n"
                       "# TYPE meridian_hub_changes_total counter\n"
                       "meridian_hub_changes_total{region=\"%s\"} %llu\n"
                       "# HELP meridian_join_target_crts The hub's log position a joining region "
                       "must apply before it takes writes (0: none).\n"
                       "# TYPE meridian_join_target_crts gauge\n"
                       "meridian_join_target_crts{region=\"%s\"} %llu\n",
                       region, (unsigned long long)r->hub_changes, region,
                       (unsigned long long)r->join_target);
}
