/* Journal entries that refer to the embedded store's copy of their document
 * (journal_put_write_ref): read back through the document source, copied in
 * by journal_keep_doc before the store's copy changes, unreadable (skipped,
 * and journal_keep_doc fails) when the source has no document. The source
 * here is a stand-in for the store: one key, one document. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "confirm_fixture.h"

TestSuite(journal_ref, .init = confirm_setup, .fini = confirm_teardown, .timeout = 60);

#define STORE_KEY "/orders/\0a"
#define STORE_KEY_LEN (sizeof STORE_KEY - 1)

static struct {
    const char *doc;    /* what the store holds under STORE_KEY; NULL: nothing */
    int asked;          /* lookups of STORE_KEY */
    int asked_other;    /* lookups of any other key */
} store;

static const char *store_doc(void *ctx, MDB_txn *txn, const char *key, size_t klen, size_t *len)
{
    (void)txn;
    cr_assert_eq(ctx, &store);
    if (klen != STORE_KEY_LEN || memcmp(key, STORE_KEY, klen) != 0) {
        store.asked_other++;
        return NULL;
    }
    store.asked++;
    if (!store.doc)
        return NULL;
    *len = strlen(store.doc);
    return store.doc;
}

static void setup_source(const char *doc)
{
    memset(&store, 0, sizeof store);
    store.doc = doc;
    journal_set_doc_source(hub.j, store_doc, &store);
}

static void in_txn(int (*fn)(MDB_txn *, const struct repl_write *, struct err *),
                   const struct repl_write *w, int want)
{
    struct err err = { "" };
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(hub.j->env, NULL, 0, &txn), 0);
    int rc = fn(txn, w, &err);
    cr_assert_eq(rc, want, "rc %d: %s", rc, err.msg);
    cr_assert_eq(mdb_txn_commit(txn), 0);
}

static int put_ref(MDB_txn *txn, const struct repl_write *w, struct err *err)
{
    return journal_put_write_ref(txn, hub.j, w, STORE_KEY, STORE_KEY_LEN, err);
}

static int put_inline(MDB_txn *txn, const struct repl_write *w, struct err *err)
{
    return journal_put_write(txn, hub.j, w, err);
}

static int keep(MDB_txn *txn, const struct repl_write *w, struct err *err)
{
    return journal_keep_doc(txn, hub.j, w->lsn, err);
}

struct seen {
    int n;
    char *doc[4];
    uint64_t lsn[4];
};

static int collect(void *arg, const struct repl_write *w)
{
    struct seen *s = arg;
    cr_assert_lt(s->n, 4);
    s->lsn[s->n] = w->lsn;
    s->doc[s->n++] = w->doc ? strdup(w->doc) : NULL;
    return 0;
}

static struct seen scan(void)
{
    struct seen s = { 0 };
    cr_assert_eq(journal_scan_writes(hub.j, 0, 16, collect, &s), 0);
    return s;
}

static void seen_free(struct seen *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->doc[i]);
}

Test(journal_ref, an_entry_by_reference_reads_the_store_document)
{
    setup_source("{\"v\":1}");
    struct repl_write w = put(HUB, 1, HLC(1), V(0, 0), "a", "{\"v\":1}");
    in_txn(put_ref, &w, 0);

    struct seen s = scan();
    cr_assert_eq(s.n, 1);
    cr_assert_str_eq(s.doc[0], "{\"v\":1}");
    cr_assert_eq(store.asked, 1);
    cr_assert_eq(store.asked_other, 0);
    seen_free(&s);

    /* A reference: the entry shows whatever the store holds now. That is
     * why the store's copy must not change under it (journal_keep_doc). */
    store.doc = "{\"v\":9}";
    s = scan();
    cr_assert_str_eq(s.doc[0], "{\"v\":9}");
    seen_free(&s);
    repl_write_clear(&w);
}

Test(journal_ref, keep_doc_copies_the_document_in_before_the_store_changes)
{
    setup_source("{\"v\":1}");
    struct repl_write w1 = put(HUB, 1, HLC(1), V(0, 0), "a", "{\"v\":1}");
    struct repl_write w2 = put(HUB, 2, HLC(2), V(0, 0), "b", "{\"v\":5}");
    in_txn(put_ref, &w1, 0);
    in_txn(put_inline, &w2, 0);

    in_txn(keep, &w1, 0);
    store.doc = "{\"v\":2}"; /* the next write of the key replaced the store's copy */
    store.asked = 0;
    struct seen s = scan();
    cr_assert_eq(s.n, 2);
    cr_assert_eq(s.lsn[0], 1);
    cr_assert_str_eq(s.doc[0], "{\"v\":1}", "the entry lost its own document: %s", s.doc[0]);
    cr_assert_str_eq(s.doc[1], "{\"v\":5}");
    cr_assert_eq(store.asked, 0, "an entry with its own copy still asked the store");
    seen_free(&s);

    /* Entries with their own document, and LSNs with no entry: nothing to do. */
    in_txn(keep, &w1, 0);
    in_txn(keep, &w2, 0);
    struct repl_write missing = { .lsn = 42 };
    in_txn(keep, &missing, 0);
    cr_assert_eq(store.asked, 0);
    repl_write_clear(&w1);
    repl_write_clear(&w2);
}

Test(journal_ref, without_the_store_document_the_entry_is_unreadable_and_keep_doc_says_so)
{
    setup_source(NULL);
    struct repl_write w = put(HUB, 1, HLC(1), V(0, 0), "a", "{\"v\":1}");
    in_txn(put_ref, &w, 0);

    struct seen s = scan();
    cr_assert_eq(s.n, 0, "an entry without its document was read");
    in_txn(keep, &w, -1);

    journal_set_doc_source(hub.j, NULL, NULL);
    store.doc = "{\"v\":1}";
    s = scan();
    cr_assert_eq(s.n, 0, "read without a document source");
    journal_set_doc_source(hub.j, store_doc, &store);
    s = scan();
    cr_assert_eq(s.n, 1);
    cr_assert_str_eq(s.doc[0], "{\"v\":1}");
    seen_free(&s);
    repl_write_clear(&w);
}
