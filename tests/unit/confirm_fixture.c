/* The hub's journal for the confirm, custom-resolution and handover unit
 * tests: a real LMDB journal in a fresh temporary directory, batches built
 * as a satellite's ship delivers them, decided in their own transaction, and
 * readers of what the hub holds afterwards (confirm_fixture.h). */
#define _GNU_SOURCE /* nftw(), for cleaning up the temporary journal */
#include "confirm_fixture.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hub hub;

/* The container policy the hub applies: last-writer-wins unless a test
 * sets `custom` (for every container). */
struct confirm_policy custom;
const char *const worker[] = { MERIDIAN_BINARY, "resolve", "--worker", NULL };

void hub_open(void)
{
    struct err err = { "" };

    cr_assert_eq(journal_open(hub.base, hub.root, HUB, &hub.j, &err), 0, "open: %s", err.msg);
}

void confirm_setup(void)
{
    memset(&hub, 0, sizeof hub);
    memset(&custom, 0, sizeof custom);
    snprintf(hub.root, sizeof hub.root, "/tmp/meridian-confirm-XXXXXX");
    cr_assert_not_null(mkdtemp(hub.root));
    hub.base = event_base_new();
    cr_assert_not_null(hub.base);
    hub_open();
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void confirm_teardown(void)
{
    journal_close(hub.j);
    hub.j = NULL;
    event_base_free(hub.base);
    nftw(hub.root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* --- building batches ------------------------------------------------------ */

/* A put as its origin tagged it: the LWW value is read from the document's
 * "/v", as the write path does for a container whose path is /v. */
struct repl_write put_in(const char *container, uint32_t origin, uint64_t lsn, uint64_t hlc,
                         struct version base, const char *id, const char *doc)
{
    struct repl_write w = {
        .origin = origin, .lsn = lsn, .hlc = hlc, .base = base, .state = WRITE_COMMITTED,
        .container = strdup(container), .id = strdup(id), .doc = strdup(doc),
    };
    w.has_value = entry_path_number(doc, "/v", &w.value);
    return w;
}

struct repl_write put(uint32_t origin, uint64_t lsn, uint64_t hlc, struct version base,
                      const char *id, const char *doc)
{
    return put_in(CONTAINER, origin, lsn, hlc, base, id, doc);
}

struct repl_write del(uint32_t origin, uint64_t lsn, uint64_t hlc, struct version base,
                      const char *id)
{
    return (struct repl_write){
        .origin = origin, .lsn = lsn, .hlc = hlc, .base = base, .is_delete = true,
        .state = WRITE_COMMITTED, .container = strdup(CONTAINER), .id = strdup(id),
    };
}


static const struct confirm_policy *policy_of(void *ctx, const char *container)
{
    (void)ctx, (void)container;
    return custom.custom ? &custom : NULL;
}

/* A heap batch owning copies of `ws` (whose strings it takes over). */
struct confirm_batch *batch_new(uint32_t origin, uint64_t crts_floor, struct repl_write *ws,
                                size_t n)
{
    struct confirm_batch *b = calloc(1, sizeof *b);
    cr_assert_not_null(b);
    b->ws = calloc(n ? n : 1, sizeof *b->ws);
    cr_assert_not_null(b->ws);
    if (n)
        memcpy(b->ws, ws, n * sizeof *ws);
    b->n = n;
    b->origin = origin;
    b->crts_floor = crts_floor;
    b->policy = policy_of;
    b->worker_argv = worker;
    return b;
}

/* Decides one batch in its own committed write transaction, as the committer
 * would, and returns its results (the writes are freed). */
struct confirm_batch decide(uint32_t origin, uint64_t crts_floor, struct repl_write *ws,
                            size_t n)
{
    struct confirm_batch *b = batch_new(origin, crts_floor, ws, n);
    struct err err = { "" };
    MDB_txn *txn;

    cr_assert_eq(mdb_txn_begin(hub.j->env, NULL, 0, &txn), 0);
    int rc = confirm_apply(txn, hub.j, b, &err);
    if (rc < 0)
        mdb_txn_abort(txn);
    cr_assert_eq(rc, 0, "confirm_apply: %s", err.msg);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    struct confirm_batch out = *b;
    out.ws = NULL;
    confirm_batch_free(b);
    return out;
}

/* --- reading the hub's state ------------------------------------------------ */

MDB_txn *read_txn(void)
{
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(hub.j->env, NULL, MDB_RDONLY, &txn), 0);
    return txn;
}

struct chead_rec chead_in(const char *container, const char *id)
{
    char key[512];
    struct chead_rec h;
    size_t klen = journal_key(container, id, key, sizeof key);
    cr_assert_gt(klen, 0);
    MDB_txn *txn = read_txn();
    journal_chead_get(txn, hub.j, key, klen, &h);
    mdb_txn_abort(txn);
    return h;
}

struct chead_rec chead(const char *id)
{
    return chead_in(CONTAINER, id);
}

/* The log entry at crts; the caller clears it. */
struct clog_entry clog_at(uint64_t crts)
{
    struct clog_entry e;
    struct err err = { "" };
    MDB_txn *txn = read_txn();
    int rc = journal_clog_get(txn, hub.j, crts, &e, &err);
    mdb_txn_abort(txn);
    cr_assert_eq(rc, 0, "clog[%llu]: %s", (unsigned long long)crts, err.msg);
    return e;
}

uint64_t decided_mark(uint32_t origin)
{
    MDB_txn *txn = read_txn();
    uint64_t v = journal_decided_get(txn, hub.j, origin);
    mdb_txn_abort(txn);
    return v;
}

uint64_t last_crts_meta(void)
{
    MDB_txn *txn = read_txn();
    uint64_t v = journal_get_meta(txn, hub.j, "last_crts");
    mdb_txn_abort(txn);
    return v;
}

static int collect(void *arg, uint64_t crts, const char *json, size_t len)
{
    struct log_list *l = arg;
    (void)json, (void)len;
    if (l->n < MAX_LOG)
        l->crts[l->n] = crts;
    l->n++;
    return 0;
}

/* Every crts in the confirmed log, ascending. */
struct log_list log_all(void)
{
    struct log_list l = { 0 };
    cr_assert_eq(journal_scan_clog(hub.j, 0, UINT64_MAX, 10000, collect, &l), 0);
    cr_assert_leq(l.n, MAX_LOG);
    return l;
}

void expect_version(struct version got, struct version want, const char *what)
{
    cr_expect(version_eq(got, want), "%s: %u:%llu, want %u:%llu", what, got.region,
              (unsigned long long)got.lsn, want.region, (unsigned long long)want.lsn);
}

void expect_doc(const char *got, const char *want, const char *what)
{
    if (!want) {
        cr_expect_null(got, "%s: expected a tombstone, got %s", what, got);
        return;
    }
    cr_assert_not_null(got, "%s: no document, want %s", what, want);
    json_t *a = json_loads(got, 0, NULL), *b = json_loads(want, 0, NULL);
    cr_expect(json_equal(a, b), "%s: %s, want %s", what, got, want);
    json_decref(a);
    json_decref(b);
}

size_t count_of(const struct confirm_batch *b, enum lww_conflict k, enum lww_outcome o)
{
    return (size_t)b->conflicts[k][o];
}

