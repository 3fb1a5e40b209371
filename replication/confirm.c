#include "confirm.h"

#include <stdlib.h>
#include <string.h>

void confirm_batch_free(struct confirm_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        repl_write_clear(&b->ws[i]);
    free(b->ws);
    free(b);
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
    uint64_t crts = b->last_crts + 1 > b->crts_floor ? b->last_crts + 1 : b->crts_floor;
    struct clog_entry e = { .crts = crts, .outcome = d.outcome, .conflict = d.conflict };
    e.w = *w; /* borrowed: cleared by hand below, never freed here */
    int rc = 0;
    if (d.outcome == LWW_CONFIRMED) {
        struct chead_rec nh = { .exists = true, .w = in, .crts = crts };
        rc = journal_chead_put(txn, j, key, klen, &nh, err);
    } else {
        e.head = h.w.version;
        e.head_hlc = h.w.hlc;
        e.head_delete = h.w.is_delete;
        if (!h.w.is_delete)
            rc = head_document(txn, j, &h, &e, err);
    }
    char *text = rc == 0 ? entry_dump(clog_entry_to_json(&e)) : NULL;
    if (rc == 0 && !text)
        rc = err_set(err, "out of memory encoding a decision");
    if (rc == 0)
        rc = journal_put_clog(txn, j, crts, text, strlen(text), err);
    free(text);
    free(e.head_doc);
    if (rc == 0) {
        b->conflicts[d.conflict][d.outcome]++;
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
