/* version: names one write of one key: (origin region id, origin LSN).
 * Pure value type with its text form "REGION:LSN" (as in X-Meridian-Version).
 * Region 0 / LSN 0 means "no version" (a key never written). Region 0 with
 * an LSN names a document made by the hub's conflict-resolution procedure:
 * "0:CRTS", the confirmed-log position of the decision that made it. */
#ifndef MERIDIAN_VERSION_H
#define MERIDIAN_VERSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct version {
    uint32_t region;
    uint64_t lsn;
};

#define VERSION_NONE ((struct version){ 0, 0 })
#define VERSION_TEXT_MAX 32

static inline bool version_is_none(struct version v) { return v.region == 0 && v.lsn == 0; }
static inline bool version_eq(struct version a, struct version b)
{
    return a.region == b.region && a.lsn == b.lsn;
}

/* Writes "REGION:LSN" (or "" for none) into buf of VERSION_TEXT_MAX bytes. */
void version_format(struct version v, char *buf);
/* Parses "REGION:LSN" (plain decimals, lsn >= 1, no sign, space
 * or leading zero); "" parses to VERSION_NONE. -1 when malformed, and then
 * `out` is untouched. */
int version_parse(const char *s, size_t len, struct version *out);

#endif
