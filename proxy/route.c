#include "route.h"

#include <stdlib.h>
#include <string.h>

#define OPS_PREFIX "/_meridian/"

size_t route_path_len(const char *target, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (target[i] == '?' || target[i] == '#')
            return i;
    return len;
}

static bool has_prefix(const char *s, size_t len, const char *prefix, size_t plen)
{
    return len >= plen && memcmp(s, prefix, plen) == 0;
}

struct route_result route_match(const struct conf *conf, const char *target, size_t len)
{
    struct route_result r = { .kind = ROUTE_UNMATCHED };
    size_t plen = route_path_len(target, len);
    if (has_prefix(target, plen, OPS_PREFIX, sizeof OPS_PREFIX - 1)) {
        r.kind = ROUTE_OPS;
        return r;
    }
    /* Routes never overlap (conf validates it), so the first match is the only one. */
    for (size_t i = 0; i < conf->n_containers; i++) {
        const struct conf_container *c = &conf->containers[i];
        if (has_prefix(target, plen, c->route, strlen(c->route))) {
            r.kind = ROUTE_CONTAINER;
            r.container = c;
            return r;
        }
    }
    return r;
}

uint64_t route_query_u64(const char *target, const char *name, uint64_t dflt, bool *bad)
{
    const char *q = strchr(target, '?');
    size_t nl = strlen(name);
    while (q) {
        q++;
        if (strncmp(q, name, nl) == 0 && q[nl] == '=') {
            const char *v = q + nl + 1;
            char *end;
            unsigned long long n = strtoull(v, &end, 10);
            /* digits only: strtoull would take a sign or spaces */
            if (*v < '0' || *v > '9' || (*end && *end != '&' && *end != '#'))
                *bad = true;
            return n;
        }
        q = strchr(q, '&');
    }
    return dflt;
}
