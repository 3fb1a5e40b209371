/* Unit tests of custom resolution at the hub (mode: custom): conflicts
 * filed to the feed, resolved by the seeds' procedures, bounded, with the
 * feed's versions as conflicting items. */
#include <stdio.h>
#include <string.h>

#include "confirm_fixture.h"

TestSuite(confirm_custom, .init = confirm_setup, .fini = confirm_teardown, .timeout = 60);

/* --- custom resolution (mode: custom) ------------------------------------------ */

#define RESOLVERS MERIDIAN_SOURCE_DIR "/tests/unit/fixtures/resolvers/"

static void use_custom(const char *procedure, uint32_t timeout_ms)
{
    custom = (struct confirm_policy){ .custom = true, .procedure = procedure,
                                      .metadata_field = "_meridian",
                                      .limits = { timeout_ms, 32u << 20 } };
}

static size_t feed_ids(const char *id, uint64_t *ids, size_t max)
{
    char key[512];
    size_t klen = journal_key(CONTAINER, id, key, sizeof key);
    MDB_txn *txn = read_txn();
    size_t n = feed_ids_of_key(txn, hub.j, key, klen, ids, max);
    mdb_txn_abort(txn);
    return n;
}

/* Without a procedure every conflict waits in the feed and the head stays;
 * a write that saw the head is still confirmed. */
Test(confirm_custom, custom_without_procedure_files_conflicts_and_keeps_the_head)
{
    use_custom(NULL, 1000);
    struct confirm_batch b1 = DECIDE(SAT_A, HLC(10), put(SAT_A, 1, HLC(1), VERSION_NONE, "p", "{\"v\":1}"));
    cr_assert_eq(b1.n_decided, 1);
    struct confirm_batch b2 = DECIDE(SAT_B, HLC(20), put(SAT_B, 1, HLC(2), VERSION_NONE, "p", "{\"v\":2}"));
    cr_expect_eq(count_of(&b2, LWW_INSERT, LWW_FILED), 1);
    cr_expect_eq(b2.procedure_runs, 0);
    expect_version(chead("p").w.version, V(SAT_A, 1), "head stays");
    struct clog_entry e = clog_at(b2.last_crts);
    cr_expect_eq(e.outcome, LWW_FILED);
    cr_expect_null(e.error);
    expect_version(e.head, V(SAT_A, 1), "filed entry's head");
    expect_doc(e.head_doc, "{\"v\":1}", "filed entry's head doc");
    expect_doc(e.w.doc, "{\"v\":2}", "the conflicting version");
    clog_entry_clear(&e);
    uint64_t ids[4];
    cr_assert_eq(feed_ids("p", ids, 4), 1);
    cr_expect_eq(ids[0], b2.last_crts, "the conflict's id is the crts that filed it");
    /* A write on the head is no conflict. */
    struct confirm_batch b3 = DECIDE(SAT_B, HLC(30), put(SAT_B, 2, HLC(3), V(SAT_A, 1), "p", "{\"v\":3}"));
    cr_expect_eq(count_of(&b3, LWW_NO_CONFLICT, LWW_CONFIRMED), 1);
    expect_version(chead("p").w.version, V(SAT_B, 2), "confirmed on the head");
}

/* The seeds' payments incident: an authorization (1) and a capture (2) of one
 * payment in two regions; the ledger resolver keeps the capture whichever
 * arrives first, as a new version 0:crts the hub made. */
Test(confirm_custom, ledger_procedure_resolves_to_the_higher_status)
{
    use_custom(MERIDIAN_SOURCE_DIR "/deploy/local/resolvers/ledger.js", 5000);
    DECIDE(SAT_A, HLC(10), put(SAT_A, 1, HLC(1), VERSION_NONE, "pay", "{\"id\":\"pay\",\"status\":2}"));
    struct confirm_batch b = DECIDE(SAT_B, HLC(20), put(SAT_B, 1, HLC(1), VERSION_NONE, "pay", "{\"id\":\"pay\",\"status\":1}"));
    cr_expect_eq(b.procedure_runs, 1);
    cr_expect_eq(b.procedure_failures, 0);
    cr_expect_eq(count_of(&b, LWW_INSERT, LWW_RESOLVED), 1);
    struct clog_entry e = clog_at(b.last_crts);
    cr_expect_eq(e.outcome, LWW_RESOLVED);
    expect_version(e.head, V(0, b.last_crts), "resolved version");
    json_t *doc = json_loads(e.head_doc, 0, NULL);
    cr_assert_not_null(doc, "resolved doc: %s", e.head_doc);
    cr_expect_eq(json_integer_value(json_object_get(doc, "status")), 2);
    json_t *meta = json_object_get(doc, "_meridian");
    cr_expect_eq(json_integer_value(json_object_get(meta, "regionId")), 0);
    cr_expect_eq((uint64_t)json_integer_value(json_object_get(meta, "lsn")), b.last_crts);
    cr_expect_str_eq(json_string_value(json_object_get(meta, "resolves")), "3:1");
    cr_expect_str_eq(json_string_value(json_object_get(meta, "base")), "2:1");
    json_decref(doc);
    clog_entry_clear(&e);
    struct chead_rec h = chead("pay");
    expect_version(h.w.version, V(0, b.last_crts), "the resolution is the head");
    expect_version(h.w.base, V(SAT_A, 1), "on the head it replaced");
    uint64_t ids[4];
    cr_expect_eq(feed_ids("pay", ids, 4), 0, "a resolved conflict is not in the feed");
    /* A refund written on the resolved head is confirmed without conflict. */
    struct confirm_batch b2 = DECIDE(SAT_A, HLC(30), put(SAT_A, 2, HLC(3), V(0, b.last_crts), "pay", "{\"id\":\"pay\",\"status\":3}"));
    cr_expect_eq(count_of(&b2, LWW_NO_CONFLICT, LWW_CONFIRMED), 1);
}

/* A procedure that never returns is killed at its bound; the conflict goes
 * to the feed with the reason, and a replay of the batch runs nothing. */
Test(confirm_custom, a_looping_procedure_files_the_conflict_with_the_reason)
{
    use_custom(RESOLVERS "loop.js", 200);
    DECIDE(SAT_A, HLC(10), put(SAT_A, 1, HLC(1), VERSION_NONE, "x", "{\"v\":1}"));
    struct repl_write w = put(SAT_B, 1, HLC(2), VERSION_NONE, "x", "{\"v\":2}");
    struct repl_write again;
    cr_assert_eq(repl_write_copy(&again, &w), 0);
    struct confirm_batch b = DECIDE(SAT_B, HLC(20), w);
    cr_expect_eq(b.procedure_runs, 1);
    cr_expect_eq(b.procedure_failures, 1);
    struct clog_entry e = clog_at(b.last_crts);
    cr_expect_eq(e.outcome, LWW_FILED);
    cr_assert_not_null(e.error);
    cr_expect(strstr(e.error, "timed out") != NULL, "error: %s", e.error);
    clog_entry_clear(&e);
    expect_version(chead("x").w.version, V(SAT_A, 1), "head stays");
    struct confirm_batch replay = DECIDE(SAT_B, HLC(30), again);
    cr_expect_eq(replay.n_decided, 0);
    cr_expect_eq(replay.procedure_runs, 0, "a replayed conflict is never resolved twice");
}

/* Versions already in the feed reach the procedure as conflictingItems. */
Test(confirm_custom, feed_versions_are_passed_as_conflicting_items)
{
    use_custom(NULL, 1000);
    DECIDE(SAT_A, HLC(10), put(SAT_A, 1, HLC(1), VERSION_NONE, "y", "{\"status\":1}"));
    DECIDE(SAT_B, HLC(20), put(SAT_B, 1, HLC(2), VERSION_NONE, "y", "{\"status\":3}"));
    use_custom(MERIDIAN_SOURCE_DIR "/deploy/local/resolvers/ledger.js", 5000);
    struct confirm_batch b = DECIDE(SAT_B, HLC(30), put(SAT_B, 2, HLC(3), VERSION_NONE, "y", "{\"status\":2}"));
    cr_expect_eq(count_of(&b, LWW_INSERT, LWW_RESOLVED), 1);
    struct clog_entry e = clog_at(b.last_crts);
    json_t *doc = json_loads(e.head_doc, 0, NULL);
    cr_expect_eq(json_integer_value(json_object_get(doc, "status")), 3,
                 "the refund waiting in the feed wins: %s", e.head_doc);
    json_decref(doc);
    clog_entry_clear(&e);
}
