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
#include "journal.h"

struct confirm_batch {
    uint32_t origin;
    struct repl_write *ws;       /* in LSN order; owned by the batch */
    size_t n;
    uint64_t crts_floor;         /* the hub's HLC when the batch was submitted */
    /* The hub's own write, decided in the transaction that commits it: its
     * backend calls finish out of LSN order, and it can never be a replay,
     * so the decided mark only records the highest LSN seen. */
    bool own;
    /* Results, filled on the committer thread: */
    uint64_t decided_upto;
    uint64_t first_crts, last_crts;
    size_t n_decided;
    uint64_t conflicts[LWW_DELETE + 1][2];  /* by kind and outcome */
};

/* Decides the batch's writes inside `txn`. */
int confirm_apply(MDB_txn *txn, struct journal *j, struct confirm_batch *b,
                  struct err *err) MUST_CHECK;

void confirm_batch_free(struct confirm_batch *b);

#endif
