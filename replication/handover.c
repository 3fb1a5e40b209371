#include "handover.h"

#include <stdlib.h>
#include <string.h>

#include "feed.h"

#define ORIGINS_MAX 256

struct rebuild {
    struct journal *j;
    MDB_txn *txn;
    struct handover_result *out;
    struct err *err;
    uint32_t origin[ORIGINS_MAX];
    uint64_t decided[ORIGINS_MAX];
    size_t n_origins;
    int rc;
};

static void note_decided(struct rebuild *rb, uint32_t origin, uint64_t lsn)
{
    size_t i;
    for (i = 0; i < rb->n_origins && rb->origin[i] != origin; i++)
        ;
    if (i == rb->n_origins) {
        if (i == ORIGINS_MAX)
            return;
        rb->origin[rb->n_origins] = origin;
        rb->decided[rb->n_origins++] = 0;
    }
    if (lsn > rb->decided[i])
        rb->decided[i] = lsn;
}

/* What one decision did to the hub's state, replayed. */
static int rebuild_entry(struct rebuild *rb, const struct clog_entry *e)
{
    char key[512];
    size_t klen = journal_key(e->w.container, e->w.id, key, sizeof key);
    bool found;
    if (klen == 0)
        return 0; /* (the hub never decided such a key) */
    if (e->outcome == LWW_DISMISSED)
        return feed_del(rb->txn, rb->j, e->conflict_id, &found, rb->err);
    note_decided(rb, e->w.origin, e->w.lsn);
    if (e->outcome == LWW_FILED)
        return feed_put(rb->txn, rb->j, e->crts, key, klen, rb->err);
    if (e->outcome == LWW_CONFIRMED) {
        struct chead_rec nh = { .exists = true, .w = repl_write_lww(&e->w), .crts = e->crts };
        return journal_chead_put(rb->txn, rb->j, key, klen, &nh, rb->err);
    }
    if (e->outcome == LWW_RESOLVED) {
        struct chead_rec h;
        journal_chead_get(rb->txn, rb->j, key, klen, &h);
        struct chead_rec nh = { .exists = true, .crts = e->crts,
                                .w = { .version = e->head, .base = h.w.version,
                                       .hlc = e->head_hlc, .is_delete = e->head_delete } };
        return journal_chead_put(rb->txn, rb->j, key, klen, &nh, rb->err);
    }
    return 0; /* superseded: the head stayed */
}

static int rebuild_one(void *arg, uint64_t crts, const MDB_val *v)
{
    struct rebuild *rb = arg;
    struct clog_entry e;
    struct err perr;
    rb->out->entries++;
    rb->out->last_crts = crts;
    if (clog_entry_parse(v->mv_data, v->mv_size, &e, &perr) < 0)
        return 0; /* an unreadable entry decided nothing anyone can apply */
    e.crts = crts;
    rb->rc = rebuild_entry(rb, &e);
    clog_entry_clear(&e);
    return rb->rc < 0;
}

struct own_collect {
    struct confirm_batch *b;
    size_t cap;
    bool failed;
};

static int own_one(void *arg, const struct repl_write *w)
{
    struct own_collect *oc = arg;
    if (w->state != WRITE_COMMITTED)
        return 0; /* in flight: decided when its commit comes, after this */
    if (oc->b->n == oc->cap) {
        size_t cap = oc->cap ? 2 * oc->cap : 16;
        struct repl_write *ws = realloc(oc->b->ws, cap * sizeof *ws);
        if (!ws) {
            oc->failed = true;
            return 1;
        }
        oc->b->ws = ws;
        oc->cap = cap;
    }
    if (repl_write_copy(&oc->b->ws[oc->b->n], w) < 0) {
        oc->failed = true;
        return 1;
    }
    oc->b->n++;
    return 0;
}

int handover_take(MDB_txn *txn, struct journal *j, uint32_t region, struct confirm_batch *b,
                  struct handover_result *out, struct err *err)
{
    struct rebuild *rb = calloc(1, sizeof *rb);
    int rc;
    if (!rb)
        return err_set(err, "out of memory");
    *out = (struct handover_result){ 0 };
    *rb = (struct rebuild){ .j = j, .txn = txn, .out = out, .err = err };
    if ((rc = mdb_drop(txn, j->cheads, 0)) != 0 || (rc = mdb_drop(txn, j->decided, 0)) != 0 ||
        (rc = mdb_drop(txn, j->conflicts, 0)) != 0) {
        free(rb);
        return err_set(err, "clearing the hub's state: %s", mdb_strerror(rc));
    }
    journal_scan_u64(txn, j->clog, 0, UINT64_MAX, SIZE_MAX, rebuild_one, rb);
    rc = rb->rc;
    uint64_t own_decided = 0;
    for (size_t i = 0; rc == 0 && i < rb->n_origins; i++) {
        rc = journal_decided_put(txn, j, rb->origin[i], rb->decided[i], err);
        if (rb->origin[i] == region)
            own_decided = rb->decided[i];
    }
    free(rb);
    MDB_stat st;
    if (rc == 0 && mdb_stat(txn, j->cheads, &st) == 0)
        out->heads = st.ms_entries;
    if (rc == 0)
        rc = journal_put_meta(txn, j, "last_crts", out->last_crts, err);
    if (rc == 0)
        rc = handover_mark(txn, j, region, err);
    if (rc < 0)
        return -1;
    /* This region's writes no hub decided: decided now, as the hub decides
     * its own (the decided mark only records the highest LSN). */
    struct own_collect oc = { .b = b };
    b->origin = region;
    b->own = true;
    journal_scan_writes_txn(txn, j, own_decided, SIZE_MAX, own_one, &oc);
    if (oc.failed)
        return err_set(err, "out of memory collecting this region's undecided writes");
    out->own_decided = b->n;
    return b->n ? confirm_apply(txn, j, b, err) : 0;
}

int handover_mark(MDB_txn *txn, struct journal *j, uint32_t region, struct err *err)
{
    return journal_put_meta(txn, j, "hub_of", region, err);
}

uint32_t handover_hub_of(struct journal *j)
{
    MDB_txn *txn = journal_rtxn(j);
    uint32_t hub = txn ? (uint32_t)journal_get_meta(txn, j, "hub_of") : 0;
    journal_rtxn_done(j);
    return hub;
}

struct snap {
    uint64_t *v;
    size_t n, cap;
    bool failed;
};

static int snap_add(struct snap *s, uint64_t crts)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        uint64_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) {
            s->failed = true;
            return 1;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = crts;
    return 0;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int snap_conflict(void *arg, uint64_t id, const MDB_val *v)
{
    (void)v;
    return snap_add(arg, id);
}

int handover_snapshot(struct journal *j, uint64_t **out, size_t *n, uint64_t *upto)
{
    MDB_txn *txn = journal_rtxn(j);
    MDB_cursor *cur;
    MDB_val k, v;
    struct snap s = { 0 };
    *out = NULL;
    *n = 0;
    if (!txn || mdb_cursor_open(txn, j->cheads, &cur) != 0) {
        journal_rtxn_done(j);
        return -1;
    }
    int op = MDB_FIRST;
    while (!s.failed && mdb_cursor_get(cur, &k, &v, op) == 0) {
        struct chead_rec h;
        op = MDB_NEXT;
        if (journal_chead_get(txn, j, k.mv_data, k.mv_size, &h) == 0 && h.exists)
            snap_add(&s, h.crts);
    }
    mdb_cursor_close(cur);
    if (!s.failed)
        journal_scan_u64(txn, j->conflicts, 0, UINT64_MAX, SIZE_MAX, snap_conflict, &s);
    *upto = journal_get_meta(txn, j, "last_crts");
    journal_rtxn_done(j);
    if (s.failed) {
        free(s.v);
        return -1;
    }
    qsort(s.v, s.n, sizeof *s.v, u64_cmp);
    size_t w = 0;
    for (size_t i = 0; i < s.n; i++)
        if (w == 0 || s.v[w - 1] != s.v[i])
            s.v[w++] = s.v[i];
    *out = s.v;
    *n = w;
    return 0;
}
