/* Unit tests of replication/confirm: the hub's decisions against a real
 * journal (LMDB in a fresh temporary directory). Each test submits batches
 * as a satellite's ship would deliver them and asserts on what every region
 * later sees: the confirmed head of each key, the confirmed-log entries with
 * their outcome, winner and crts, and the per-origin "decided up to" marks
 * that make a replayed batch a no-op. Custom resolution is in
 * test_confirm_custom.c; the fixture in confirm_fixture.c. */
#include <stdio.h>
#include <string.h>

#include "confirm_fixture.h"

TestSuite(confirm, .init = confirm_setup, .fini = confirm_teardown, .timeout = 60);

/* --- no conflict -------------------------------------------------------------- */

Test(confirm, first_write_is_confirmed_and_becomes_the_head)
{
    struct confirm_batch b = DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":1,\"n\":\"first\"}"));

    cr_expect_eq(b.n_decided, 1);
    cr_expect_eq(b.decided_upto, 1);
    cr_expect_eq(count_of(&b, LWW_NO_CONFLICT, LWW_CONFIRMED), 1);
    cr_assert_gt(b.first_crts, 0);
    cr_expect_eq(b.first_crts, b.last_crts);

    struct chead_rec h = chead("k1");
    cr_assert(h.exists);
    expect_version(h.w.version, V(SAT_A, 1), "head");
    cr_expect_eq(h.w.hlc, HLC(10));
    cr_expect_not(h.w.is_delete);
    cr_expect(h.w.has_value);
    cr_expect_eq(h.w.value, 1);
    cr_expect_eq(h.crts, b.last_crts);

    struct clog_entry e = clog_at(b.last_crts);
    cr_expect_eq(e.crts, b.last_crts);
    cr_expect_eq(e.outcome, LWW_CONFIRMED);
    cr_expect_eq(e.conflict, LWW_NO_CONFLICT);
    expect_version(repl_write_version(&e.w), V(SAT_A, 1), "logged write");
    cr_expect_str_eq(e.w.container, CONTAINER);
    cr_expect_str_eq(e.w.id, "k1");
    expect_version(e.head, V(SAT_A, 1), "logged head");
    expect_doc(e.head_doc, "{\"v\":1,\"n\":\"first\"}", "logged head doc");
    clog_entry_clear(&e);

    cr_expect_eq(decided_mark(SAT_A), 1);
    cr_expect_eq(last_crts_meta(), b.last_crts);
    cr_expect_eq(log_all().n, 1);
}

Test(confirm, write_whose_base_is_the_head_is_confirmed)
{
    struct confirm_batch b1 = DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":5}"));
    /* another region saw 2:1 and updates it, with a lower value and an older
     * clock: no conflict, so neither matters */
    struct confirm_batch b2 = DECIDE(SAT_B, 0, put(SAT_B, 1, HLC(5), V(SAT_A, 1), "k1", "{\"v\":1}"));

    cr_expect_eq(b2.n_decided, 1);
    cr_expect_eq(count_of(&b2, LWW_NO_CONFLICT, LWW_CONFIRMED), 1);
    cr_expect_gt(b2.first_crts, b1.last_crts);
    struct chead_rec h = chead("k1");
    expect_version(h.w.version, V(SAT_B, 1), "head");
    cr_expect_eq(h.crts, b2.last_crts);
    expect_version(h.w.base, V(SAT_A, 1), "head's base");

    struct clog_entry e = clog_at(b2.last_crts);
    cr_expect_eq(e.outcome, LWW_CONFIRMED);
    cr_expect_eq(e.conflict, LWW_NO_CONFLICT);
    expect_version(e.w.base, V(SAT_A, 1), "logged base");
    clog_entry_clear(&e);
}

Test(confirm, one_origin_writing_a_key_twice_in_a_batch_sees_its_own_head)
{
    struct confirm_batch b = DECIDE(SAT_A, 0,
        put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":1}"),
        put(SAT_A, 2, HLC(11), V(SAT_A, 1), "k1", "{\"v\":2}"),
        del(SAT_A, 3, HLC(12), V(SAT_A, 2), "k1"));

    cr_expect_eq(b.n_decided, 3);
    cr_expect_eq(count_of(&b, LWW_NO_CONFLICT, LWW_CONFIRMED), 3);
    cr_expect_eq(b.last_crts, b.first_crts + 2);
    struct chead_rec h = chead("k1");
    expect_version(h.w.version, V(SAT_A, 3), "head");
    cr_expect(h.w.is_delete);

    struct clog_entry e = clog_at(b.last_crts);
    cr_expect(e.w.is_delete);
    cr_expect(e.head_delete);
    cr_expect_null(e.head_doc);
    clog_entry_clear(&e);
}

Test(confirm, recreate_over_a_seen_tombstone_is_no_conflict)
{
    (void)DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":1}"),
                 del(SAT_A, 2, HLC(11), V(SAT_A, 1), "k1"));
    struct confirm_batch b = DECIDE(SAT_B, 0, put(SAT_B, 1, HLC(1), V(SAT_A, 2), "k1", "{\"v\":0}"));

    cr_expect_eq(count_of(&b, LWW_NO_CONFLICT, LWW_CONFIRMED), 1);
    struct chead_rec h = chead("k1");
    expect_version(h.w.version, V(SAT_B, 1), "head");
    cr_expect_not(h.w.is_delete);
}

Test(confirm, same_id_in_two_containers_are_two_keys)
{
    (void)DECIDE(SAT_A, 0, put_in("orders", SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":1}"));
    struct confirm_batch b = DECIDE(SAT_B, 0, put_in("carts", SAT_B, 1, HLC(5), V(0, 0), "k1", "{\"v\":0}"));

    cr_expect_eq(count_of(&b, LWW_NO_CONFLICT, LWW_CONFIRMED), 1);
    expect_version(chead_in("orders", "k1").w.version, V(SAT_A, 1), "orders head");
    expect_version(chead_in("carts", "k1").w.version, V(SAT_B, 1), "carts head");
}

/* --- insert conflicts --------------------------------------------------------- */

Test(confirm, second_insert_with_lower_value_is_superseded_by_the_head)
{
    /* the head has the higher path value but the older clock: value decides */
    struct confirm_batch b1 = DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":9,\"by\":\"A\"}"));
    struct confirm_batch b2 = DECIDE(SAT_B, 0, put(SAT_B, 1, HLC(20), V(0, 0), "k1", "{\"v\":1,\"by\":\"B\"}"));

    cr_expect_eq(b2.n_decided, 1);
    cr_expect_eq(b2.decided_upto, 1);
    cr_expect_eq(count_of(&b2, LWW_INSERT, LWW_SUPERSEDED), 1);
    cr_expect_eq(count_of(&b2, LWW_INSERT, LWW_CONFIRMED), 0);
    cr_expect_eq(count_of(&b2, LWW_NO_CONFLICT, LWW_CONFIRMED), 0);

    struct chead_rec h = chead("k1");
    expect_version(h.w.version, V(SAT_A, 1), "head stays");
    cr_expect_eq(h.crts, b1.last_crts);

    struct clog_entry e = clog_at(b2.last_crts);
    cr_expect_eq(e.outcome, LWW_SUPERSEDED);
    cr_expect_eq(e.conflict, LWW_INSERT);
    expect_version(repl_write_version(&e.w), V(SAT_B, 1), "the loser");
    expect_doc(e.w.doc, "{\"v\":1,\"by\":\"B\"}", "the loser's doc");
    expect_version(e.head, V(SAT_A, 1), "the winner");
    cr_expect_eq(e.head_hlc, HLC(10));
    cr_expect_not(e.head_delete);
    expect_doc(e.head_doc, "{\"v\":9,\"by\":\"A\"}", "the winner's doc");
    clog_entry_clear(&e);
    cr_expect_eq(log_all().n, 2);
}

Test(confirm, second_insert_with_higher_value_replaces_the_head)
{
    /* the incoming write has the higher value but the older clock */
    (void)DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(20), V(0, 0), "k1", "{\"v\":1}"));
    struct confirm_batch b = DECIDE(SAT_B, 0, put(SAT_B, 1, HLC(10), V(0, 0), "k1", "{\"v\":50}"));

    cr_expect_eq(count_of(&b, LWW_INSERT, LWW_CONFIRMED), 1);
    cr_expect_eq(count_of(&b, LWW_INSERT, LWW_SUPERSEDED), 0);
    struct chead_rec h = chead("k1");
    expect_version(h.w.version, V(SAT_B, 1), "head");
    cr_expect_eq(h.w.value, 50);
    cr_expect_eq(h.crts, b.last_crts);

    struct clog_entry e = clog_at(b.last_crts);
    cr_expect_eq(e.outcome, LWW_CONFIRMED);
    cr_expect_eq(e.conflict, LWW_INSERT);
    expect_version(e.head, V(SAT_B, 1), "head after the decision");
    expect_doc(e.head_doc, "{\"v\":50}", "head doc");
    clog_entry_clear(&e);
}

Test(confirm, insert_conflict_without_values_falls_to_the_clock)
{
    (void)DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(20), V(0, 0), "k1", "{\"n\":\"A\"}"));
    struct confirm_batch older = DECIDE(SAT_B, 0, put(SAT_B, 1, HLC(10), V(0, 0), "k1", "{\"n\":\"B\"}"));
    (void)DECIDE(SAT_B, 0, put(SAT_B, 2, HLC(30), V(0, 0), "k2", "{\"n\":\"B\"}"));

    cr_expect_eq(count_of(&older, LWW_INSERT, LWW_SUPERSEDED), 1);
    expect_version(chead("k1").w.version, V(SAT_A, 1), "older loses");

    (void)DECIDE(SAT_A, 0, put(SAT_A, 2, HLC(25), V(0, 0), "k2", "{\"n\":\"A\"}"));
    /* k2: B (hlc 30) was the head, A arrives with hlc 25: A loses */
    expect_version(chead("k2").w.version, V(SAT_B, 2), "newer stays");
    struct confirm_batch b = DECIDE(SAT_A, 0, put(SAT_A, 3, HLC(40), V(0, 0), "k2", "{\"n\":\"A2\"}"));
    cr_expect_eq(count_of(&b, LWW_INSERT, LWW_CONFIRMED), 1);
    expect_version(chead("k2").w.version, V(SAT_A, 3), "the newest wins");
}

/* --- replace conflicts -------------------------------------------------------- */

Test(confirm, replace_conflict_is_decided_by_value_and_logs_the_current_winner)
{
    (void)DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":1}"),
                 put(SAT_A, 2, HLC(11), V(SAT_A, 1), "k1", "{\"v\":7,\"rev\":2}"));
    /* B updated 2:1 without seeing 2:2 */
    struct confirm_batch lost = DECIDE(SAT_B, 0, put(SAT_B, 1, HLC(50), V(SAT_A, 1), "k1", "{\"v\":3}"));

    cr_expect_eq(count_of(&lost, LWW_REPLACE, LWW_SUPERSEDED), 1);
    struct clog_entry e = clog_at(lost.last_crts);
    cr_expect_eq(e.outcome, LWW_SUPERSEDED);
    cr_expect_eq(e.conflict, LWW_REPLACE);
    expect_version(e.head, V(SAT_A, 2), "winner is the current head, not the common base");
    cr_expect_eq(e.head_hlc, HLC(11));
    expect_doc(e.head_doc, "{\"v\":7,\"rev\":2}", "winner's doc");
    clog_entry_clear(&e);

    struct confirm_batch won = DECIDE(SAT_B, 0, put(SAT_B, 2, HLC(51), V(SAT_A, 1), "k1", "{\"v\":8}"));
    cr_expect_eq(count_of(&won, LWW_REPLACE, LWW_CONFIRMED), 1);
    struct chead_rec h = chead("k1");
    expect_version(h.w.version, V(SAT_B, 2), "head");
    e = clog_at(won.last_crts);
    cr_expect_eq(e.outcome, LWW_CONFIRMED);
    cr_expect_eq(e.conflict, LWW_REPLACE);
    clog_entry_clear(&e);
}

Test(confirm, base_never_made_head_is_a_conflict_confirmed_for_lack_of_a_head)
{
    /* the origin saw 3:9, which the hub never confirmed for this key */
    struct confirm_batch b = DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(10), V(SAT_B, 9), "k1", "{\"v\":1}"));

    cr_expect_eq(count_of(&b, LWW_REPLACE, LWW_CONFIRMED), 1);
    expect_version(chead("k1").w.version, V(SAT_A, 1), "head");
}

/* --- delete conflicts --------------------------------------------------------- */

Test(confirm, delete_arriving_second_wins_over_a_replace)
{
    (void)DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":1}"),
                 put(SAT_A, 2, HLC(30), V(SAT_A, 1), "k1", "{\"v\":100}"));
    /* older clock, no value: a delete still wins */
    struct confirm_batch b = DECIDE(SAT_B, 0, del(SAT_B, 1, HLC(20), V(SAT_A, 1), "k1"));

    cr_expect_eq(count_of(&b, LWW_DELETE, LWW_CONFIRMED), 1);
    struct chead_rec h = chead("k1");
    expect_version(h.w.version, V(SAT_B, 1), "head");
    cr_expect(h.w.is_delete);
    struct clog_entry e = clog_at(b.last_crts);
    cr_expect_eq(e.outcome, LWW_CONFIRMED);
    cr_expect_eq(e.conflict, LWW_DELETE);
    cr_expect(e.head_delete);
    cr_expect_null(e.head_doc);
    clog_entry_clear(&e);
}

Test(confirm, delete_arriving_first_wins_and_the_loser_gets_a_tombstone_head)
{
    (void)DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":1}"));
    struct confirm_batch d = DECIDE(SAT_B, 0, del(SAT_B, 1, HLC(20), V(SAT_A, 1), "k1"));
    cr_expect_eq(count_of(&d, LWW_NO_CONFLICT, LWW_CONFIRMED), 1);
    /* newer clock and a higher value: the delete still wins */
    struct confirm_batch b = DECIDE(SAT_A, 0, put(SAT_A, 2, HLC(30), V(SAT_A, 1), "k1", "{\"v\":100}"));

    cr_expect_eq(count_of(&b, LWW_DELETE, LWW_SUPERSEDED), 1);
    struct chead_rec h = chead("k1");
    expect_version(h.w.version, V(SAT_B, 1), "head stays the tombstone");
    cr_expect(h.w.is_delete);
    cr_expect_eq(h.crts, d.last_crts);

    struct clog_entry e = clog_at(b.last_crts);
    cr_expect_eq(e.outcome, LWW_SUPERSEDED);
    cr_expect_eq(e.conflict, LWW_DELETE);
    expect_version(repl_write_version(&e.w), V(SAT_A, 2), "the loser");
    expect_version(e.head, V(SAT_B, 1), "the winning delete");
    cr_expect_eq(e.head_hlc, HLC(20));
    cr_expect(e.head_delete);
    cr_expect_null(e.head_doc);
    clog_entry_clear(&e);
}

Test(confirm, insert_over_an_unseen_tombstone_is_superseded)
{
    (void)DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":1}"),
                 del(SAT_A, 2, HLC(11), V(SAT_A, 1), "k1"));
    struct confirm_batch b = DECIDE(SAT_B, 0, put(SAT_B, 1, HLC(90), V(0, 0), "k1", "{\"v\":99}"));

    cr_expect_eq(count_of(&b, LWW_DELETE, LWW_SUPERSEDED), 1);
    struct clog_entry e = clog_at(b.last_crts);
    expect_version(e.head, V(SAT_A, 2), "tombstone");
    cr_expect(e.head_delete);
    cr_expect_null(e.head_doc);
    clog_entry_clear(&e);
}

/* --- crts ------------------------------------------------------------------------- */

Test(confirm, crts_increase_strictly_across_batches_and_respect_the_floor)
{
    struct confirm_batch b1 = DECIDE(SAT_A, 0,
        put(SAT_A, 1, HLC(1), V(0, 0), "k1", "{}"),
        put(SAT_A, 2, HLC(2), V(0, 0), "k2", "{}"),
        put(SAT_A, 3, HLC(3), V(0, 0), "k3", "{}"));
    cr_expect_gt(b1.first_crts, 0);
    cr_expect_eq(b1.last_crts, b1.first_crts + 2);

    uint64_t fl = HLC(1000);
    struct confirm_batch b2 = DECIDE(SAT_B, fl,
        put(SAT_B, 1, HLC(4), V(0, 0), "k4", "{}"),
        put(SAT_B, 2, HLC(5), V(0, 0), "k5", "{}"));
    cr_expect_eq(b2.first_crts, fl, "first crts %llu, floor %llu",
                 (unsigned long long)b2.first_crts, (unsigned long long)fl);
    cr_expect_eq(b2.last_crts, fl + 1);

    /* a floor behind the log (a slower clock) never moves crts back */
    struct confirm_batch b3 = DECIDE(SAT_A, HLC(500), put(SAT_A, 4, HLC(6), V(0, 0), "k6", "{}"));
    cr_expect_eq(b3.first_crts, b2.last_crts + 1);
    cr_expect_eq(last_crts_meta(), b3.last_crts);

    struct log_list l = log_all();
    cr_assert_eq(l.n, 6);
    const uint64_t want[] = { b1.first_crts, b1.first_crts + 1, b1.first_crts + 2,
                              fl, fl + 1, fl + 2 };
    for (size_t i = 0; i < 6; i++)
        cr_expect_eq(l.crts[i], want[i], "entry %zu: crts %llu, want %llu", i,
                     (unsigned long long)l.crts[i], (unsigned long long)want[i]);
    /* each key's head points at its own log entry */
    cr_expect_eq(chead("k5").crts, fl + 1);
    cr_expect_eq(chead("k6").crts, fl + 2);
}

/* --- replays and decided marks --------------------------------------------------- */

Test(confirm, replaying_a_batch_decides_nothing)
{
    struct confirm_batch first = DECIDE(SAT_A, 0,
        put(SAT_A, 1, HLC(1), V(0, 0), "k1", "{\"v\":1}"),
        put(SAT_A, 2, HLC(2), V(SAT_A, 1), "k1", "{\"v\":2}"),
        put(SAT_A, 3, HLC(3), V(0, 0), "k2", "{\"v\":3}"));
    cr_assert_eq(first.n_decided, 3);
    size_t logged = log_all().n;
    struct chead_rec k1 = chead("k1");

    struct confirm_batch again = DECIDE(SAT_A, HLC(9000),
        put(SAT_A, 1, HLC(1), V(0, 0), "k1", "{\"v\":1}"),
        put(SAT_A, 2, HLC(2), V(SAT_A, 1), "k1", "{\"v\":2}"),
        put(SAT_A, 3, HLC(3), V(0, 0), "k2", "{\"v\":3}"));

    cr_expect_eq(again.n_decided, 0);
    cr_expect_eq(again.decided_upto, 3);
    cr_expect_eq(again.first_crts, 0);
    for (int k = 0; k <= LWW_DELETE; k++)
        for (int o = 0; o < 2; o++)
            cr_expect_eq(again.conflicts[k][o], 0, "conflicts[%d][%d]", k, o);
    cr_expect_eq(log_all().n, logged, "a replay added log entries");
    cr_expect_eq(decided_mark(SAT_A), 3);
    cr_expect_eq(last_crts_meta(), first.last_crts);
    struct chead_rec h = chead("k1");
    expect_version(h.w.version, k1.w.version, "k1 head");
    cr_expect_eq(h.crts, k1.crts);
}

Test(confirm, a_partly_decided_batch_decides_only_the_new_writes)
{
    struct confirm_batch first = DECIDE(SAT_A, 0,
        put(SAT_A, 1, HLC(1), V(0, 0), "k1", "{\"v\":1}"),
        put(SAT_A, 2, HLC(2), V(0, 0), "k2", "{\"v\":2}"));

    /* the ack was lost: the shipper resends from LSN 1 with two more */
    struct confirm_batch b = DECIDE(SAT_A, 0,
        put(SAT_A, 1, HLC(1), V(0, 0), "k1", "{\"v\":1}"),
        put(SAT_A, 2, HLC(2), V(0, 0), "k2", "{\"v\":2}"),
        put(SAT_A, 3, HLC(3), V(SAT_A, 1), "k1", "{\"v\":3}"),
        put(SAT_A, 4, HLC(4), V(0, 0), "k3", "{\"v\":4}"));

    cr_expect_eq(b.n_decided, 2);
    cr_expect_eq(b.decided_upto, 4);
    cr_expect_eq(b.first_crts, first.last_crts + 1);
    cr_expect_eq(b.last_crts, first.last_crts + 2);
    cr_expect_eq(count_of(&b, LWW_NO_CONFLICT, LWW_CONFIRMED), 2);
    cr_expect_eq(decided_mark(SAT_A), 4);

    struct log_list l = log_all();
    cr_assert_eq(l.n, 4);
    struct clog_entry e3 = clog_at(b.first_crts), e4 = clog_at(b.last_crts);
    cr_expect_eq(e3.w.lsn, 3);
    cr_expect_eq(e4.w.lsn, 4);
    clog_entry_clear(&e3);
    clog_entry_clear(&e4);
    /* k1 was decided once for LSN 1, then moved on by LSN 3, never re-decided */
    expect_version(chead("k1").w.version, V(SAT_A, 3), "k1 head");
}

Test(confirm, decided_marks_are_per_origin)
{
    (void)DECIDE(SAT_A, 0,
        put(SAT_A, 1, HLC(1), V(0, 0), "a1", "{}"),
        put(SAT_A, 2, HLC(2), V(0, 0), "a2", "{}"),
        put(SAT_A, 3, HLC(3), V(0, 0), "a3", "{}"));

    /* B's LSNs 1 and 2 are below A's mark, yet B has decided nothing yet */
    struct confirm_batch b = DECIDE(SAT_B, 0,
        put(SAT_B, 1, HLC(4), V(0, 0), "b1", "{}"),
        put(SAT_B, 2, HLC(5), V(0, 0), "b2", "{}"));

    cr_expect_eq(b.n_decided, 2);
    cr_expect_eq(b.decided_upto, 2);
    cr_expect_eq(decided_mark(SAT_A), 3);
    cr_expect_eq(decided_mark(SAT_B), 2);
    cr_expect_eq(decided_mark(HUB), 0);
    cr_expect(chead("b1").exists);
    cr_expect(chead("b2").exists);

    struct confirm_batch again = DECIDE(SAT_B, 0, put(SAT_B, 2, HLC(5), V(0, 0), "b2", "{}"));
    cr_expect_eq(again.n_decided, 0);
    cr_expect_eq(again.decided_upto, 2);
    cr_expect_eq(log_all().n, 5);
}

Test(confirm, an_empty_batch_changes_nothing)
{
    (void)DECIDE(SAT_A, 0, put(SAT_A, 1, HLC(1), V(0, 0), "k1", "{}"));
    uint64_t last = last_crts_meta();
    struct confirm_batch b = decide(SAT_A, HLC(100), NULL, 0);

    cr_expect_eq(b.n_decided, 0);
    cr_expect_eq(b.decided_upto, 1);
    cr_expect_eq(last_crts_meta(), last);
    cr_expect_eq(log_all().n, 1);
}

/* --- counters ----------------------------------------------------------------------- */

Test(confirm, conflict_counters_match_the_decisions_of_the_batch)
{
    (void)DECIDE(SAT_A, 0,
        put(SAT_A, 1, HLC(10), V(0, 0), "lose", "{\"v\":9}"),
        put(SAT_A, 2, HLC(10), V(0, 0), "win", "{\"v\":1}"),
        put(SAT_A, 3, HLC(10), V(0, 0), "gone", "{\"v\":1}"),
        put(SAT_A, 4, HLC(10), V(0, 0), "swap", "{\"v\":1}"),
        put(SAT_A, 5, HLC(11), V(SAT_A, 4), "swap", "{\"v\":5}"));

    struct confirm_batch b = DECIDE(SAT_B, 0,
        put(SAT_B, 1, HLC(20), V(0, 0), "fresh", "{\"v\":1}"),       /* none, confirmed */
        put(SAT_B, 2, HLC(20), V(0, 0), "lose", "{\"v\":2}"),        /* insert, superseded */
        put(SAT_B, 3, HLC(20), V(0, 0), "win", "{\"v\":2}"),         /* insert, confirmed */
        del(SAT_B, 4, HLC(5), V(SAT_A, 3), "gone"),                  /* delete (seen), no conflict */
        put(SAT_B, 5, HLC(20), V(SAT_A, 4), "swap", "{\"v\":2}"),    /* replace, superseded */
        del(SAT_B, 6, HLC(21), V(SAT_A, 4), "swap"),                 /* delete, confirmed */
        put(SAT_B, 7, HLC(22), V(SAT_A, 5), "swap", "{\"v\":100}")); /* delete, superseded */

    cr_expect_eq(b.n_decided, 7);
    cr_expect_eq(count_of(&b, LWW_NO_CONFLICT, LWW_CONFIRMED), 2);
    cr_expect_eq(count_of(&b, LWW_NO_CONFLICT, LWW_SUPERSEDED), 0);
    cr_expect_eq(count_of(&b, LWW_INSERT, LWW_CONFIRMED), 1);
    cr_expect_eq(count_of(&b, LWW_INSERT, LWW_SUPERSEDED), 1);
    cr_expect_eq(count_of(&b, LWW_REPLACE, LWW_CONFIRMED), 0);
    cr_expect_eq(count_of(&b, LWW_REPLACE, LWW_SUPERSEDED), 1);
    cr_expect_eq(count_of(&b, LWW_DELETE, LWW_CONFIRMED), 1);
    cr_expect_eq(count_of(&b, LWW_DELETE, LWW_SUPERSEDED), 1);

    /* the log says the same, entry by entry */
    static const struct { enum lww_conflict k; enum lww_outcome o; } want[] = {
        { LWW_NO_CONFLICT, LWW_CONFIRMED }, { LWW_INSERT, LWW_SUPERSEDED },
        { LWW_INSERT, LWW_CONFIRMED },      { LWW_NO_CONFLICT, LWW_CONFIRMED },
        { LWW_REPLACE, LWW_SUPERSEDED },    { LWW_DELETE, LWW_CONFIRMED },
        { LWW_DELETE, LWW_SUPERSEDED },
    };
    for (size_t i = 0; i < 7; i++) {
        struct clog_entry e = clog_at(b.first_crts + i);
        cr_expect_eq(e.w.lsn, i + 1);
        cr_expect_eq(e.conflict, want[i].k, "lsn %zu: conflict %s", i + 1, lww_conflict_name(e.conflict));
        cr_expect_eq(e.outcome, want[i].o, "lsn %zu: outcome %d", i + 1, e.outcome);
        clog_entry_clear(&e);
    }

    /* counters are per batch, not running totals */
    struct confirm_batch next = DECIDE(SAT_B, 0, put(SAT_B, 8, HLC(30), V(0, 0), "other", "{}"));
    cr_expect_eq(count_of(&next, LWW_NO_CONFLICT, LWW_CONFIRMED), 1);
    cr_expect_eq(count_of(&next, LWW_INSERT, LWW_SUPERSEDED), 0);
    cr_expect_eq(count_of(&next, LWW_DELETE, LWW_CONFIRMED), 0);
}

/* --- through the committer, and across a restart ------------------------------------ */

struct job {
    struct journal *j;
    struct confirm_batch *b;
    int done, rc;
    char reason[512];
};

static int job_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct job *jb = arg;
    return confirm_apply(txn, jb->j, jb->b, err);
}

static void job_done(void *arg, int rc, const char *reason)
{
    struct job *jb = arg;
    jb->done = 1;
    jb->rc = rc;
    snprintf(jb->reason, sizeof jb->reason, "%s", reason ? reason : "");
}

static void run_job(struct job *jb)
{
    cr_assert_eq(committer_submit(hub.j->committer, job_apply, job_done, jb, true), 0);
    for (int i = 0; i < 1000 && !jb->done; i++)
        event_base_loop(hub.base, EVLOOP_ONCE);
    cr_assert(jb->done, "the committer never answered");
    cr_assert_eq(jb->rc, 0, "job failed: %s", jb->reason);
}

Test(confirm, decisions_through_the_committer_survive_a_restart)
{
    struct job jb = { .j = hub.j };
    jb.b = batch_new(SAT_A, 0, WRITES(put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":1}"),
                                      put(SAT_A, 2, HLC(11), V(SAT_A, 1), "k1", "{\"v\":2}")), 2);
    run_job(&jb);
    cr_expect_eq(jb.b->n_decided, 2);
    uint64_t last = jb.b->last_crts;
    confirm_batch_free(jb.b);

    journal_close(hub.j);
    hub.j = NULL;
    hub_open();

    cr_expect_eq(decided_mark(SAT_A), 2);
    cr_expect_eq(last_crts_meta(), last);
    expect_version(chead("k1").w.version, V(SAT_A, 2), "head after restart");
    struct clog_entry e = clog_at(last);
    expect_doc(e.head_doc, "{\"v\":2}", "head doc after restart");
    clog_entry_clear(&e);

    /* the shipper resends after the restart: still a no-op, and the next new
     * write continues the log */
    struct job again = { .j = hub.j };
    again.b = batch_new(SAT_A, 0, WRITES(put(SAT_A, 2, HLC(11), V(SAT_A, 1), "k1", "{\"v\":2}"),
                                         put(SAT_A, 3, HLC(12), V(SAT_A, 2), "k1", "{\"v\":3}")), 2);
    run_job(&again);
    cr_expect_eq(again.b->n_decided, 1);
    cr_expect_eq(again.b->first_crts, last + 1);
    cr_expect_eq(again.b->decided_upto, 3);
    confirm_batch_free(again.b);
    cr_expect_eq(log_all().n, 3);
}


/* keep_decided: the decisions as logged, in crts order, each with the crts
 * of the entry before it, so that the hub's applier takes them from memory;
 * replays are not decided again, so not kept. */
static struct confirm_batch *decide_kept(uint32_t origin, uint64_t floor, struct repl_write *ws,
                                         size_t n)
{
    struct confirm_batch *b = batch_new(origin, floor, ws, n);
    struct err err = { "" };
    MDB_txn *txn;
    b->keep_decided = true;
    cr_assert_eq(mdb_txn_begin(hub.j->env, NULL, 0, &txn), 0);
    cr_assert_eq(confirm_apply(txn, hub.j, b, &err), 0, "confirm_apply: %s", err.msg);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    return b;
}

static void expect_kept_as_logged(const struct confirm_batch *b, uint64_t prev)
{
    cr_assert_eq(b->n_kept, b->n_decided);
    for (size_t i = 0; i < b->n_kept; i++) {
        const struct clog_entry *k = &b->decided[i].e;
        cr_expect_eq(b->decided[i].prev, prev, "entry %zu: prev %llu, want %llu", i,
                     (unsigned long long)b->decided[i].prev, (unsigned long long)prev);
        struct clog_entry e = clog_at(k->crts);
        cr_expect_eq(k->outcome, e.outcome);
        cr_expect_eq(k->conflict, e.conflict);
        expect_version(repl_write_version(&k->w), repl_write_version(&e.w), "write");
        expect_version(k->head, e.head, "head");
        cr_expect_eq(k->head_delete, e.head_delete);
        cr_expect_eq(k->w.is_delete, e.w.is_delete);
        expect_doc(k->w.doc, e.w.doc, "document");
        expect_doc(k->head_doc, e.head_doc, "head document");
        cr_expect_str_eq(k->w.id, e.w.id);
        clog_entry_clear(&e);
        prev = k->crts;
    }
}

Test(confirm, kept_decisions_are_the_logged_entries_in_order)
{
    struct repl_write first[] = {
        put(SAT_A, 1, HLC(10), V(0, 0), "k1", "{\"v\":5}"),
    };
    struct confirm_batch *a = decide_kept(SAT_A, 0, first, 1);
    expect_kept_as_logged(a, 0);
    uint64_t after_a = a->last_crts;
    confirm_batch_free(a);

    /* A confirmed write, a superseded one (lower /v, same key, unseen
     * head: the winner's document is the head's), and a delete. */
    struct repl_write second[] = {
        put(SAT_B, 1, HLC(20), V(0, 0), "k2", "{\"v\":1}"),
        put(SAT_B, 2, HLC(21), V(0, 0), "k1", "{\"v\":1}"),
        del(SAT_B, 3, HLC(22), V(SAT_B, 1), "k2"),
    };
    struct confirm_batch *b = decide_kept(SAT_B, 0, second, 3);
    cr_expect_eq(count_of(b, LWW_INSERT, LWW_SUPERSEDED), 1);
    expect_kept_as_logged(b, after_a);
    cr_expect_str_eq(b->decided[1].e.head_doc, "{\"v\":5}");
    confirm_batch_free(b);

    /* The same batch again: a replay decides nothing, keeps nothing. */
    struct repl_write again[] = {
        put(SAT_B, 1, HLC(20), V(0, 0), "k2", "{\"v\":1}"),
    };
    struct confirm_batch *c = decide_kept(SAT_B, 0, again, 1);
    cr_expect_eq(c->n_decided, 0);
    cr_expect_eq(c->n_kept, 0);
    confirm_batch_free(c);
}
