/* failover: a region whose HTTP backend is down serves its clients through
 * the next region. A health probe (HEAD / to the backend; any HTTP answer
 * is healthy) runs every FAILOVER_PROBE_MS; after FAILOVER_FAILS failed
 * probes in a row the backend counts as down, and container requests
 * (reads and writes) are forwarded over the peer port to the regions after
 * this one in the configuration's order (wrapping around), the first that
 * answers serving them as its own client's (X-Meridian-Served-By names it).
 * After FAILOVER_PASSES good probes in a row the region serves locally
 * again; what was written elsewhere meanwhile reaches its backend through
 * the confirmed log. The embedded store is in-process: no failover. */
#include <stdio.h>
#include <stdlib.h>

#include "../util/log.h"
#include "backend.h"
#include "downstream.h"
#include "node.h"
#include "repl.h"
#include "upstream.h"

#define FAILOVER_PROBE_MS 500
#define FAILOVER_FAILS 2
#define FAILOVER_PASSES 2

struct failover {
    bool down;
    unsigned fails, passes;
    uint64_t next_probe_ms, probe_sent_ms;
    struct backend_call *probe;
    uint64_t forwarded;            /* requests served through another region */
    uint64_t transitions;
};

static void probe_result(struct repl *r, bool ok, const char *why)
{
    struct failover *f = r->failover;
    f->fails = ok ? 0 : f->fails + 1;
    f->passes = ok ? f->passes + 1 : 0;
    if (!f->down && f->fails >= FAILOVER_FAILS) {
        f->down = true;
        f->transitions++;
        log_warn("backend %s is down (%s): container requests go to the next region",
                 upstream_pool_name(r->node->pool), why);
    } else if (f->down && f->passes >= FAILOVER_PASSES) {
        f->down = false;
        f->transitions++;
        log_info("backend %s answers again: serving container requests here",
                 upstream_pool_name(r->node->pool));
        applier_kick(r);
    }
}

static void probe_answer(void *arg, const struct backend_answer *a)
{
    struct repl *r = arg;
    r->failover->probe = NULL;
    probe_result(r, a->status != 0, a->error ? a->error : "no answer");
}

void failover_tick(struct repl *r, uint64_t now)
{
    struct failover *f = r->failover;
    if (!f || r->closing)
        return;
    if (f->probe && now - f->probe_sent_ms >= 2 * FAILOVER_PROBE_MS) {
        backend_cancel(f->probe);
        f->probe = NULL;
        probe_result(r, false, "health probe timed out");
    }
    if (f->probe || now < f->next_probe_ms)
        return;
    f->next_probe_ms = now + FAILOVER_PROBE_MS;
    f->probe_sent_ms = now;
    f->probe = backend_request(r->node, "HEAD", "/", NULL, NULL, NULL, 0, probe_answer, r);
}

int failover_init(struct repl *r, struct err *err)
{
    if (!r->node->pool || r->node->conf->n_regions < 2)
        return 0; /* nothing to fail over to */
    r->failover = calloc(1, sizeof *r->failover);
    return r->failover ? 0 : err_set(err, "out of memory");
}

void failover_close(struct repl *r)
{
    if (!r->failover)
        return;
    backend_cancel(r->failover->probe);
    free(r->failover);
    r->failover = NULL;
}

bool failover_active(const struct repl *r)
{
    return r->failover && r->failover->down;
}

void failover_candidates(const struct repl *r, struct read_decision *d)
{
    const struct conf *conf = r->node->conf;
    int self = repl_region_index(r, r->self->id);
    d->n = 0;
    if (self < 0)
        self = (int)conf->n_regions - 1; /* removed from the file: from the first on */
    for (size_t k = 1; k < conf->n_regions && d->n < CONSISTENCY_MAX_CANDIDATES; k++)
        d->candidates[d->n++] = conf->regions[((size_t)self + k) % conf->n_regions].id;
    d->where = d->n ? READ_FORWARD : READ_REFUSE;
    d->why = "this region's backend is down";
}

void failover_count(struct repl *r)
{
    if (r->failover)
        r->failover->forwarded++;
}

int failover_render(struct repl *r, struct sbuf *out)
{
    const struct failover *f = r->failover;
    const char *region = r->self->name;
    return sbuf_printf(
        out,
        "# HELP meridian_backend_up Whether this region serves container requests from its own "
        "backend (0: failed over to the next region).\n"
        "# TYPE meridian_backend_up gauge\nmeridian_backend_up{region=\"%s\"} %d\n"
        "# HELP meridian_failover_requests_total Container requests served through another "
        "region while the backend was down.\n"
        "# TYPE meridian_failover_requests_total counter\n"
        "meridian_failover_requests_total{region=\"%s\"} %llu\n",
        region, f && f->down ? 0 : 1, region, (unsigned long long)(f ? f->forwarded : 0));
}
