#include "version.h"

#include <inttypes.h>
#include <stdio.h>

void version_format(struct version v, char *buf)
{
    if (version_is_none(v)) {
        buf[0] = '\0';
        return;
    }
    snprintf(buf, VERSION_TEXT_MAX, "%" PRIu32 ":%" PRIu64, v.region, v.lsn);
}

/* Parses s[0..len) as a plain decimal no larger than max: digits only (no
 * sign, no space), at least one, and no leading zero, so that every version
 * has exactly one text form (it is compared as an ETag). 0 or -1. */
static int version_parse_number(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t n = 0;

    if (len == 0 || (len > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9 || n > (max - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *out = n;
    return 0;
}

/* "" is the text of "no version", so it parses to VERSION_NONE. Otherwise
 * both parts are required and must name a real write: lsn >= 1 (region 0 is
 * the hub's resolver).
 * `out` is left untouched on failure. */
int version_parse(const char *s, size_t len, struct version *out)
{
    size_t colon = 0;
    uint64_t region, lsn;

    if (len == 0) {
        *out = VERSION_NONE;
        return 0;
    }
    while (colon < len && s[colon] != ':')
        colon++;
    if (colon == len)
        return -1;
    if (version_parse_number(s, colon, UINT32_MAX, &region) < 0 ||
        version_parse_number(s + colon + 1, len - colon - 1, UINT64_MAX, &lsn) < 0)
        return -1;
    if (lsn == 0)
        return -1;
    out->region = (uint32_t)region;
    out->lsn = lsn;
    return 0;
}
