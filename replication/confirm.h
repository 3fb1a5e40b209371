/* confirm: the hub's decisions. For each incoming write, in its origin's LSN
 * order, compares its base with the confirmed head, resolves a conflict by
 * the container's policy (lww), and appends the decision to the confirmed
 * log with a strictly increasing crts, in the same transaction as the
 * origin's "decided up to" mark, so a replayed batch is a no-op. Runs on the
 * committer thread; never decides one write twice. */
#ifndef MERIDIAN_CONFIRM_H
#define MERIDIAN_CONFIRM_H

#include <stddef.h>
#include <stdint.h>

#include "../resolver/lww.h"
#include "../resolver/procedure.h"
#include "journal.h"

/* A container's conflict policy as the hub applies it. */
struct confirm_policy {
    bool custom;                 /* mode custom: conflicts are never LWW-resolved */
    const char *procedure;       /* absolute path of the resolver, or NULL: file every conflict */
    const char *metadata_field;  /* where the resolved document's metadata goes */
    struct procedure_limits limits;
};

/* The policy of `container`, or NULL for last-writer-wins. Called on the
 * committer thread. */
typedef const struct confirm_policy *(*confirm_policy_fn)(void *ctx, const char *container);

struct confirm_batch {
    uint32_t origin;
    struct repl_write *ws;       /* in LSN order; owned by the batch */
    size_t n;
    uint64_t crts_floor;         /* the hub's HLC when the batch was submitted */
    /* The hub's own write, decided in the transaction that commits it: its
     * backend calls finish out of LSN order, and it can never be a replay,
     * so the decided mark only records the highest LSN seen. */
    bool own;
    /* Keep the decisions (in `decided`) for the caller: the hub's applier
     * takes them from memory instead of reading them back from the log. */
    bool keep_decided;
    /* Custom resolution (NULL policy: every container is last-writer-wins). */
    confirm_policy_fn policy;
    void *policy_ctx;
    const char *const *worker_argv;  /* how to start a procedure worker */
    /* Results, filled on the committer thread: */
    uint64_t decided_upto;
    uint64_t first_crts, last_crts;
    size_t n_decided;
    uint64_t conflicts[LWW_DELETE + 1][LWW_OUTCOMES];  /* by kind and outcome */
    uint32_t procedure_runs, procedure_failures;
    uint64_t procedure_ms;           /* time spent in procedures */
    struct confirm_decided *decided; /* keep_decided: n_kept of them, in crts order */
    size_t n_kept;
};

/* A decision as written to the log, and the crts of the log entry before it. */
struct confirm_decided {
    uint64_t prev;
    struct clog_entry e;             /* owned */
};

/* Decides the batch's writes inside `txn`. A conflict in a custom container
 * runs its procedure here, synchronously and bounded by its limits, so that
 * the resolution and the decision commit together: a hub that dies during a
 * resolution decides that conflict again after restart, and once. */
int confirm_apply(MDB_txn *txn, struct journal *j, struct confirm_batch *b,
                  struct err *err) MUST_CHECK;

void confirm_batch_free(struct confirm_batch *b);

#endif
