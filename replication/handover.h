/* handover: what a change of topology needs from the journal. A region
 * taking over as hub rebuilds the hub's state (confirmed heads, per-origin
 * "decided up to" marks, the conflicts feed, the log's last crts) from the
 * confirmed log it holds, and decides its own writes that no hub decided,
 * in one transaction. A region joining the cluster gets a snapshot: the
 * log entries that make the confirmed state at one position (each key's
 * head entry and the conflicts still in the feed), then the log after it.
 * Storage only: which hub, when and from whom is proxy/topology.c's. */
#ifndef MERIDIAN_HANDOVER_H
#define MERIDIAN_HANDOVER_H

#include <stddef.h>
#include <stdint.h>

#include "confirm.h"
#include "journal.h"

struct handover_result {
    uint64_t entries;        /* log entries read */
    uint64_t heads;          /* keys with a confirmed head */
    uint64_t last_crts;      /* the log's last entry: new decisions come after it */
    size_t own_decided;      /* own writes decided at the takeover */
};

/* Runs on the committer thread. Rebuilds the hub's state from the log in
 * `txn`, then decides this region's committed journal writes that the log
 * has no decision on (in LSN order; `b` carries the policies and worker of
 * the decision, its writes are filled here). Records the region as the
 * hub of its journal ("hub_of" = region). */
int handover_take(MDB_txn *txn, struct journal *j, uint32_t region, struct confirm_batch *b,
                  struct handover_result *out, struct err *err) MUST_CHECK;

/* Runs on the committer thread: records whose hub state the journal holds
 * ("hub_of"): `region` for the hub of a new cluster, 0 for a hub that
 * stopped deciding (committed after every decision queued before it). */
int handover_mark(MDB_txn *txn, struct journal *j, uint32_t region, struct err *err) MUST_CHECK;

/* Whether the journal's hub state is this region's (set by handover_take,
 * or for a region that was hub from the start, see proxy/topology.c). */
uint32_t handover_hub_of(struct journal *j);

/* On the loop: the crts of the entries of a snapshot, ascending and
 * distinct (malloc'd into *out, *n of them), as of the log position *upto.
 * -1 when LMDB or memory fails. */
int handover_snapshot(struct journal *j, uint64_t **out, size_t *n, uint64_t *upto);

#endif
