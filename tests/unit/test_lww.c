#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "resolver/lww.h"

#define SYMMETRY_ROUNDS 5000

/* Initializers for the table: a version, a write (version, base, hlc;
 * is_delete and the path value default to off), a head. */
#define V(r, l) { (r), (l) }
#define W(ver, bas, h, ...) { .version = ver, .base = bas, .hlc = (h), __VA_ARGS__ }
#define NUM(x) .has_value = true, .value = (x)
#define DEL .is_delete = true
#define HEAD(x) { .exists = true, .w = x }
#define NO_HEAD { .exists = false }

struct lww_row {
    const char *name;
    struct lww_head head;
    struct lww_write in;
    enum lww_conflict conflict;
    enum lww_outcome outcome;
    const char *why;  /* a substring of the decision's why */
};

static const struct lww_row rows[] = {
    /* No conflict: the origin saw the head. */
    { "first write of a key", NO_HEAD, W(V(2, 1), V(0, 0), 100),
      LWW_NO_CONFLICT, LWW_CONFIRMED, "no conflict" },
    { "update of the head", HEAD(W(V(1, 4), V(0, 0), 900, NUM(50))), W(V(2, 7), V(1, 4), 100, NUM(1)),
      LWW_NO_CONFLICT, LWW_CONFIRMED, "no conflict" },
    { "delete of the head", HEAD(W(V(1, 4), V(0, 0), 900)), W(V(2, 7), V(1, 4), 100, DEL),
      LWW_NO_CONFLICT, LWW_CONFIRMED, "no conflict" },
    { "recreate over a seen tombstone", HEAD(W(V(1, 5), V(1, 4), 900, DEL)), W(V(2, 7), V(1, 5), 100),
      LWW_NO_CONFLICT, LWW_CONFIRMED, "no conflict" },
    /* Insert / insert. */
    { "insert vs insert, incoming newer", HEAD(W(V(1, 1), V(0, 0), 100)), W(V(2, 1), V(0, 0), 200),
      LWW_INSERT, LWW_CONFIRMED, "higher hlc" },
    { "insert vs insert, incoming older", HEAD(W(V(1, 1), V(0, 0), 300)), W(V(2, 1), V(0, 0), 200),
      LWW_INSERT, LWW_SUPERSEDED, "head has the higher hlc" },
    { "insert vs insert, path decides", HEAD(W(V(1, 1), V(0, 0), 300, NUM(1))), W(V(2, 1), V(0, 0), 200, NUM(2)),
      LWW_INSERT, LWW_CONFIRMED, "higher path value" },
    /* Replace / replace. */
    { "replace vs replace, path higher", HEAD(W(V(1, 2), V(1, 1), 300, NUM(5))), W(V(2, 3), V(1, 1), 200, NUM(7)),
      LWW_REPLACE, LWW_CONFIRMED, "higher path value" },
    { "replace vs replace, path lower", HEAD(W(V(1, 2), V(1, 1), 100, NUM(7))), W(V(2, 3), V(1, 1), 200, NUM(5)),
      LWW_REPLACE, LWW_SUPERSEDED, "head has the higher path value" },
    { "negative path values", HEAD(W(V(1, 2), V(1, 1), 100, NUM(-5))), W(V(2, 3), V(1, 1), 50, NUM(-3)),
      LWW_REPLACE, LWW_CONFIRMED, "higher path value" },
    { "path tie falls to hlc, incoming newer", HEAD(W(V(1, 2), V(1, 1), 100, NUM(5))), W(V(2, 3), V(1, 1), 200, NUM(5)),
      LWW_REPLACE, LWW_CONFIRMED, "higher hlc" },
    { "path tie falls to hlc, incoming older", HEAD(W(V(1, 2), V(1, 1), 300, NUM(5))), W(V(2, 3), V(1, 1), 200, NUM(5)),
      LWW_REPLACE, LWW_SUPERSEDED, "head has the higher hlc" },
    { "incoming without path falls to hlc", HEAD(W(V(1, 2), V(1, 1), 100, NUM(99))), W(V(2, 3), V(1, 1), 200),
      LWW_REPLACE, LWW_CONFIRMED, "higher hlc" },
    { "head without path falls to hlc", HEAD(W(V(1, 2), V(1, 1), 300)), W(V(2, 3), V(1, 1), 200, NUM(99)),
      LWW_REPLACE, LWW_SUPERSEDED, "head has the higher hlc" },
    { "NaN path counts as missing", HEAD(W(V(1, 2), V(1, 1), 100, NUM(99))), W(V(2, 3), V(1, 1), 200, NUM(NAN)),
      LWW_REPLACE, LWW_CONFIRMED, "higher hlc" },
    { "non-monotonic hlc, higher path wins", HEAD(W(V(1, 2), V(1, 1), 900, NUM(1))), W(V(2, 3), V(1, 1), 100, NUM(2)),
      LWW_REPLACE, LWW_CONFIRMED, "higher path value" },
    { "hlc tie, higher region id wins", HEAD(W(V(2, 2), V(1, 1), 500)), W(V(3, 3), V(1, 1), 500),
      LWW_REPLACE, LWW_CONFIRMED, "hlc tie, higher region id" },
    { "hlc tie, lower region id loses", HEAD(W(V(3, 2), V(1, 1), 500)), W(V(2, 3), V(1, 1), 500),
      LWW_REPLACE, LWW_SUPERSEDED, "hlc tie, head has the higher region id" },
    { "path tie and hlc tie, region decides", HEAD(W(V(3, 2), V(1, 1), 500, NUM(4))), W(V(2, 3), V(1, 1), 500, NUM(4)),
      LWW_REPLACE, LWW_SUPERSEDED, "higher region id" },
    { "same version seen again", HEAD(W(V(2, 3), V(1, 1), 500)), W(V(2, 3), V(1, 0), 500),
      LWW_REPLACE, LWW_CONFIRMED, "same version" },
    { "insert against a replaced head", HEAD(W(V(1, 2), V(1, 1), 100)), W(V(2, 1), V(0, 0), 200),
      LWW_INSERT, LWW_CONFIRMED, "higher hlc" },
    /* Deletes win over inserts and replaces, whatever path and clock say. */
    { "delete vs replace head", HEAD(W(V(1, 2), V(1, 1), 900, NUM(1000))), W(V(2, 3), V(1, 1), 100, DEL),
      LWW_DELETE, LWW_CONFIRMED, "delete wins" },
    { "replace vs tombstone head", HEAD(W(V(1, 2), V(1, 1), 100, DEL)), W(V(2, 3), V(1, 1), 900, NUM(1000)),
      LWW_DELETE, LWW_SUPERSEDED, "delete wins" },
    { "insert vs tombstone head", HEAD(W(V(1, 2), V(1, 1), 100, DEL)), W(V(2, 1), V(0, 0), 900),
      LWW_DELETE, LWW_SUPERSEDED, "delete wins" },
    { "delete vs inserted head", HEAD(W(V(1, 1), V(0, 0), 900)), W(V(2, 3), V(2, 2), 100, DEL),
      LWW_DELETE, LWW_CONFIRMED, "delete wins" },
    { "delete vs delete, incoming newer", HEAD(W(V(1, 2), V(1, 1), 100, DEL)), W(V(2, 3), V(1, 1), 200, DEL),
      LWW_DELETE, LWW_CONFIRMED, "higher hlc" },
    { "delete vs delete, incoming older", HEAD(W(V(1, 2), V(1, 1), 300, DEL)), W(V(2, 3), V(1, 1), 200, DEL),
      LWW_DELETE, LWW_SUPERSEDED, "head has the higher hlc" },
    { "delete vs delete, hlc tie", HEAD(W(V(1, 2), V(1, 1), 300, DEL)), W(V(2, 3), V(1, 1), 300, DEL),
      LWW_DELETE, LWW_CONFIRMED, "hlc tie, higher region id" },
    /* No head, yet the origin saw a version: nothing to lose against. */
    { "no head but a base", NO_HEAD, W(V(2, 3), V(1, 1), 100),
      LWW_REPLACE, LWW_CONFIRMED, "no confirmed head" },
    { "no head but a base, delete", NO_HEAD, W(V(2, 3), V(1, 1), 100, DEL),
      LWW_DELETE, LWW_CONFIRMED, "no confirmed head" },
};

Test(lww, decision_table)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const struct lww_row *r = &rows[i];
        struct lww_decision d = lww_decide(&r->head, &r->in);
        cr_expect_eq(d.conflict, r->conflict, "%s: conflict %s, want %s", r->name,
                     lww_conflict_name(d.conflict), lww_conflict_name(r->conflict));
        cr_expect_eq(d.outcome, r->outcome, "%s: outcome %d (%s)", r->name, d.outcome, d.why);
        cr_expect(d.why && strstr(d.why, r->why), "%s: why \"%s\", want \"%s\"", r->name,
                  d.why ? d.why : "(null)", r->why);
    }
}

Test(lww, conflict_names)
{
    cr_assert_str_eq(lww_conflict_name(LWW_NO_CONFLICT), "none");
    cr_assert_str_eq(lww_conflict_name(LWW_INSERT), "insert");
    cr_assert_str_eq(lww_conflict_name(LWW_REPLACE), "replace");
    cr_assert_str_eq(lww_conflict_name(LWW_DELETE), "delete");
}

/* splitmix64: a fixed seed gives the same table on every run. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Small ranges, so that path values, HLCs and regions tie often. */
static struct lww_write random_write(uint64_t *rng)
{
    static const double values[] = { -1, 0, 1, 2, 2.5, NAN, INFINITY };
    struct lww_write w = { 0 };

    w.version.region = 1 + next_random(rng) % 4;
    w.version.lsn = 1 + next_random(rng) % 3;
    if (next_random(rng) % 3 != 0) {
        w.base.region = 1 + next_random(rng) % 4;
        w.base.lsn = 1 + next_random(rng) % 3;
    }
    w.hlc = 100 + next_random(rng) % 4;
    w.is_delete = next_random(rng) % 4 == 0;
    w.has_value = next_random(rng) % 3 != 0;
    w.value = values[next_random(rng) % (sizeof values / sizeof values[0])];
    return w;
}

/* Makes a and b two distinct writes that did not see each other. */
static void make_conflicting(struct lww_write *a, struct lww_write *b)
{
    if (version_eq(a->version, b->version))
        b->version.lsn += 10;
    if (version_eq(a->base, b->version))
        a->base = VERSION_NONE;
    if (version_eq(b->base, a->version))
        b->base = VERSION_NONE;
}

Test(lww, the_winner_does_not_depend_on_arrival_order)
{
    uint64_t rng = 2024;

    for (int i = 0; i < SYMMETRY_ROUNDS; i++) {
        struct lww_write a = random_write(&rng), b = random_write(&rng);
        make_conflicting(&a, &b);
        struct lww_head head_a = { .exists = true, .w = a }, head_b = { .exists = true, .w = b };
        struct lww_decision a_on_b = lww_decide(&head_b, &a);
        struct lww_decision b_on_a = lww_decide(&head_a, &b);
        const struct lww_write *w1 = a_on_b.outcome == LWW_CONFIRMED ? &a : &b;
        const struct lww_write *w2 = b_on_a.outcome == LWW_CONFIRMED ? &b : &a;
        cr_assert_neq(a_on_b.conflict, LWW_NO_CONFLICT, "round %d", i);
        cr_assert_neq(b_on_a.conflict, LWW_NO_CONFLICT, "round %d", i);
        cr_assert_eq(w1, w2, "round %d: a %u:%llu hlc %llu del %d val %d/%g, b %u:%llu hlc %llu "
                     "del %d val %d/%g: \"%s\" vs \"%s\"", i,
                     a.version.region, (unsigned long long)a.version.lsn, (unsigned long long)a.hlc,
                     a.is_delete, a.has_value, a.value,
                     b.version.region, (unsigned long long)b.version.lsn, (unsigned long long)b.hlc,
                     b.is_delete, b.has_value, b.value, a_on_b.why, b_on_a.why);
    }
}
