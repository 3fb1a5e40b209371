/* feed: the conflicts feed's index and each container's fixed conflict
 * policy, in the journal's LMDB environment.
 *
 * A conflict in the feed is a confirmed-log entry of outcome "filed": its
 * crts is the conflict's id, and the entry holds everything shown about it.
 * The index lists the ones not yet dismissed, id → "container\0doc-id", so
 * that a container's feed and a key's conflicts are found without reading
 * the log. At the hub it changes in the transaction of the decision; in
 * other regions when the entry is applied.
 *
 * A container's policy (mode and LWW path) is recorded the first time the
 * region serves it and may not change afterwards: a replica decided under
 * one policy must never be re-decided under another. */
#ifndef MERIDIAN_FEED_H
#define MERIDIAN_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"

/* --- inside a write transaction (committer thread) ----------------------- */
int feed_put(MDB_txn *txn, struct journal *j, uint64_t id, const char *key, size_t klen,
             struct err *err) MUST_CHECK;
/* Removes `id`; *found says whether it was listed. */
int feed_del(MDB_txn *txn, struct journal *j, uint64_t id, bool *found,
             struct err *err) MUST_CHECK;
/* The ids listed for `key`, ascending, at most max; returns how many. */
size_t feed_ids_of_key(MDB_txn *txn, struct journal *j, const char *key, size_t klen,
                       uint64_t *ids, size_t max);

/* --- reads on the loop thread ------------------------------------------- */
/* Whether conflict `id` is listed (in txn, the caller's journal_rtxn). */
bool feed_listed(MDB_txn *txn, struct journal *j, uint64_t id);
/* Calls cb for the listed conflicts of `container` with id > after,
 * ascending, in txn (the caller's journal_rtxn, which cb may read in);
 * cb returns nonzero to stop. */
int feed_scan(MDB_txn *txn, struct journal *j, const char *container, uint64_t after,
              int (*cb)(void *arg, uint64_t id), void *arg);
/* How many conflicts are listed, all containers. */
uint64_t feed_count(struct journal *j);

/* --- container policies -------------------------------------------------- */
/* On the loop: the policy recorded for `container` into stored (cap
 * bytes); 1 when one is, 0 when none is, -1 on an LMDB error. */
int feed_policy_get(struct journal *j, const char *container, char *stored, size_t cap);
/* On the committer thread: records `policy` for `container` unless one is
 * recorded; an error when another one is. */
int feed_policy_put(MDB_txn *txn, struct journal *j, const char *container, const char *policy,
                    struct err *err) MUST_CHECK;

#endif
