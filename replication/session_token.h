/* session_token: the client's session token, in the spirit of the seeds'
 * vector token: "{topologyVersion}#{confirmedPosition}#{regionId}={lsn}#...".
 * The confirmed position is a crts of the hub's confirmed log; each
 * regionId=lsn names the highest LSN of that origin's tentative writes the
 * session has written or read. Pure: parse, merge, format; never trusts its
 * input (a malformed token is an error with a reason, never a crash). */
#ifndef MERIDIAN_SESSION_TOKEN_H
#define MERIDIAN_SESSION_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"

#define SESSION_TOKEN_MAX_REGIONS 64
#define SESSION_TOKEN_TEXT_MAX 1600

struct session_token {
    uint32_t topology;                       /* topology version */
    uint64_t confirmed;                      /* confirmed-log position (crts) */
    uint32_t n;                              /* entries, sorted by region id, unique */
    struct { uint32_t region; uint64_t lsn; } v[SESSION_TOKEN_MAX_REGIONS];
};

/* Parses `text` (len bytes). An empty string is the empty token. Numbers are
 * plain decimals (no sign, space or leading zero); entries may come in any
 * order and those with lsn 0 are dropped. -1 with a reason naming the
 * problem and where when malformed; `out` is then untouched. */
int session_token_parse(const char *text, size_t len, struct session_token *out,
                        struct err *err) MUST_CHECK;

/* Writes the canonical text (regions ascending, lsn 0 omitted; "" for the
 * empty token) into buf of SESSION_TOKEN_TEXT_MAX bytes. */
void session_token_format(const struct session_token *t, char *buf);

/* dst = per-component maximum of dst and src (commutative, idempotent,
 * associative); the topology becomes the larger one. Should the union exceed
 * SESSION_TOKEN_MAX_REGIONS, the lowest region ids are kept. */
void session_token_merge(struct session_token *dst, const struct session_token *src);

/* Raises region's lsn to at least `lsn` (adds the region when absent). */
void session_token_note(struct session_token *t, uint32_t region, uint64_t lsn);

/* The lsn recorded for region, or 0. */
uint64_t session_token_lsn(const struct session_token *t, uint32_t region);

#endif
