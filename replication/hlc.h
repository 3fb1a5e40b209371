/* hlc: the hybrid logical clock. 48-bit milliseconds + 16-bit counter in one
 * uint64_t; with the region id it orders every write totally. Pure: the wall
 * clock is passed in, so tests drive time. Never goes backwards. */
#ifndef MERIDIAN_HLC_H
#define MERIDIAN_HLC_H

#include <stdint.h>

#include "../util/err.h"

#define HLC_COUNTER_BITS 16
#define HLC_MAKE(ms, c) (((uint64_t)(ms) << HLC_COUNTER_BITS) | ((uint64_t)(c) & 0xffff))
#define HLC_MS(h) ((h) >> HLC_COUNTER_BITS)
#define HLC_COUNTER(h) ((h) & 0xffff)

struct hlc {
    uint64_t last;          /* the last value handed out or adopted */
    uint64_t max_drift_ms;  /* a peer further ahead than this is refused */
};

void hlc_init(struct hlc *c, uint64_t max_drift_ms);

/* A new timestamp for a local event at wall time `wall_ms`: greater than
 * every value this clock has produced or adopted. */
uint64_t hlc_now(struct hlc *c, uint64_t wall_ms);

/* Adopts a timestamp seen in a peer message (the receive rule), unless the
 * peer's clock is more than max_drift_ms ahead of `wall_ms`: then -1 with the
 * reason in err, and the clock is unchanged. */
int hlc_update(struct hlc *c, uint64_t remote, uint64_t wall_ms, struct err *err) MUST_CHECK;

/* Compares two writes by (hlc, region id): <0, 0, >0. */
int hlc_cmp(uint64_t a_hlc, uint32_t a_region, uint64_t b_hlc, uint32_t b_region);

/* Wall-clock milliseconds since the epoch (CLOCK_REALTIME). */
uint64_t hlc_wall_ms(void);

#endif
