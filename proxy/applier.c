/* applier: every region applies the confirmed log it holds to its backend,
 * in crts order, each entry under its key's lock:
 *   - the entry's resulting head is written to the backend (PUT, or DELETE
 *     for a tombstone) unless the backend already holds that version (or a
 *     later one), or this region still has its own undecided writes on the
 *     key (they stay visible until the hub's decision on them arrives);
 *   - the heads index, the conflicts feed (outside the hub) and, for this
 *     region's own writes, the journal are updated in one transaction;
 *   - a dismissed conflict changes only the feed.
 * With the embedded store the backend write is part of that transaction
 * (one committer job per entry, none of it visible before all of it), and
 * up to apply_window entries are in flight at once (the committer keeps
 * their order); an HTTP backend gets one entry at a time. Dispatching stops
 * behind an entry that waits for its key (consistent prefix). The applied position
 * advances over the longest prefix of finished entries; after a crash the
 * entries past the recorded position are applied again, which changes
 * nothing. A failed backend write keeps its key locked and is retried. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../replication/confirm.h"
#include "../replication/feed.h"
#include "../store/embedded.h"
#include "../util/log.h"
#include "backend.h"
#include "keylock.h"
#include "node.h"
#include "repl.h"

#define APPLY_RETRY_MS 500

struct apply_op {
    struct apply_op *next;        /* in crts order */
    struct repl *r;
    struct clog_entry e;
    char key[512];
    size_t klen;
    struct head_rec head;         /* what the index will say afterwards */
    struct embedded_op *sop;      /* embedded store: the write, applied in the same job */
    bool own;                     /* this region's write, still in its journal */
    bool locked, done, failed;
    uint64_t retry_ms;
    uint64_t persist_crts;        /* applied position recorded with this entry */
};

static void apply_locked(void *arg);

static void apply_free(struct apply_op *op)
{
    if (op->sop) {
        embedded_cancel(op->sop);
        embedded_write_finish(op->sop, -1, "not applied");
    }
    clog_entry_clear(&op->e);
    free(op);
}

static void apply_fail(struct apply_op *op, const char *why)
{
    struct repl *r = op->r;
    r->stats.apply_errors++;
    log_warn("applying crts %llu (%s/%s): %s; retrying", (unsigned long long)op->e.crts,
             op->e.w.container, op->e.w.id, why);
    op->failed = true;
    op->retry_ms = node_now_ms(r->node) + APPLY_RETRY_MS;
}

/* The conflicts feed follows the log here; at the hub the decision did it. */
static int apply_feed(MDB_txn *txn, struct apply_op *op, struct err *err)
{
    bool found;
    if (op->r->is_hub)
        return 0;
    if (op->e.outcome == LWW_FILED)
        return feed_put(txn, op->r->j, op->e.crts, op->key, op->klen, err);
    if (op->e.outcome == LWW_DISMISSED)
        return feed_del(txn, op->r->j, op->e.conflict_id, &found, err);
    return 0;
}

/* The embedded store's write of the entry, inside the job's transaction:
 * the job fails (and leaves nothing) unless the store did it. */
static int apply_store_write(MDB_txn *txn, struct apply_op *op, struct err *err)
{
    if (embedded_write_apply(op->r->node->store, txn, op->sop, err) < 0)
        return -1;
    int status = embedded_write_status(op->sop);
    if ((status >= 200 && status <= 299) || (op->e.head_delete && status == 404))
        return 0;
    return err_set(err, "the store answered %d", status);
}

static int apply_commit(MDB_txn *txn, void *arg, struct err *err)
{
    struct apply_op *op = arg;
    struct journal *j = op->r->j;
    if (op->sop && apply_store_write(txn, op, err) < 0)
        return -1;
    if (journal_put_head(txn, j, op->e.w.container, op->e.w.id, &op->head, err) < 0 ||
        apply_feed(txn, op, err) < 0)
        return -1;
    if (op->own && journal_del_write(txn, j, op->e.w.lsn, err) < 0)
        return -1;
    return op->persist_crts ? journal_put_meta(txn, j, "applied_crts", op->persist_crts, err) : 0;
}

static int persist_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct repl *r = arg;
    return journal_put_meta(txn, r->j, "applied_crts", r->apply_persisted, err);
}

/* Pops finished entries off the front: the applied position is the last
 * entry before which everything is done. */
static void apply_advance(struct repl *r)
{
    while (r->apply_head && r->apply_head->done) {
        struct apply_op *op = r->apply_head;
        r->apply_head = op->next;
        if (!r->apply_head)
            r->apply_tail = NULL;
        r->j->applied_crts = op->e.crts;
        r->unapplied_n--;
        repl_note_applied(r, &op->e);
        r->apply_inflight--;
        apply_free(op);
    }
    topology_applied(r);
    readpath_wake(r, node_now_ms(r->node));
    if (!r->apply_head && r->j->applied_crts > r->apply_persisted && !r->closing) {
        r->apply_persisted = r->j->applied_crts;
        if (committer_submit(r->j->committer, persist_apply, NULL, r, false) < 0)
            r->apply_persisted = 0;
    }
}

static void apply_committed(void *arg, int rc, const char *reason)
{
    struct apply_op *op = arg;
    struct repl *r = op->r;
    if (op->sop) {
        embedded_cancel(op->sop); /* the outcome is rc; no answer is needed */
        embedded_write_finish(op->sop, rc, reason);
        op->sop = NULL;
        if (rc == 0)
            r->stats.apply_backend_writes++;
    }
    if (rc < 0 && !r->closing) {
        apply_fail(op, reason);
        return;
    }
    op->done = true;
    if (op->locked)
        keylock_release(r->locks, op->key, op->klen);
    op->locked = false;
    if (r->closing)
        return;
    r->stats.applied++;
    int idx = repl_region_index(r, op->e.w.origin);
    uint64_t now = hlc_wall_ms(), born = HLC_MS(op->e.w.hlc);
    if (idx >= 0 && now >= born)
        stats_observe(&r->stats.replication_seconds[idx], (now - born) / 1000.0);
    apply_advance(r);
    applier_kick(r);
}

static void apply_record(struct apply_op *op)
{
    op->persist_crts = op->r->j->applied_crts > op->r->apply_persisted ? op->r->j->applied_crts : 0;
    if (op->persist_crts)
        op->r->apply_persisted = op->persist_crts;
    if (committer_submit(op->r->j->committer, apply_commit, apply_committed, op, false) < 0)
        apply_committed(op, -1, "out of memory");
}

static void apply_backend_done(void *arg, const struct backend_answer *a)
{
    struct apply_op *op = arg;
    if (op->r->closing) {
        apply_committed(op, 0, NULL);
        return;
    }
    bool ok = (a->status >= 200 && a->status <= 299) || (op->e.head_delete && a->status == 404);
    if (!ok) {
        char why[300];
        snprintf(why, sizeof why, "backend answered %d%s%s", a->status, a->error ? ": " : "",
                 a->error ? a->error : "");
        apply_fail(op, why);
        return;
    }
    op->r->stats.apply_backend_writes++;
    apply_record(op);
}

/* The store refused the entry before any job (a bad document or path). */
static void apply_store_refused(void *arg, const struct store_response *resp)
{
    char why[300];
    snprintf(why, sizeof why, "the store answered %d: %.*s", resp->status, (int)resp->body_len,
             resp->body);
    apply_fail(arg, why);
}

static void apply_store(struct apply_op *op, const char *method, const char *path,
                        const char *doc)
{
    struct store_request sr;
    backend_store_request(method, path, NULL, doc, doc ? strlen(doc) : 0, &sr);
    sr.checked = true; /* checked by the follower (clog_entry_parse), or made by the hub */
    struct embedded_op *sop = embedded_write_prepare(op->r->node->store, &sr,
                                                     apply_store_refused, op);
    op->sop = sop;
    if (sop)
        apply_record(op);
}

/* The index says the backend needs nothing: own writes pending, or it
 * already holds this version or a later confirmed one. */
static bool apply_index_only(struct apply_op *op, const struct head_rec *h, uint32_t pending)
{
    if (!pending && !(h->exists && version_eq(h->version, op->e.head)) &&
        !(h->exists && h->crts > op->e.crts))
        return false;
    op->head = *h;
    op->head.pending = pending;
    if (!pending && h->crts <= op->e.crts && version_eq(h->version, op->e.head)) {
        op->head.crts = op->e.crts;
        op->head.deleted = op->e.head_delete;
    }
    return true;
}

static void apply_locked_entry(struct apply_op *op);

/* The entry has its key: apply it; if dispatching had stopped for it (the
 * key was held), take up the entries after it once it is under way. */
static void apply_locked(void *arg)
{
    struct apply_op *op = arg;
    struct repl *r = op->r;
    bool first = !op->locked;
    bool resume = first && r->apply_blocked && !r->apply_granting;
    if (first)
        r->apply_blocked = false;
    apply_locked_entry(op); /* may finish (and free) op */
    if (resume)
        applier_kick(r);
}

static void apply_locked_entry(struct apply_op *op)
{
    struct repl *r = op->r;
    struct head_rec h;
    op->locked = true;
    op->failed = false;
    if (r->closing) {
        apply_committed(op, 0, NULL);
        return;
    }
    journal_head(r->j, op->e.w.container, op->e.w.id, &h);
    if (op->e.outcome == LWW_DISMISSED) {
        op->head = h; /* only the feed changes */
        apply_record(op);
        return;
    }
    op->own = op->e.w.origin == r->self->id && journal_has_write(r->j, op->e.w.lsn);
    uint32_t pending = h.pending;
    if (op->own && pending)
        pending--;
    const struct conf_container *ct = conf_container_by_name(r->node->conf, op->e.w.container);
    const char *route = ct ? ct->route : NULL;
    if (apply_index_only(op, &h, pending) || !route) {
        apply_record(op); /* (a container this region no longer serves: index only) */
        return;
    }
    op->head = (struct head_rec){ .exists = true, .version = op->e.head, .hlc = op->e.head_hlc,
                                  .crts = op->e.crts, .pending = 0,
                                  .deleted = op->e.head_delete };
    char path[1024];
    snprintf(path, sizeof path, "%s%s", route, op->e.w.id);
    const char *doc = op->e.head_delete ? NULL : op->e.head_doc;
    const char *method = op->e.head_delete ? "DELETE" : "PUT";
    if (r->node->store)
        apply_store(op, method, path, doc);
    else
        backend_request(r->node, method, path, NULL, NULL, doc, doc ? strlen(doc) : 0,
                        apply_backend_done, op);
}

static int apply_load(void *arg, uint64_t crts, const char *json, size_t len)
{
    struct apply_op *op = arg;
    struct err err;
    if (clog_entry_parse(json, len, &op->e, &err) < 0) {
        log_error("confirmed-log entry %llu is unreadable, skipped: %s", (unsigned long long)crts,
                  err.msg);
        memset(&op->e, 0, sizeof op->e);
    }
    op->e.crts = crts;
    return 1;
}

void applier_fresh_push(struct repl *r, uint64_t prev, struct clog_entry *e)
{
    struct fresh_entry *f = r->fresh_n < REPL_FRESH_MAX ? malloc(sizeof *f) : NULL;
    if (!f) {
        clog_entry_clear(e);
        return;
    }
    *f = (struct fresh_entry){ .prev = prev, .e = *e };
    memset(e, 0, sizeof *e);
    if (r->fresh_tail)
        r->fresh_tail->next = f;
    else
        r->fresh_head = f;
    r->fresh_tail = f;
    r->fresh_n++;
}

void applier_take_decided(struct repl *r, struct confirm_batch *b)
{
    for (size_t i = 0; i < b->n_kept; i++)
        applier_fresh_push(r, b->decided[i].prev, &b->decided[i].e);
    b->n_kept = 0;
}

/* The entry in memory (the follower's, or the hub's decision) that comes
 * right after the last one dispatched, if there is one and it is stored or
 * handed to the committer to be stored; entries already dispatched are
 * dropped on the way. */
static struct fresh_entry *apply_fresh(struct repl *r)
{
    struct fresh_entry *f;
    while ((f = r->fresh_head) && f->e.crts <= r->apply_dispatched) {
        r->fresh_head = f->next;
        clog_entry_clear(&f->e);
        free(f);
        r->fresh_n--;
    }
    if (!r->fresh_head)
        r->fresh_tail = NULL;
    uint64_t storing = r->follow_submitted > r->j->stored_crts ? r->follow_submitted
                                                               : r->j->stored_crts;
    return f && f->prev == r->apply_dispatched && f->e.crts <= storing ? f : NULL;
}

/* Takes up the next entry after the last one dispatched: the follower's
 * copy when it has it, else read from the log. The follower's copy is taken
 * only once its store job is queued: the committer runs jobs in order, so
 * an entry is never applied in a transaction before the one that stores
 * it. (Applying first would be undone by nothing after a crash in between:
 * applying an own write's decision drops its journal entry, and if the hub
 * that decided it is then lost, as in a takeover after a restart, neither
 * the decision nor the write is left anywhere to decide again.) */
static bool apply_dispatch(struct repl *r)
{
    struct apply_op *op = calloc(1, sizeof *op);
    struct fresh_entry *f = apply_fresh(r);
    if (!op)
        return false;
    op->r = r;
    if (f) {
        op->e = f->e;
        r->fresh_head = f->next;
        if (!r->fresh_head)
            r->fresh_tail = NULL;
        r->fresh_n--;
        free(f);
    } else {
        journal_scan_clog(r->j, r->apply_dispatched, r->j->stored_crts, 1, apply_load, op);
        r->stats.apply_log_reads += op->e.crts != 0;
    }
    if (!op->e.crts) {
        apply_free(op);
        return false;
    }
    r->apply_dispatched = op->e.crts;
    r->apply_inflight++;
    if (r->apply_tail)
        r->apply_tail->next = op;
    else
        r->apply_head = op;
    r->apply_tail = op;
    if (!op->e.w.container) {
        op->done = true; /* unreadable: nothing to apply */
        apply_advance(r);
        return true;
    }
    op->klen = repl_key(op->e.w.container, op->e.w.id, op->key, sizeof op->key);
    /* A key held by a client write in progress: nothing after this entry
     * may become visible before it (consistent prefix), so dispatching
     * stops until it has its lock. */
    r->apply_blocked = true;
    r->apply_granting = true;
    int rc = keylock_acquire(r->locks, op->key, op->klen, apply_locked, op);
    r->apply_granting = false;
    if (rc < 0) {
        r->apply_blocked = false;
        apply_fail(op, "out of memory");
    }
    return true;
}

void applier_kick(struct repl *r)
{
    if (r->apply_dispatched < r->j->applied_crts)
        r->apply_dispatched = r->j->applied_crts;
    if (!r->apply_persisted)
        r->apply_persisted = r->j->applied_crts;
    while (!r->closing && !r->apply_blocked && r->apply_inflight < r->apply_window &&
           (r->apply_dispatched < r->j->stored_crts || apply_fresh(r)))
        if (!apply_dispatch(r))
            break;
}

void applier_tick(struct repl *r, uint64_t now)
{
    for (struct apply_op *op = r->apply_head; op; op = op->next)
        if (op->failed && now >= op->retry_ms)
            apply_locked(op); /* still holds its key: nothing later got ahead */
    applier_kick(r);
}

void applier_close(struct repl *r)
{
    follower_fresh_clear(r);
    while (r->apply_head) {
        struct apply_op *op = r->apply_head;
        r->apply_head = op->next;
        apply_free(op);
    }
    r->apply_tail = NULL;
    r->apply_inflight = 0;
}
