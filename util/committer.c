#include "committer.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Completions told per loop callback. */
#define COMMITTER_DELIVER_SLICE 32
/* A batch of jobs that need no fsync waits up to GATHER_WAIT_NS for a
 * durable one when a durable batch was done less than GATHER_RECENT_NS ago. */
#define GATHER_WAIT_NS 1000000L
#define GATHER_RECENT_NS 5000000u

struct job {
    struct job *next;
    committer_apply_fn apply;
    committer_done_fn done;
    void *arg;
    bool durable;
    size_t sync_txnid;          /* its batch's transaction, when the batch
                                   committed and holds a durable job; else 0 */
    int rc;
    char reason[600];
};

struct job_queue {
    struct job *head, *tail;
};

struct committer {
    MDB_env *env;
    pthread_t thread;
    pthread_t syncer;           /* sees committed batches' meta pages made
                                   durable, while the thread commits the next */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_cond_t sync_cv;     /* the syncer's: batches to sync, or stop */
    struct job_queue queued;    /* loop → thread */
    struct job_queue committed; /* thread → syncer, in commit order */
    struct job_queue finished;  /* syncer → loop */
    struct job_queue delivering; /* taken by the loop, not yet told (loop only) */
    bool stopping;
    bool sync_stopping;         /* the thread has stopped: the syncer may too */
    int wake_fd;                /* eventfd: completions are waiting */
    struct event *wake_ev;
    struct event *kick_ev;      /* tells the thread of the jobs queued in this loop
                                   iteration, once, after its other callbacks */
    bool kick_pending;          /* loop only */
    atomic_ulong batches, jobs, commit_ns, syncs, sync_ns, covered, gathers, gather_ns;
    size_t queued_durable;      /* durable jobs among `queued` */
    uint64_t last_durable_ns;   /* when the last durable batch was done (thread only) */
    atomic_int failed;          /* the last batch failed to commit */
    size_t written_txnid;       /* the last transaction whose commit wrote and
                                   fsynced its pages (under mu) */
    bool busy;                  /* the thread holds a batch (under mu) */
    char last_error[256];       /* under mu */
};

static uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void queue_push(struct job_queue *q, struct job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

/* Moves everything in `from` to the end of `to` (no walk: the queues are
 * handed on under the mutex). */
static void queue_move(struct job_queue *to, struct job_queue *from)
{
    if (!from->head)
        return;
    if (to->tail)
        to->tail->next = from->head;
    else
        to->head = from->head;
    to->tail = from->tail;
    from->head = from->tail = NULL;
}

static void job_run(MDB_txn *parent, struct job *j)
{
    MDB_txn *child;
    struct err e = { { 0 } };
    int rc = mdb_txn_begin(mdb_txn_env(parent), parent, 0, &child);
    if (rc != 0) {
        j->rc = -1;
        snprintf(j->reason, sizeof j->reason, "begin: %s", mdb_strerror(rc));
        return;
    }
    if (j->apply(child, j->arg, &e) < 0) {
        mdb_txn_abort(child);
        j->rc = -1;
        snprintf(j->reason, sizeof j->reason, "%s", e.msg);
        return;
    }
    rc = mdb_txn_commit(child);
    j->rc = rc ? -1 : 0;
    if (rc)
        snprintf(j->reason, sizeof j->reason, "%s", mdb_strerror(rc));
}

static void batch_fail(struct job *batch, const char *why)
{
    for (struct job *j = batch; j; j = j->next) {
        j->rc = -1;
        snprintf(j->reason, sizeof j->reason, "%s", why);
    }
}

static void note_error(struct committer *c, const char *why)
{
    pthread_mutex_lock(&c->mu);
    snprintf(c->last_error, sizeof c->last_error, "%s", why);
    pthread_mutex_unlock(&c->mu);
    atomic_store(&c->failed, 1);
}

/* The fsync failed: what it was to make durable fails (the jobs of batches
 * that needed none keep their result). */
static void sync_failed(struct committer *c, struct job *jobs, int rc)
{
    char why[200];
    snprintf(why, sizeof why, "fsync failed: %s", mdb_strerror(rc));
    for (struct job *j = jobs; j; j = j->next)
        if (j->sync_txnid) {
            j->rc = -1;
            snprintf(j->reason, sizeof j->reason, "%s", why);
        }
    note_error(c, why);
}

/* One transaction for everything queued; its commit fsyncs the data pages
 * before it writes the meta page, which the syncer then sees made durable
 * (the jobs carry sync_txnid when one asked for it). Returns the
 * transaction's id if the commit wrote (and so fsynced) anything, else 0. */
static size_t batch_apply(struct committer *c, struct job *batch)
{
    MDB_txn *txn;
    bool durable = false;
    size_t id = 0;
    int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    if (rc == 0) {
        for (struct job *j = batch; j; j = j->next) {
            job_run(txn, j);
            durable |= j->durable;
            atomic_fetch_add(&c->jobs, 1);
        }
        uint64_t t0 = mono_ns();
        id = mdb_txn_id(txn);
        rc = mdb_txn_commit(txn); /* writes the pages, fsyncs them, writes the meta page */
        atomic_fetch_add(&c->commit_ns, (unsigned long)(mono_ns() - t0));
    }
    if (rc != 0) {
        char why[200];
        snprintf(why, sizeof why, "commit failed: %s", mdb_strerror(rc));
        batch_fail(batch, why);
        note_error(c, why);
    } else {
        atomic_store(&c->failed, 0);
    }
    atomic_fetch_add(&c->batches, 1);
    for (struct job *j = batch; j; j = j->next)
        j->sync_txnid = rc == 0 && durable ? id : 0;
    MDB_envinfo info;
    /* A commit with nothing to write writes nothing, and fsyncs nothing. */
    return rc == 0 && mdb_env_info(c->env, &info) == 0 && info.me_last_txnid == id ? id : 0;
}

static void wake(struct committer *c)
{
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0) {
        /* The counter cannot overflow in practice; the loop drains anyway. */
    }
}

/* The syncer: takes every job committed so far and, when one of their
 * batches asked for it, makes their meta pages durable: by the thread's
 * next commit if the thread is committing (its data fsync comes after them),
 * else with one fsync of its own; then hands them to the loop in commit
 * order. So a batch's meta page costs no fsync of its own under load, and a
 * batch that needs no fsync still waits for the ones committed before it. */
static void *syncer_main(void *arg)
{
    struct committer *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->committed.head && !c->sync_stopping)
            pthread_cond_wait(&c->sync_cv, &c->mu);
        struct job_queue taken = { 0 };
        queue_move(&taken, &c->committed);
        if (!taken.head)
            break;
        size_t upto = 0; /* the last transaction whose meta page must be durable */
        for (struct job *j = taken.head; j; j = j->next)
            upto = j->sync_txnid > upto ? j->sync_txnid : upto;
        /* The thread's next commit fsyncs its data pages after these meta
         * pages were written: while it is committing, wait for that rather
         * than fsync beside it. */
        while (upto && c->written_txnid <= upto && c->busy)
            pthread_cond_wait(&c->sync_cv, &c->mu);
        bool durable = upto && c->written_txnid <= upto;
        if (upto && !durable)
            atomic_fetch_add(&c->covered, 1);
        pthread_mutex_unlock(&c->mu);
        if (durable) {
            uint64_t t0 = mono_ns();
            int rc = mdb_env_sync(c->env, 1);
            atomic_fetch_add(&c->syncs, 1);
            atomic_fetch_add(&c->sync_ns, (unsigned long)(mono_ns() - t0));
            if (rc != 0)
                sync_failed(c, taken.head, rc);
        }
        pthread_mutex_lock(&c->mu);
        queue_move(&c->finished, &taken);
        wake(c);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Sets a thread's stop flag, tells it, and waits for it to finish what it
 * holds. */
static void stop_and_join(struct committer *c, bool *flag, pthread_cond_t *cv, pthread_t t)
{
    pthread_mutex_lock(&c->mu);
    *flag = true;
    pthread_cond_signal(cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(t, NULL);
}

/* Once the thread has stopped: the syncer finishes what was committed. */
static void syncer_stop(struct committer *c)
{
    stop_and_join(c, &c->sync_stopping, &c->sync_cv, c->syncer);
}

static void *committer_main(void *arg)
{
    struct committer *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->queued.head && !c->stopping)
            pthread_cond_wait(&c->cv, &c->mu);
        /* Only jobs that need no fsync, while durable ones keep coming: wait a
         * little for the next durable one, so both share a transaction. */
        if (!c->queued_durable && !c->stopping && mono_ns() - c->last_durable_ns < GATHER_RECENT_NS) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += GATHER_WAIT_NS;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            uint64_t t0 = mono_ns();
            while (!c->queued_durable && !c->stopping &&
                   pthread_cond_timedwait(&c->cv, &c->mu, &until) == 0) {
            }
            atomic_fetch_add(&c->gathers, 1);
            atomic_fetch_add(&c->gather_ns, (unsigned long)(mono_ns() - t0));
        }
        bool durable = c->queued_durable > 0;
        c->queued_durable = 0;
        struct job_queue batch = { 0 };
        queue_move(&batch, &c->queued);
        if (!batch.head && c->stopping)
            break;
        c->busy = true;
        pthread_mutex_unlock(&c->mu);
        size_t written = batch_apply(c, batch.head);
        pthread_mutex_lock(&c->mu);
        c->busy = false;
        if (written)
            c->written_txnid = written;
        if (durable)
            c->last_durable_ns = mono_ns();
        queue_move(&c->committed, &batch);
        pthread_cond_signal(&c->sync_cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Tells the callers of up to `max` finished jobs, in the order they were
 * submitted. Returns whether more are waiting. */
static bool committer_deliver(struct committer *c, size_t max)
{
    pthread_mutex_lock(&c->mu);
    queue_move(&c->delivering, &c->finished);
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < max && c->delivering.head; i++) {
        struct job *done = c->delivering.head;
        c->delivering.head = done->next;
        if (!c->delivering.head)
            c->delivering.tail = NULL;
        if (done->done)
            done->done(done->arg, done->rc, done->reason);
        free(done);
    }
    return c->delivering.head != NULL;
}

/* A batch's completions are told a slice at a time: what is left waits for
 * the next loop iteration (the eventfd is made readable again), so that a
 * batch of hundreds of jobs does not hold up the loop's other callbacks. */
static void committer_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0) {
        /* EAGAIN: another wake already consumed the count. */
    }
    if (committer_deliver(arg, COMMITTER_DELIVER_SLICE))
        wake(arg);
}

/* One wake-up of the thread for all the jobs a loop iteration queued: a
 * burst of requests read together goes into one transaction, and the loop
 * does not hand the CPU to the thread (and back) for every job. */
static void committer_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct committer *c = arg;
    c->kick_pending = false;
    pthread_mutex_lock(&c->mu);
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

int committer_open(struct event_base *base, MDB_env *env, struct committer **out,
                   struct err *err)
{
    struct committer *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(err, "out of memory");
    c->env = env;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&c->sync_cv, NULL);
    c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->wake_fd < 0)
        goto fail;
    c->wake_ev = event_new(base, c->wake_fd, EV_READ | EV_PERSIST, committer_wake_cb, c);
    if (!c->wake_ev || event_add(c->wake_ev, NULL) < 0)
        goto fail_fd;
    c->kick_ev = event_new(base, -1, 0, committer_kick_cb, c);
    if (!c->kick_ev || pthread_create(&c->syncer, NULL, syncer_main, c) != 0)
        goto fail_ev;
    if (pthread_create(&c->thread, NULL, committer_main, c) != 0) {
        syncer_stop(c);
        goto fail_ev;
    }
    *out = c;
    return 0;
fail_ev:
    if (c->kick_ev)
        event_free(c->kick_ev);
    event_free(c->wake_ev);
fail_fd:
    close(c->wake_fd);
fail:
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    pthread_cond_destroy(&c->sync_cv);
    free(c);
    return err_set(err, "cannot start a committer thread");
}

int committer_submit(struct committer *c, committer_apply_fn apply, committer_done_fn done,
                     void *arg, bool durable)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return -1;
    j->apply = apply;
    j->done = done;
    j->arg = arg;
    j->durable = durable;
    pthread_mutex_lock(&c->mu);
    queue_push(&c->queued, j);
    c->queued_durable += durable;
    pthread_mutex_unlock(&c->mu);
    if (!c->kick_pending) {
        c->kick_pending = true;
        event_active(c->kick_ev, 0, 0);
    }
    return 0;
}

void committer_close(struct committer *c)
{
    if (!c)
        return;
    stop_and_join(c, &c->stopping, &c->cv, c->thread);
    syncer_stop(c);
    committer_deliver(c, SIZE_MAX);
    event_free(c->kick_ev);
    event_free(c->wake_ev);
    close(c->wake_fd);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    pthread_cond_destroy(&c->sync_cv);
    free(c);
}

void committer_stats(const struct committer *c, struct committer_stats *out)
{
    struct committer *m = (struct committer *)c;
    *out = (struct committer_stats){ .batches = atomic_load(&m->batches),
                                     .jobs = atomic_load(&m->jobs),
                                     .commit_seconds = atomic_load(&m->commit_ns) / 1e9,
                                     .syncs = atomic_load(&m->syncs),
                                     .sync_seconds = atomic_load(&m->sync_ns) / 1e9,
                                     .covered = atomic_load(&m->covered),
                                     .gathers = atomic_load(&m->gathers),
                                     .gather_seconds = atomic_load(&m->gather_ns) / 1e9 };
}

int committer_check(const struct committer *c, struct err *err)
{
    struct committer *m = (struct committer *)c;
    if (!atomic_load(&m->failed))
        return 0;
    pthread_mutex_lock(&m->mu);
    err_set(err, "%s", m->last_error);
    pthread_mutex_unlock(&m->mu);
    return -1;
}
