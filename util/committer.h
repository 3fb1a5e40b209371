/* committer: one thread that applies queued LMDB jobs in shared write
 * transactions (many jobs, one commit) and a syncer thread that sees the
 * committed ones made durable (by the next commit's fsync, or at most one
 * of its own per batch) and hands each job's result back to the event
 * loop, in order. Owns the threads and their queues, not the environment. Never
 * runs a completion off the loop thread; never lets one failing job undo
 * another (each job runs in a nested transaction). */
#ifndef MERIDIAN_COMMITTER_H
#define MERIDIAN_COMMITTER_H

#include <lmdb.h>
#include <stdbool.h>

#include "err.h"

struct event_base;
struct committer;

/* Runs on the committer thread inside a (nested) write transaction. Returns
 * 0, or -1 with a reason: then only this job's changes are rolled back. */
typedef int (*committer_apply_fn)(MDB_txn *txn, void *arg, struct err *err);

/* Runs on the loop thread once the batch holding the job is committed
 * (rc 0) or failed (rc -1, reason says why). */
typedef void (*committer_done_fn)(void *arg, int rc, const char *reason);

/* The environment must be opened with MDB_NOMETASYNC: each commit then
 * fsyncs its data pages before it writes the meta page that points to them
 * (so no power loss can leave a meta page on disk without its data). The
 * meta pages of batches holding a durable job are made durable by the next
 * commit's data fsync when the thread is committing one, else by an fsync
 * of the syncer's. */
int committer_open(struct event_base *base, MDB_env *env, struct committer **out,
                   struct err *err) MUST_CHECK;

/* Queues a job (loop thread only). The thread is told once the loop's
 * current iteration has run its other callbacks, so the jobs queued in one
 * iteration share a transaction. `durable`: its batch is fsynced before
 * `done` runs.
 * Jobs that are not durable, queued while durable ones keep coming (one
 * was committed in the last 5 ms), wait up to 1 ms for the next durable one
 * and share its transaction: one commit instead of two. */
int committer_submit(struct committer *c, committer_apply_fn apply, committer_done_fn done,
                     void *arg, bool durable) MUST_CHECK;

/* Applies what is queued, stops the thread and delivers the last
 * completions; then frees. */
void committer_close(struct committer *c);

struct committer_stats {
    unsigned long batches;      /* write transactions */
    unsigned long jobs;         /* jobs run in them */
    double commit_seconds;      /* time in their commits (page writes and the
                                   fsync of the data pages) */
    unsigned long syncs;        /* fsyncs (each covers the batches committed
                                   before it, one of them holding a durable job) */
    double sync_seconds;        /* time spent in those fsyncs */
    unsigned long covered;      /* times the syncer needed no fsync: the next
                                   commit's data fsync covered what it held */
    unsigned long gathers;      /* batches needing no fsync held for a durable job */
    double gather_seconds;      /* time they were held */
};

/* Counters so far, readable from any thread (for metrics). */
void committer_stats(const struct committer *c, struct committer_stats *out);

/* Whether the thread is alive and the last batch committed. */
int committer_check(const struct committer *c, struct err *err) MUST_CHECK;

#endif
