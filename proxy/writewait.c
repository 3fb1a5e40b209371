/* writewait: a write's answer held until the write has gone further than
 * this region's journal (the seeds' custom synchronization, per request):
 *   X-Meridian-Wait: confirmed    until the hub's decision on it is applied
 *                                 here; a write that lost is answered 409
 *                                 with the winner's version;
 *   X-Meridian-Wait: regions=N    until N regions (this one included) have
 *                                 applied that decision;
 *   X-Meridian-Wait-Timeout: MS   at most this long (default 10000): then 504
 *                                 saying what was reached (the write itself
 *                                 is durable here either way).
 * With a single write region and the account at strong, every write waits
 * for all regions. Other regions' applied positions come from their peer
 * status, polled while a regions=N wait is open. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/log.h"
#include "backend.h"
#include "downstream.h"
#include "node.h"
#include "repl.h"

#define WAIT_TIMEOUT_DEFAULT_MS 10000
#define WAIT_TIMEOUT_MAX_MS 120000

struct write_wait {
    TAILQ_ENTRY(write_wait) link;
    struct repl *r;
    struct downstream *c;
    uint64_t lsn;
    uint32_t regions;              /* 0: until confirmed */
    uint64_t deadline_ms;
    int status;
    char *headers, *body;
    size_t headers_len, body_len;
    bool decided;
    uint64_t crts;
};

/* --- the request ---------------------------------------------------------------- */

static int parse_u32(const char *s, size_t n, uint32_t max, uint32_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 10)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v == 0 || v > max)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int writewait_parse(struct downstream *c, struct writewait_spec *out, char *why, size_t cap)
{
    struct repl *r = downstream_node(c)->repl;
    const struct conf *conf = r->node->conf;
    const struct hdr_block *h = &downstream_request(c)->head;
    struct writewait_spec spec = { false, 0, WAIT_TIMEOUT_DEFAULT_MS };
    size_t n = 0, tn = 0;
    const char *v = hdr_block_get(h, "x-meridian-wait", &n);
    const char *t = hdr_block_get(h, "x-meridian-wait-timeout", &tn);
    enum consistency level = conf->consistency;
    const char *lv = hdr_block_get(h, "x-consistency-level", NULL);
    if (!lv)
        lv = hdr_block_get(h, "x-ms-consistency-level", NULL);
    if (v && n == 9 && memcmp(v, "confirmed", 9) == 0) {
        spec.wait = true;
    } else if (v && n > 8 && memcmp(v, "regions=", 8) == 0 &&
               parse_u32(v + 8, n - 8, (uint32_t)conf->n_regions, &spec.regions) == 0) {
        spec.wait = true;
    } else if (v) {
        snprintf(why, cap, "X-Meridian-Wait must be 'confirmed' or 'regions=N' with N from 1 to "
                           "%zu (the regions of this account)", conf->n_regions);
        return -1;
    }
    if (t && parse_u32(t, tn, WAIT_TIMEOUT_MAX_MS, &spec.timeout_ms) < 0) {
        snprintf(why, cap, "X-Meridian-Wait-Timeout must be milliseconds from 1 to %u",
                 WAIT_TIMEOUT_MAX_MS);
        return -1;
    }
    /* Strong with one write region: acknowledged once every region has it,
     * unless the request relaxed its level. */
    if (!spec.wait && level == CONS_STRONG && !conf->multi_region_writes && !lv) {
        spec.wait = true;
        spec.regions = (uint32_t)conf->n_regions;
    }
    if (out)
        *out = spec;
    return 0;
}

/* --- holding and answering ----------------------------------------------------------- */

static void ww_free(struct write_wait *ww)
{
    TAILQ_REMOVE(&ww->r->write_waits, ww, link);
    if (ww->c && downstream_backend(ww->c)->wait == ww)
        downstream_backend(ww->c)->wait = NULL;
    free(ww->headers);
    free(ww->body);
    free(ww);
}

bool writewait_hold(struct repl *r, struct downstream *c, uint64_t lsn, int status,
                    const char *headers, size_t hlen, const char *body, size_t blen)
{
    struct writewait_spec spec;
    char why[200];
    if (status < 200 || status > 299 || writewait_parse(c, &spec, why, sizeof why) < 0 ||
        !spec.wait)
        return false;
    struct write_wait *ww = calloc(1, sizeof *ww);
    if (!ww)
        return false;
    *ww = (struct write_wait){ .r = r, .c = c, .lsn = lsn, .regions = spec.regions,
                               .deadline_ms = node_now_ms(r->node) + spec.timeout_ms,
                               .status = status, .headers = strndup(headers, hlen),
                               .headers_len = hlen, .body = malloc(blen + 1), .body_len = blen };
    if (!ww->headers || !ww->body) {
        free(ww->headers);
        free(ww->body);
        free(ww);
        return false;
    }
    memcpy(ww->body, body, blen);
    TAILQ_INSERT_TAIL(&r->write_waits, ww, link);
    downstream_backend(c)->write = NULL; /* the write op goes on without its client */
    downstream_backend(c)->wait = ww;
    r->stats.write_waits++;
    return true;
}

/* How many regions have applied confirmed-log position `crts`. */
static uint32_t regions_at(struct repl *r, uint64_t crts)
{
    uint32_t n = r->j->applied_crts >= crts ? 1 : 0;
    for (size_t i = 0; i < r->node->conf->n_regions && i < REPL_MAX_REGIONS; i++)
        if (r->node->conf->regions[i].id != r->self->id && r->peer_applied[i] >= crts)
            n++;
    return n;
}

static void finish(struct write_wait *ww)
{
    struct downstream *c = ww->c;
    char crts[24];
    snprintf(crts, sizeof crts, "%llu", (unsigned long long)ww->crts);
    downstream_add_header(c, "X-Meridian-Crts", crts);
    downstream_add_header(c, "X-Meridian-Confirmed", "true");
    downstream_reply_relay(c, ww->status, ww->headers, ww->headers_len, ww->body, ww->body_len);
}

static void time_out(struct write_wait *ww)
{
    char why[400];
    ww->r->stats.write_wait_timeouts++;
    if (!ww->decided)
        snprintf(why, sizeof why, "waited for the hub's decision and timed out: the write is "
                                  "committed here (durable) and not yet decided");
    else
        snprintf(why, sizeof why, "waited for %u regions and timed out: the write is decided "
                                  "(crts %llu) and applied in %u region%s",
                 ww->regions, (unsigned long long)ww->crts, regions_at(ww->r, ww->crts),
                 regions_at(ww->r, ww->crts) == 1 ? "" : "s");
    downstream_reply_error(ww->c, 504, "wait_timeout", why);
}

void writewait_decided(struct repl *r, const struct clog_entry *e)
{
    struct write_wait *ww, *next;
    for (ww = TAILQ_FIRST(&r->write_waits); ww; ww = next) {
        next = TAILQ_NEXT(ww, link);
        if (ww->decided || e->w.origin != r->self->id || e->w.lsn != ww->lsn)
            continue;
        ww->decided = true;
        ww->crts = e->crts;
        if (e->outcome == LWW_CONFIRMED)
            continue; /* answered by writewait_tick once enough regions have it */
        char v[VERSION_TEXT_MAX], why[300];
        version_format(e->head, v);
        snprintf(why, sizeof why, "the hub decided against this write (%s, %s conflict); the "
                 "document's version is %s%s", clog_outcome_name(e->outcome),
                 lww_conflict_name(e->conflict), v[0] ? v : "none",
                 e->head_delete ? " (deleted)" : "");
        if (ww->c) {
            downstream_add_header(ww->c, "X-Meridian-Winner", v[0] ? v : "none");
            downstream_reply_error(ww->c, 409, "superseded", why);
            ww->c = NULL;
        }
        ww_free(ww);
    }
}

/* --- other regions' progress ------------------------------------------------------- */

struct status_poll {
    struct repl *r;
    uint32_t region;   /* by id: a reload may move the regions' indexes meanwhile */
};

static void status_answer(void *arg, const struct backend_answer *a)
{
    struct status_poll *sp = arg;
    struct repl *r = sp->r;
    r->status_polls--;
    if (a->status == 200) {
        json_t *j = json_loadb(a->body, a->body_len, 0, NULL);
        json_t *applied = json_object_get(j, "applied_crts");
        int i = repl_region_index(r, sp->region);
        if (i >= 0 && json_is_integer(applied) &&
            (uint64_t)json_integer_value(applied) > r->peer_applied[i])
            r->peer_applied[i] = (uint64_t)json_integer_value(applied);
        json_decref(j);
    }
    free(sp);
}

static void poll_regions(struct repl *r)
{
    const struct conf *conf = r->node->conf;
    if (r->status_polls)
        return;
    for (size_t i = 0; i < conf->n_regions && i < REPL_MAX_REGIONS; i++) {
        struct upstream_pool *pool = repl_peer_pool(r, conf->regions[i].id);
        struct status_poll *sp = pool ? calloc(1, sizeof *sp) : NULL;
        if (!sp)
            continue;
        *sp = (struct status_poll){ r, conf->regions[i].id };
        r->status_polls++;
        backend_http(r->node, pool, "GET", "/_meridian/v1/status", NULL, 0, status_answer, sp);
    }
}

void writewait_tick(struct repl *r, uint64_t now)
{
    struct write_wait *ww, *next;
    bool need_regions = false;
    for (ww = TAILQ_FIRST(&r->write_waits); ww; ww = next) {
        next = TAILQ_NEXT(ww, link);
        if (!ww->c) {
            ww_free(ww);
            continue;
        }
        bool done = ww->decided && r->j->applied_crts >= ww->crts &&
                    (!ww->regions || regions_at(r, ww->crts) >= ww->regions);
        if (done || now >= ww->deadline_ms) {
            if (done)
                finish(ww);
            else
                time_out(ww);
            ww->c = NULL;
            ww_free(ww);
            continue;
        }
        need_regions |= ww->decided && ww->regions > 1;
    }
    if (need_regions)
        poll_regions(r);
}

void writewait_close(struct repl *r)
{
    while (!TAILQ_EMPTY(&r->write_waits)) {
        struct write_wait *ww = TAILQ_FIRST(&r->write_waits);
        ww->c = NULL;
        ww_free(ww);
    }
}

void writewait_cancel(struct write_wait *ww)
{
    if (ww)
        ww->c = NULL; /* freed at the next tick */
}

int writewait_render(struct repl *r, struct sbuf *out)
{
    const char *region = r->self->name;
    const struct repl_stats *st = &r->stats;
    return sbuf_printf(
        out,
        "# HELP meridian_write_waits_total Writes whose answer waited (X-Meridian-Wait, strong).\n"
        "# TYPE meridian_write_waits_total counter\nmeridian_write_waits_total{region=\"%s\"} %llu\n"
        "# HELP meridian_write_wait_timeouts_total Waits that ended in 504.\n"
        "# TYPE meridian_write_wait_timeouts_total counter\n"
        "meridian_write_wait_timeouts_total{region=\"%s\"} %llu\n"
        "# HELP meridian_writes_throttled_total Writes refused 429 by the staleness bound.\n"
        "# TYPE meridian_writes_throttled_total counter\n"
        "meridian_writes_throttled_total{region=\"%s\"} %llu\n"
        "# HELP meridian_write_gate_total Container writes by how their session token was met "
        "(local, after_wait, forwarded to the single write region, refused 1002).\n"
        "# TYPE meridian_write_gate_total counter\n"
        "meridian_write_gate_total{region=\"%s\",served=\"local\"} %llu\n"
        "meridian_write_gate_total{region=\"%s\",served=\"after_wait\"} %llu\n"
        "meridian_write_gate_total{region=\"%s\",served=\"forwarded\"} %llu\n"
        "meridian_write_gate_total{region=\"%s\",served=\"refused\"} %llu\n"
        "meridian_write_gate_total{region=\"%s\",served=\"for_peer\"} %llu\n",
        region, (unsigned long long)st->write_waits, region,
        (unsigned long long)st->write_wait_timeouts, region,
        (unsigned long long)st->writes_throttled, region,
        (unsigned long long)st->write_gate[SERVED_LOCAL], region,
        (unsigned long long)st->write_gate[SERVED_AFTER_WAIT], region,
        (unsigned long long)st->write_gate[SERVED_FORWARDED], region,
        (unsigned long long)st->write_gate[SERVED_REFUSED], region,
        (unsigned long long)st->write_gate[SERVED_FOR_PEER]);
}
