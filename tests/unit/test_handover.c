/* Unit tests of replication/handover: a region taking over as hub rebuilds
 * the hub's state from the confirmed log it holds and decides its own
 * undecided writes; a joining region's snapshot lists the entries of the
 * confirmed state. Each test lets a hub decide a history first (the
 * fixture of test_confirm.c), then checks that the rebuild gives back
 * exactly the state the deciding hub had, and that decisions after it
 * continue as if the hub had never changed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "confirm_fixture.h"
#include "replication/handover.h"

TestSuite(handover, .init = confirm_setup, .fini = confirm_teardown, .timeout = 60);

#define KEYS_MAX 16

/* What the hub holds: heads by key, decided marks, last crts, the feed. */
struct hub_state {
    const char *ids[KEYS_MAX];
    struct chead_rec heads[KEYS_MAX];
    size_t n;
    uint64_t decided[4];
    uint64_t last_crts;
    uint64_t feed[KEYS_MAX];
    size_t n_feed;
};

static int feed_one(void *arg, uint64_t id)
{
    struct hub_state *s = arg;
    if (s->n_feed < KEYS_MAX)
        s->feed[s->n_feed++] = id;
    return 0;
}

static struct hub_state state_of(const char *const *ids, size_t n)
{
    struct hub_state s = { .n = n };
    for (size_t i = 0; i < n; i++) {
        s.ids[i] = ids[i];
        s.heads[i] = chead(ids[i]);
    }
    for (uint32_t o = 1; o <= SAT_B; o++)
        s.decided[o] = decided_mark(o);
    s.last_crts = last_crts_meta();
    cr_assert_eq(feed_scan(journal_rtxn(hub.j), hub.j, CONTAINER, 0, feed_one, &s), 0);
    journal_rtxn_done(hub.j);
    return s;
}

static void expect_same_state(const struct hub_state *a, const struct hub_state *b)
{
    for (size_t i = 0; i < a->n; i++) {
        const struct chead_rec *x = &a->heads[i], *y = &b->heads[i];
        cr_expect_eq(x->exists, y->exists, "%s: exists", a->ids[i]);
        expect_version(y->w.version, x->w.version, a->ids[i]);
        expect_version(y->w.base, x->w.base, a->ids[i]);
        cr_expect_eq(x->w.hlc, y->w.hlc, "%s: hlc", a->ids[i]);
        cr_expect_eq(x->w.is_delete, y->w.is_delete, "%s: delete", a->ids[i]);
        cr_expect_eq(x->w.has_value, y->w.has_value, "%s: has value", a->ids[i]);
        cr_expect_eq(x->w.value, y->w.value, "%s: value", a->ids[i]);
        cr_expect_eq(x->crts, y->crts, "%s: crts", a->ids[i]);
    }
    for (uint32_t o = 1; o <= SAT_B; o++)
        cr_expect_eq(a->decided[o], b->decided[o], "decided mark of %u", o);
    cr_expect_eq(a->last_crts, b->last_crts, "last crts");
    cr_expect_eq(a->n_feed, b->n_feed, "conflicts in the feed");
    for (size_t i = 0; i < a->n_feed && i < b->n_feed; i++)
        cr_expect_eq(a->feed[i], b->feed[i], "feed entry %zu", i);
}

/* handover_take in its own committed transaction, as region `region`;
 * returns its result, and the own writes it decided in *b (freed). */
static struct handover_result take(uint32_t region, struct confirm_batch *out)
{
    struct confirm_batch *b = batch_new(region, HLC(1), NULL, 0);
    struct handover_result res;
    struct err err = { "" };
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(hub.j->env, NULL, 0, &txn), 0);
    int rc = handover_take(txn, hub.j, region, b, &res, &err);
    if (rc < 0)
        mdb_txn_abort(txn);
    cr_assert_eq(rc, 0, "handover_take: %s", err.msg);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    if (out)
        *out = *b;
    if (out)
        out->ws = NULL, out->n = 0;
    confirm_batch_free(b);
    return res;
}

/* A history with every kind of decision: confirmations, a superseded
 * insert, a replace conflict, a delete winning, a write after a delete,
 * and (custom) a filed conflict, one dismissed. */
static void decide_history(void)
{
    (void)DECIDE(SAT_A, 0,
        put(SAT_A, 1, HLC(10), V(0, 0), "a", "{\"v\":1}"),
        put(SAT_A, 2, HLC(10), V(0, 0), "b", "{\"v\":5}"),
        put(SAT_A, 3, HLC(11), V(SAT_A, 1), "a", "{\"v\":2}"),
        put(SAT_A, 4, HLC(12), V(0, 0), "gone", "{\"v\":1}"));
    (void)DECIDE(SAT_B, 0,
        put(SAT_B, 1, HLC(20), V(0, 0), "b", "{\"v\":3}"),          /* insert, superseded */
        put(SAT_B, 2, HLC(21), V(SAT_A, 1), "a", "{\"v\":9}"),      /* replace, wins on /v */
        del(SAT_B, 3, HLC(22), V(SAT_A, 4), "gone"),                /* no conflict */
        put(SAT_B, 4, HLC(23), V(0, 0), "c", "{\"v\":1}"));
    (void)DECIDE(HUB, 0, put(HUB, 1, HLC(30), V(SAT_B, 3), "gone", "{\"v\":7}"));
    custom = (struct confirm_policy){ .custom = true, .metadata_field = "_meridian",
                                      .limits = { 1000, 32u << 20 } };
    (void)DECIDE(SAT_A, 0,
        put(SAT_A, 5, HLC(40), V(0, 0), "c", "{\"v\":2}"),          /* filed */
        put(SAT_A, 6, HLC(41), V(0, 0), "b", "{\"v\":8}"));         /* filed */
    custom = (struct confirm_policy){ 0 };
}

static const char *const IDS[] = { "a", "b", "c", "gone", "never" };
#define N_IDS (sizeof IDS / sizeof *IDS)

Test(handover, the_rebuilt_state_is_the_deciding_hubs)
{
    decide_history();
    struct hub_state before = state_of(IDS, N_IDS);
    cr_assert_eq(before.n_feed, 2, "the history files two conflicts");
    cr_assert(before.heads[0].exists && before.heads[3].exists);

    struct handover_result res = take(SAT_A, NULL);
    cr_expect_eq(res.entries, log_all().n);
    cr_expect_eq(res.last_crts, before.last_crts);
    cr_expect_eq(res.heads, 4, "a, b, c, gone");
    cr_expect_eq(res.own_decided, 0);
    struct hub_state after = state_of(IDS, N_IDS);
    expect_same_state(&before, &after);
    cr_expect_eq(handover_hub_of(hub.j), SAT_A);
}

Test(handover, a_dismissed_conflict_stays_out_of_the_rebuilt_feed)
{
    decide_history();
    struct hub_state before = state_of(IDS, N_IDS);
    cr_assert_eq(before.n_feed, 2);
    /* A dismissal as the hub's dismiss job logs it: outcome dismissed,
     * conflict_id naming the filed entry. */
    struct clog_entry d = clog_at(before.feed[0]);
    d.outcome = LWW_DISMISSED;
    d.conflict_id = before.feed[0];
    d.crts = before.last_crts + 1;
    char *text = clog_entry_text(&d);
    cr_assert_not_null(text);
    struct err err = { "" };
    bool found = false;
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(hub.j->env, NULL, 0, &txn), 0);
    cr_assert_eq(journal_put_clog(txn, hub.j, d.crts, text, strlen(text), &err), 0, "%s", err.msg);
    cr_assert_eq(feed_del(txn, hub.j, before.feed[0], &found, &err), 0);
    cr_assert_eq(journal_put_meta(txn, hub.j, "last_crts", d.crts, &err), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    free(text);
    clog_entry_clear(&d);
    before = state_of(IDS, N_IDS);
    cr_assert_eq(before.n_feed, 1);

    (void)take(SAT_B, NULL);
    struct hub_state after = state_of(IDS, N_IDS);
    expect_same_state(&before, &after);
}

static void journal_write(const struct repl_write *w)
{
    struct err err = { "" };
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(hub.j->env, NULL, 0, &txn), 0);
    cr_assert_eq(journal_put_write(txn, hub.j, w, &err), 0, "%s", err.msg);
    cr_assert_eq(mdb_txn_commit(txn), 0);
}

Test(handover, own_writes_no_hub_decided_are_decided_once_at_the_takeover)
{
    decide_history();
    /* SAT_B, the new hub, holds in its journal: LSN 3 and 4 (decided by the
     * old hub: their entries are in the log), 5 and 7 committed but never
     * decided, 6 still in flight (intent). */
    struct repl_write ws[] = {
        del(SAT_B, 3, HLC(22), V(SAT_A, 4), "gone"),
        put(SAT_B, 4, HLC(23), V(0, 0), "c", "{\"v\":1}"),
        put(SAT_B, 5, HLC(50), V(0, 0), "d", "{\"v\":1}"),
        put(SAT_B, 6, HLC(51), V(0, 0), "e", "{\"v\":1}"),
        put(SAT_B, 7, HLC(52), V(SAT_B, 5), "d", "{\"v\":2}"),
    };
    ws[3].state = WRITE_INTENT;
    for (size_t i = 0; i < 5; i++)
        journal_write(&ws[i]);
    size_t logged = log_all().n;
    uint64_t last = last_crts_meta();

    struct confirm_batch b;
    struct handover_result res = take(SAT_B, &b);
    cr_expect_eq(res.own_decided, 2, "LSN 5 and 7");
    cr_expect_eq(b.n_decided, 2);
    cr_expect_eq(log_all().n, logged + 2);
    cr_expect_gt(b.first_crts, last, "the log continues after its last entry");
    struct clog_entry e5 = clog_at(b.first_crts), e7 = clog_at(b.last_crts);
    cr_expect_eq(e5.w.lsn, 5);
    cr_expect_eq(e7.w.lsn, 7);
    cr_expect_eq(e7.outcome, LWW_CONFIRMED, "7 was written on 5: no conflict");
    clog_entry_clear(&e5);
    clog_entry_clear(&e7);
    expect_version(chead("d").w.version, V(SAT_B, 7), "d");
    cr_expect_not(chead("e").exists, "an intent is decided when it commits, not before");
    cr_expect_eq(decided_mark(SAT_B), 7);
    for (size_t i = 0; i < 5; i++)
        repl_write_clear(&ws[i]);

    /* A satellite re-ships what the old hub had decided: a no-op. */
    struct confirm_batch again = DECIDE(SAT_A, HLC(1),
        put(SAT_A, 5, HLC(40), V(0, 0), "c", "{\"v\":2}"),
        put(SAT_A, 6, HLC(41), V(0, 0), "b", "{\"v\":8}"),
        put(SAT_A, 7, HLC(60), V(SAT_A, 3), "a", "{\"v\":1}"));
    cr_expect_eq(again.n_decided, 1, "only LSN 7 is new");
    cr_expect_eq(again.first_crts, b.last_crts + 1, "crts strictly increasing, floor or not");
    cr_expect_eq(count_of(&again, LWW_REPLACE, LWW_SUPERSEDED), 1,
                 "a's head is still the old hub's winner (2:2, /v 9)");
    expect_version(chead("a").w.version, V(SAT_B, 2), "a");
}

Test(handover, a_second_takeover_of_the_same_log_changes_nothing)
{
    decide_history();
    (void)take(SAT_A, NULL);
    struct hub_state once = state_of(IDS, N_IDS);
    size_t logged = log_all().n;
    struct handover_result res = take(SAT_A, NULL);
    cr_expect_eq(res.own_decided, 0);
    cr_expect_eq(log_all().n, logged);
    struct hub_state twice = state_of(IDS, N_IDS);
    expect_same_state(&once, &twice);
}

Test(handover, the_fence_clears_the_hub_mark)
{
    (void)take(SAT_A, NULL);
    cr_expect_eq(handover_hub_of(hub.j), SAT_A);
    struct err err = { "" };
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(hub.j->env, NULL, 0, &txn), 0);
    cr_assert_eq(handover_mark(txn, hub.j, 0, &err), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    cr_expect_eq(handover_hub_of(hub.j), 0);
}

Test(handover, a_snapshot_lists_each_heads_entry_and_the_feed)
{
    decide_history();
    struct hub_state st = state_of(IDS, N_IDS);
    uint64_t *crts = NULL, upto = 0;
    size_t n = 0;
    cr_assert_eq(handover_snapshot(hub.j, &crts, &n, &upto), 0);
    cr_expect_eq(upto, st.last_crts);
    /* heads of a, b, c, gone and the two filed conflicts: six entries */
    uint64_t want[KEYS_MAX];
    size_t nw = 0;
    for (size_t i = 0; i < st.n; i++)
        if (st.heads[i].exists)
            want[nw++] = st.heads[i].crts;
    for (size_t i = 0; i < st.n_feed; i++)
        want[nw++] = st.feed[i];
    cr_assert_eq(n, nw, "%zu entries, want %zu", n, nw);
    for (size_t i = 1; i < n; i++)
        cr_expect_lt(crts[i - 1], crts[i], "ascending and distinct");
    for (size_t k = 0; k < nw; k++) {
        bool found = false;
        for (size_t i = 0; i < n; i++)
            found = found || crts[i] == want[k];
        cr_expect(found, "crts %llu is in the snapshot", (unsigned long long)want[k]);
    }
    /* Applying just these entries gives every key its head: each one is the
     * entry that made the head. */
    for (size_t i = 0; i < st.n; i++) {
        if (!st.heads[i].exists)
            continue;
        struct clog_entry e = clog_at(st.heads[i].crts);
        expect_version(e.head, st.heads[i].w.version, st.ids[i]);
        cr_expect_eq(e.head_delete, st.heads[i].w.is_delete, "%s: delete", st.ids[i]);
        clog_entry_clear(&e);
    }
    free(crts);
}
