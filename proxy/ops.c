#include "ops.h"

#include <jansson.h>
#include <llhttp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "../store/embedded.h"
#include "downstream.h"
#include "node.h"
#include "repl.h"
#include "route.h"
#include "upstream.h"

/* {"ready": ..., "region": ..., key: value}; Jansson escapes the value (a
 * reason may quote a backend's words). */
static void reply_readiness(struct downstream *c, bool ready, const char *key, const char *value)
{
    json_t *o = json_pack("{s:b,s:s,s:s}", "ready", ready, "region",
                          downstream_node(c)->region->name, key, value);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        downstream_reply_error(c, 500, "internal", "out of memory");
        return;
    }
    downstream_reply(c, ready ? 200 : 503, NULL, 0, "application/json", text, strlen(text));
    free(text);
}

static void reply_ready(struct downstream *c, const char *backend)
{
    reply_readiness(c, true, "backend", backend);
}

static void reply_not_ready(struct downstream *c, const char *reason)
{
    reply_readiness(c, false, "reason", reason);
}

static void ops_health(struct downstream *c)
{
    struct node *n = downstream_node(c);
    json_t *o = json_pack("{s:s,s:s,s:s}", "status", "ok", "region", n->region->name, "state",
                          n->state == NODE_RUNNING ? "running" : "draining");
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    downstream_reply(c, 200, NULL, 0, "application/json", text ? text : "{}",
                     text ? strlen(text) : 2);
    free(text);
}

static void ops_metrics(struct downstream *c)
{
    struct node *n = downstream_node(c);
    struct sbuf out = { 0 };
    if (stats_render(&n->stats, n->region->name, &out) < 0 || repl_render(n->repl, &out) < 0) {
        downstream_reply_error(c, 500, "internal", "out of memory rendering metrics");
    } else {
        downstream_reply(c, 200, NULL, 0, "text/plain; version=0.0.4", out.p, out.len);
    }
    sbuf_free(&out);
}

/* The readiness probe of an HTTP backend: any HTTP answer means it is up. */
static void probe_head(void *ctx, const struct upstream_head *h) {}
static void probe_body(void *ctx, const char *p, size_t n) {}

static void probe_done(void *ctx)
{
    struct downstream *c = ctx;
    downstream_backend(c)->ux = NULL;
    reply_ready(c, upstream_pool_name(downstream_node(c)->pool));
}

static void probe_error(void *ctx, enum stats_upstream_error kind, const char *reason,
                        bool after_head)
{
    struct downstream *c = ctx;
    char why[512];
    downstream_backend(c)->ux = NULL;
    if (after_head) {
        probe_done(ctx);
        return;
    }
    snprintf(why, sizeof why, "backend %s: %s", upstream_pool_name(downstream_node(c)->pool),
             reason);
    reply_not_ready(c, why);
}

static const struct upstream_handler probe_handler = {
    .on_head = probe_head,
    .on_body = probe_body,
    .on_done = probe_done,
    .on_error = probe_error,
};

static void ops_ready(struct downstream *c)
{
    struct node *n = downstream_node(c);
    if (n->state != NODE_RUNNING) {
        reply_not_ready(c, "draining");
        return;
    }
    if (n->repl && n->repl->state != REGION_SERVING && n->repl->state != REGION_TAKING_OVER) {
        char why[200];
        snprintf(why, sizeof why, n->repl->state == REGION_JOINING
                                      ? "joining: applied crts %llu of %llu"
                                      : "this region is no longer in the configuration",
                 (unsigned long long)n->repl->j->applied_crts,
                 (unsigned long long)n->repl->join_target);
        reply_not_ready(c, why);
        return;
    }
    if (n->store) {
        struct err e;
        if (embedded_check(n->store, &e) < 0)
            reply_not_ready(c, e.msg);
        else
            reply_ready(c, "embedded");
        return;
    }
    struct sbuf req = { 0 };
    if (sbuf_printf(&req, "HEAD / HTTP/1.1\r\nHost: %s\r\nUser-Agent: meridian-ready\r\n\r\n",
                    n->region->backend.text) == 0)
        downstream_backend(c)->ux = upstream_send(n->pool, &req, true, true, &probe_handler, c);
    sbuf_free(&req);
    if (!downstream_backend(c)->ux)
        downstream_reply_error(c, 500, "internal", "out of memory");
}

void ops_handle(struct downstream *c)
{
    const struct ds_request *r = downstream_request(c);
    const char *target = hdr_block_line(&r->head);
    size_t len = route_path_len(target, r->head.line_len);
    if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
        downstream_reply_error(c, 405, "method_not_allowed",
                               "Meridian's endpoints under /_meridian/ answer GET and HEAD only");
        return;
    }
    if (headers_token_eq(target, len, "/_meridian/health"))
        ops_health(c);
    else if (headers_token_eq(target, len, "/_meridian/ready"))
        ops_ready(c);
    else if (headers_token_eq(target, len, "/_meridian/metrics"))
        ops_metrics(c);
    else
        downstream_reply_error(c, 404, "not_found",
                               "no such endpoint; try /_meridian/health, /_meridian/ready or "
                               "/_meridian/metrics");
}
