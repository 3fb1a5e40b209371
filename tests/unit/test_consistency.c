/* Unit tests of replication/consistency: the level a request gets (relax,
 * never strengthen; strong only with one write region) and where a read is
 * served, as a pure function of (level, token, this region's progress). */
#include <criterion/criterion.h>
#include <string.h>

#include "replication/consistency.h"

#define HUB 1
#define WEST 2
#define SOUTH 3

static int level_of(enum consistency account, bool multi, const char *hdr, enum consistency *out,
                    struct err *err)
{
    return consistency_request_level(account, multi, hdr, hdr ? strlen(hdr) : 0, out, err);
}

Test(consistency, no_header_takes_the_account_level)
{
    struct err err = { "" };
    enum consistency got = CONS_EVENTUAL;
    cr_assert_eq(level_of(CONS_SESSION, true, NULL, &got, &err), 0);
    cr_expect_eq(got, CONS_SESSION);
}

Test(consistency, a_request_may_relax_the_level)
{
    static const struct { enum consistency account; const char *hdr; enum consistency want; } ok[] = {
        { CONS_SESSION, "eventual", CONS_EVENTUAL },
        { CONS_SESSION, "Session", CONS_SESSION },
        { CONS_SESSION, "ConsistentPrefix", CONS_CONSISTENT_PREFIX },
        { CONS_BOUNDED_STALENESS, "session", CONS_SESSION },
        { CONS_BOUNDED_STALENESS, "BoundedStaleness", CONS_BOUNDED_STALENESS },
        { CONS_STRONG, "bounded_staleness", CONS_BOUNDED_STALENESS },
        { CONS_STRONG, "strong", CONS_STRONG },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct err err = { "" };
        enum consistency got = CONS_STRONG;
        bool multi = ok[i].account != CONS_STRONG;
        cr_expect_eq(level_of(ok[i].account, multi, ok[i].hdr, &got, &err), 0, "%s: %s",
                     ok[i].hdr, err.msg);
        cr_expect_eq(got, ok[i].want, "%s", ok[i].hdr);
    }
}

Test(consistency, a_request_may_not_strengthen_the_level)
{
    struct err err = { "" };
    enum consistency got = CONS_EVENTUAL;
    cr_assert_eq(level_of(CONS_SESSION, true, "bounded_staleness", &got, &err), -1);
    cr_expect_str_eq(err.msg, "X-Consistency-Level 'bounded_staleness' is stronger than the "
                              "account's level 'session'; a request may only relax it");
    cr_expect_eq(got, CONS_SESSION, "refused: the account level stays");
    cr_assert_eq(level_of(CONS_EVENTUAL, true, "session", &got, &err), -1);
    cr_expect(strstr(err.msg, "'session'") && strstr(err.msg, "'eventual'"), "%s", err.msg);
}

Test(consistency, strong_is_refused_with_multi_region_writes)
{
    struct err err = { "" };
    enum consistency got;
    cr_assert_eq(level_of(CONS_SESSION, true, "strong", &got, &err), -1);
    cr_expect(strstr(err.msg, "not available with multi-region writes"), "%s", err.msg);
}

Test(consistency, unknown_levels_are_refused_naming_the_value)
{
    static const char *const bad[] = { "", "linearizable", "sessions", "eventual ", "x-very-long-level-name-here-0123456789" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct err err = { "" };
        enum consistency got;
        cr_expect_eq(level_of(CONS_STRONG, false, bad[i], &got, &err), -1, "'%s' accepted", bad[i]);
        cr_expect(strstr(err.msg, "X-Consistency-Level"), "'%s': %s", bad[i], err.msg);
    }
}

/* --- routing ---------------------------------------------------------------- */

struct fixture {
    struct session_token applied;
    struct region_progress p;
};

/* South (a satellite) has applied crts 100, west's writes up to 7 and the
 * hub's up to 3; its own next LSN is 20. */
static void south(struct fixture *f)
{
    memset(f, 0, sizeof *f);
    f->applied.confirmed = 100;
    session_token_note(&f->applied, WEST, 7);
    session_token_note(&f->applied, HUB, 3);
    f->p = (struct region_progress){ .self = SOUTH, .hub = HUB, .applied = &f->applied,
                                     .next_lsn = 20, .lag_known = true, .lag_versions = 2,
                                     .lag_ms = 40, .max_lag_versions = 10, .max_lag_ms = 1000 };
}

static struct session_token token(uint64_t confirmed, uint32_t r1, uint64_t l1, uint32_t r2,
                                  uint64_t l2)
{
    struct session_token t = { .topology = 1, .confirmed = confirmed };
    if (r1)
        session_token_note(&t, r1, l1);
    if (r2)
        session_token_note(&t, r2, l2);
    return t;
}

Test(consistency, session_table)
{
    static const struct {
        const char *name;
        uint64_t confirmed;
        uint32_t r1; uint64_t l1; uint32_t r2; uint64_t l2;
        bool waited, forwarded;
        enum read_where want;
        uint32_t first; /* first candidate when forwarding */
    } rows[] = {
        { "empty token", 0, 0, 0, 0, 0, false, false, READ_LOCAL, 0 },
        { "confirmed position applied", 100, 0, 0, 0, 0, false, false, READ_LOCAL, 0 },
        { "west's write applied", 50, WEST, 7, 0, 0, false, false, READ_LOCAL, 0 },
        { "own tentative write", 0, SOUTH, 19, 0, 0, false, false, READ_LOCAL, 0 },
        { "own write not made here: only the hub could", 0, SOUTH, 20, 0, 0, true, false, READ_FORWARD, HUB },
        { "confirmed position ahead: wait", 101, 0, 0, 0, 0, false, false, READ_WAIT, 0 },
        { "confirmed position ahead: hub", 101, 0, 0, 0, 0, true, false, READ_FORWARD, HUB },
        { "west's tentative write: wait", 0, WEST, 8, 0, 0, false, false, READ_WAIT, 0 },
        { "west's tentative write: west first", 0, WEST, 8, 0, 0, true, false, READ_FORWARD, WEST },
        { "forwarded here, not satisfied", 0, WEST, 8, 0, 0, true, true, READ_REFUSE, 0 },
        { "forwarded here, satisfied", 0, WEST, 7, HUB, 3, true, true, READ_LOCAL, 0 },
        { "hub's write missing", 0, HUB, 4, 0, 0, true, false, READ_FORWARD, HUB },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct fixture f;
        south(&f);
        struct session_token t = token(rows[i].confirmed, rows[i].r1, rows[i].l1, rows[i].r2,
                                       rows[i].l2);
        struct read_decision d = consistency_route(CONS_SESSION, &t, &f.p, rows[i].waited,
                                                   rows[i].forwarded);
        cr_expect_eq(d.where, rows[i].want, "%s: %s, want %s (%s)", rows[i].name,
                     consistency_where_name(d.where), consistency_where_name(rows[i].want), d.why);
        if (rows[i].want == READ_FORWARD) {
            cr_expect_geq(d.n, 1, "%s", rows[i].name);
            cr_expect_eq(d.candidates[0], rows[i].first, "%s: first candidate %u", rows[i].name,
                         d.candidates[0]);
        }
    }
}

Test(consistency, forwarding_candidates_are_the_origins_then_the_hub_without_self)
{
    struct fixture f;
    south(&f);
    struct session_token t = token(200, WEST, 9, SOUTH, 5);
    struct read_decision d = consistency_route(CONS_SESSION, &t, &f.p, true, false);
    cr_assert_eq(d.where, READ_FORWARD);
    cr_assert_eq(d.n, 2);
    cr_expect_eq(d.candidates[0], WEST);
    cr_expect_eq(d.candidates[1], HUB);
}

Test(consistency, the_hub_without_the_session_refuses_after_the_wait)
{
    struct fixture f;
    south(&f);
    f.p.self = HUB;
    struct session_token t = token(500, 0, 0, 0, 0);
    cr_expect_eq(consistency_route(CONS_SESSION, &t, &f.p, false, false).where, READ_WAIT);
    cr_expect_eq(consistency_route(CONS_SESSION, &t, &f.p, true, false).where, READ_REFUSE);
}

Test(consistency, eventual_and_prefix_are_always_local)
{
    struct fixture f;
    south(&f);
    struct session_token t = token(999, WEST, 99, 0, 0);
    cr_expect_eq(consistency_route(CONS_EVENTUAL, &t, &f.p, false, false).where, READ_LOCAL);
    cr_expect_eq(consistency_route(CONS_CONSISTENT_PREFIX, &t, &f.p, false, false).where,
                 READ_LOCAL);
}

Test(consistency, bounded_staleness_goes_to_the_hub_beyond_the_bound)
{
    struct fixture f;
    south(&f);
    struct session_token t = { 0 };
    cr_expect_eq(consistency_route(CONS_BOUNDED_STALENESS, &t, &f.p, false, false).where, READ_LOCAL);
    f.p.lag_versions = 11;
    struct read_decision d = consistency_route(CONS_BOUNDED_STALENESS, &t, &f.p, false, false);
    cr_expect_eq(d.where, READ_FORWARD);
    cr_expect_eq(d.candidates[0], HUB);
    f.p.lag_versions = 0;
    f.p.lag_ms = 1001;
    cr_expect_eq(consistency_route(CONS_BOUNDED_STALENESS, &t, &f.p, false, false).where, READ_FORWARD);
    f.p.lag_ms = 0;
    f.p.lag_known = false;
    cr_expect_eq(consistency_route(CONS_BOUNDED_STALENESS, &t, &f.p, false, false).where,
                 READ_FORWARD, "a satellite that has not heard from the hub cannot know its lag");
    cr_expect_eq(consistency_route(CONS_BOUNDED_STALENESS, &t, &f.p, false, true).where,
                 READ_REFUSE, "a forwarded read is never forwarded again");
    f.p.self = HUB;
    cr_expect_eq(consistency_route(CONS_BOUNDED_STALENESS, &t, &f.p, false, false).where, READ_LOCAL);
}

Test(consistency, strong_reads_are_served_by_the_hub)
{
    struct fixture f;
    south(&f);
    struct session_token t = { 0 };
    struct read_decision d = consistency_route(CONS_STRONG, &t, &f.p, false, false);
    cr_expect_eq(d.where, READ_FORWARD);
    cr_expect_eq(d.candidates[0], HUB);
    f.p.self = HUB;
    cr_expect_eq(consistency_route(CONS_STRONG, &t, &f.p, false, false).where, READ_LOCAL);
}

Test(consistency, backlog_bound_refuses_satellite_writes_only)
{
    struct fixture f;
    south(&f);
    cr_expect_not(consistency_backlog_exceeded(&f.p, 10, 999));
    cr_expect(consistency_backlog_exceeded(&f.p, 11, 0));
    cr_expect(consistency_backlog_exceeded(&f.p, 1, 1001));
    cr_expect_not(consistency_backlog_exceeded(&f.p, 0, 5000));
    f.p.self = HUB;
    cr_expect_not(consistency_backlog_exceeded(&f.p, 1000, 100000));
}

/* The hub's writes arrive out of LSN order: a satellite that applied hub
 * write 10 has not necessarily applied 9. */
Test(consistency, hub_writes_are_checked_one_by_one)
{
    struct fixture f;
    south(&f);
    struct hub_window w = { 0 };
    f.p.hub_applied = &w;
    hub_window_note(&w, 10);
    struct session_token nine = token(0, HUB, 9, 0, 0), ten = token(0, HUB, 10, 0, 0);
    cr_expect_not(consistency_satisfies(&f.p, &nine), "9 is not applied though 10 is");
    cr_expect(consistency_satisfies(&f.p, &ten));
    hub_window_note(&w, 9);
    cr_expect(consistency_satisfies(&f.p, &nine));
    struct session_token eleven = token(0, HUB, 11, 0, 0);
    cr_expect_not(consistency_satisfies(&f.p, &eleven));
    struct read_decision d = consistency_route(CONS_SESSION, &eleven, &f.p, true, false);
    cr_expect_eq(d.where, READ_FORWARD);
    cr_expect_eq(d.candidates[0], HUB);
}

Test(consistency, hub_window_slides)
{
    struct hub_window w = { 0 };
    hub_window_note(&w, 5);
    hub_window_note(&w, 5 + CONSISTENCY_HUB_WINDOW + 10);
    cr_expect(hub_window_has(&w, 5 + CONSISTENCY_HUB_WINDOW + 10));
    cr_expect(hub_window_has(&w, 3), "far below the window: long decided");
    cr_expect_not(hub_window_has(&w, 5 + CONSISTENCY_HUB_WINDOW + 9), "inside the window, not applied");
    hub_window_note(&w, 1); /* below the window: ignored */
    cr_expect_not(hub_window_has(&w, 5 + CONSISTENCY_HUB_WINDOW + 11));
}
