/* readpath: container requests routed by consistency level and session
 * token: reads (a document, a listing, the change feed), and the write gate
 * in front of the write path. replication/consistency decides; this file
 * gathers the inputs and carries the decision out:
 *   local    proceed in this region (the caller's `serve`);
 *   wait     park the request until apply catches up with the token, at
 *            most account.session_wait_ms, then decide again;
 *   forward  send it over the peer port to the candidate regions
 *            (account.forward_fanout at once, each answer awaited at most
 *            account.forward_timeout_ms), relay the first answer that is not
 *            "session not available";
 *   refuse   404 with X-Meridian-Substatus: 1002 (session), 503 when the
 *            level needs the hub and it could not be reached.
 * A read forwarded here from another region is served or refused, never
 * forwarded again. Every answer carries the merged X-Session-Token. See
 * docs/consistency.md. */
#define _GNU_SOURCE /* memmem() */
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../replication/consistency.h"
#include "../util/log.h"
#include "backend.h"
#include "downstream.h"
#include "node.h"
#include "repl.h"
#include "upstream.h"

#define FORWARDED_HEADER "X-Meridian-Forwarded-From"
#define FAILOVER_HEADER "X-Meridian-Failover-From"
#define LAG_KNOWN_MS 3000            /* a satellite that heard nothing for 3 heartbeats */

struct read_route;

/* One region asked to serve a forwarded read. */
struct fwd_call {
    struct read_route *rr;
    uint32_t region;
    struct backend_call *call;
    bool pending;
};

struct read_route {
    TAILQ_ENTRY(read_route) link;    /* in r->read_waits while waiting, or forwarding */
    struct repl *r;
    struct downstream *c;
    readpath_serve_fn serve;
    enum consistency level;
    struct session_token token;
    uint64_t deadline_ms;
    bool waiting, dispatching;       /* waiting: in r->read_waits (a wait or a forward) */
    bool is_write;                   /* the write gate: wait for the token, or refuse */
    bool failover;                   /* sent on because this region's backend is down */
    struct read_decision d;
    size_t next;                     /* next candidate to ask */
    struct fwd_call fc[CONSISTENCY_MAX_CANDIDATES];
    size_t outstanding;
};

/* --- inputs ----------------------------------------------------------------- */

/* The lag behind the hub. */
static void lag(struct repl *r, struct region_progress *p)
{
    uint64_t now = node_now_ms(r->node);
    p->lag_known = r->hub_heard_ms && now - r->hub_heard_ms <= LAG_KNOWN_MS;
    /* Versions: what the hub has that is not applied here. */
    p->lag_versions = (r->unapplied_n > 0 ? (uint64_t)r->unapplied_n : 0) +
                      (r->hub_last_crts > r->j->stored_crts ? 1 : 0);
    /* Seconds: this region's state is as fresh as the newest hub clock
     * reading whose log position it has applied. */
    uint64_t fresh = HLC_MS(r->j->applied_crts);
    if (r->hub_hb_last <= r->j->applied_crts && HLC_MS(r->hub_hb_clock) > fresh)
        fresh = HLC_MS(r->hub_hb_clock);
    uint64_t wall = hlc_wall_ms();
    p->lag_ms = wall > fresh ? wall - fresh : 0;
}

void readpath_progress(struct repl *r, struct region_progress *p, bool with_lag)
{
    const struct conf *conf = r->node->conf;
    r->applied.confirmed = r->j->applied_crts;
    *p = (struct region_progress){
        .self = r->self->id, .hub = r->hub->id, .applied = &r->applied,
        .next_lsn = r->j->next_lsn, .hub_applied = r->is_hub ? NULL : &r->hub_applied,
        .max_lag_versions = conf->max_lag_versions,
        .max_lag_ms = (uint64_t)conf->max_lag_seconds * 1000,
    };
    if (!r->is_hub && with_lag)
        lag(r, p);
}

/* The request's session token; -1 (answered 400) when malformed. */
static int request_token(struct downstream *c, struct session_token *t)
{
    struct err err;
    if (repl_request_token(&downstream_request(c)->head, t, &err) < 0) {
        char why[600];
        snprintf(why, sizeof why, "X-Session-Token: %s", err.msg);
        downstream_reply_error(c, 400, "bad_session_token", why);
        return -1;
    }
    return 0;
}

int readpath_level(struct downstream *c, enum consistency *out)
{
    const struct conf *conf = downstream_node(c)->conf;
    const struct hdr_block *h = &downstream_request(c)->head;
    size_t n = 0;
    const char *v = hdr_block_get(h, "x-consistency-level", &n);
    if (!v)
        v = hdr_block_get(h, "x-ms-consistency-level", &n);
    struct err err;
    if (consistency_request_level(conf->consistency, conf->multi_region_writes, v, n, out,
                                  &err) < 0) {
        downstream_reply_error(c, 400, "bad_consistency_level", err.msg);
        return -1;
    }
    return 0;
}

/* --- outcomes ------------------------------------------------------------------ */

static void count(struct repl *r, enum consistency level, enum read_served how)
{
    r->stats.reads[level][how]++;
}

/* A request another region forwarded here counts once, there. */
static void count_rr(struct read_route *rr, enum read_served how)
{
    if (rr->c && downstream_is_peer(rr->c))
        how = SERVED_FOR_PEER;
    if (rr->is_write)
        rr->r->stats.write_gate[how]++;
    else
        count(rr->r, rr->level, how);
}

static void route_free(struct read_route *rr)
{
    if (rr->waiting)
        TAILQ_REMOVE(&rr->r->read_waits, rr, link);
    if (rr->c && downstream_backend(rr->c)->route == rr)
        downstream_backend(rr->c)->route = NULL;
    free(rr);
}

static void serve_local(struct read_route *rr, enum read_served how)
{
    struct downstream *c = rr->c;
    readpath_serve_fn serve = rr->serve;
    count_rr(rr, how);
    route_free(rr);
    serve(c);
}

/* Session (and the write gate): 404 with substatus 1002. Bounded staleness
 * and strong, whose reads need the hub: 503. */
static void refuse(struct read_route *rr, const char *why)
{
    struct downstream *c = rr->c;
    struct repl *r = rr->r;
    bool session = rr->is_write || rr->level == CONS_SESSION;
    enum consistency level = rr->level;
    count_rr(rr, SERVED_REFUSED);
    route_free(rr);
    repl_add_token(r, c, 0, 0);
    char text[300];
    if (!session) {
        snprintf(text, sizeof text, "%s: this read needs the hub (%s), which could not be reached",
                 conf_consistency_name(level), r->hub->name);
        downstream_reply_error(c, 503, "hub_unreachable", text);
        return;
    }
    downstream_add_header(c, "X-Meridian-Substatus", "1002");
    snprintf(text, sizeof text, "session not available: %s", why);
    downstream_reply_error(c, 404, "session_not_available", text);
}

/* --- forwarding ------------------------------------------------------------------ */

static void forward_next(struct read_route *rr);

/* 404 with X-Meridian-Substatus: 1002: that region cannot serve the session. */
static bool is_not_available(const struct backend_answer *a)
{
    static const char name[] = "x-meridian-substatus:";
    if (a->status != 404)
        return false;
    const char *p = a->headers, *end = a->headers + a->headers_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t len = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (len > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0)
            return memmem(p, len, "1002", 4) != NULL;
        p += len + 1;
    }
    return false;
}

static void cancel_calls(struct read_route *rr)
{
    for (size_t k = 0; k < CONSISTENCY_MAX_CANDIDATES; k++)
        if (rr->fc[k].pending) {
            backend_cancel(rr->fc[k].call);
            rr->fc[k].pending = false;
        }
    rr->outstanding = 0;
}

/* The answer's headers without the serving node's X-Meridian-Region (ours
 * is added), with X-Meridian-Served-By naming it. */
static void relay(struct read_route *rr, uint32_t region, const struct backend_answer *a)
{
    struct sbuf h = { 0 };
    const char *p = a->headers, *end = a->headers + a->headers_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t len = eol ? (size_t)(eol - p) + 1 : (size_t)(end - p);
        if (!(len > 18 && strncasecmp(p, "X-Meridian-Region:", 18) == 0))
            (void)sbuf_add(&h, p, len);
        p += len;
    }
    (void)sbuf_printf(&h, "X-Meridian-Served-By: %s\r\n", repl_region_name(rr->r, region));
    struct downstream *c = rr->c;
    count_rr(rr, SERVED_FORWARDED);
    route_free(rr);
    downstream_reply_relay(c, a->status, h.p ? h.p : "", h.len, a->body, a->body_len);
    sbuf_free(&h);
}

static void forward_answer(void *arg, const struct backend_answer *a)
{
    struct fwd_call *fc = arg;
    struct read_route *rr = fc->rr;
    fc->pending = false;
    fc->call = NULL;
    rr->outstanding--;
    /* An answer during dispatch can only be a failure to send. */
    if (!rr->dispatching && a->status && (rr->is_write || !is_not_available(a))) {
        cancel_calls(rr);
        relay(rr, fc->region, a);
        return;
    }
    if (!a->status)
        log_warn("read forwarded to %s: %s", repl_region_name(rr->r, fc->region),
                 a->error ? a->error : "no answer");
    if (rr->outstanding == 0 && !rr->dispatching)
        forward_next(rr);
}

static void forward_next(struct read_route *rr)
{
    if (rr->next >= rr->d.n && rr->failover) {
        struct downstream *c = rr->c;
        count_rr(rr, SERVED_REFUSED);
        route_free(rr);
        downstream_reply_error(c, 503, "backend_unavailable",
                               "this region's backend is down and no other region answered");
        return;
    }
    if (rr->next >= rr->d.n && rr->is_write) {
        struct downstream *c = rr->c;
        char why[200];
        snprintf(why, sizeof why, "this account has a single write region, %s, which could not "
                 "be reached", rr->r->hub->name);
        count_rr(rr, SERVED_REFUSED);
        route_free(rr);
        downstream_reply_error(c, 503, "write_region_unreachable", why);
        return;
    }
    if (rr->next >= rr->d.n) {
        refuse(rr, "no region that holds this session's writes answered");
        return;
    }
    struct repl *r = rr->r;
    const struct ds_request *req = downstream_request(rr->c);
    char extra[128];
    snprintf(extra, sizeof extra, "%s: %s\r\n", rr->failover ? FAILOVER_HEADER : FORWARDED_HEADER,
             r->self->name);
    rr->dispatching = true;
    for (size_t k = 0; k < r->node->conf->forward_fanout && rr->next < rr->d.n; k++) {
        uint32_t region = rr->d.candidates[rr->next++];
        struct upstream_pool *pool = repl_peer_pool(r, region);
        if (!pool)
            continue;
        rr->fc[k] = (struct fwd_call){ rr, region, NULL, true };
        rr->outstanding++;
        rr->fc[k].call = backend_forward(r->node, pool,
                                         llhttp_method_name((llhttp_method_t)req->method),
                                         hdr_block_line(&req->head), &req->head, extra,
                                         req->body.p, req->body.len, forward_answer, &rr->fc[k]);
    }
    rr->dispatching = false;
    if (rr->outstanding == 0) {
        forward_next(rr);
        return;
    }
    /* The tick gives up on these candidates after forward_timeout_ms. */
    rr->deadline_ms = node_now_ms(r->node) + r->node->conf->forward_timeout_ms;
    if (!rr->waiting) {
        rr->waiting = true;
        TAILQ_INSERT_TAIL(&r->read_waits, rr, link);
    }
}

/* --- deciding ---------------------------------------------------------------------- */

/* A write waits until this region has applied what its token names (it
 * would otherwise be written on a base the session has not seen), then is
 * refused: the client may retry, or write where its session is. */
static struct read_decision gate(struct read_route *rr, const struct region_progress *p,
                                 bool waited)
{
    if (consistency_satisfies(p, &rr->token))
        return (struct read_decision){ READ_LOCAL, { 0 }, 0, "session satisfied here" };
    if (!waited)
        return (struct read_decision){ READ_WAIT, { 0 }, 0, "waiting for apply" };
    return (struct read_decision){ READ_REFUSE, { 0 }, 0,
                                   "this region has not yet applied the writes this session "
                                   "token names; retry, or write in the region that has them" };
}

/* A joining region has not applied the confirmed state yet: its writes
 * wait for the join (up to session_wait_ms), then 503; while it is known to
 * trail the hub's state, its reads go to the hub. 1 with the decision in
 * rr->d, 0 when the join changes nothing, -1 when answered. */
static int joining(struct read_route *rr, bool waited, bool forwarded)
{
    struct repl *r = rr->r;
    if (r->state != REGION_JOINING)
        return 0;
    if (!rr->is_write) {
        if (forwarded || !r->join_known)
            return 0;
        rr->d = (struct read_decision){ READ_FORWARD, { r->hub->id }, 1, "joining" };
        return 1;
    }
    if (!waited) {
        rr->d = (struct read_decision){ READ_WAIT, { 0 }, 0, "joining" };
        return 1;
    }
    struct downstream *c = rr->c;
    char why[300];
    snprintf(why, sizeof why, "region %s is joining the cluster: it has applied crts %llu of "
             "%llu%s; it takes writes once it has caught up", r->self->name,
             (unsigned long long)r->j->applied_crts, (unsigned long long)r->join_target,
             r->join_known ? "" : " (the hub has not been reached yet)");
    count_rr(rr, SERVED_REFUSED);
    route_free(rr);
    downstream_add_header(c, "Retry-After", "1");
    downstream_reply_error(c, 503, "joining", why);
    return -1;
}

static void decide(struct read_route *rr, bool waited, bool forwarded)
{
    struct region_progress p;
    int join = joining(rr, waited, forwarded);
    if (join < 0)
        return;
    if (join == 0) {
        readpath_progress(rr->r, &p, rr->level == CONS_BOUNDED_STALENESS);
        rr->d = rr->is_write ? gate(rr, &p, waited)
                             : consistency_route(rr->level, &rr->token, &p, waited, forwarded);
    }
    switch (rr->d.where) {
    case READ_LOCAL:
        serve_local(rr, waited ? SERVED_AFTER_WAIT : SERVED_LOCAL);
        return;
    case READ_WAIT:
        rr->deadline_ms = node_now_ms(rr->r->node) + rr->r->node->conf->session_wait_ms;
        rr->waiting = true;
        TAILQ_INSERT_TAIL(&rr->r->read_waits, rr, link);
        return;
    case READ_FORWARD:
        rr->next = 0;
        forward_next(rr);
        return;
    case READ_REFUSE:
        refuse(rr, rr->d.why);
        return;
    }
}

/* A route for the request, its level and token read (NULL when answered). */
static struct read_route *route_new(struct downstream *c, readpath_serve_fn serve)
{
    struct repl *r = downstream_node(c)->repl;
    struct read_route *rr = calloc(1, sizeof *rr);
    if (!rr) {
        downstream_reply_error(c, 500, "internal", "out of memory");
        return NULL;
    }
    *rr = (struct read_route){ .r = r, .c = c, .serve = serve };
    if (readpath_level(c, &rr->level) < 0 || request_token(c, &rr->token) < 0) {
        free(rr);
        return NULL;
    }
    if (r->ignore_session_tokens)
        memset(&rr->token, 0, sizeof rr->token);
    downstream_backend(c)->route = rr;
    return rr;
}

bool readpath_start(struct downstream *c, readpath_serve_fn serve)
{
    struct read_route *rr = route_new(c, serve);
    bool forwarded = downstream_is_peer(c) && readpath_is_forwarded(c);
    if (rr)
        decide(rr, forwarded, forwarded);
    return true;
}

/* Bounded staleness: a satellite too far behind the hub takes no new writes. */
static bool backlog_refused(struct read_route *rr)
{
    struct repl *r = rr->r;
    uint64_t backlog, oldest;
    struct region_progress p;
    if (rr->level != CONS_BOUNDED_STALENESS || r->is_hub)
        return false;
    readpath_progress(r, &p, false);
    journal_backlog(r->j, &backlog, &oldest);
    uint64_t wall = hlc_wall_ms(), age = oldest && wall > HLC_MS(oldest) ? wall - HLC_MS(oldest) : 0;
    if (!consistency_backlog_exceeded(&p, backlog, age))
        return false;
    struct downstream *c = rr->c;
    r->stats.writes_throttled++;
    route_free(rr);
    char why[300];
    snprintf(why, sizeof why,
             "bounded staleness: %llu writes of this region are not yet confirmed by the hub "
             "(oldest %llu ms); the bound is %llu versions and %u s",
             (unsigned long long)backlog, (unsigned long long)age,
             (unsigned long long)r->node->conf->max_lag_versions, r->node->conf->max_lag_seconds);
    repl_add_token(r, c, 0, 0);
    downstream_add_header(c, "Retry-After", "1");
    downstream_reply_error(c, 429, "staleness_bound", why);
    return true;
}

bool readpath_gate_write(struct downstream *c, readpath_serve_fn serve)
{
    struct read_route *rr = route_new(c, serve);
    if (!rr)
        return true;
    rr->is_write = true;
    char why[200];
    if (rr->r->state == REGION_RETIRED) {
        snprintf(why, sizeof why, "region %s is no longer in the configuration; write in another "
                 "region", rr->r->self->name);
        route_free(rr);
        downstream_reply_error(c, 503, "region_removed", why);
        return true;
    }
    if (writewait_parse(c, NULL, why, sizeof why) < 0) {
        route_free(rr);
        downstream_reply_error(c, 400, "bad_wait", why);
        return true;
    }
    const struct conf *conf = rr->r->node->conf;
    if (!conf->multi_region_writes && !rr->r->is_hub) {
        /* A single write region: the hub takes every write. */
        rr->d = (struct read_decision){ READ_FORWARD, { rr->r->hub->id }, 1, "single write region" };
        forward_next(rr);
        return true;
    }
    if (backlog_refused(rr))
        return true;
    decide(rr, false, false);
    return true;
}

void readpath_cancel(struct read_route *rr)
{
    if (!rr)
        return;
    cancel_calls(rr);
    rr->c = NULL;
    route_free(rr);
}

/* Apply moved on (or time passed): waiting reads decide again. */
void readpath_wake(struct repl *r, uint64_t now)
{
    struct read_route *rr, *tmp;
    struct region_progress p;
    bool have = false;
    for (rr = TAILQ_FIRST(&r->read_waits); rr; rr = tmp) {
        tmp = TAILQ_NEXT(rr, link);
        if (!have) {
            readpath_progress(r, &p, false);
            have = true;
        }
        bool late = now >= rr->deadline_ms;
        if (rr->outstanding) {
            if (late) { /* forwarded, and no answer in time */
                log_warn("read forwarded for %s: no answer within %u ms",
                         conf_consistency_name(rr->level), r->node->conf->forward_timeout_ms);
                cancel_calls(rr);
                forward_next(rr);
            }
            continue;
        }
        if (!late && (!consistency_satisfies(&p, &rr->token) ||
                      (rr->is_write && r->state == REGION_JOINING)))
            continue;
        TAILQ_REMOVE(&r->read_waits, rr, link);
        rr->waiting = false;
        decide(rr, true, false);
    }
}

void readpath_to_hub(struct downstream *c, const char *why)
{
    struct read_route *rr = route_new(c, NULL);
    if (!rr)
        return;
    rr->d = (struct read_decision){ READ_FORWARD, { rr->r->hub->id }, 1, why };
    forward_next(rr);
}

bool readpath_failover(struct downstream *c)
{
    struct read_route *rr = route_new(c, NULL);
    if (!rr)
        return true;
    int m = downstream_request(c)->method;
    rr->is_write = m != HTTP_GET && m != HTTP_HEAD;
    rr->failover = true;
    failover_candidates(rr->r, &rr->d);
    failover_count(rr->r);
    forward_next(rr);
    return true;
}

bool readpath_is_failover(const struct downstream *c)
{
    return hdr_block_get(&downstream_request(c)->head, "x-meridian-failover-from", NULL) != NULL;
}

bool readpath_is_forwarded(const struct downstream *c)
{
    return hdr_block_get(&downstream_request(c)->head, "x-meridian-forwarded-from", NULL) != NULL;
}

int readpath_render(struct repl *r, struct sbuf *out)
{
    static const char *const served[] = { "local", "after_wait", "forwarded", "refused",
                                           "for_peer" };
    if (sbuf_adds(out, "# HELP meridian_reads_total Container reads by consistency level and "
                       "where they were served (local, local after waiting for apply, "
                       "forwarded to another region, refused; for_peer: answered for another "
                       "region that forwarded it, counted there too).\n"
                       "# TYPE meridian_reads_total counter\n") < 0)
        return -1;
    for (int l = CONS_EVENTUAL; l <= CONS_STRONG; l++)
        for (int s = SERVED_LOCAL; s <= SERVED_FOR_PEER; s++)
            if (sbuf_printf(out, "meridian_reads_total{region=\"%s\",level=\"%s\",served=\"%s\"} %llu\n",
                            r->self->name, conf_consistency_name((enum consistency)l), served[s],
                            (unsigned long long)r->stats.reads[l][s]) < 0)
                return -1;
    return 0;
}
