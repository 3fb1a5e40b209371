/* embedded: an LMDB-backed single-writer JSON document store inside the node,
 * reached through the same request path as an HTTP backend (`backend: embedded`).
 * Owns its LMDB environment under the region's data_dir and its committer
 * (util/committer: concurrent writes share one transaction and one fsync).
 * Another part may keep its databases in the same environment and commit a
 * store write together with its own changes (the replication journal does).
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

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>

#include "../util/err.h"

/* The LMDB map size embedded_open uses: the most the store can ever hold. */
#define EMBEDDED_MAP_SIZE ((size_t)1 << 30)
/* LMDB databases in the environment: the store's two, and a sharing part's. */
#define EMBEDDED_MAX_DBS 16

struct event_base;
struct committer;
struct json_t;
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
    /* The body already parsed by the caller (a JSON object whose text is
     * `body`), or NULL: saves parsing it again. */
    const struct json_t *doc;
    /* The body is known to be a JSON object (a document from the confirmed
     * log, checked when it arrived): a PUT only scans it for its "id". */
    bool checked;
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

/* As embedded_open, with the LMDB map size in bytes (embedded_open uses
 * EMBEDDED_MAP_SIZE). */
int embedded_open_sized(struct event_base *base, const char *dir, size_t map_size,
                        struct embedded **out, struct err *err) MUST_CHECK;

/* Stops the committer after finishing queued jobs (a sharing part's too):
 * every completion not yet delivered runs (unless cancelled) before it
 * returns; new requests get 503. Then embedded_close. */
void embedded_stop(struct embedded *st);

/* Stops (when not stopped yet) and closes LMDB. Call on the loop thread,
 * never from a done callback; a part sharing the environment must be closed
 * first. */
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

/* The environment and committer, for a part that keeps its databases next
 * to the store's (at most EMBEDDED_MAX_DBS - 2 of them) and submits its jobs
 * to the same committer; valid until embedded_stop / embedded_close. */
MDB_env *embedded_env(struct embedded *st);
struct committer *embedded_committer(struct embedded *st);

/* A write committed as part of another job of the store's committer:
 * embedded_write_prepare checks the request like embedded_handle (PUT,
 * POST, DELETE only); NULL means done was already called with the refusal
 * (400, 405, 503). The caller then runs embedded_write_apply inside its own
 * job's transaction (committer thread; -1 only for an LMDB failure: the job
 * must then fail, so nothing of it stays), may look at
 * embedded_write_status there (2xx: applied; 404, 409, 412: refused,
 * nothing changed), and calls embedded_write_finish on the loop with the
 * job's result, which calls done (a 500 when rc < 0) and frees the op. */
struct embedded_op *embedded_write_prepare(struct embedded *st, const struct store_request *req,
                                           embedded_done_fn done, void *ctx);
int embedded_write_apply(struct embedded *st, MDB_txn *txn, struct embedded_op *op,
                         struct err *err) MUST_CHECK;
int embedded_write_status(const struct embedded_op *op);
void embedded_write_finish(struct embedded_op *op, int rc, const char *reason);

/* A prepared write's key in the store, and the document it stores (NULL
 * for a delete). */
const char *embedded_write_key(const struct embedded_op *op, size_t *len);
const char *embedded_write_doc(const struct embedded_op *op, size_t *len);

/* The document stored under a key (as embedded_write_key gives it), read in
 * txn, a transaction of the store's environment; NULL when there is none.
 * Valid until txn ends. */
const char *embedded_doc_in(struct embedded *st, MDB_txn *txn, const char *key, size_t key_len,
                            size_t *len);

/* Write transactions committed so far; grouping makes it far fewer than the
 * writes acknowledged (exposed for tests and metrics). */
unsigned long embedded_commit_count(struct embedded *st);

#endif
