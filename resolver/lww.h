/* lww: conflict detection and last-writer-wins resolution, as a pure
 * function of (head, incoming, policy). Every node computes the same answer
 * from the same inputs: no clock, no I/O, no randomness. */
#ifndef MERIDIAN_LWW_H
#define MERIDIAN_LWW_H

#include <stdbool.h>
#include <stdint.h>

#include "../replication/version.h"

/* One write as the decision sees it. */
struct lww_write {
    struct version version;
    struct version base;     /* the version this write replaced, as its origin saw it */
    uint64_t hlc;
    bool is_delete;
    bool has_value;          /* the LWW path held a number */
    double value;            /* that number */
};

/* The confirmed head of a key; exists == false for a key never confirmed. */
struct lww_head {
    bool exists;
    struct lww_write w;      /* is_delete: the head is a tombstone */
};

enum lww_conflict { LWW_NO_CONFLICT, LWW_INSERT, LWW_REPLACE, LWW_DELETE };

enum lww_outcome {
    LWW_CONFIRMED,    /* incoming becomes the head */
    LWW_SUPERSEDED,   /* the head stays; incoming lost */
    /* The outcomes of custom resolution (mode: custom), decided by the hub's
     * confirm step, never by lww_decide: */
    LWW_RESOLVED,     /* a procedure's result is the new head; incoming lost */
    LWW_FILED,        /* the head stays; incoming goes to the conflicts feed */
    LWW_DISMISSED,    /* not a write's outcome: a conflicts-feed entry removed */
};
#define LWW_OUTCOMES (LWW_DISMISSED + 1)

struct lww_decision {
    enum lww_conflict conflict;
    enum lww_outcome outcome;
    const char *why;  /* static text: "no conflict", "delete wins", "higher /version", ... */
};

/* Decides incoming `w` against `head`:
 * - w.base equals the head's version (or both absent): no conflict, confirmed;
 * - otherwise a conflict, of kind delete when either side is a delete,
 *   insert when w.base is absent, replace otherwise; resolved by: a delete
 *   wins over an insert or replace; else the higher path value when both
 *   have one, else the higher HLC; ties broken by (HLC, region id).
 * A NaN path value counts as missing. When the key has no head but w.base is
 * set (the origin saw a version the hub never made head), the conflict keeps
 * its kind and incoming is confirmed: there is nothing to lose against.
 * Symmetric: a against head b and b against head a pick the same winner. */
struct lww_decision lww_decide(const struct lww_head *head, const struct lww_write *w);

const char *lww_conflict_name(enum lww_conflict k);

#endif
