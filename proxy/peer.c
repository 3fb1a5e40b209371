/* peer: the peer port's endpoints, under /_meridian/v1/:
 *   POST ship            a satellite's batch of committed writes → the hub decides them
 *   GET  log?since=CRTS  the confirmed log as a long-lived NDJSON stream, then
 *                        live entries and a heartbeat line every second (and
 *                        one first); with snapshot=1 and since=0, at the hub,
 *                        a snapshot first: a {"snapshot":P,"entries":N} line,
 *                        the N entries that make the confirmed state at P
 *                        (replication/handover.c), then the log after P.
 *                        Any region serves its log (a new hub catches up so).
 *   GET  status          this node's replication state
 *   DELETE conflicts/CONTAINER/ID   a satellite's client removes a conflict
 *                        from the feed: the hub decides it (conflicts.c)
 * Only the hub decides; a satellite answers `ship` with 409 naming the hub. */
#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../replication/confirm.h"
#include "../replication/handover.h"
#include "../util/jsonscan.h"
#include "../util/log.h"
#include "downstream.h"
#include "node.h"
#include "repl.h"
#include "route.h"

/* Confirmed-log entries written to one follower's stream per loop
 * iteration; the rest go in the next ones, so a burst of decisions does
 * not hold up this region's clients. */
#define PEER_PUMP_SLICE 128
#define CONFLICTS_PREFIX "/_meridian/v1/conflicts/"

struct peer_stream {
    TAILQ_ENTRY(peer_stream) link;
    struct repl *r;
    struct downstream *c;
    uint64_t sent_crts;
    bool blocked;              /* the client's output is full */
    uint64_t *snap;            /* a snapshot's entries still to send, then the log from snap_upto */
    size_t snap_n, snap_next;
    uint64_t snap_upto;
};

/* --- ship ------------------------------------------------------------------- */

struct ship_req {
    struct downstream *c;
    json_t *rejected;
};

void peer_ship_detach(struct ship_req *s)
{
    if (s)
        s->c = NULL;
}

static void ship_decided(void *arg, struct confirm_batch *b, int rc, const char *reason)
{
    struct ship_req *s = arg;
    if (s->c && downstream_backend(s->c)->ship == s)
        downstream_backend(s->c)->ship = NULL;
    if (!s->c)
        json_decref(s->rejected);
    else if (rc < 0)
        downstream_reply_error(s->c, 500, "journal_failed", reason);
    else
        repl_reply_json(s->c, 200, json_pack("{s:I,s:I,s:o}", "decided_upto", (json_int_t)b->decided_upto,
                                       "decided", (json_int_t)b->n_decided, "rejected",
                                       s->rejected));
    if (s->c && rc < 0)
        json_decref(s->rejected);
    confirm_batch_free(b);
    free(s);
}

/* A ship body: the frames as text spans when the body is plain enough to
 * scan (then Jansson parses only the body around them, and each frame's
 * document is checked, not parsed: repl_write_parse), else the whole tree. */
struct ship_body {
    json_t *root;
    const json_t *writes;        /* the tree's frames, when not scanned */
    const char **at, **end;      /* the scanned frames */
    size_t n;
};

static void ship_body_free(struct ship_body *sb)
{
    json_decref(sb->root);
    free(sb->at);
    free(sb->end);
    *sb = (struct ship_body){ 0 };
}

static bool ship_span_add(struct ship_body *sb, const char *at, const char *end)
{
    if ((sb->n & (sb->n - 1)) == 0) { /* 0, 1, 2, 4, ...: grow */
        size_t cap = sb->n ? 2 * sb->n : 1;
        const char **a = realloc(sb->at, cap * sizeof *a), **e;
        if (a)
            sb->at = a;
        e = a ? realloc(sb->end, cap * sizeof *e) : NULL;
        if (!e)
            return false;
        sb->end = e;
    }
    sb->at[sb->n] = at;
    sb->end[sb->n++] = end;
    return true;
}

/* The spans of the "writes" frames, and the body around them parsed. */
static bool ship_body_scan(const char *body, size_t len, struct ship_body *sb)
{
    struct jsonscan_object o;
    struct jsonscan_member m, writes = { 0 };
    struct jsonscan_array a;
    const char *v, *v_end;
    bool ok = jsonscan_object_open(&o, body, body + len);
    while (ok && jsonscan_member(&o, &m)) {
        ok = !m.key_escaped;
        if (m.key_len == 6 && memcmp(m.key, "writes", 6) == 0)
            writes = m;
    }
    ok = ok && !o.failed && writes.value && jsonscan_array_open(&a, writes.value, writes.value_end);
    while (ok && jsonscan_element(&a, &v, &v_end))
        ok = ship_span_add(sb, v, v_end);
    char *env = ok && !a.failed ? malloc(len) : NULL;
    if (env) {
        size_t head = (size_t)(writes.value - body), tail = len - (size_t)(writes.value_end - body);
        memcpy(env, body, head);
        memcpy(env + head, "[]", 2);
        memcpy(env + head + 2, writes.value_end, tail);
        sb->root = json_loadb(env, head + 2 + tail, 0, NULL);
        free(env);
    }
    if (!sb->root)
        ship_body_free(sb);
    return sb->root != NULL;
}

static int ship_body_parse(const char *body, size_t len, struct ship_body *sb, json_error_t *je)
{
    *sb = (struct ship_body){ 0 };
    if (ship_body_scan(body, len, sb))
        return 0;
    sb->root = json_loadb(body, len, 0, je);
    sb->writes = json_object_get(sb->root, "writes");
    sb->n = json_array_size(sb->writes);
    return sb->root ? 0 : -1;
}

static int ship_frame(const struct ship_body *sb, size_t i, struct repl_write *w, struct err *e)
{
    if (sb->at)
        return repl_write_parse(sb->at[i], (size_t)(sb->end[i] - sb->at[i]), w, e);
    return repl_write_from_json(json_array_get(sb->writes, i), w, e);
}

/* Decodes frames until the first bad one, which is rejected alone: the ones
 * after it wait, since an origin's writes are decided in LSN order. */
static size_t ship_frames(struct repl *r, const struct ship_body *sb, uint32_t origin,
                          struct confirm_batch *b, json_t *rejected)
{
    size_t i, n = sb->n;
    uint64_t last = 0;
    for (i = 0; i < n; i++) {
        struct err e;
        struct repl_write *w = &b->ws[b->n];
        if (ship_frame(sb, i, w, &e) < 0)
            goto reject;
        if (w->origin != origin || w->lsn <= last) {
            repl_write_clear(w);
            snprintf(e.msg, sizeof e.msg, "frame is not origin %u's next write in LSN order", origin);
            goto reject;
        }
        if (hlc_update(&r->hlc, w->hlc, hlc_wall_ms(), &e) < 0) {
            r->stats.clock_refusals++;
            repl_write_clear(w);
            goto reject;
        }
        last = w->lsn;
        b->n++;
        continue;
    reject:
        r->stats.frames_rejected++;
        log_warn("ship from region %u: frame %zu rejected: %s", origin, i, e.msg);
        json_array_append_new(rejected, json_pack("{s:I,s:s}", "frame", (json_int_t)i, "reason", e.msg));
        break;
    }
    return i;
}

static void peer_ship(struct repl *r, struct downstream *c)
{
    const struct ds_request *req = downstream_request(c);
    json_error_t je;
    struct ship_body sb;
    int prc = ship_body_parse(req->body.p ? req->body.p : "", req->body.len, &sb, &je);
    json_t *root = sb.root;
    json_int_t origin = json_integer_value(json_object_get(root, "origin"));
    char why[300];
    /* Any region but the hub itself ships: one just removed from the file
     * still ships what it holds. */
    if (prc < 0 || !json_is_array(json_object_get(root, "writes")) || origin <= 0 ||
        origin > UINT32_MAX || (uint32_t)origin == r->self->id) {
        snprintf(why, sizeof why, "ship body must be {\"origin\": SATELLITE_ID, \"writes\": [...]}%s%s",
                 root ? "" : ": ", root ? "" : je.text);
        ship_body_free(&sb);
        downstream_reply_error(c, 400, "bad_request", why);
        return;
    }
    struct confirm_batch *b = calloc(1, sizeof *b);
    struct ship_req *s = calloc(1, sizeof *s);
    if (b)
        b->ws = calloc(sb.n + 1, sizeof *b->ws);
    if (!b || !s || !b->ws) {
        confirm_batch_free(b);
        free(s);
        ship_body_free(&sb);
        downstream_reply_error(c, 500, "internal", "out of memory");
        return;
    }
    b->origin = (uint32_t)origin;
    *s = (struct ship_req){ c, json_array() };
    ship_frames(r, &sb, b->origin, b, s->rejected);
    ship_body_free(&sb);
    downstream_backend(c)->ship = s;
    if (repl_decide(r, b, ship_decided, s) < 0) {
        downstream_backend(c)->ship = NULL;
        json_decref(s->rejected);
        confirm_batch_free(b);
        free(s);
        downstream_reply_error(c, 500, "internal", "out of memory");
    }
}

/* --- the confirmed-log stream ---------------------------------------------------- */

static int pump_one(void *arg, uint64_t crts, const char *json, size_t len)
{
    struct peer_stream *s = arg;
    downstream_stream_body(s->c, json, len);
    s->blocked = downstream_stream_body(s->c, "\n", 1);
    s->sent_crts = crts;
    return s->blocked;
}

static void pump_later_cb(evutil_socket_t fd, short what, void *arg)
{
    peer_streams_pump(arg);
}

/* The streams' next slices, in the next loop iteration (without a timer:
 * with the next decision, or the next heartbeat). */
static void peer_pump_later(struct repl *r)
{
    node_soon(r->node, &r->pump_ev, pump_later_cb, r);
}

/* Writes up to PEER_PUMP_SLICE entries; the rest, when the stream can take
 * them, in the next loop iteration. */
static void stream_pump(struct peer_stream *s)
{
    struct journal *j = s->r->j;
    size_t budget = PEER_PUMP_SLICE;
    uint64_t before = s->sent_crts;
    size_t snap_before = s->snap_next;
    while (!s->blocked && s->snap_next < s->snap_n && budget) {
        uint64_t crts = s->snap[s->snap_next++];
        journal_scan_clog(j, crts - 1, crts, 1, pump_one, s);
        budget--;
    }
    if (s->snap && s->snap_next == s->snap_n) {
        free(s->snap);
        s->snap = NULL;
        s->sent_crts = s->snap_upto;
    }
    if (!s->blocked && !s->snap && s->sent_crts < j->stored_crts && budget)
        journal_scan_clog(j, s->sent_crts, j->stored_crts, budget, pump_one, s);
    downstream_backend(s->c)->paused = s->blocked;
    bool progress = s->sent_crts != before || s->snap_next != snap_before;
    if (progress && !s->blocked && (s->snap || s->sent_crts < j->stored_crts))
        peer_pump_later(s->r);
}

void peer_streams_pump(struct repl *r)
{
    struct peer_stream *s;
    TAILQ_FOREACH(s, &r->streams, link)
        stream_pump(s);
}

static void stream_heartbeat(struct peer_stream *s)
{
    char line[128];
    struct repl *r = s->r;
    int n = snprintf(line, sizeof line, "{\"hb\":%llu,\"last\":%llu}\n",
                     (unsigned long long)repl_hlc_now(r), (unsigned long long)r->j->stored_crts);
    if (!s->blocked)
        s->blocked = downstream_stream_body(s->c, line, (size_t)n);
}

void peer_streams_heartbeat(struct repl *r)
{
    struct peer_stream *s;
    TAILQ_FOREACH(s, &r->streams, link)
        stream_heartbeat(s);
}

struct downstream *peer_stream_client(struct peer_stream *s)
{
    return s->c;
}

void peer_stream_writable(struct peer_stream *s)
{
    s->blocked = false;
    stream_pump(s);
}

void peer_stream_cancel(struct peer_stream *s)
{
    if (!s)
        return;
    TAILQ_REMOVE(&s->r->streams, s, link);
    downstream_backend(s->c)->stream = NULL;
    free(s->snap);
    free(s);
}

/* Whether `since` is a position of this region's log: a follower that holds
 * entries this log does not (a hub lost with decisions only one region
 * had) would mix two histories. */
static int has_entry(void *arg, uint64_t crts, const char *json, size_t len)
{
    (void)json;
    (void)len;
    *(bool *)arg = crts > 0;
    return 1;
}

static bool log_holds(struct repl *r, uint64_t since)
{
    bool found = false;
    if (since == 0 || since > r->j->stored_crts || since < r->history_from)
        return true; /* the start, not there yet (sent when it comes), or before a
                        snapshot this region joined from (its log is sparse there) */
    journal_scan_clog(r->j, since - 1, since, 1, has_entry, &found);
    return found;
}

static void peer_log(struct repl *r, struct downstream *c, uint64_t since, bool snapshot)
{
    if (!log_holds(r, since)) {
        char why[300];
        snprintf(why, sizeof why, "this region's confirmed log has no entry at crts %llu: the "
                 "follower's log diverged (it holds decisions of a hub that was lost); give that "
                 "region a new data_dir to join again", (unsigned long long)since);
        log_error("a peer asked for the log from crts %llu, which is not in it: diverged",
                  (unsigned long long)since);
        downstream_reply_error(c, 409, "diverged", why);
        return;
    }
    struct peer_stream *s = calloc(1, sizeof *s);
    struct hdr_block h = { 0 };
    if (!s || hdr_block_add_line(&h, "OK", 2) < 0 || hdr_block_end_line(&h) < 0 ||
        hdr_block_add_name(&h, "Content-Type", 12) < 0 || hdr_block_end_name(&h) < 0 ||
        hdr_block_add_value(&h, "application/x-ndjson", 20) < 0 || hdr_block_end_value(&h) < 0) {
        free(s);
        hdr_block_free(&h);
        downstream_reply_error(c, 500, "internal", "out of memory");
        return;
    }
    *s = (struct peer_stream){ .r = r, .c = c, .sent_crts = since };
    if (snapshot && since == 0 && r->is_hub && r->j->stored_crts > 0 &&
        handover_snapshot(r->j, &s->snap, &s->snap_n, &s->snap_upto) < 0) {
        free(s);
        hdr_block_free(&h);
        downstream_reply_error(c, 500, "internal", "the snapshot could not be read");
        return;
    }
    downstream_stream_head(c, 200, &h, -1, false);
    hdr_block_free(&h);
    downstream_backend(c)->stream = s;
    TAILQ_INSERT_TAIL(&r->streams, s, link);
    if (s->snap_upto) {
        char line[96];
        int n = snprintf(line, sizeof line, "{\"snapshot\":%llu,\"entries\":%zu}\n",
                         (unsigned long long)s->snap_upto, s->snap_n);
        s->blocked = downstream_stream_body(c, line, (size_t)n);
        if (!s->snap) { /* nothing in it: the log from there */
            s->snap = calloc(1, sizeof *s->snap);
            s->snap_n = s->snap_next = 0;
        }
        log_info("peer %s joins: a snapshot of %zu entries at crts %llu, then the log",
                 downstream_client_ip(c), s->snap_n, (unsigned long long)s->snap_upto);
    } else {
        log_info("peer %s follows the confirmed log from crts %llu", downstream_client_ip(c),
                 (unsigned long long)since);
    }
    stream_heartbeat(s); /* a follower learns the log's head at once */
    stream_pump(s);
}

/* --- status and dispatch ----------------------------------------------------- */

static void peer_status(struct repl *r, struct downstream *c)
{
    json_int_t streams = 0;
    struct peer_stream *s;
    TAILQ_FOREACH(s, &r->streams, link)
        streams++;
    json_t *st = json_pack("{s:s,s:I,s:b,s:I,s:I,s:I,s:I,s:b,s:I,s:i}", "region", r->self->name,
                           "regionId", (json_int_t)r->self->id, "hub", r->is_hub, "next_lsn",
                           (json_int_t)r->j->next_lsn, "applied_crts",
                           (json_int_t)r->j->applied_crts, "stored_crts",
                           (json_int_t)r->j->stored_crts, "shipped_upto",
                           (json_int_t)r->ship_after, "shipping", r->ship_inflight, "hub_last_crts",
                           (json_int_t)r->hub_last_crts, "streams", (int)streams);
    /* The topology: its role, which hub it follows, a join's target, and
     * whether a region that stopped being the hub has stopped deciding. */
    if (st && json_object_update_new(st, json_pack("{s:s,s:s,s:I,s:b,s:I}", "state",
                                                   topology_state_name(r->state), "hub_name",
                                                   r->hub->name, "join_target",
                                                   (json_int_t)r->join_target, "fenced",
                                                   !r->is_hub && (r->fenced || !r->fence_lsn),
                                                   "history_from",
                                                   (json_int_t)r->history_from)) < 0) {
        json_decref(st);
        st = NULL;
    }
    repl_reply_json(c, 200, st);
}

void peer_handle(struct downstream *c)
{
    struct repl *r = downstream_node(c)->repl;
    const struct ds_request *req = downstream_request(c);
    const char *target = hdr_block_line(&req->head);
    size_t plen = route_path_len(target, req->head.line_len);
    bool bad = false;
    if (headers_token_eq(target, plen, "/_meridian/v1/ship") && req->method == HTTP_POST) {
        if (!r->is_hub)
            downstream_reply_error(c, 409, "not_hub",
                                   r->state == REGION_TAKING_OVER
                                       ? "this region is taking over as hub; ship again shortly"
                                       : "this region is not the hub; ship to the first region of the configuration");
        else
            peer_ship(r, c);
    } else if (headers_token_eq(target, plen, "/_meridian/v1/log") && req->method == HTTP_GET) {
        uint64_t since = route_query_u64(target, "since", 0, &bad);
        bool snapshot = route_query_u64(target, "snapshot", 0, &bad) == 1;
        if (bad)
            downstream_reply_error(c, 400, "bad_request",
                                   "since must be a decimal crts, snapshot 0 or 1");
        else
            peer_log(r, c, since, snapshot);
    } else if (headers_token_eq(target, plen, "/_meridian/v1/status") && req->method == HTTP_GET) {
        peer_status(r, c);
    } else if (plen > sizeof CONFLICTS_PREFIX - 1 && req->method == HTTP_DELETE &&
               memcmp(target, CONFLICTS_PREFIX, sizeof CONFLICTS_PREFIX - 1) == 0) {
        conflicts_peer_dismiss(r, c, target + sizeof CONFLICTS_PREFIX - 1,
                               plen - (sizeof CONFLICTS_PREFIX - 1));
    } else {
        downstream_reply_error(c, 404, "not_found",
                               "the peer port serves POST /_meridian/v1/ship, GET "
                               "/_meridian/v1/log?since=CRTS, GET /_meridian/v1/status and "
                               "DELETE /_meridian/v1/conflicts/CONTAINER/ID");
    }
}
