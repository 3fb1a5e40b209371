#include "forward.h"

#include <llhttp.h>
#include <stdio.h>
#include <string.h>

#include "../store/embedded.h"
#include "downstream.h"
#include "node.h"
#include "ops.h"
#include "repl.h"
#include "route.h"
#include "upstream.h"

/* --- the HTTP backend ----------------------------------------------------- */

static void relay_head(void *ctx, const struct upstream_head *h)
{
    downstream_stream_head(ctx, h->status, h->headers, h->content_length, h->no_body);
}

static void relay_body(void *ctx, const char *p, size_t n)
{
    struct downstream *c = ctx;
    struct ds_backend *b = downstream_backend(c);
    if (downstream_stream_body(c, p, n) && !b->paused) {
        b->paused = true;
        upstream_pause(b->ux);
    }
}

static void relay_done(void *ctx)
{
    downstream_stream_end(ctx);
}

static void relay_error(void *ctx, enum stats_upstream_error kind, const char *reason,
                        bool after_head)
{
    struct downstream *c = ctx;
    downstream_backend(c)->ux = NULL;
    if (after_head) {
        downstream_stream_abort(c);
        return;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "backend %s: %s",
             upstream_pool_name(downstream_node(c)->pool), reason);
    bool timeout = kind == SUE_CONNECT_TIMEOUT || kind == SUE_RESPONSE_TIMEOUT;
    downstream_reply_error(c, timeout ? 504 : 502, timeout ? "backend_timeout" : "backend_unavailable",
                           msg);
}

static const struct upstream_handler relay_handler = {
    .on_head = relay_head,
    .on_body = relay_body,
    .on_done = relay_done,
    .on_error = relay_error,
};

static bool method_is_idempotent(int m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_PUT || m == HTTP_DELETE ||
           m == HTTP_OPTIONS;
}

static bool method_sends_length(int m)
{
    return m == HTTP_POST || m == HTTP_PUT || m == HTTP_PATCH;
}

/* The request as the backend gets it: same method and target, end-to-end
 * headers, X-Forwarded-* and Via added, body de-chunked with a length. */
static int build_upstream_request(struct downstream *c, struct sbuf *out)
{
    struct node *n = downstream_node(c);
    const struct ds_request *r = downstream_request(c);
    const struct fwd_info fi = {
        .client_ip = downstream_client_ip(c),
        .proto = "http",
        .via = n->via,
        .default_host = n->region->backend.text,
    };
    return headers_write_forward(out, llhttp_method_name((llhttp_method_t)r->method),
                                 hdr_block_line(&r->head), &r->head, &fi, NULL, r->body.p,
                                 r->body.len, method_sends_length(r->method));
}

static void forward_upstream(struct downstream *c)
{
    struct node *n = downstream_node(c);
    const struct ds_request *r = downstream_request(c);
    struct sbuf req = { 0 };
    struct upstream_exchange *ux = NULL;
    if (build_upstream_request(c, &req) == 0)
        ux = upstream_send(n->pool, &req, r->method == HTTP_HEAD, method_is_idempotent(r->method),
                           &relay_handler, c);
    sbuf_free(&req);
    if (!ux) {
        downstream_reply_error(c, 502, "backend_unavailable", "out of memory");
        return;
    }
    downstream_backend(c)->ux = ux;
}

/* --- the embedded store -------------------------------------------------- */

static void store_done(void *ctx, const struct store_response *resp)
{
    struct downstream *c = ctx;
    struct reply_hdr h[2];
    size_t n = 0;
    downstream_backend(c)->sop = NULL;
    if (resp->etag)
        h[n++] = (struct reply_hdr){ "ETag", resp->etag };
    if (resp->location)
        h[n++] = (struct reply_hdr){ "Location", resp->location };
    downstream_reply(c, resp->status, h, n, "application/json", resp->body, resp->body_len);
}

static void forward_store(struct downstream *c)
{
    struct node *n = downstream_node(c);
    const struct ds_request *r = downstream_request(c);
    const struct store_request sr = {
        .method = llhttp_method_name((llhttp_method_t)r->method),
        .path = hdr_block_line(&r->head),
        .path_len = r->head.line_len,
        .if_match = hdr_block_get(&r->head, "if-match", NULL),
        .if_none_match = hdr_block_get(&r->head, "if-none-match", NULL),
        .body = r->body.p ? r->body.p : "",
        .body_len = r->body.len,
    };
    struct embedded_op *op = embedded_handle(n->store, &sr, store_done, c);
    if (op)
        downstream_backend(c)->sop = op;
}

/* --- dispatch ------------------------------------------------------------ */

static void forward_backend(struct downstream *c)
{
    if (downstream_node(c)->store)
        forward_store(c);
    else
        forward_upstream(c);
}

/* A container read the read path lets this region serve: the change feed,
 * a document (annotated, after any write in progress on it), or a listing. */
/* The container of a request that waited: a reload may have removed it. */
static bool still_routed(struct downstream *c, struct route_result *rt)
{
    struct node *n = downstream_node(c);
    const struct ds_request *r = downstream_request(c);
    *rt = route_match(n->conf, hdr_block_line(&r->head), r->head.line_len);
    if (rt->kind == ROUTE_CONTAINER)
        return true;
    downstream_reply_error(c, 404, "not_found",
                           "the container of this path was removed by a configuration reload");
    return false;
}

static void serve_read(struct downstream *c)
{
    struct node *n = downstream_node(c);
    const struct ds_request *r = downstream_request(c);
    struct route_result rt;
    if (!still_routed(c, &rt))
        return;
    size_t id_len = 0;
    const char *id = writepath_doc_id(rt.container, hdr_block_line(&r->head), r->head.line_len,
                                      &id_len);
    char doc_id[512];
    if (id && id_len == 8 && memcmp(id, "_changes", 8) == 0) {
        repl_changes(n->repl, c, rt.container);
        return;
    }
    if (!id || id_len >= sizeof doc_id) {
        repl_add_token(n->repl, c, 0, 0);
        forward_backend(c);
        return;
    }
    memcpy(doc_id, id, id_len);
    doc_id[id_len] = '\0';
    if (!repl_read(n->repl, c, rt.container, doc_id, forward_backend))
        forward_backend(c);
}

static bool is_write(int m)
{
    return m == HTTP_PUT || m == HTTP_POST || m == HTTP_PATCH || m == HTTP_DELETE;
}

/* A container write the write gate lets this region take. */
static void serve_write(struct downstream *c)
{
    struct route_result rt;
    if (still_routed(c, &rt))
        writepath_start(c, rt.container);
}

/* Container requests Meridian serves itself: writes go through replication;
 * reads (documents, listings, _changes) through the read path, by
 * consistency level and session token; _conflicts is the conflicts feed.
 * Other methods pass through (returns false). */
static bool forward_container(struct downstream *c, const struct conf_container *ct)
{
    int m = downstream_request(c)->method;
    struct repl *r = downstream_node(c)->repl;
    if (conflicts_route(c, ct))
        return true;
    if (failover_active(r) && !downstream_is_peer(c) &&
        (is_write(m) || m == HTTP_GET || m == HTTP_HEAD))
        return readpath_failover(c);
    if (is_write(m))
        return readpath_gate_write(c, serve_write);
    if (m != HTTP_GET && m != HTTP_HEAD)
        return false;
    return readpath_start(c, serve_read);
}

void forward_request(struct downstream *c)
{
    struct node *n = downstream_node(c);
    const struct ds_request *r = downstream_request(c);
    struct route_result rt = route_match(n->conf, hdr_block_line(&r->head), r->head.line_len);
    if (downstream_is_peer(c)) {
        /* A read another region forwarded for its client's session, or a
         * write for the single write region. */
        bool fwd = rt.kind == ROUTE_CONTAINER && readpath_is_forwarded(c);
        if (rt.kind == ROUTE_CONTAINER && readpath_is_failover(c) &&
            forward_container(c, rt.container))
            return; /* served here for a region whose backend is down */
        if (fwd && (r->method == HTTP_GET || r->method == HTTP_HEAD))
            readpath_start(c, serve_read);
        else if (fwd && is_write(r->method))
            readpath_gate_write(c, serve_write);
        else
            peer_handle(c);
        return;
    }
    if (rt.kind == ROUTE_CONTAINER && forward_container(c, rt.container))
        return;
    if (rt.kind == ROUTE_OPS) {
        ops_handle(c);
        return;
    }
    if (rt.kind == ROUTE_UNMATCHED && n->conf->unmatched == UNMATCHED_REFUSE) {
        downstream_reply_error(c, 404, "not_found",
                               "no container route matches this path (proxy.unmatched: refuse)");
        return;
    }
    forward_backend(c);
}

void forward_cancel(struct downstream *c)
{
    struct ds_backend *b = downstream_backend(c);
    upstream_cancel(b->ux);
    if (b->sop)
        embedded_cancel(b->sop);
    writepath_detach(b->write);
    repl_read_cancel(b->read);
    peer_stream_cancel(b->stream);
    peer_ship_detach(b->ship);
    conflicts_detach(b->dismiss);
    readpath_cancel(b->route);
    writewait_cancel(b->wait);
    *b = (struct ds_backend){ 0 };
}

void forward_writable(struct downstream *c)
{
    struct ds_backend *b = downstream_backend(c);
    if (b->paused) {
        b->paused = false;
        if (b->stream)
            peer_stream_writable(b->stream);
        else
            upstream_resume(b->ux);
    }
}
