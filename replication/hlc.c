#include "hlc.h"

#include <inttypes.h>
#include <time.h>

/* The largest millisecond value the 48-bit field holds. A wall clock beyond
 * it (year 10889) is clamped: shifting it would wrap and run the clock
 * backwards, and monotonicity matters more than the exact time. */
#define HLC_MS_MAX ((UINT64_C(1) << (64 - HLC_COUNTER_BITS)) - 1)

void hlc_init(struct hlc *c, uint64_t max_drift_ms)
{
    c->last = 0;
    c->max_drift_ms = max_drift_ms;
}

/* When the wall clock has not moved past the last value (it stood still, went
 * backwards, or a peer pushed us ahead), the counter advances instead; its
 * overflow carries into the milliseconds, which keeps the value growing. */
uint64_t hlc_now(struct hlc *c, uint64_t wall_ms)
{
    if (wall_ms > HLC_MS_MAX)
        wall_ms = HLC_MS_MAX;
    if (wall_ms > HLC_MS(c->last))
        c->last = HLC_MAKE(wall_ms, 0);
    else
        c->last++;
    return c->last;
}

/* Adopting a remote value only ever raises `last`, so the next hlc_now() is
 * above both what we produced and what the peer showed us (causality across
 * regions). The drift check is written as a difference so that a huge
 * max_drift_ms ("no limit") cannot overflow. */
int hlc_update(struct hlc *c, uint64_t remote, uint64_t wall_ms, struct err *err)
{
    uint64_t remote_ms = HLC_MS(remote);

    if (remote_ms > wall_ms && remote_ms - wall_ms > c->max_drift_ms)
        return err_set(err, "peer clock is %" PRIu64 " ms ahead of ours (max_drift_ms %" PRIu64 ")",
                       remote_ms - wall_ms, c->max_drift_ms);
    if (remote > c->last)
        c->last = remote;
    return 0;
}

int hlc_cmp(uint64_t a_hlc, uint32_t a_region, uint64_t b_hlc, uint32_t b_region)
{
    if (a_hlc != b_hlc)
        return a_hlc < b_hlc ? -1 : 1;
    if (a_region != b_region)
        return a_region < b_region ? -1 : 1;
    return 0;
}

uint64_t hlc_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
