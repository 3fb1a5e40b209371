/* shipper: a satellite's committed journal entries go to the hub in LSN
 * order, in batches, over the peer port; retried with backoff for as long as
 * it takes. The hub answers with the highest LSN it has decided; replays are
 * no-ops there. An entry still in the intent state stops the batch: nothing
 * after it may be decided first. */
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/log.h"
#include "backend.h"
#include "node.h"
#include "repl.h"

#define SHIP_BATCH_MAX 1024
/* The hub's peer port takes bodies up to 4 x max_body_bytes (downstream.c). */
#define SHIP_BATCH_BYTES (1024 * 1024)
#define SHIP_BACKOFF_MIN_MS 100
#define SHIP_BACKOFF_MAX_MS 5000

/* Writes framed per loop callback: a batch of a thousand is built over
 * several loop iterations, so this region's clients are served in between. */
#define SHIP_SLICE 128

/* Frames of the latest committed writes kept in memory: about two batches. */
#define SHIP_KEPT_MAX (2 * SHIP_BATCH_MAX)
#define SHIP_KEPT_BYTES (2 * SHIP_BATCH_BYTES)

/* This region's latest committed writes, framed when they were committed,
 * so that the shipper need not read them back from the journal (and the
 * documents from the store): LSNs first_lsn .. first_lsn + n - 1, all
 * committed, without a gap. The journal stays the truth: whatever is not
 * here (after a restart, a gap, an aborted LSN, more than fits) is read
 * from it as before. */
struct ship_kept {
    struct sbuf text;  /* the frames, joined by ',' */
    size_t *ends;      /* ends[i]: where frame i ends in text */
    size_t n, max;     /* max: SHIP_KEPT_MAX, or MERIDIAN_DEBUG_SHIP_KEPT_MAX for tests */
    uint64_t first_lsn;
    bool full;         /* writes were committed and not kept: keep nothing
                          more until what is kept has gone */
};

struct ship_collect {
    struct sbuf body;            /* the batch's JSON text, being built */
    size_t n;
    size_t max_bytes;
    uint64_t last_lsn;           /* of the last write framed */
    uint32_t gen;                /* r->ship_gen when the batch was started */
    bool stopped;                /* an intent, or the batch is full */
    bool failed;
};

/* Appends the write's frame to `text`, after a ',' unless it is the first
 * one; a frame other than the first that would take `text` to `limit`
 * bytes is left out (1). -1: out of memory, or a write that cannot be
 * framed. */
static int frame_append(struct sbuf *text, bool first, const struct repl_write *w, size_t limit)
{
    char *frame = repl_write_frame(w);
    if (!frame)
        return -1;
    size_t fl = strlen(frame);
    int rc = 0;
    if (!first && text->len + 1 + fl >= limit)
        rc = 1;
    else if ((!first && sbuf_add(text, ",", 1) < 0) || sbuf_add(text, frame, fl) < 0)
        rc = -1;
    free(frame);
    return rc;
}

static int ship_collect_one(void *arg, const struct repl_write *w)
{
    struct ship_collect *sc = arg;
    sc->stopped = true;
    if (w->state != WRITE_COMMITTED)
        return 1;
    int rc = frame_append(&sc->body, sc->n == 0, w, sc->max_bytes);
    if (rc != 0) {
        sc->failed = rc < 0; /* else: the next batch's first */
        return 1;
    }
    sc->n++;
    sc->last_lsn = w->lsn;
    sc->stopped = false;
    return 0;
}

static void ship_backoff(struct repl *r, const char *why)
{
    uint64_t now = node_now_ms(r->node);
    r->stats.ship_errors++;
    r->ship_backoff_ms = r->ship_backoff_ms ? r->ship_backoff_ms * 2 : SHIP_BACKOFF_MIN_MS;
    if (r->ship_backoff_ms > SHIP_BACKOFF_MAX_MS)
        r->ship_backoff_ms = SHIP_BACKOFF_MAX_MS;
    r->ship_retry_ms = now + r->ship_backoff_ms;
    if (r->ship_backoff_ms >= 1000 || r->stats.ship_errors < 5)
        log_warn("shipping to hub %s: %s; retrying in %llu ms", r->hub->name, why,
                 (unsigned long long)r->ship_backoff_ms);
}

struct ship_call {
    struct repl *r;
    uint32_t gen;
};

static void ship_answer(void *arg, const struct backend_answer *a)
{
    struct ship_call *sc = arg;
    struct repl *r = sc->r;
    bool current = sc->gen == r->ship_gen;
    free(sc);
    if (!current)
        return; /* shipped to an earlier hub; the new one gets everything again */
    r->ship_inflight = false;
    if (r->closing)
        return;
    if (a->status == 409) {
        /* Not the hub (yet): a hub change in progress. Soon again. */
        r->ship_backoff_ms = 0;
        r->ship_retry_ms = node_now_ms(r->node) + SHIP_BACKOFF_MIN_MS;
        return;
    }
    if (a->status != 200) {
        char why[600];
        snprintf(why, sizeof why, "%s%.*s", a->status ? "hub answered: " : "",
                 a->status ? (int)a->body_len : (int)strlen(a->error ? a->error : ""),
                 a->status ? a->body : (a->error ? a->error : ""));
        ship_backoff(r, why);
        return;
    }
    json_t *root = json_loadb(a->body, a->body_len, 0, NULL);
    json_t *upto = json_object_get(root, "decided_upto");
    if (!json_is_integer(upto)) {
        json_decref(root);
        ship_backoff(r, "hub's answer has no decided_upto");
        return;
    }
    uint64_t decided = (uint64_t)json_integer_value(upto);
    bool progress = decided > r->ship_after;
    if (progress)
        r->ship_after = decided;
    if (json_array_size(json_object_get(root, "rejected")))
        ship_backoff(r, "hub rejected a frame (see the hub's log)");
    else {
        r->ship_backoff_ms = 0;
        r->ship_retry_ms = 0;
    }
    json_decref(root);
    if (progress)
        shipper_kick(r);
}

static void ship_free(struct ship_collect *sc)
{
    sbuf_free(&sc->body);
    free(sc);
}

static void ship_send(struct repl *r, struct ship_collect *sc)
{
    size_t n = sc->n;
    if (!sc->failed && n && sbuf_add(&sc->body, "]}", 2) < 0)
        sc->failed = true;
    struct ship_call *call = sc->failed || n == 0 ? NULL : malloc(sizeof *call);
    if (!call) {
        if (sc->failed || n)
            ship_backoff(r, "out of memory");
        ship_free(sc);
        return;
    }
    *call = (struct ship_call){ r, r->ship_gen };
    r->ship_inflight = true;
    r->ship_retry_ms = 0;
    r->stats.ship_batches++;
    r->stats.ship_writes += n;
    backend_http(r->node, r->hub_pool, "POST", "/_meridian/v1/ship", sc->body.p, sc->body.len,
                 ship_answer, call);
    ship_free(sc);
}

static bool ship_blocked(struct repl *r)
{
    return r->closing || r->is_hub || !r->hub_pool || r->ship_inflight || r->recovering ||
           (r->ship_retry_ms && node_now_ms(r->node) < r->ship_retry_ms);
}

static void kept_reset(struct ship_kept *k)
{
    k->text.len = 0;
    k->n = 0;
    k->full = false;
}

/* Drops the first m kept frames. */
static void kept_drop(struct ship_kept *k, size_t m)
{
    if (m == 0)
        return;
    if (m >= k->n) {
        kept_reset(k);
        return;
    }
    size_t off = k->ends[m - 1] + 1; /* and its ',' */
    memmove(k->text.p, k->text.p + off, k->text.len - off);
    k->text.len -= off;
    for (size_t i = 0; i + m < k->n; i++)
        k->ends[i] = k->ends[i + m] - off;
    k->n -= m;
    k->first_lsn += m;
}

void shipper_keep(struct repl *r, const struct repl_write *w)
{
    struct ship_kept *k = r->ship_kept;
    if (!k) {
        if (!(k = r->ship_kept = calloc(1, sizeof *k)))
            return;
        const char *debug = getenv("MERIDIAN_DEBUG_SHIP_KEPT_MAX");
        long max = debug ? strtol(debug, NULL, 10) : 0;
        k->max = max > 0 && max < SHIP_KEPT_MAX ? (size_t)max : SHIP_KEPT_MAX;
        if (k->max != SHIP_KEPT_MAX)
            log_warn("MERIDIAN_DEBUG_SHIP_KEPT_MAX: keeping at most %zu frames for shipping "
                     "(testing only)", k->max);
    }
    if (k->full)
        return;
    if (k->n && w->lsn != k->first_lsn + k->n)
        kept_reset(k); /* a gap (an aborted or still pending LSN): start again here */
    if (!k->ends && !(k->ends = malloc(k->max * sizeof *k->ends)))
        return;
    if (k->n == k->max || frame_append(&k->text, k->n == 0, w, SHIP_KEPT_BYTES) != 0) {
        /* Full (or a frame the journal's reader must report): the rest of
         * this run of writes is read from the journal. */
        k->full = k->n > 0;
        return;
    }
    if (!k->n)
        k->first_lsn = w->lsn;
    k->ends[k->n++] = k->text.len;
}

/* Starts the batch with the kept frames that follow what the hub decided,
 * as many as fit. Returns whether it did. */
static bool ship_from_kept(struct repl *r, struct ship_collect *sc)
{
    struct ship_kept *k = r->ship_kept;
    if (!k || !k->n)
        return false;
    if (k->first_lsn <= sc->last_lsn)
        kept_drop(k, (size_t)(sc->last_lsn - k->first_lsn + 1)); /* decided already */
    if (!k->n || k->first_lsn != sc->last_lsn + 1)
        return false;
    size_t m = 0, room = sc->max_bytes - sc->body.len - 2;
    while (m < k->n && m < SHIP_BATCH_MAX && (m == 0 || k->ends[m] < room))
        m++;
    if (sbuf_add(&sc->body, k->text.p, k->ends[m - 1]) < 0)
        return false;
    /* Kept until the hub has decided them: a failed batch is sent again
     * from here. */
    sc->n = m;
    sc->last_lsn = k->first_lsn + m - 1;
    r->stats.ship_kept += m;
    return true;
}

static void ship_build_cb(evutil_socket_t fd, short what, void *arg);

/* Frames the next slice of the batch being built; sends the batch once it
 * is full or the committed writes run out, else comes back in the next
 * loop iteration. A batch begun for an earlier hub is dropped. */
static void ship_build(struct repl *r)
{
    struct ship_collect *sc = r->ship_build;
    if (sc->gen != r->ship_gen || ship_blocked(r)) {
        r->ship_build = NULL;
        ship_free(sc);
        shipper_kick(r);
        return;
    }
    if (sc->n == 0 && ship_from_kept(r, sc)) {
        r->ship_build = NULL;
        ship_send(r, sc);
        return;
    }
    size_t want = SHIP_BATCH_MAX - sc->n < SHIP_SLICE ? SHIP_BATCH_MAX - sc->n : SHIP_SLICE;
    size_t before = sc->n;
    journal_scan_writes(r->j, sc->last_lsn, want, ship_collect_one, sc);
    if (!sc->failed && !sc->stopped && sc->n - before == want && sc->n < SHIP_BATCH_MAX &&
        node_soon(r->node, &r->ship_ev, ship_build_cb, r) == 0)
        return;
    r->ship_build = NULL;
    ship_send(r, sc);
}

static void ship_build_cb(evutil_socket_t fd, short what, void *arg)
{
    ship_build(arg);
}

void shipper_kick(struct repl *r)
{
    if (r->ship_build || ship_blocked(r))
        return;
    struct ship_collect *sc = calloc(1, sizeof *sc);
    if (!sc) {
        ship_backoff(r, "out of memory");
        return;
    }
    uint64_t limit = 3 * (uint64_t)r->node->conf->limits.max_body_bytes;
    sc->max_bytes = limit < SHIP_BATCH_BYTES ? limit : SHIP_BATCH_BYTES;
    sc->last_lsn = r->ship_after;
    sc->gen = r->ship_gen;
    if (sbuf_printf(&sc->body, "{\"origin\":%u,\"hlc\":%llu,\"writes\":[", r->self->id,
                    (unsigned long long)repl_hlc_now(r)) < 0) {
        ship_free(sc);
        ship_backoff(r, "out of memory");
        return;
    }
    r->ship_build = sc;
    ship_build(r);
}

void shipper_close(struct repl *r)
{
    if (r->ship_ev)
        event_free(r->ship_ev);
    r->ship_ev = NULL;
    if (r->ship_build)
        ship_free(r->ship_build);
    r->ship_build = NULL;
    if (r->ship_kept) {
        sbuf_free(&r->ship_kept->text);
        free(r->ship_kept->ends);
        free(r->ship_kept);
        r->ship_kept = NULL;
    }
}
