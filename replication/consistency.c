#include "consistency.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

int consistency_request_level(enum consistency account, bool multi_region_writes,
                              const char *hdr, size_t len, enum consistency *out,
                              struct err *err)
{
    *out = account;
    if (!hdr)
        return 0;
    char name[32];
    if (len == 0 || len >= sizeof name)
        return err_set(err, "X-Consistency-Level must be one of eventual, consistent_prefix, "
                            "session, bounded_staleness, strong");
    for (size_t i = 0; i < len; i++)
        name[i] = hdr[i] >= 'A' && hdr[i] <= 'Z' ? (char)(hdr[i] - 'A' + 'a') : hdr[i];
    name[len] = '\0';
    /* The seeds' spelling: ConsistentPrefix, BoundedStaleness. */
    if (strcmp(name, "consistentprefix") == 0)
        strcpy(name, "consistent_prefix");
    else if (strcmp(name, "boundedstaleness") == 0)
        strcpy(name, "bounded_staleness");
    enum consistency asked;
    if (conf_consistency_parse(name, &asked) < 0)
        return err_set(err, "X-Consistency-Level '%.*s' is not a level: use eventual, "
                            "consistent_prefix, session, bounded_staleness or strong",
                       (int)len, hdr);
    if (asked == CONS_STRONG && multi_region_writes)
        return err_set(err, "X-Consistency-Level 'strong' is not available with multi-region "
                            "writes (the account's level is '%s')",
                       conf_consistency_name(account));
    if (asked > account)
        return err_set(err, "X-Consistency-Level '%s' is stronger than the account's level "
                            "'%s'; a request may only relax it",
                       conf_consistency_name(asked), conf_consistency_name(account));
    *out = asked;
    return 0;
}

void hub_window_note(struct hub_window *w, uint64_t lsn)
{
    if (lsn > w->max) {
        /* LSNs between the old max and this one are not applied (yet). */
        uint64_t gap = lsn - w->max;
        if (gap >= CONSISTENCY_HUB_WINDOW)
            memset(w->bits, 0, sizeof w->bits);
        else
            for (uint64_t l = w->max + 1; l < lsn; l++)
                w->bits[(l % CONSISTENCY_HUB_WINDOW) / 8] &= (uint8_t)~(1u << (l % 8));
        w->max = lsn;
    } else if (w->max - lsn >= CONSISTENCY_HUB_WINDOW) {
        return;
    }
    w->bits[(lsn % CONSISTENCY_HUB_WINDOW) / 8] |= (uint8_t)(1u << (lsn % 8));
}

bool hub_window_has(const struct hub_window *w, uint64_t lsn)
{
    if (lsn > w->max)
        return false;
    if (w->max - lsn >= CONSISTENCY_HUB_WINDOW)
        return true;
    return w->bits[(lsn % CONSISTENCY_HUB_WINDOW) / 8] & (1u << (lsn % 8));
}

static bool has_write(const struct region_progress *p, uint32_t origin, uint64_t lsn)
{
    if (origin == p->self)
        return lsn < p->next_lsn;
    if (origin == p->hub && p->hub_applied)
        return hub_window_has(p->hub_applied, lsn);
    return session_token_lsn(p->applied, origin) >= lsn;
}

bool consistency_satisfies(const struct region_progress *p, const struct session_token *t)
{
    if (t->confirmed > p->applied->confirmed)
        return false;
    for (uint32_t i = 0; i < t->n; i++)
        if (!has_write(p, t->v[i].region, t->v[i].lsn))
            return false;
    return true;
}

static void add_candidate(struct read_decision *d, uint32_t region, uint32_t self)
{
    if (region == self || region == 0 || d->n == CONSISTENCY_MAX_CANDIDATES)
        return;
    for (size_t i = 0; i < d->n; i++)
        if (d->candidates[i] == region)
            return;
    d->candidates[d->n++] = region;
}

static struct read_decision session_route(const struct session_token *t,
                                          const struct region_progress *p, bool waited,
                                          bool forwarded)
{
    struct read_decision d = { READ_LOCAL, { 0 }, 0, "session satisfied here" };
    if (consistency_satisfies(p, t))
        return d;
    if (forwarded)
        return (struct read_decision){ READ_REFUSE, { 0 }, 0, "forwarded, not satisfied here" };
    if (!waited)
        return (struct read_decision){ READ_WAIT, { 0 }, 0, "waiting for apply" };
    /* The regions that hold what is missing: a tentative write is at its
     * origin; anything decided is at the hub. */
    for (uint32_t i = 0; i < t->n; i++)
        if (!has_write(p, t->v[i].region, t->v[i].lsn))
            add_candidate(&d, t->v[i].region, p->self);
    add_candidate(&d, p->hub, p->self);
    d.where = d.n ? READ_FORWARD : READ_REFUSE;
    d.why = d.n ? "forwarded to a region that has the session" : "no region can serve the session";
    return d;
}

struct read_decision consistency_route(enum consistency level, const struct session_token *t,
                                       const struct region_progress *p, bool waited,
                                       bool forwarded)
{
    struct read_decision d = { READ_LOCAL, { 0 }, 0, "local" };
    bool at_hub = p->self == p->hub;
    switch (level) {
    case CONS_EVENTUAL:
    case CONS_CONSISTENT_PREFIX:
        return d;
    case CONS_SESSION:
        return session_route(t, p, waited, forwarded);
    case CONS_BOUNDED_STALENESS:
        if (at_hub || (p->lag_known && p->lag_versions <= p->max_lag_versions &&
                       p->lag_ms <= p->max_lag_ms))
            return (struct read_decision){ READ_LOCAL, { 0 }, 0, "within the staleness bound" };
        break;
    case CONS_STRONG:
        if (at_hub)
            return (struct read_decision){ READ_LOCAL, { 0 }, 0, "strong: the hub" };
        break;
    }
    if (forwarded)
        return (struct read_decision){ READ_REFUSE, { 0 }, 0, "forwarded, not the hub" };
    d = (struct read_decision){ READ_FORWARD, { p->hub }, 1,
                                level == CONS_STRONG ? "strong: read at the hub"
                                                     : "beyond the staleness bound" };
    return d;
}

bool consistency_backlog_exceeded(const struct region_progress *p, uint64_t backlog,
                                  uint64_t age_ms)
{
    if (p->self == p->hub)
        return false;
    return backlog > p->max_lag_versions || (backlog && age_ms > p->max_lag_ms);
}

const char *consistency_where_name(enum read_where w)
{
    static const char *const names[] = { "local", "wait", "forward", "refuse" };
    return (unsigned)w <= READ_REFUSE ? names[w] : "?";
}
