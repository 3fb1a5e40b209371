/* upstream: connections to the region's HTTP backend. Owns a pool of
 * keep-alive connections and the exchanges (one request, one response) in
 * flight on them; parses responses with llhttp and hands them to the caller
 * piece by piece, so large answers stream. Never retries a request the
 * backend may have seen, except an idempotent one that failed on a reused
 * connection before a single response byte arrived. */
#ifndef MERIDIAN_UPSTREAM_H
#define MERIDIAN_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"
#include "headers.h"
#include "stats.h"

struct node;
struct upstream_pool;
struct upstream_exchange;

struct upstream_head {
    int status;
    int http_minor;
    const struct hdr_block *headers; /* reason phrase: hdr_block_line() */
    int64_t content_length;          /* -1 when chunked or delimited by close */
    bool no_body;                    /* HEAD, 204, 304 */
};

struct upstream_handler {
    void (*on_head)(void *ctx, const struct upstream_head *h);
    void (*on_body)(void *ctx, const char *p, size_t n);
    void (*on_done)(void *ctx);
    /* `after_head`: the head was already delivered, the answer is cut short. */
    void (*on_error)(void *ctx, enum stats_upstream_error kind, const char *reason,
                     bool after_head);
};

/* A pool for backend `url` (http://host:port). Resolves the host once, here,
 * so the loop never waits on DNS. */
int upstream_pool_new(struct node *node, const char *url, const char *host, uint16_t port,
                      struct upstream_pool **out, struct err *err) MUST_CHECK;
void upstream_pool_free(struct upstream_pool *pool);
/* Whether no exchange is in flight on `pool` (idle connections aside). */
bool upstream_pool_unused(const struct upstream_pool *pool);
const char *upstream_pool_name(const struct upstream_pool *pool);
/* Bytes taken from a connection's socket per read callback (default
 * UPSTREAM_READ_MAX). Everything a callback does with what it read runs
 * before the loop serves anything else, so a long stream of small records
 * (the confirmed log) is read in smaller pieces than a backend's answer. */
#define UPSTREAM_READ_MAX 65536
void upstream_pool_set_read_max(struct upstream_pool *pool, size_t bytes);

/* Sends `req` (a complete HTTP/1.1 request, head and body; taken over by the
 * exchange) and reports through `h`. Returns NULL only when memory runs out. */
struct upstream_exchange *upstream_send(struct upstream_pool *pool, struct sbuf *req,
                                        bool head_request, bool idempotent,
                                        const struct upstream_handler *h, void *ctx);

/* Detaches the caller: no callback is made after this returns. */
void upstream_cancel(struct upstream_exchange *ex);

/* Flow control while the client is slower than the backend. */
void upstream_pause(struct upstream_exchange *ex);
void upstream_resume(struct upstream_exchange *ex);

/* Enforces connect, response and idle timeouts; called by the maintenance timer. */
void upstream_sweep(struct upstream_pool *pool, uint64_t now_ms);

#endif
