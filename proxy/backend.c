#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../store/embedded.h"
#include "node.h"
#include "upstream.h"

struct backend_call {
    struct node *node;
    struct upstream_pool *pool;
    backend_fn fn;
    void *arg;
    struct upstream_exchange *ux;
    struct embedded_op *sop;
    int status;
    struct sbuf headers;
    struct sbuf body;
    char *etag;
};

static void call_free(void *p)
{
    struct backend_call *c = p;
    sbuf_free(&c->headers);
    sbuf_free(&c->body);
    free(c->etag);
    free(c);
}

static void call_finish(struct backend_call *c, const char *error, bool timeout)
{
    struct backend_answer a = {
        .status = error ? 0 : c->status,
        .headers = c->headers.p ? c->headers.p : "",
        .headers_len = c->headers.len,
        .etag = c->etag,
        .body = c->body.p ? c->body.p : "",
        .body_len = c->body.len,
        .error = error,
        .timeout = timeout,
    };
    c->ux = NULL;
    c->sop = NULL;
    if (c->fn)
        c->fn(c->arg, &a);
    node_defer_free(c->node, call_free, c);
}

static void on_head(void *arg, const struct upstream_head *h)
{
    struct backend_call *c = arg;
    size_t n;
    const char *etag = hdr_block_get(h->headers, "etag", &n);
    c->status = h->status;
    if (etag)
        c->etag = strndup(etag, n);
    (void)headers_write_response(&c->headers, h->headers, c->node->via);
}

static void on_body(void *arg, const char *p, size_t n)
{
    struct backend_call *c = arg;
    (void)sbuf_add(&c->body, p, n);
}

static void on_done(void *arg)
{
    call_finish(arg, NULL, false);
}

static void on_error(void *arg, enum stats_upstream_error kind, const char *reason,
                     bool after_head)
{
    struct backend_call *c = arg;
    char why[512];
    snprintf(why, sizeof why, "%s: %s", upstream_pool_name(c->pool), reason);
    call_finish(c, why, kind == SUE_CONNECT_TIMEOUT || kind == SUE_RESPONSE_TIMEOUT);
}

static const struct upstream_handler buffer_handler = { on_head, on_body, on_done, on_error };

static struct backend_call *call_http(struct backend_call *c, const char *method, const char *path,
                                      const struct hdr_block *client, const char *client_ip,
                                      const char *extra, const char *body, size_t len)
{
    struct node *n = c->node;
    struct sbuf req = { 0 };
    const struct fwd_info fi = { .client_ip = client_ip ? client_ip : "127.0.0.1",
                                 .proto = "http", .via = n->via,
                                 .default_host = n->region->backend.text };
    bool typed = client && hdr_block_get(client, "content-type", NULL);
    int rc = headers_write_forward(&req, method, path, client, &fi,
                                   extra ? extra
                                   : body && !typed ? "Content-Type: application/json\r\n" : NULL,
                                   body, body ? len : 0,
                                   strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0);
    bool idempotent = strcmp(method, "POST") != 0 && strcmp(method, "PATCH") != 0;
    if (rc == 0)
        c->ux = upstream_send(c->pool, &req, strcmp(method, "HEAD") == 0, idempotent,
                              &buffer_handler, c);
    sbuf_free(&req);
    if (!c->ux) {
        call_finish(c, "out of memory", false);
        return NULL;
    }
    return c;
}

/* The store's answer with the headers an HTTP backend would have sent. */
static void store_fill(struct backend_call *c, const struct store_response *r)
{
    c->status = r->status;
    (void)sbuf_adds(&c->headers, "Content-Type: application/json\r\n");
    if (r->etag) {
        c->etag = strdup(r->etag);
        (void)sbuf_printf(&c->headers, "ETag: %s\r\n", r->etag);
    }
    if (r->location)
        (void)sbuf_printf(&c->headers, "Location: %s\r\n", r->location);
    (void)sbuf_add(&c->body, r->body, r->body_len);
}

static void store_done(void *arg, const struct store_response *r)
{
    struct backend_call *c = arg;
    store_fill(c, r);
    call_finish(c, NULL, false);
}

void backend_store_answer(const struct store_response *r, backend_fn fn, void *arg)
{
    struct backend_call c = { .fn = fn, .arg = arg };
    store_fill(&c, r);
    fn(arg, &(struct backend_answer){ .status = c.status,
                                      .headers = c.headers.p ? c.headers.p : "",
                                      .headers_len = c.headers.len, .etag = c.etag,
                                      .body = c.body.p ? c.body.p : "", .body_len = c.body.len });
    sbuf_free(&c.headers);
    sbuf_free(&c.body);
    free(c.etag);
}

void backend_store_request(const char *method, const char *path, const struct hdr_block *client,
                           const char *body, size_t len, struct store_request *out)
{
    *out = (struct store_request){
        .method = method, .path = path, .path_len = strlen(path),
        .if_match = client ? hdr_block_get(client, "if-match", NULL) : NULL,
        .if_none_match = client ? hdr_block_get(client, "if-none-match", NULL) : NULL,
        .body = body ? body : "", .body_len = body ? len : 0,
    };
}

struct backend_call *backend_request(struct node *n, const char *method, const char *path,
                                     const struct hdr_block *client, const char *client_ip,
                                     const char *body, size_t len, backend_fn fn, void *arg)
{
    struct backend_call *c = calloc(1, sizeof *c);
    if (!c) {
        fn(arg, &(struct backend_answer){ .error = "out of memory", .headers = "", .body = "" });
        return NULL;
    }
    c->node = n;
    c->fn = fn;
    c->arg = arg;
    if (n->pool) {
        c->pool = n->pool;
        return call_http(c, method, path, client, client_ip, NULL, body, len);
    }
    struct store_request sr;
    backend_store_request(method, path, client, body, len, &sr);
    /* The store may answer before returning: the call is then finished. */
    c->sop = embedded_handle(n->store, &sr, store_done, c);
    return c->sop ? c : NULL;
}

struct backend_call *backend_http(struct node *n, struct upstream_pool *pool, const char *method,
                                  const char *path, const char *body, size_t len, backend_fn fn,
                                  void *arg)
{
    return backend_forward(n, pool, method, path, NULL, NULL, body, len, fn, arg);
}

struct backend_call *backend_forward(struct node *n, struct upstream_pool *pool,
                                     const char *method, const char *path,
                                     const struct hdr_block *client, const char *extra,
                                     const char *body, size_t len, backend_fn fn, void *arg)
{
    struct backend_call *c = calloc(1, sizeof *c);
    if (!c) {
        fn(arg, &(struct backend_answer){ .error = "out of memory", .headers = "", .body = "" });
        return NULL;
    }
    *c = (struct backend_call){ .node = n, .pool = pool, .fn = fn, .arg = arg };
    return call_http(c, method, path, client, NULL, extra, len ? body : NULL, len);
}

void backend_cancel(struct backend_call *c)
{
    if (!c || !c->fn)
        return;
    c->fn = NULL;
    if (c->ux) {
        upstream_cancel(c->ux);
        c->ux = NULL;
        node_defer_free(c->node, call_free, c);
    } else if (c->sop) {
        embedded_cancel(c->sop);
        c->sop = NULL;
        node_defer_free(c->node, call_free, c);
    }
}
