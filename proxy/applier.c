/* applier: every region applies the confirmed log it holds to its backend,
 * one entry at a time in crts order, under the entry's key lock:
 *   - the entry's resulting head is written to the backend (PUT, or DELETE
 *     for a tombstone) unless the backend already holds that version, or this
 *     region still has its own undecided writes on the key (they stay visible
 *     until the hub's decision on them arrives);
 *   - the heads index, the applied position and (for this region's own
 *     writes) the journal are updated in one transaction, so applying again
 *     after a crash is a no-op. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/log.h"
#include "backend.h"
#include "keylock.h"
#include "node.h"
#include "repl.h"

#define APPLY_RETRY_MS 500

struct apply_op {
    struct repl *r;
    struct clog_entry e;
    char key[512];
    size_t klen;
    struct head_rec head;     /* what the index will say afterwards */
    bool own;
};

static void apply_free(struct apply_op *op)
{
    clog_entry_clear(&op->e);
    free(op);
}

/* Shutting down: the applied position says where to resume next time. */
static bool apply_closing(struct apply_op *op)
{
    struct repl *r = op->r;
    if (!r->closing)
        return false;
    keylock_release(r->locks, op->key, op->klen);
    apply_free(op);
    r->applying = false;
    return true;
}

static void apply_fail(struct apply_op *op, const char *why)
{
    struct repl *r = op->r;
    r->stats.apply_errors++;
    log_warn("applying crts %llu (%s/%s): %s; retrying", (unsigned long long)op->e.crts,
             op->e.w.container, op->e.w.id, why);
    keylock_release(r->locks, op->key, op->klen);
    apply_free(op);
    r->applying = false;
    r->apply_retry_ms = node_now_ms(r->node) + APPLY_RETRY_MS;
}

static int apply_commit(MDB_txn *txn, void *arg, struct err *err)
{
    struct apply_op *op = arg;
    struct journal *j = op->r->j;
    if (journal_put_head(txn, j, op->e.w.container, op->e.w.id, &op->head, err) < 0)
        return -1;
    if (op->own && journal_del_write(txn, j, op->e.w.lsn, err) < 0)
        return -1;
    return journal_put_meta(txn, j, "applied_crts", op->e.crts, err);
}

static void apply_committed(void *arg, int rc, const char *reason)
{
    struct apply_op *op = arg;
    struct repl *r = op->r;
    if (apply_closing(op))
        return;
    if (rc < 0) {
        apply_fail(op, reason);
        return;
    }
    r->j->applied_crts = op->e.crts;
    r->stats.applied++;
    int idx = repl_region_index(r, op->e.w.origin);
    uint64_t now = hlc_wall_ms(), born = HLC_MS(op->e.w.hlc);
    if (idx >= 0 && now >= born)
        stats_observe(&r->stats.replication_seconds[idx], (now - born) / 1000.0);
    keylock_release(r->locks, op->key, op->klen);
    apply_free(op);
    r->applying = false;
    applier_kick(r);
}

static void apply_record(struct apply_op *op)
{
    if (committer_submit(op->r->j->committer, apply_commit, apply_committed, op, false) < 0)
        apply_fail(op, "out of memory");
}

static void apply_backend_done(void *arg, const struct backend_answer *a)
{
    struct apply_op *op = arg;
    if (apply_closing(op))
        return;
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

static const char *route_of(const struct repl *r, const char *container)
{
    const struct conf *conf = r->node->conf;
    for (size_t i = 0; i < conf->n_containers; i++)
        if (strcmp(conf->containers[i].name, container) == 0)
            return conf->containers[i].route;
    return NULL;
}

static void apply_locked(void *arg)
{
    struct apply_op *op = arg;
    struct repl *r = op->r;
    struct head_rec h;
    if (apply_closing(op))
        return;
    journal_head(r->j, op->e.w.container, op->e.w.id, &h);
    op->own = op->e.w.origin == r->self->id;
    uint32_t pending = h.pending;
    if (op->own && pending)
        pending--;
    if (pending || (h.exists && version_eq(h.version, op->e.head))) {
        /* Own undecided writes stay visible; or the backend already has it. */
        op->head = h;
        op->head.pending = pending;
        if (!pending) {
            op->head.crts = op->e.crts;
            op->head.deleted = op->e.head_delete;
        }
        apply_record(op);
        return;
    }
    op->head = (struct head_rec){ .exists = true, .version = op->e.head, .hlc = op->e.head_hlc,
                                  .crts = op->e.crts, .pending = 0,
                                  .deleted = op->e.head_delete };
    const char *route = route_of(r, op->e.w.container);
    char path[1024];
    if (!route) {
        apply_record(op); /* a container this region no longer serves: index only */
        return;
    }
    snprintf(path, sizeof path, "%s%s", route, op->e.w.id);
    const char *doc = op->e.head_delete ? NULL : op->e.head_doc;
    backend_request(r->node, op->e.head_delete ? "DELETE" : "PUT", path, NULL, NULL, doc,
                    doc ? strlen(doc) : 0, apply_backend_done, op);
}

static int apply_load(void *arg, uint64_t crts, const char *json, size_t len)
{
    struct apply_op *op = arg;
    struct err err;
    json_t *root = json_loadb(json, len, 0, NULL);
    int rc = clog_entry_from_json(root, &op->e, &err);
    json_decref(root);
    if (rc < 0) {
        log_error("confirmed-log entry %llu is unreadable: %s", (unsigned long long)crts, err.msg);
        memset(&op->e, 0, sizeof op->e);
    }
    op->e.crts = crts;
    return 1;
}

void applier_kick(struct repl *r)
{
    struct journal *j = r->j;
    if (r->closing || r->applying || j->applied_crts >= j->stored_crts)
        return;
    struct apply_op *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->r = r;
    journal_scan_clog(j, j->applied_crts, j->stored_crts, 1, apply_load, op);
    if (!op->e.w.container) {
        apply_free(op);
        r->apply_retry_ms = node_now_ms(r->node) + APPLY_RETRY_MS;
        return;
    }
    r->applying = true;
    r->apply_retry_ms = 0;
    op->klen = repl_key(op->e.w.container, op->e.w.id, op->key, sizeof op->key);
    if (keylock_acquire(r->locks, op->key, op->klen, apply_locked, op) < 0)
        apply_fail(op, "out of memory");
}
