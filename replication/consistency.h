/* consistency: the consistency level a request gets and where its read is
 * served, as pure functions of the request, its session token and this
 * region's progress. No clock, no I/O: the read path (proxy/readpath.c)
 * gathers the inputs and carries out the decision.
 *
 * Levels, weakest first: eventual < consistent_prefix < session <
 * bounded_staleness < strong. A request may relax the account's level with
 * X-Consistency-Level, never strengthen it; strong exists only with a single
 * write region. */
#ifndef MERIDIAN_CONSISTENCY_H
#define MERIDIAN_CONSISTENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../config/conf.h"
#include "../util/err.h"
#include "session_token.h"

#define CONSISTENCY_MAX_CANDIDATES 8

/* The level of a request: the account's, or the one `hdr` (len bytes; NULL
 * when the request has none) names. -1 with a reason naming both levels when
 * it is unknown or stronger than the account's, or strong while
 * multi-region writes are on. */
int consistency_request_level(enum consistency account, bool multi_region_writes,
                              const char *hdr, size_t len, enum consistency *out,
                              struct err *err) MUST_CHECK;

/* The hub decides its own writes as their backend calls finish, so they
 * reach other regions out of LSN order: for the hub's writes a satellite
 * keeps which of the last CONSISTENCY_HUB_WINDOW LSNs it has applied, not
 * just the highest. */
#define CONSISTENCY_HUB_WINDOW 4096
struct hub_window {
    uint64_t max;                                /* highest hub LSN applied */
    uint8_t bits[CONSISTENCY_HUB_WINDOW / 8];    /* LSN % WINDOW applied, for (max - WINDOW, max] */
};
void hub_window_note(struct hub_window *w, uint64_t lsn);
/* Whether hub write `lsn` is applied: exact within the window; below it,
 * assumed (a write that old is long decided). */
bool hub_window_has(const struct hub_window *w, uint64_t lsn);

/* What this region holds, as the decision sees it. */
struct region_progress {
    uint32_t self, hub;              /* region ids */
    /* applied.confirmed: the confirmed-log position applied here;
     * applied.v[]: per origin region, the highest LSN of its writes whose
     * decision is applied here. */
    const struct session_token *applied;
    uint64_t next_lsn;               /* this region's own writes below it are here */
    const struct hub_window *hub_applied; /* the hub's writes (NULL: use applied->v[]) */
    bool lag_known;                  /* heard from the hub recently */
    uint64_t lag_versions, lag_ms;   /* behind the hub's confirmed log */
    uint64_t max_lag_versions, max_lag_ms;
};

/* Whether this region holds everything token `t` names. */
bool consistency_satisfies(const struct region_progress *p, const struct session_token *t);

enum read_where {
    READ_LOCAL,    /* serve from this region's backend */
    READ_WAIT,     /* wait (bounded) for apply to catch up, then ask again with waited */
    READ_FORWARD,  /* forward to the candidates, in order */
    READ_REFUSE,   /* 404 with X-Meridian-Substatus: 1002 */
};

struct read_decision {
    enum read_where where;
    uint32_t candidates[CONSISTENCY_MAX_CANDIDATES]; /* region ids, best first */
    size_t n;
    const char *why;                 /* static text for logs and metrics */
};

/* Where a read at `level` with token `t` is served. `waited`: the bounded
 * wait is over (or not allowed: a read forwarded here from another region
 * passes true and serves or refuses, never forwards again: `forwarded`).
 * Session: local when satisfied; else wait; then forward to the regions
 * that hold what is missing (the token's origins, then the hub); else
 * refuse. Bounded staleness: local at the hub or within the bound, else the
 * hub. Strong: the hub. Eventual and consistent prefix: local. */
struct read_decision consistency_route(enum consistency level, const struct session_token *t,
                                       const struct region_progress *p, bool waited,
                                       bool forwarded);

/* Bounded staleness: whether a satellite must refuse new writes (429) with
 * `backlog` own writes not yet decided and applied, the oldest `age_ms` old. */
bool consistency_backlog_exceeded(const struct region_progress *p, uint64_t backlog,
                                  uint64_t age_ms);

const char *consistency_where_name(enum read_where w);

#endif
