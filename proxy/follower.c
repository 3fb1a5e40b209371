/* follower: a satellite follows the hub's confirmed log over one long-lived
 * peer-port stream from the last entry it holds, stores the entries (in crts
 * order, each validated) and wakes the applier. Heartbeat lines carry the
 * hub's clock and log position: the HLC adopts the former (within the drift
 * bound), lag is measured against the latter. Reconnects with backoff.
 * A joining region with nothing stored asks for a snapshot first (its first
 * line says so); a region taking over as hub follows the region it catches
 * up from (topology.c). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/log.h"
#include "node.h"
#include "repl.h"
#include "upstream.h"

#define FOLLOW_BATCH_MAX 512
#define FOLLOW_BUFFER_MAX (4u << 20)
#define FOLLOW_BACKOFF_MIN_MS 100
#define FOLLOW_BACKOFF_MAX_MS 3000

struct store_job {
    struct repl *r;
    char *lines;          /* NUL-separated "crts\tjson" records */
    size_t len, n;
    uint64_t last;
};

static void follow_store(struct repl *r);

void follower_fresh_clear(struct repl *r)
{
    while (r->fresh_head) {
        struct fresh_entry *f = r->fresh_head;
        r->fresh_head = f->next;
        clog_entry_clear(&f->e);
        free(f);
    }
    r->fresh_tail = NULL;
    r->fresh_n = 0;
}

static void follow_retry(struct repl *r, const char *why)
{
    r->follow = NULL;
    /* The stream starts again from the last stored entry and sends the
     * rest again. */
    follower_fresh_clear(r);
    if (r->closing)
        return;
    r->follow_backoff_ms = r->follow_backoff_ms ? r->follow_backoff_ms * 2 : FOLLOW_BACKOFF_MIN_MS;
    if (r->follow_backoff_ms > FOLLOW_BACKOFF_MAX_MS)
        r->follow_backoff_ms = FOLLOW_BACKOFF_MAX_MS;
    r->follow_retry_ms = node_now_ms(r->node) + r->follow_backoff_ms;
    r->follow_buf.len = 0;
    if (why)
        log_warn("following %s: %s; reconnecting in %llu ms", r->follow_name, why,
                 (unsigned long long)r->follow_backoff_ms);
}

static int store_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct store_job *sj = arg;
    for (size_t off = 0; off < sj->len;) {
        char *rec = sj->lines + off;
        size_t rl = strlen(rec);
        char *tab = strchr(rec, '\t');
        uint64_t crts = strtoull(rec, NULL, 10);
        if (!tab || journal_put_clog(txn, sj->r->j, crts, tab + 1, rl - (size_t)(tab + 1 - rec), err) < 0)
            return -1;
        off += rl + 1;
    }
    return 0;
}

static void store_done(void *arg, int rc, const char *reason)
{
    struct store_job *sj = arg;
    struct repl *r = sj->r;
    r->follow_storing = false;
    if (rc < 0) {
        log_error("storing confirmed-log entries: %s", reason);
    } else if (sj->last > r->j->stored_crts) {
        r->j->stored_crts = sj->last;
        r->unapplied_n += (int64_t)sj->n;
        applier_kick(r);
        peer_streams_pump(r); /* a region taking over as hub serves its log as it grows */
    }
    free(sj->lines);
    free(sj);
    if (rc < 0) {
        /* Entries were not stored: follow again from the last one that was,
         * so none is skipped. */
        r->follow_batch.len = 0;
        r->follow_batch_n = 0;
        r->follow_submitted = r->j->stored_crts;
        r->follow_paused = false;
        upstream_cancel(r->follow);
        follow_retry(r, NULL);
        return;
    }
    if (r->follow_batch.len && !r->closing) {
        follow_store(r);
        applier_kick(r); /* the fresh entries it holds may be applied now */
    }
    if (r->follow_paused && r->follow_batch.len < FOLLOW_BUFFER_MAX / 2) {
        r->follow_paused = false;
        upstream_resume(r->follow);
    }
}

/* Hands the batch of received lines to the committer. */
static void follow_store(struct repl *r)
{
    struct store_job *sj = calloc(1, sizeof *sj);
    if (!sj)
        return;
    *sj = (struct store_job){ r, r->follow_batch.p, r->follow_batch.len, r->follow_batch_n,
                              r->follow_batch_last };
    r->follow_batch = (struct sbuf){ 0 };
    r->follow_batch_n = 0;
    r->follow_storing = true;
    if (committer_submit(r->j->committer, store_apply, store_done, sj, false) < 0) {
        r->follow_storing = false;
        free(sj->lines);
        free(sj);
        return;
    }
    r->follow_submitted = sj->last;
}

/* A heartbeat line: the hub's clock and log position; or the line that
 * starts a snapshot. False for anything else. */
static bool follow_heartbeat(struct repl *r, const char *line, size_t len)
{
    struct err e;
    json_t *hb = json_loadb(line, len, 0, NULL);
    json_t *snap = json_object_get(hb, "snapshot");
    if (json_is_integer(snap)) {
        topology_snapshot(r, (uint64_t)json_integer_value(snap),
                          (uint64_t)json_integer_value(json_object_get(hb, "entries")));
        json_decref(hb);
        return true;
    }
    if (!json_object_get(hb, "hb")) {
        json_decref(hb);
        return false;
    }
    uint64_t clock = (uint64_t)json_integer_value(json_object_get(hb, "hb"));
    uint64_t last = (uint64_t)json_integer_value(json_object_get(hb, "last"));
    json_decref(hb);
    r->hub_last_crts = last;
    r->hub_heard_ms = node_now_ms(r->node);
    r->hub_hb_clock = clock;
    r->hub_hb_last = last;
    if (hlc_update(&r->hlc, clock, hlc_wall_ms(), &e) < 0) {
        r->stats.clock_refusals++;
        log_warn("%s: %s", r->follow_name, e.msg);
    }
    topology_heartbeat(r, last);
    return true;
}

/* One line of the stream: an entry (validated, queued for storing) or a
 * heartbeat. Entries are checked without parsing their documents; the line
 * is stored as it came. */
static int follow_line(struct repl *r, const char *line, size_t len)
{
    struct clog_entry e;
    struct err err;
    char crts[24];
    int rc = clog_entry_parse(line, len, &e, &err);
    if (rc < 0 && follow_heartbeat(r, line, len))
        return 0;
    if (rc == 0 && e.crts <= r->j->stored_crts && e.crts > r->follow_batch_last) {
        /* Held already: a hub that stopped deciding follows the new hub,
         * which caught up from its own log. */
        clog_entry_clear(&e);
        return 0;
    }
    if (rc < 0 || e.crts <= r->follow_batch_last) {
        if (rc == 0)
            clog_entry_clear(&e);
        log_warn("%s sent a bad confirmed-log line: %s", r->follow_name,
                 rc < 0 ? err.msg : "crts out of order");
        return rc < 0 ? -1 : 0;
    }
    if (e.crts > r->hub_last_crts)
        r->hub_last_crts = e.crts;
    /* The entry before it in this region's log: the last one received, or
     * a later one this region stored itself (its own decisions, while it
     * was the hub). The applier takes a fresh entry only right after it. */
    uint64_t prev = r->follow_batch_last > r->j->stored_crts ? r->follow_batch_last
                                                             : r->j->stored_crts;
    r->follow_batch_last = e.crts;
    r->follow_batch_n++;
    int n = snprintf(crts, sizeof crts, "%llu\t", (unsigned long long)e.crts);
    applier_fresh_push(r, prev, &e);
    rc = sbuf_add(&r->follow_batch, crts, (size_t)n);
    if (rc == 0)
        rc = sbuf_add(&r->follow_batch, line, len);
    if (rc == 0)
        rc = sbuf_add(&r->follow_batch, "", 1); /* the NUL separator */
    return rc;
}

static void follow_body(void *arg, const char *p, size_t n)
{
    struct repl *r = arg;
    if (sbuf_add(&r->follow_buf, p, n) < 0)
        return;
    size_t start = 0;
    const char *nl;
    while (start < r->follow_buf.len &&
           (nl = memchr(r->follow_buf.p + start, '\n', r->follow_buf.len - start))) {
        size_t i = (size_t)(nl - r->follow_buf.p);
        if (i > start)
            follow_line(r, r->follow_buf.p + start, i - start);
        start = i + 1;
    }
    memmove(r->follow_buf.p, r->follow_buf.p + start, r->follow_buf.len - start);
    r->follow_buf.len -= start;
    r->follow_backoff_ms = 0;
    if (r->follow_batch.len && !r->follow_storing)
        follow_store(r);
    if (r->fresh_head)
        applier_kick(r);
    if (r->follow_batch.len > FOLLOW_BUFFER_MAX && !r->follow_paused) {
        r->follow_paused = true;
        upstream_pause(r->follow);
    }
}

static void follow_head(void *arg, const struct upstream_head *h)
{
    struct repl *r = arg;
    if (h->status != 200)
        log_warn("%s answered the log stream with %d", r->follow_name, h->status);
    else
        log_info("following the confirmed log of %s from crts %llu", r->follow_name,
                 (unsigned long long)r->j->stored_crts);
}

static void follow_done(void *arg)
{
    follow_retry(arg, "the stream ended");
}

static void follow_error(void *arg, enum stats_upstream_error kind, const char *reason,
                         bool after_head)
{
    follow_retry(arg, reason);
}

static const struct upstream_handler follow_handler = {
    follow_head, follow_body, follow_done, follow_error,
};

void follower_kick(struct repl *r)
{
    if (r->closing || r->is_hub || !r->follow_pool || r->follow || r->follow_storing ||
        r->follow_batch.len)
        return;
    uint64_t since = r->j->stored_crts;
    bool snapshot = r->state == REGION_JOINING && since == 0;
    struct sbuf req = { 0 };
    if (sbuf_printf(&req, "GET /_meridian/v1/log?since=%llu%s HTTP/1.1\r\nHost: meridian\r\n\r\n",
                    (unsigned long long)since, snapshot ? "&snapshot=1" : "") < 0) {
        sbuf_free(&req);
        return;
    }
    r->follow_retry_ms = 0;
    r->follow_batch_last = since;
    r->follow = upstream_send(r->follow_pool, &req, false, true, &follow_handler, r);
    sbuf_free(&req);
}

void follower_stop(struct repl *r)
{
    upstream_cancel(r->follow);
    r->follow = NULL;
    r->follow_buf.len = 0;   /* a partial line of the stream ended */
    r->follow_paused = false;
}
