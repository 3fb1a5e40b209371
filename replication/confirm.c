#include "confirm.h"

#include <stdlib.h>
#include <string.h>

#include "feed.h"
#include "hlc.h"

static void decided_clear(struct confirm_batch *b)
{
    for (size_t i = 0; i < b->n_kept; i++)
        clog_entry_clear(&b->decided[i].e);
    b->n_kept = 0;
}

void confirm_batch_free(struct confirm_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        repl_write_clear(&b->ws[i]);
    free(b->ws);
    decided_clear(b);
    free(b->decided);
    free(b);
}

/* Keeps a copy of the decision just logged (its head document and error
 * move into it). Without memory it is not kept: the applier reads it back. */
static void decided_keep(struct confirm_batch *b, uint64_t prev, struct clog_entry *e)
{
    struct confirm_decided *d = &b->decided[b->n_kept];
    d->prev = prev;
    d->e = *e;
    if (repl_write_copy(&d->e.w, &e->w) < 0)
        return;
    e->head_doc = NULL;
    e->error = NULL;
    if (d->e.outcome == LWW_CONFIRMED && clog_entry_head_of_write(&d->e) < 0) {
        clog_entry_clear(&d->e);
        return;
    }
    b->n_kept++;
}

/* The head's document, from the confirmed-log entry that made it head. */
static int head_document(MDB_txn *txn, struct journal *j, const struct chead_rec *h,
                         struct clog_entry *e, struct err *err)
{
    struct clog_entry prev;
    if (journal_clog_get(txn, j, h->crts, &prev, err) < 0)
        return -1;
    e->head_doc = prev.head_doc;
    prev.head_doc = NULL;
    clog_entry_clear(&prev);
    return 0;
}

#define CONFLICTING_MAX 16

/* The documents of the other conflicts of `key` still in the feed. */
static size_t conflicting_docs(MDB_txn *txn, struct journal *j, const char *key, size_t klen,
                               char **docs)
{
    uint64_t ids[CONFLICTING_MAX];
    size_t n = feed_ids_of_key(txn, j, key, klen, ids, CONFLICTING_MAX), got = 0;
    for (size_t i = 0; i < n; i++) {
        struct clog_entry c;
        struct err ignored;
        if (journal_clog_get(txn, j, ids[i], &c, &ignored) < 0)
            continue;
        if (c.w.doc) {
            docs[got++] = c.w.doc;
            c.w.doc = NULL;
        }
        clog_entry_clear(&c);
    }
    return got;
}

/* The procedure's document, tagged as the version 0:crts the hub made. */
static char *tag_resolved(const char *doc, const struct confirm_policy *pol,
                          const struct clog_entry *e)
{
    json_t *root = json_loads(doc, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    char base[VERSION_TEXT_MAX], incoming[VERSION_TEXT_MAX];
    version_format(e->head.region ? e->head : VERSION_NONE, base);
    version_format(repl_write_version(&e->w), incoming);
    json_object_set_new(root, "_ts", json_integer((json_int_t)(HLC_MS(e->crts) / 1000)));
    json_object_set_new(root, pol->metadata_field,
                        json_pack("{s:s,s:i,s:I,s:I,s:s*,s:s}", "region", "resolver", "regionId", 0,
                                  "lsn", (json_int_t)e->crts, "hlc", (json_int_t)e->crts, "base",
                                  base[0] ? base : NULL, "resolves", incoming));
    return entry_dump(root);
}

/* Runs the procedure on conflict `e` (head fields: the current head). On
 * success e becomes the resolution; otherwise e->error says why. */
static void run_procedure(MDB_txn *txn, struct journal *j, struct confirm_batch *b,
                          const struct confirm_policy *pol, const char *key, size_t klen,
                          struct clog_entry *e)
{
    char *docs[CONFLICTING_MAX];
    size_t n = conflicting_docs(txn, j, key, klen, docs);
    struct procedure_input in = {
        .container = e->w.container, .incoming = e->w.doc,
        .existing = e->head_delete ? NULL : e->head_doc, .tombstone = e->w.is_delete,
        .conflicting = (const char *const *)docs, .n_conflicting = n,
    };
    struct procedure_result res = { 0 };
    uint64_t started = hlc_wall_ms();
    int rc = procedure_run(b->worker_argv, pol->procedure, &in, &pol->limits, &res);
    b->procedure_runs++;
    b->procedure_ms += hlc_wall_ms() - started;
    for (size_t i = 0; i < n; i++)
        free(docs[i]);
    char *tagged = rc == 0 && !res.is_delete ? tag_resolved(res.doc, pol, e) : NULL;
    if (rc < 0 || (!res.is_delete && !tagged)) {
        b->procedure_failures++;
        e->error = strdup(rc < 0 ? res.error : "the procedure's document could not be tagged");
    } else {
        e->outcome = LWW_RESOLVED;
        e->head = (struct version){ 0, e->crts };
        e->head_hlc = e->crts;
        e->head_delete = res.is_delete;
        free(e->head_doc);
        e->head_doc = tagged;
    }
    procedure_result_clear(&res);
}

/* A conflict in a custom container: the procedure's result becomes the head,
 * or the incoming write goes to the conflicts feed and the head stays. */
static int decide_custom(MDB_txn *txn, struct journal *j, struct confirm_batch *b,
                         const struct confirm_policy *pol, const char *key, size_t klen,
                         const struct chead_rec *h, struct clog_entry *e, struct err *err)
{
    e->outcome = LWW_FILED;
    if (pol->procedure)
        run_procedure(txn, j, b, pol, key, klen, e);
    if (e->outcome == LWW_FILED)
        return feed_put(txn, j, e->crts, key, klen, err);
    struct chead_rec nh = { .exists = true, .crts = e->crts,
                            .w = { .version = e->head, .base = h->w.version, .hlc = e->head_hlc,
                                   .is_delete = e->head_delete } };
    return journal_chead_put(txn, j, key, klen, &nh, err);
}

static int decide_one(MDB_txn *txn, struct journal *j, struct confirm_batch *b,
                      const struct repl_write *w, struct err *err)
{
    char key[512];
    size_t klen = journal_key(w->container, w->id, key, sizeof key);
    struct chead_rec h;
    if (klen == 0)
        return err_set(err, "key too long");
    journal_chead_get(txn, j, key, klen, &h);
    struct lww_head head = { .exists = h.exists, .w = h.w };
    struct lww_write in = repl_write_lww(w);
    struct lww_decision d = lww_decide(&head, &in);
    const struct confirm_policy *pol = b->policy ? b->policy(b->policy_ctx, w->container) : NULL;
    bool custom = pol && pol->custom && d.conflict != LWW_NO_CONFLICT && h.exists;
    uint64_t crts = b->last_crts + 1 > b->crts_floor ? b->last_crts + 1 : b->crts_floor;
    struct clog_entry e = { .crts = crts, .outcome = d.outcome, .conflict = d.conflict };
    e.w = *w; /* borrowed: cleared by hand below, never freed here */
    int rc = 0;
    if (d.outcome == LWW_CONFIRMED && !custom) {
        struct chead_rec nh = { .exists = true, .w = in, .crts = crts };
        rc = journal_chead_put(txn, j, key, klen, &nh, err);
    } else {
        e.head = h.w.version;
        e.head_hlc = h.w.hlc;
        e.head_delete = h.w.is_delete;
        if (!h.w.is_delete)
            rc = head_document(txn, j, &h, &e, err);
        if (rc == 0 && custom)
            rc = decide_custom(txn, j, b, pol, key, klen, &h, &e, err);
    }
    char *text = rc == 0 ? clog_entry_text(&e) : NULL;
    if (rc == 0 && !text)
        rc = err_set(err, "out of memory encoding a decision");
    if (rc == 0)
        rc = journal_put_clog(txn, j, crts, text, strlen(text), err);
    if (rc == 0 && b->decided)
        decided_keep(b, b->last_crts, &e);
    free(text);
    free(e.head_doc);
    free(e.error);
    if (rc == 0) {
        b->conflicts[d.conflict][e.outcome]++;
        b->last_crts = crts;
        if (!b->first_crts)
            b->first_crts = crts;
        b->n_decided++;
    }
    return rc;
}

int confirm_apply(MDB_txn *txn, struct journal *j, struct confirm_batch *b, struct err *err)
{
    uint64_t decided = journal_decided_get(txn, j, b->origin);
    b->last_crts = journal_get_meta(txn, j, "last_crts");
    b->first_crts = 0;
    b->n_decided = 0;
    memset(b->conflicts, 0, sizeof b->conflicts);
    b->procedure_runs = b->procedure_failures = 0;
    b->procedure_ms = 0;
    if (b->decided)
        decided_clear(b);
    else if (b->keep_decided && b->n)
        b->decided = calloc(b->n, sizeof *b->decided);
    for (size_t i = 0; i < b->n; i++) {
        const struct repl_write *w = &b->ws[i];
        if (w->lsn <= decided && !b->own)
            continue; /* a replay: already decided */
        if (decide_one(txn, j, b, w, err) < 0)
            return -1;
        if (w->lsn > decided)
            decided = w->lsn;
    }
    b->decided_upto = decided;
    if (journal_decided_put(txn, j, b->origin, decided, err) < 0)
        return -1;
    return journal_put_meta(txn, j, "last_crts", b->last_crts, err);
}
