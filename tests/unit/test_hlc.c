#include <criterion/criterion.h>
#include <string.h>

#include "replication/hlc.h"

#define DRIFT_MS 5000

static struct hlc clock_at(uint64_t max_drift_ms)
{
    struct hlc c;
    hlc_init(&c, max_drift_ms);
    return c;
}

Test(hlc, first_value_carries_the_wall_clock)
{
    struct hlc c = clock_at(DRIFT_MS);
    uint64_t t = hlc_now(&c, 1700000000000);

    cr_assert_eq(t, HLC_MAKE(1700000000000, 0));
    cr_assert_eq(HLC_MS(t), 1700000000000);
    cr_assert_eq(HLC_COUNTER(t), 0);
}

Test(hlc, monotonic_when_wall_clock_goes_backwards)
{
    struct hlc c = clock_at(DRIFT_MS);
    uint64_t prev = hlc_now(&c, 10000);

    for (uint64_t wall = 9999; wall > 9000; wall -= 7) {
        uint64_t t = hlc_now(&c, wall);
        cr_assert_gt(t, prev, "wall %llu", (unsigned long long)wall);
        /* Time does not follow the wall back: it stays at the high mark. */
        cr_assert_eq(HLC_MS(t), 10000);
        prev = t;
    }
}

Test(hlc, monotonic_when_wall_clock_stands_still_past_the_counter)
{
    struct hlc c = clock_at(DRIFT_MS);
    uint64_t prev = hlc_now(&c, 5000);

    for (int i = 0; i < 70000; i++) {
        uint64_t t = hlc_now(&c, 5000);
        cr_assert_gt(t, prev, "call %d", i);
        prev = t;
    }
    /* 65535 ticks fill the counter; the next carries into the milliseconds. */
    cr_assert_eq(HLC_MS(prev), 5001);
    cr_assert_eq(HLC_COUNTER(prev), 70000 - 65536);
    /* A wall clock that catches up resets the counter. */
    cr_assert_eq(hlc_now(&c, 5002), HLC_MAKE(5002, 0));
}

Test(hlc, follows_a_jumping_wall_clock)
{
    struct hlc c = clock_at(DRIFT_MS);

    cr_assert_eq(hlc_now(&c, 1000), HLC_MAKE(1000, 0));
    cr_assert_eq(hlc_now(&c, 1000), HLC_MAKE(1000, 1));
    cr_assert_eq(hlc_now(&c, 900000), HLC_MAKE(900000, 0));
    cr_assert_eq(hlc_now(&c, 2), HLC_MAKE(900000, 1));
    cr_assert_eq(hlc_now(&c, 900001), HLC_MAKE(900001, 0));
}

Test(hlc, stays_monotonic_beyond_48_bit_wall_clock)
{
    struct hlc c = clock_at(DRIFT_MS);
    uint64_t a = hlc_now(&c, UINT64_MAX);
    uint64_t b = hlc_now(&c, UINT64_MAX);

    cr_assert_gt(a, 0);
    cr_assert_gt(b, a);
}

Test(hlc, receive_rule_puts_the_next_value_above_the_remote)
{
    struct hlc c = clock_at(DRIFT_MS);
    struct err err = { "" };
    uint64_t remote = HLC_MAKE(1000 + 3000, 42);

    hlc_now(&c, 1000);
    cr_assert_eq(hlc_update(&c, remote, 1000, &err), 0);
    cr_assert_eq(c.last, remote);
    cr_assert_gt(hlc_now(&c, 1000), remote);
    cr_assert_gt(hlc_now(&c, 1001), remote);
}

Test(hlc, receive_rule_never_lowers_the_clock)
{
    struct hlc c = clock_at(DRIFT_MS);
    struct err err = { "" };
    uint64_t mine = hlc_now(&c, 8000);

    cr_assert_eq(hlc_update(&c, HLC_MAKE(7000, 9), 8000, &err), 0);
    cr_assert_eq(c.last, mine);
    cr_assert_eq(hlc_update(&c, mine, 8000, &err), 0);
    cr_assert_eq(c.last, mine);
    cr_assert_gt(hlc_now(&c, 8000), mine);
}

Test(hlc, drift_at_the_limit_is_adopted)
{
    struct hlc c = clock_at(DRIFT_MS);
    struct err err = { "" };
    uint64_t remote = HLC_MAKE(1000 + DRIFT_MS, 0xffff);

    cr_assert_eq(hlc_update(&c, remote, 1000, &err), 0);
    cr_assert_eq(c.last, remote);
}

Test(hlc, drift_refusal_leaves_the_clock_unchanged)
{
    struct hlc c = clock_at(DRIFT_MS);
    struct err err = { "" };
    uint64_t mine = hlc_now(&c, 1000);

    cr_assert_eq(hlc_update(&c, HLC_MAKE(1000 + DRIFT_MS + 1, 0), 1000, &err), -1);
    cr_assert_str_eq(err.msg, "peer clock is 5001 ms ahead of ours (max_drift_ms 5000)");
    cr_assert_eq(c.last, mine);
    cr_assert_eq(c.max_drift_ms, DRIFT_MS);
    cr_assert_eq(hlc_now(&c, 1000), mine + 1);
    /* NULL err is allowed: the refusal still happens. */
    cr_assert_eq(hlc_update(&c, UINT64_MAX, 1000, NULL), -1);
    cr_assert_eq(c.last, mine + 1);
}

Test(hlc, no_drift_limit_does_not_overflow)
{
    struct hlc c = clock_at(UINT64_MAX);
    struct err err = { "" };

    cr_assert_eq(hlc_update(&c, HLC_MAKE(UINT64_C(1) << 47, 0), 1000, &err), 0);
    cr_assert_eq(c.last, HLC_MAKE(UINT64_C(1) << 47, 0));
}

Test(hlc, cmp_orders_by_hlc_then_region)
{
    uint64_t lo = HLC_MAKE(1000, 5), hi = HLC_MAKE(1000, 6);

    cr_assert_lt(hlc_cmp(lo, 9, hi, 1), 0, "the hlc decides before the region");
    cr_assert_gt(hlc_cmp(hi, 1, lo, 9), 0);
    cr_assert_lt(hlc_cmp(lo, 1, lo, 2), 0, "equal hlc: the region id breaks the tie");
    cr_assert_gt(hlc_cmp(lo, 2, lo, 1), 0);
    cr_assert_eq(hlc_cmp(lo, 3, lo, 3), 0);
    cr_assert_lt(hlc_cmp(HLC_MAKE(999, 0xffff), 1, HLC_MAKE(1000, 0), 1), 0);
    cr_assert_gt(hlc_cmp(UINT64_MAX, 0, 0, UINT32_MAX), 0);
}

Test(hlc, wall_clock_is_the_epoch_in_milliseconds)
{
    uint64_t a = hlc_wall_ms();
    uint64_t b = hlc_wall_ms();

    cr_assert_gt(a, UINT64_C(1600000000000), "after September 2020");
    cr_assert_lt(a, UINT64_C(1) << 48, "fits the 48-bit field");
    cr_assert_geq(b + 1000, a);
}
