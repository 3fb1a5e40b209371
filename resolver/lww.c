#include "lww.h"

#include <math.h>

#include "../replication/hlc.h"

static struct lww_decision lww_make(enum lww_conflict k, enum lww_outcome o, const char *why)
{
    return (struct lww_decision){ .conflict = k, .outcome = o, .why = why };
}

/* A NaN path value compares unequal to everything and orders against
 * nothing, so two nodes deciding a against b and b against a could each
 * pick themselves; it counts as "not a number", like a missing value. */
static bool lww_has_number(const struct lww_write *w)
{
    return w->has_value && !isnan(w->value);
}

static enum lww_conflict lww_kind(const struct lww_head *head, const struct lww_write *w)
{
    if (w->is_delete || (head->exists && head->w.is_delete))
        return LWW_DELETE;
    if (version_is_none(w->base))
        return LWW_INSERT;
    return LWW_REPLACE;
}

/* Orders two conflicting writes by (HLC, region id), then by LSN: two writes
 * of one region never share an HLC, so the LSN step only matters for
 * damaged input, where it still keeps the order total and the answer the
 * same on every node. Equal on all three is one write seen twice. */
static struct lww_decision lww_by_clock(enum lww_conflict k, const struct lww_write *in,
                                        const struct lww_write *old)
{
    int c = hlc_cmp(in->hlc, in->version.region, old->hlc, old->version.region);

    if (c == 0 && in->version.lsn != old->version.lsn)
        c = in->version.lsn > old->version.lsn ? 1 : -1;
    if (c == 0)
        return lww_make(k, LWW_CONFIRMED, "same version");
    if (in->hlc != old->hlc)
        return c > 0 ? lww_make(k, LWW_CONFIRMED, "higher hlc")
                     : lww_make(k, LWW_SUPERSEDED, "head has the higher hlc");
    if (in->version.region != old->version.region)
        return c > 0 ? lww_make(k, LWW_CONFIRMED, "hlc tie, higher region id")
                     : lww_make(k, LWW_SUPERSEDED, "hlc tie, head has the higher region id");
    return c > 0 ? lww_make(k, LWW_CONFIRMED, "hlc and region tie, higher lsn")
                 : lww_make(k, LWW_SUPERSEDED, "hlc and region tie, head has the higher lsn");
}

/* Every rule here looks at the two writes alone and treats them the same
 * way, so deciding a against b and b against a pick the same winner: that
 * is what lets every node converge without talking to the others. */
static struct lww_decision lww_resolve(enum lww_conflict k, const struct lww_write *in,
                                       const struct lww_write *old)
{
    if (in->is_delete != old->is_delete)
        return lww_make(k, in->is_delete ? LWW_CONFIRMED : LWW_SUPERSEDED, "delete wins");
    if (lww_has_number(in) && lww_has_number(old) && in->value != old->value)
        return in->value > old->value ? lww_make(k, LWW_CONFIRMED, "higher path value")
                                      : lww_make(k, LWW_SUPERSEDED, "head has the higher path value");
    return lww_by_clock(k, in, old);
}

/* A key without a confirmed head has no version, yet a write's origin may
 * have seen one (base not none) that the hub never made head: it went to
 * the conflicts feed, say, or its tombstone was purged. That is still a
 * conflict, reported with its usual kind (replace, or delete), but there is
 * nothing to lose against: the incoming write is confirmed. */
struct lww_decision lww_decide(const struct lww_head *head, const struct lww_write *w)
{
    struct version head_version = head->exists ? head->w.version : VERSION_NONE;
    enum lww_conflict k;

    if (version_eq(w->base, head_version))
        return lww_make(LWW_NO_CONFLICT, LWW_CONFIRMED, "no conflict");
    k = lww_kind(head, w);
    if (!head->exists)
        return lww_make(k, LWW_CONFIRMED, "no confirmed head to lose against");
    return lww_resolve(k, w, &head->w);
}

const char *lww_conflict_name(enum lww_conflict k)
{
    switch (k) {
    case LWW_NO_CONFLICT: return "none";
    case LWW_INSERT: return "insert";
    case LWW_REPLACE: return "replace";
    case LWW_DELETE: return "delete";
    }
    return "unknown";
}
