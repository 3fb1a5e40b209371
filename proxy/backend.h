/* backend: Meridian's own calls to the region's backend (the write path,
 * the applier, recovery), whichever kind it is: the HTTP upstream pool or
 * the embedded store. Buffers the whole answer and hands it over once.
 * Owns the call until its callback has run or it is cancelled. */
#ifndef MERIDIAN_BACKEND_H
#define MERIDIAN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "headers.h"

struct node;
struct backend_call;

struct backend_answer {
    int status;                 /* 0 when the backend could not be reached */
    const char *headers;        /* end-to-end headers as "Name: value\r\n" lines */
    size_t headers_len;
    const char *etag;           /* the backend's ETag, or NULL */
    const char *body;
    size_t body_len;
    const char *error;          /* why status is 0 */
    bool timeout;               /* ... and it was a timeout (504 rather than 502) */
};

typedef void (*backend_fn)(void *arg, const struct backend_answer *a);

/* Sends METHOD path with `body` (JSON, may be NULL). `client` carries the
 * client's request head when the call serves a client (its end-to-end
 * headers are forwarded), or NULL. `fn` runs exactly once unless cancelled,
 * possibly before this returns. Returns the call while it is in flight, NULL
 * once it has completed (or failed) already. */
struct backend_call *backend_request(struct node *n, const char *method, const char *path,
                                     const struct hdr_block *client, const char *client_ip,
                                     const char *body, size_t len, backend_fn fn, void *arg);

/* The same, to another HTTP server's pool (a peer region). */
struct upstream_pool;
struct backend_call *backend_http(struct node *n, struct upstream_pool *pool, const char *method,
                                  const char *path, const char *body, size_t len, backend_fn fn,
                                  void *arg);

/* A client's request forwarded to a peer region: its end-to-end headers go
 * along, plus `extra` ("Name: value\r\n" lines), and its body. */
struct backend_call *backend_forward(struct node *n, struct upstream_pool *pool,
                                     const char *method, const char *path,
                                     const struct hdr_block *client, const char *extra,
                                     const char *body, size_t len, backend_fn fn, void *arg);

/* No callback after this. */
void backend_cancel(struct backend_call *call);

/* The embedded store, for writes committed together with the journal
 * (embedded_write_prepare): the store's request for METHOD path (with the
 * client's If-Match / If-None-Match), and its answer handed to `fn` as a
 * backend answer, headers included, as backend_request would. */
struct store_request;
struct store_response;
void backend_store_request(const char *method, const char *path, const struct hdr_block *client,
                           const char *body, size_t len, struct store_request *out);
void backend_store_answer(const struct store_response *r, backend_fn fn, void *arg);

#endif
