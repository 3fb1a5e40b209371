/* embedded: an LMDB-backed single-writer JSON document store inside the node,
 * reached through the same request path as an HTTP backend (`backend: embedded`).
 * Owns its LMDB environment under the region's data_dir and one committer
 * thread that groups concurrent writes into one transaction and one fsync.
 * Never blocks the event loop on a disk sync; never acknowledges a write before
 * its transaction is durable.
 *
 * Paths: the document id is the last path segment, the collection is
 * everything before it: PUT /orders/abc -> collection "/orders/", id "abc".
 *   PUT    {coll}{id}   create (201) or replace (200); body must be a JSON object
 *   POST   {coll}       create; id from the body's "id" (400 if missing, 409 if it exists)
 *   GET    {coll}{id}   the document; HEAD the same without body
 *   DELETE {coll}{id}   remove (200), 404 if absent
 *   GET    {coll}       list documents in id order: ?limit=N (default 100, max 1000)&after=ID
 *                        -> {"documents":[...],"count":N,"next":"<last id>"|null}
 * Ids are one percent-decoded path segment (no NUL, no '/', valid UTF-8).
 * Every success carries an ETag: the store's write sequence at the document's
 * last write (for a listing, the current one), so it changes on every write and
 * survives restarts. If-Match (412 on mismatch) and If-None-Match: * (412 if it
 * exists) are honoured on writes. Errors are JSON:
 * {"error": "...", "reason": "..."} (405 adds "allow"). */
#ifndef MERIDIAN_EMBEDDED_H
#define MERIDIAN_EMBEDDED_H

#include <stddef.h>

#include "../util/err.h"

struct event_base;
struct embedded;
struct embedded_op;

struct store_request {
    const char *method;          /* "GET", "HEAD", "PUT", "POST", "DELETE", ... */
    const char *path;            /* request target as received, may carry a query */
    size_t path_len;
    const char *if_match;        /* header value or NULL */
    const char *if_none_match;   /* header value or NULL */
    const char *body;
    size_t body_len;
};

struct store_response {
    int status;
    const char *etag;            /* quoted strong ETag, or NULL */
    const char *location;        /* for 201: the new document's path, or NULL */
    const char *body;            /* JSON text (also for HEAD: the proxy drops it) */
    size_t body_len;
};

/* Called once per request, on the event loop thread. `resp` and everything it
 * points to are valid only during the call. */
typedef void (*embedded_done_fn)(void *ctx, const struct store_response *resp);

/* Opens (creating if needed) the store in `dir` and starts its committer
 * thread, whose completions are delivered on `base`. */
int embedded_open(struct event_base *base, const char *dir, struct embedded **out,
                  struct err *err) MUST_CHECK;

/* As embedded_open, with the LMDB map size in bytes: the most the store can
 * ever hold (embedded_open uses 1 GiB). */
int embedded_open_sized(struct event_base *base, const char *dir, size_t map_size,
                        struct embedded **out, struct err *err) MUST_CHECK;

/* Stops the committer after finishing queued writes, closes LMDB. Writes that
 * completed but were not yet delivered get their done called (unless
 * cancelled) before it returns. Call on the loop thread, never from a done
 * callback. */
void embedded_close(struct embedded *st);

/* Serves one request. Reads may complete before this returns (done is called
 * synchronously and NULL is returned); writes complete later on the loop and
 * return a handle that embedded_cancel() detaches from its callback (the write
 * itself still completes: it cannot be half-applied).
 * Every answer that needs no commit (reads, and writes refused before they are
 * queued: 400, 405, 503 while closing) is synchronous: NULL always means done
 * was already called, a handle always means it was not yet. */
struct embedded_op *embedded_handle(struct embedded *st, const struct store_request *req,
                                    embedded_done_fn done, void *ctx);

/* Only before the op's done was called; the handle is freed by the store. */
void embedded_cancel(struct embedded_op *op);

/* 0 when the store can commit (used by /_meridian/ready); -1 with a reason otherwise. */
int embedded_check(struct embedded *st, struct err *err) MUST_CHECK;

/* Write transactions committed so far; grouping makes it far fewer than the
 * writes acknowledged (exposed for tests and metrics). */
unsigned long embedded_commit_count(struct embedded *st);

#endif
