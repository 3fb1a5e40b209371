/* embedded: the LMDB document store inside the node.
 *
 * One request, from the proxy's call to its answer:
 *
 *   embedded_handle()                         event-loop thread
 *     docpath_parse()          400 on a bad path or id
 *     GET/HEAD {coll}{id} ───▶ embedded_get()   ─┐ read txn (renew/reset),
 *     GET/HEAD {coll}     ───▶ embedded_list()  ─┤ done() called before return,
 *     other methods       ───▶ 405              ─┘ NULL returned
 *     PUT/DELETE {coll}{id}, POST {coll}
 *       ───▶ embedded_write(): body checked with Jansson (400 at once),
 *            one job queued on the committer, op returned
 *
 *   committer thread (util/committer), one job per write
 *     jobs queued meanwhile share one write txn and one fsync; each runs in
 *     a nested txn: embedded_write_apply(): preconditions (412), POST exists
 *     (409), DELETE absent (404), else write + next sequence. A write LMDB
 *     cannot hold (MDB_MAP_FULL) fails alone, with a 500.
 *
 *   embedded_job_done()                       event-loop thread
 *     done(ctx, resp) unless cancelled ──▶ op freed
 *
 * Another part may keep its databases in the store's environment and commit
 * a store write together with its own changes, in one job of the same
 * committer (the replication journal does: one fsync for a replicated
 * write): embedded_write_prepare() on the loop, embedded_write_apply() in
 * its job, embedded_write_finish() on the loop.
 *
 * Data layout: db "docs" maps collection '\0' id to an 8-byte big-endian
 * sequence (the ETag) followed by the document's JSON text as received; db
 * "meta" holds "seq", the last sequence handed out, so tags keep growing
 * across restarts. Collections never contain NUL, so one collection's keys are
 * contiguous and in id order. */
#include "embedded.h"

#include "../util/committer.h"
#include "../util/fs.h"
#include "../util/jsonscan.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <lmdb.h>

#include "docpath.h"

#define EMBEDDED_SEQ_LEN 8

static const char embedded_oom_body[] =
    "{\"error\":\"internal\",\"reason\":\"out of memory while building the answer\"}";

enum embedded_kind { EMBEDDED_PUT, EMBEDDED_POST, EMBEDDED_DELETE };

struct embedded_op {
    struct embedded *st;
    enum embedded_kind kind;
    char *key;                  /* collection '\0' id, NUL-terminated after the id */
    size_t key_len;             /* without that final NUL */
    size_t coll_len;
    char *doc;                  /* PUT/POST: the JSON text to store */
    size_t doc_len;
    char *location;             /* PUT/POST: the document's path, sent with a 201 */
    char *if_match;
    char *if_none_match;
    embedded_done_fn done;
    void *ctx;
    bool cancelled;             /* touched only on the loop thread */
    /* The outcome, written by the committer before the op is handed back. */
    int status;
    char etag[DOCPATH_ETAG_MAX]; /* "" when the answer carries none */
    bool body_is_doc;
    char *body;
    size_t body_len;
};

struct embedded {
    struct event_base *base;
    MDB_env *env;
    MDB_dbi docs;
    MDB_dbi meta;
    MDB_txn *rtxn;              /* the loop's read txn, reset between reads */
    size_t max_key;
    struct committer *committer; /* NULL once stopped */
    bool closing;               /* loop thread only */
};

static uint64_t embedded_be64_get(const void *p)
{
    const unsigned char *b = p;
    uint64_t v = 0;

    for (int i = 0; i < EMBEDDED_SEQ_LEN; i++)
        v = (v << 8) | b[i];
    return v;
}

static void embedded_be64_put(void *p, uint64_t v)
{
    unsigned char *b = p;

    for (int i = EMBEDDED_SEQ_LEN - 1; i >= 0; i--) {
        b[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static const char *embedded_json_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER:
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

/* A JSON string literal for `s` (which must be UTF-8), malloc'd; NULL on OOM. */
static char *embedded_json_quote(const char *s, size_t len)
{
    json_t *str = json_stringn(s, len);
    char *out = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;

    json_decref(str);
    return out;
}

/* {"error": error, "reason": reason[, "allow": allow]} as malloc'd text; NULL
 * on OOM. The reason may quote user input cut anywhere, hence the sanitizing. */
static char *embedded_error_json(const char *error, const char *reason, const char *allow,
                                 size_t *len)
{
    char clean[sizeof ((struct err *)0)->msg];

    snprintf(clean, sizeof clean, "%s", reason);
    docpath_utf8_sanitize(clean, strlen(clean));
    json_t *obj = json_pack("{s:s, s:s}", "error", error, "reason", clean);
    if (obj && allow)
        json_object_set_new(obj, "allow", json_string(allow));
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    *len = text ? strlen(text) : 0;
    return text;
}

static void embedded_reply(embedded_done_fn done, void *ctx, int status, const char *etag,
                           const char *body, size_t len)
{
    struct store_response resp = {
        .status = status, .etag = etag, .location = NULL, .body = body, .body_len = len,
    };
    done(ctx, &resp);
}

static void embedded_reply_error(embedded_done_fn done, void *ctx, int status, const char *error,
                                 const char *allow, const char *reason)
{
    size_t len;
    char *body = embedded_error_json(error, reason, allow, &len);

    if (body)
        embedded_reply(done, ctx, status, NULL, body, len);
    else
        embedded_reply(done, ctx, status, NULL, embedded_oom_body, sizeof embedded_oom_body - 1);
    free(body);
}

/* collection '\0' id '\0' in one malloc'd buffer; *len excludes the final NUL. */
static char *embedded_key_make(const char *coll, size_t coll_len, const char *id, size_t id_len,
                               size_t *len)
{
    char *key = malloc(coll_len + id_len + 2);

    if (!key)
        return NULL;
    memcpy(key, coll, coll_len);
    key[coll_len] = '\0';
    memcpy(key + coll_len + 1, id, id_len);
    key[coll_len + 1 + id_len] = '\0';
    *len = coll_len + 1 + id_len;
    return key;
}

static int embedded_key_check(const struct embedded *st, size_t key_len, struct err *err)
{
    if (key_len > st->max_key)
        return err_set(err, "collection path plus id is %zu bytes; the store's keys hold at most "
                       "%zu (path and id together, plus one)", key_len, st->max_key);
    return 0;
}

/* ---- reads, on the loop thread --------------------------------------- */

static int embedded_rtxn_begin(struct embedded *st, struct err *err)
{
    int rc = mdb_txn_renew(st->rtxn);

    if (rc != 0)
        return err_set(err, "cannot start a read transaction: %s", mdb_strerror(rc));
    return 0;
}

static int embedded_meta_seq(const struct embedded *st, MDB_txn *txn, uint64_t *seq,
                             struct err *err)
{
    MDB_val k = { 3, (void *)"seq" }, v;
    int rc = mdb_get(txn, st->meta, &k, &v);

    *seq = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return err_set(err, "reading the store's sequence failed: %s", mdb_strerror(rc));
    if (v.mv_size != EMBEDDED_SEQ_LEN)
        return err_set(err, "the store's sequence record is corrupt (%zu bytes)", v.mv_size);
    *seq = embedded_be64_get(v.mv_data);
    return 0;
}

/* Copies the document under `key` out of the read txn so that the answer does
 * not pin a snapshot (and a done callback may start another read). *json is
 * malloc'd and owned by the caller; it stays NULL when there is no document. */
static int embedded_read_doc(struct embedded *st, const char *key, size_t key_len, char **json,
                             size_t *len, char etag[DOCPATH_ETAG_MAX], struct err *err)
{
    MDB_val k = { key_len, (void *)key }, v;
    int rc;

    *json = NULL;
    if (embedded_rtxn_begin(st, err) < 0)
        return -1;
    rc = mdb_get(st->rtxn, st->docs, &k, &v);
    if (rc == 0 && v.mv_size >= EMBEDDED_SEQ_LEN) {
        docpath_etag_format(embedded_be64_get(v.mv_data), etag);
        *len = v.mv_size - EMBEDDED_SEQ_LEN;
        *json = malloc(*len + 1);
        if (*json)
            memcpy(*json, (char *)v.mv_data + EMBEDDED_SEQ_LEN, *len);
    }
    mdb_txn_reset(st->rtxn);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return err_set(err, "reading the document failed: %s", mdb_strerror(rc));
    if (rc == 0 && !*json)
        return err_set(err, v.mv_size < EMBEDDED_SEQ_LEN ? "the stored record is corrupt"
                                                         : "out of memory");
    return 0;
}

static void embedded_get(struct embedded *st, const struct docpath *dp, embedded_done_fn done,
                         void *ctx)
{
    char etag[DOCPATH_ETAG_MAX], *json = NULL, *key;
    size_t key_len, len = 0;
    struct err err;

    key = embedded_key_make(dp->coll, dp->coll_len, dp->id, dp->id_len, &key_len);
    if (!key) {
        embedded_reply_error(done, ctx, 500, "internal", NULL, "out of memory");
        return;
    }
    if (embedded_key_check(st, key_len, &err) < 0) {
        embedded_reply_error(done, ctx, 400, "bad_request", NULL, err.msg);
    } else if (embedded_read_doc(st, key, key_len, &json, &len, etag, &err) < 0) {
        embedded_reply_error(done, ctx, 500, "store_error", NULL, err.msg);
    } else if (!json) {
        err_set(&err, "no document '%s' in %.*s", dp->id, (int)dp->coll_len, dp->coll);
        embedded_reply_error(done, ctx, 404, "not_found", NULL, err.msg);
    } else {
        embedded_reply(done, ctx, 200, etag, json, len);
    }
    free(json);
    free(key);
}

/* A growable text buffer for listings; `oom` sticks once an append failed. */
struct embedded_buf {
    char *p;
    size_t len;
    size_t cap;
    bool oom;
};

static void embedded_buf_add(struct embedded_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static bool embedded_in_coll(const MDB_val *k, const char *prefix, size_t prefix_len)
{
    return k->mv_size >= prefix_len && memcmp(k->mv_data, prefix, prefix_len) == 0;
}

/* Puts the cursor on the first key at or after `start` (strictly after when
 * `exclusive`); returns the LMDB code, MDB_NOTFOUND past the last key. */
static int embedded_list_seek(MDB_cursor *cur, const char *start, size_t start_len,
                              bool exclusive, MDB_val *k, MDB_val *v)
{
    k->mv_data = (void *)start;
    k->mv_size = start_len;
    int rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
    if (rc == 0 && exclusive && k->mv_size == start_len &&
        memcmp(k->mv_data, start, start_len) == 0)
        rc = mdb_cursor_get(cur, k, v, MDB_NEXT);
    return rc;
}

/* Appends the `next` member and closes the listing object. */
static void embedded_list_tail(struct embedded_buf *b, size_t count, const MDB_val *last,
                               size_t prefix_len, bool more)
{
    char num[32];
    char *next = NULL;

    snprintf(num, sizeof num, "],\"count\":%zu,\"next\":", count);
    embedded_buf_add(b, num, strlen(num));
    if (more) {
        next = embedded_json_quote((char *)last->mv_data + prefix_len,
                                   last->mv_size - prefix_len);
        b->oom |= next == NULL;
    }
    embedded_buf_add(b, next ? next : "null", next ? strlen(next) : 4);
    embedded_buf_add(b, "}", 1);
    free(next);
}

/* Writes one page of the collection whose keys start with key[0..prefix_len)
 * into `b`, starting after key[prefix_len..key_len) when that is not empty. */
static int embedded_list_page(MDB_cursor *cur, const char *key, size_t key_len,
                              size_t prefix_len, size_t limit, struct embedded_buf *b,
                              struct err *err)
{
    MDB_val k, v, last = { 0, NULL };
    size_t count = 0;
    int rc = embedded_list_seek(cur, key, key_len, key_len > prefix_len, &k, &v);

    embedded_buf_add(b, "{\"documents\":[", 14);
    while (rc == 0 && count < limit && embedded_in_coll(&k, key, prefix_len)) {
        if (v.mv_size < EMBEDDED_SEQ_LEN)
            return err_set(err, "a stored record is corrupt");
        if (count++)
            embedded_buf_add(b, ",", 1);
        embedded_buf_add(b, (char *)v.mv_data + EMBEDDED_SEQ_LEN, v.mv_size - EMBEDDED_SEQ_LEN);
        last = k;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        return err_set(err, "listing failed: %s", mdb_strerror(rc));
    embedded_list_tail(b, count, &last, prefix_len,
                       rc == 0 && embedded_in_coll(&k, key, prefix_len));
    if (b->oom)
        return err_set(err, "out of memory");
    return 0;
}

/* Lists inside one read txn so the page and its ETag name the same snapshot. */
static int embedded_list_read(struct embedded *st, const char *key, size_t key_len,
                              size_t prefix_len, size_t limit, struct embedded_buf *b,
                              char etag[DOCPATH_ETAG_MAX], struct err *err)
{
    MDB_cursor *cur = NULL;
    uint64_t seq;
    int rc, ret = -1;

    if (embedded_rtxn_begin(st, err) < 0)
        return -1;
    if (embedded_meta_seq(st, st->rtxn, &seq, err) < 0)
        goto out;
    docpath_etag_format(seq, etag);
    rc = mdb_cursor_open(st->rtxn, st->docs, &cur);
    if (rc != 0) {
        err_set(err, "cannot open a cursor: %s", mdb_strerror(rc));
        goto out;
    }
    ret = embedded_list_page(cur, key, key_len, prefix_len, limit, b, err);
    mdb_cursor_close(cur);
out:
    mdb_txn_reset(st->rtxn);
    return ret;
}

static void embedded_list(struct embedded *st, const struct docpath *dp, embedded_done_fn done,
                          void *ctx)
{
    struct docpath_list q;
    struct embedded_buf b = { 0 };
    struct err err;
    char etag[DOCPATH_ETAG_MAX], *key = NULL;
    size_t key_len;

    if (docpath_parse_list(dp->query, dp->query_len, &q, &err) < 0) {
        embedded_reply_error(done, ctx, 400, "bad_request", NULL, err.msg);
        return;
    }
    key = embedded_key_make(dp->coll, dp->coll_len, q.after ? q.after : "", q.after_len,
                            &key_len);
    if (!key)
        embedded_reply_error(done, ctx, 500, "internal", NULL, "out of memory");
    else if (embedded_key_check(st, key_len, &err) < 0)
        embedded_reply_error(done, ctx, 400, "bad_request", NULL, err.msg);
    else if (embedded_list_read(st, key, key_len, dp->coll_len + 1, q.limit, &b, etag, &err) < 0)
        embedded_reply_error(done, ctx, 500, "store_error", NULL, err.msg);
    else
        embedded_reply(done, ctx, 200, etag, b.p, b.len);
    free(b.p);
    free(key);
    docpath_list_release(&q);
}

/* ---- writes: prepared on the loop thread ------------------------------ */

static void embedded_op_free(struct embedded_op *op)
{
    free(op->key);
    free(op->doc);
    free(op->location);
    free(op->if_match);
    free(op->if_none_match);
    free(op->body);
    free(op);
}

/* Parses a write's body; returns the object (the caller's reference) or NULL
 * with the reason a client needs to fix it. */
static json_t *embedded_parse_object(const char *body, size_t len, struct err *err)
{
    json_error_t jerr;
    /* JSON_DECODE_ANY: a scalar is valid JSON, and the client should hear
     * that it is the wrong type rather than a parse error. */
    json_t *doc = json_loadb(body ? body : "", body ? len : 0, JSON_DECODE_ANY, &jerr);

    if (!doc) {
        err_set(err, "body is not valid JSON: %s at line %d column %d", jerr.text, jerr.line,
                jerr.column);
        return NULL;
    }
    if (!json_is_object(doc)) {
        err_set(err, "body must be a JSON object, got %s", embedded_json_type(doc));
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* The body with "id": <id> inserted as the object's first member, so the
 * client's own text (number formatting included) is otherwise kept as sent. */
static char *embedded_insert_id(const char *body, size_t len, const char *id, size_t id_len,
                                bool empty, size_t *out_len)
{
    size_t head = (size_t)((const char *)memchr(body, '{', len) - body) + 1;
    char *quoted = embedded_json_quote(id, id_len);
    size_t qlen = quoted ? strlen(quoted) : 0;
    char *out = quoted ? malloc(len + qlen + 7) : NULL;
    size_t n = head;

    if (out) {
        memcpy(out, body, head);
        memcpy(out + n, "\"id\":", 5);
        n += 5;
        memcpy(out + n, quoted, qlen);
        n += qlen;
        if (!empty)
            out[n++] = ',';
        memcpy(out + n, body + head, len - head);
        n += len - head;
        out[n] = '\0';
        *out_len = n;
    }
    free(quoted);
    return out;
}

static char *embedded_memdup(const char *s, size_t len)
{
    char *p = malloc(len + 1);

    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

/* PUT: the body's "id", when present, must repeat the URL's id. */
static int embedded_prepare_put(struct embedded_op *op, const struct store_request *req,
                                const struct docpath *dp, json_t *doc, struct err *err)
{
    json_t *jid = json_object_get(doc, "id");

    if (jid && !json_is_string(jid))
        return err_set(err, "\"id\" in the body must be a string, got %s",
                       embedded_json_type(jid));
    if (jid && (json_string_length(jid) != dp->id_len ||
                memcmp(json_string_value(jid), dp->id, dp->id_len) != 0))
        return err_set(err, "\"id\" in the body ('%.200s') does not match the id in the path "
                       "('%.200s')", json_string_value(jid), dp->id);
    if (jid) {
        op->doc = embedded_memdup(req->body, req->body_len);
        op->doc_len = req->body_len;
    } else {
        op->doc = embedded_insert_id(req->body, req->body_len, dp->id, dp->id_len,
                                     json_object_size(doc) == 0, &op->doc_len);
    }
    op->key = embedded_key_make(dp->coll, dp->coll_len, dp->id, dp->id_len, &op->key_len);
    return 0;
}

/* POST: the id comes from the body and must be usable as one path segment. */
static int embedded_prepare_post(struct embedded_op *op, const struct store_request *req,
                                 const struct docpath *dp, json_t *doc, struct err *err)
{
    json_t *jid = json_object_get(doc, "id");

    if (!jid)
        return err_set(err, "POST needs the new document's \"id\" in the body");
    if (!json_is_string(jid))
        return err_set(err, "\"id\" in the body must be a string, got %s",
                       embedded_json_type(jid));
    if (json_string_length(jid) == 0)
        return err_set(err, "\"id\" in the body must not be empty");
    if (strchr(json_string_value(jid), '/'))
        return err_set(err, "\"id\" in the body must not contain '/': ids are single path "
                       "segments");
    op->doc = embedded_memdup(req->body, req->body_len);
    op->doc_len = req->body_len;
    op->key = embedded_key_make(dp->coll, dp->coll_len, json_string_value(jid),
                                json_string_length(jid), &op->key_len);
    return 0;
}

/* The path a 201 names: the collection plus the id as one encoded segment. */
static char *embedded_location(const struct embedded_op *op)
{
    char *seg = docpath_encode_segment(op->key + op->coll_len + 1,
                                       op->key_len - op->coll_len - 1);
    char *loc = seg ? malloc(op->coll_len + strlen(seg) + 1) : NULL;

    if (loc) {
        memcpy(loc, op->key, op->coll_len);
        strcpy(loc + op->coll_len, seg);
    }
    free(seg);
    return loc;
}

/* A PUT whose body the caller has checked already (valid JSON, an object):
 * only its top-level "id" is looked at, by scanning, not parsing. Returns 1
 * when the body needs the full treatment after all (an "id" that is not a
 * plain string, an escaped member name), else as embedded_prepare_put. */
static int embedded_prepare_checked(struct embedded_op *op, const struct store_request *req,
                                    const struct docpath *dp, struct err *err)
{
    struct jsonscan_object o;
    struct jsonscan_member m, id = { 0 };
    bool empty = true;

    if (!jsonscan_object_open(&o, req->body, req->body + req->body_len))
        return 1;
    while (jsonscan_member(&o, &m)) {
        empty = false;
        if (m.key_escaped)
            return 1;
        if (m.key_len == 2 && memcmp(m.key, "id", 2) == 0)
            id = m;
    }
    if (o.failed || (id.value && (*id.value != '"' || memchr(id.value, '\\',
                                                               (size_t)(id.value_end - id.value)))))
        return 1;
    if (id.value && ((size_t)(id.value_end - id.value) != dp->id_len + 2 ||
                     memcmp(id.value + 1, dp->id, dp->id_len) != 0))
        return err_set(err, "\"id\" in the body (%.*s) does not match the id in the path "
                       "('%.200s')", (int)(id.value_end - id.value), id.value, dp->id);
    if (id.value) {
        op->doc = embedded_memdup(req->body, req->body_len);
        op->doc_len = req->body_len;
    } else {
        op->doc = embedded_insert_id(req->body, req->body_len, dp->id, dp->id_len, empty,
                                     &op->doc_len);
    }
    op->key = embedded_key_make(dp->coll, dp->coll_len, dp->id, dp->id_len, &op->key_len);
    return 0;
}

/* Fills `op` from the request; -1 with a client-facing reason (400). */
static int embedded_prepare_body(struct embedded_op *op, const struct store_request *req,
                                 const struct docpath *dp, struct err *err)
{
    int rc = 1;

    if (req->checked && !req->doc && op->kind == EMBEDDED_PUT)
        rc = embedded_prepare_checked(op, req, dp, err);
    if (rc <= 0) {
        if (rc == 0 && op->key && op->doc)
            op->location = embedded_location(op);
        return rc;
    }
    json_t *doc = req->doc ? json_incref((json_t *)req->doc)
                           : embedded_parse_object(req->body, req->body_len, err);

    if (!doc)
        return -1;
    if (op->kind == EMBEDDED_PUT)
        rc = embedded_prepare_put(op, req, dp, doc, err);
    else
        rc = embedded_prepare_post(op, req, dp, doc, err);
    json_decref(doc);
    if (rc == 0 && op->key && op->doc)
        op->location = embedded_location(op);
    return rc;
}

static int embedded_prepare(struct embedded *st, struct embedded_op *op,
                            const struct store_request *req, const struct docpath *dp,
                            struct err *err)
{
    op->coll_len = dp->coll_len;
    if (op->kind == EMBEDDED_DELETE)
        op->key = embedded_key_make(dp->coll, dp->coll_len, dp->id, dp->id_len, &op->key_len);
    else if (embedded_prepare_body(op, req, dp, err) < 0)
        return -1;
    op->if_match = req->if_match ? strdup(req->if_match) : NULL;
    op->if_none_match = req->if_none_match ? strdup(req->if_none_match) : NULL;
    if (!op->key || (op->kind != EMBEDDED_DELETE && (!op->doc || !op->location)) ||
        (req->if_match && !op->if_match) || (req->if_none_match && !op->if_none_match))
        return err_set(err, "out of memory");
    return embedded_key_check(st, op->key_len, err);
}

/* A write ready to apply, not yet queued; NULL when done was called with
 * the refusal. */
static struct embedded_op *embedded_write_new(struct embedded *st, const struct store_request *req,
                                              const struct docpath *dp, enum embedded_kind kind,
                                              embedded_done_fn done, void *ctx)
{
    struct embedded_op *op = calloc(1, sizeof *op);
    struct err err;

    if (!op) {
        embedded_reply_error(done, ctx, 500, "internal", NULL, "out of memory");
        return NULL;
    }
    op->st = st;
    op->kind = kind;
    op->done = done;
    op->ctx = ctx;
    if (embedded_prepare(st, op, req, dp, &err) < 0) {
        embedded_op_free(op);
        embedded_reply_error(done, ctx, 400, "bad_request", NULL, err.msg);
        return NULL;
    }
    return op;
}

/* ---- writes: applied on the committer thread --------------------------- */

static void embedded_op_fail(struct embedded_op *op, int status, const char *error,
                             const char *reason)
{
    free(op->body);
    op->status = status;
    op->body_is_doc = false;
    op->body = embedded_error_json(error, reason, NULL, &op->body_len);
}

static const char *embedded_op_id(const struct embedded_op *op)
{
    return op->key + op->coll_len + 1;
}

/* Stores op->doc under the next sequence: a 201 or a 200. */
static int embedded_apply_put(struct embedded *st, MDB_txn *txn, struct embedded_op *op,
                              bool exists, uint64_t *seq, struct err *err)
{
    MDB_val k = { op->key_len, op->key }, v = { EMBEDDED_SEQ_LEN + op->doc_len, NULL };
    int rc = mdb_put(txn, st->docs, &k, &v, MDB_RESERVE);

    if (rc != 0)
        return err_set(err, "writing '%s' failed: %s", embedded_op_id(op), mdb_strerror(rc));
    *seq += 1;
    embedded_be64_put(v.mv_data, *seq);
    memcpy((char *)v.mv_data + EMBEDDED_SEQ_LEN, op->doc, op->doc_len);
    op->status = exists ? 200 : 201;
    op->body_is_doc = true;
    docpath_etag_format(*seq, op->etag);
    return 0;
}

static int embedded_apply_delete(struct embedded *st, MDB_txn *txn, struct embedded_op *op,
                                 bool exists, uint64_t *seq, struct err *err)
{
    MDB_val k = { op->key_len, op->key };
    struct err why;

    if (!exists) {
        err_set(&why, "no document '%s' in %.*s", embedded_op_id(op), (int)op->coll_len,
                op->key);
        embedded_op_fail(op, 404, "not_found", why.msg);
        return 0;
    }
    int rc = mdb_del(txn, st->docs, &k, NULL);
    if (rc != 0)
        return err_set(err, "deleting '%s' failed: %s", embedded_op_id(op), mdb_strerror(rc));
    /* A delete changes the collection, so it takes a sequence too: a listing's
     * ETag must change with it. */
    *seq += 1;
    docpath_etag_format(*seq, op->etag);
    op->status = 200;
    json_t *ok = json_pack("{s:b, s:s}", "ok", 1, "id", embedded_op_id(op));
    op->body = ok ? json_dumps(ok, JSON_COMPACT) : NULL;
    op->body_len = op->body ? strlen(op->body) : 0;
    json_decref(ok);
    return 0;
}

/* Answers 412 or 409 when the op must not run against the current record;
 * returns true when it did. */
static bool embedded_refuse(struct embedded_op *op, const char *cur_etag)
{
    struct err why, reason;

    if (docpath_preconditions(op->if_match, op->if_none_match, cur_etag, &why) < 0) {
        err_set(&reason, "document '%s' in %.*s: %s", embedded_op_id(op), (int)op->coll_len,
                op->key, why.msg);
        embedded_op_fail(op, 412, "precondition_failed", reason.msg);
    } else if (op->kind == EMBEDDED_POST && cur_etag) {
        err_set(&reason, "document '%s' already exists in %.*s", embedded_op_id(op),
                (int)op->coll_len, op->key);
        embedded_op_fail(op, 409, "conflict", reason.msg);
    } else {
        return false;
    }
    if (cur_etag)
        snprintf(op->etag, sizeof op->etag, "%s", cur_etag);
    return true;
}

/* Applies one op inside the batch's txn; -1 only for an LMDB failure, which
 * dooms the whole batch. */
static int embedded_apply_op(struct embedded *st, MDB_txn *txn, struct embedded_op *op,
                             uint64_t *seq, struct err *err)
{
    MDB_val k = { op->key_len, op->key }, v;
    char cur[DOCPATH_ETAG_MAX];
    int rc = mdb_get(txn, st->docs, &k, &v);

    if (rc != 0 && rc != MDB_NOTFOUND)
        return err_set(err, "reading '%s' failed: %s", embedded_op_id(op), mdb_strerror(rc));
    if (rc == 0 && v.mv_size < EMBEDDED_SEQ_LEN)
        return err_set(err, "the stored record of '%s' is corrupt", embedded_op_id(op));
    if (rc == 0)
        docpath_etag_format(embedded_be64_get(v.mv_data), cur);
    if (embedded_refuse(op, rc == 0 ? cur : NULL))
        return 0;
    if (op->kind == EMBEDDED_DELETE)
        return embedded_apply_delete(st, txn, op, rc == 0, seq, err);
    return embedded_apply_put(st, txn, op, rc == 0, seq, err);
}

static int embedded_meta_put_seq(struct embedded *st, MDB_txn *txn, uint64_t seq,
                                 struct err *err)
{
    unsigned char buf[EMBEDDED_SEQ_LEN];
    MDB_val k = { 3, (void *)"seq" }, v = { sizeof buf, buf };

    embedded_be64_put(buf, seq);
    int rc = mdb_put(txn, st->meta, &k, &v, 0);
    if (rc != 0)
        return err_set(err, "writing the store's sequence failed: %s", mdb_strerror(rc));
    return 0;
}

int embedded_write_apply(struct embedded *st, MDB_txn *txn, struct embedded_op *op,
                         struct err *err)
{
    uint64_t seq0, seq;

    if (embedded_meta_seq(st, txn, &seq0, err) < 0)
        return -1;
    seq = seq0;
    if (embedded_apply_op(st, txn, op, &seq, err) < 0)
        return -1;
    return seq == seq0 ? 0 : embedded_meta_put_seq(st, txn, seq, err);
}

const char *embedded_write_key(const struct embedded_op *op, size_t *len)
{
    *len = op->key_len;
    return op->key;
}

const char *embedded_write_doc(const struct embedded_op *op, size_t *len)
{
    *len = op->doc_len;
    return op->doc;
}

const char *embedded_doc_in(struct embedded *st, MDB_txn *txn, const char *key, size_t key_len,
                            size_t *len)
{
    MDB_val k = { key_len, (void *)key }, v;
    if (mdb_get(txn, st->docs, &k, &v) != 0 || v.mv_size < EMBEDDED_SEQ_LEN)
        return NULL;
    *len = v.mv_size - EMBEDDED_SEQ_LEN;
    return (const char *)v.mv_data + EMBEDDED_SEQ_LEN;
}

int embedded_write_status(const struct embedded_op *op)
{
    return op->status;
}

static int embedded_job_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct embedded_op *op = arg;

    return embedded_write_apply(op->st, txn, op, err);
}

/* ---- completions, on the loop thread ---------------------------------- */

void embedded_write_finish(struct embedded_op *op, int rc, const char *reason)
{
    if (rc < 0) {
        /* Rolled back: nothing of this write is visible. */
        embedded_op_fail(op, 500, "store_error", reason);
        op->etag[0] = '\0';
    }
    struct store_response resp = {
        .status = op->status,
        .etag = op->etag[0] ? op->etag : NULL,
        .location = op->status == 201 ? op->location : NULL,
        .body = op->body_is_doc ? op->doc : op->body,
        .body_len = op->body_is_doc ? op->doc_len : op->body_len,
    };

    if (!resp.body) {
        resp.body = embedded_oom_body;
        resp.body_len = sizeof embedded_oom_body - 1;
    }
    if (!op->cancelled && op->done)
        op->done(op->ctx, &resp);
    embedded_op_free(op);
}

static void embedded_job_done(void *arg, int rc, const char *reason)
{
    embedded_write_finish(arg, rc, reason);
}

/* Queues a prepared write as one durable committer job. */
static struct embedded_op *embedded_write(struct embedded *st, const struct store_request *req,
                                          const struct docpath *dp, enum embedded_kind kind,
                                          embedded_done_fn done, void *ctx)
{
    struct embedded_op *op = embedded_write_new(st, req, dp, kind, done, ctx);

    if (op && committer_submit(st->committer, embedded_job_apply, embedded_job_done, op,
                               true) < 0) {
        embedded_op_free(op);
        embedded_reply_error(done, ctx, 500, "internal", NULL, "out of memory");
        return NULL;
    }
    return op;
}

/* ---- the public calls ------------------------------------------------- */

static bool embedded_is(const char *method, const char *name)
{
    return method && strcmp(method, name) == 0;
}

/* Routes a parsed request by method and path shape; returns the op of a
 * write (queued on the committer when `queue`, else only prepared), NULL
 * when done was already called. Unqueued means a write is expected. */
static struct embedded_op *embedded_dispatch(struct embedded *st, const struct store_request *req,
                                             const struct docpath *dp, bool queue,
                                             embedded_done_fn done, void *ctx)
{
    bool read = embedded_is(req->method, "GET") || embedded_is(req->method, "HEAD");
    struct embedded_op *(*write)(struct embedded *, const struct store_request *,
                                 const struct docpath *, enum embedded_kind, embedded_done_fn,
                                 void *) = queue ? embedded_write : embedded_write_new;
    struct err err;

    if (read && dp->id && queue)
        embedded_get(st, dp, done, ctx);
    else if (read && queue)
        embedded_list(st, dp, done, ctx);
    else if (!dp->id && embedded_is(req->method, "POST"))
        return write(st, req, dp, EMBEDDED_POST, done, ctx);
    else if (dp->id && embedded_is(req->method, "PUT"))
        return write(st, req, dp, EMBEDDED_PUT, done, ctx);
    else if (dp->id && embedded_is(req->method, "DELETE"))
        return write(st, req, dp, EMBEDDED_DELETE, done, ctx);
    else {
        const char *allow = dp->id ? "GET, HEAD, PUT, DELETE" : "GET, HEAD, POST";
        err_set(&err, "%.20s is not allowed on %s; allowed: %s",
                req->method ? req->method : "(none)",
                dp->id ? "a document" : "a collection (path ending in '/')", allow);
        embedded_reply_error(done, ctx, 405, "method_not_allowed", allow, err.msg);
    }
    return NULL;
}

static struct embedded_op *embedded_route(struct embedded *st, const struct store_request *req,
                                          bool queue, embedded_done_fn done, void *ctx)
{
    struct docpath dp;
    struct err err;
    struct embedded_op *op = NULL;

    if (st->closing) {
        embedded_reply_error(done, ctx, 503, "unavailable", NULL,
                             "the embedded store is closing");
        return NULL;
    }
    if (docpath_parse(req->path, req->path_len, &dp, &err) < 0)
        embedded_reply_error(done, ctx, 400, "bad_request", NULL, err.msg);
    else
        op = embedded_dispatch(st, req, &dp, queue, done, ctx);
    docpath_release(&dp);
    return op;
}

struct embedded_op *embedded_handle(struct embedded *st, const struct store_request *req,
                                    embedded_done_fn done, void *ctx)
{
    return embedded_route(st, req, true, done, ctx);
}

struct embedded_op *embedded_write_prepare(struct embedded *st, const struct store_request *req,
                                           embedded_done_fn done, void *ctx)
{
    return embedded_route(st, req, false, done, ctx);
}

void embedded_cancel(struct embedded_op *op)
{
    if (op)
        op->cancelled = true;
}

int embedded_check(struct embedded *st, struct err *err)
{
    if (!st || !st->env)
        return err_set(err, "the embedded store is not open");
    if (!st->committer)
        return err_set(err, "the embedded store's committer thread is not running");
    if (committer_check(st->committer, err) < 0)
        return -1;
    /* A panicked environment refuses every txn: a read proves it is not. */
    if (embedded_rtxn_begin(st, err) < 0)
        return -1;
    mdb_txn_reset(st->rtxn);
    return 0;
}

unsigned long embedded_commit_count(struct embedded *st)
{
    struct committer_stats cs = { 0 };
    if (st->committer)
        committer_stats(st->committer, &cs);
    return cs.batches;
}

MDB_env *embedded_env(struct embedded *st)
{
    return st->env;
}

struct committer *embedded_committer(struct embedded *st)
{
    return st->committer;
}

/* ---- opening and closing ---------------------------------------------- */

static int embedded_dbs_open(struct embedded *st, struct err *err)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);

    if (rc == 0)
        rc = mdb_dbi_open(txn, "docs", MDB_CREATE, &st->docs);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc == 0)
        rc = mdb_env_sync(st->env, 1);
    if (rc != 0)
        return err_set(err, "cannot open the store's databases: %s", mdb_strerror(rc));
    /* The loop's read txn lives as long as the store, reset between reads. */
    rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &st->rtxn);
    if (rc != 0)
        return err_set(err, "cannot start a read transaction: %s", mdb_strerror(rc));
    mdb_txn_reset(st->rtxn);
    return 0;
}

static int embedded_env_open(struct embedded *st, const char *dir, size_t map_size,
                             struct err *err)
{
    int rc = mdb_env_create(&st->env), dead;

    if (rc != 0)
        return err_set(err, "cannot create the LMDB environment: %s", mdb_strerror(rc));
    if ((rc = mdb_env_set_mapsize(st->env, map_size)) != 0 ||
        (rc = mdb_env_set_maxdbs(st->env, EMBEDDED_MAX_DBS)) != 0 ||
        /* MDB_NOTLS: the read txn belongs to the loop, not to a thread slot.
         * MDB_NOMETASYNC: see committer.h. */
        (rc = mdb_env_open(st->env, dir, MDB_NOTLS | MDB_NOMETASYNC, 0644)) != 0) {
        err_set(err, "cannot open the store in %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    /* Reader slots of a crashed predecessor would pin old pages forever. */
    mdb_reader_check(st->env, &dead);
    st->max_key = (size_t)mdb_env_get_maxkeysize(st->env);
    if (embedded_dbs_open(st, err) < 0)
        goto fail;
    return 0;
fail:
    if (st->rtxn)
        mdb_txn_abort(st->rtxn);
    st->rtxn = NULL;
    mdb_env_close(st->env);
    st->env = NULL;
    return -1;
}

int embedded_open_sized(struct event_base *base, const char *dir, size_t map_size,
                        struct embedded **out, struct err *err)
{
    if (!*dir)
        return err_set(err, "the embedded store needs a directory");
    struct embedded *st = calloc(1, sizeof *st);

    if (!st)
        return err_set(err, "out of memory");
    st->base = base;
    if (fs_mkdirs(dir, err) < 0)
        goto fail_free;
    if (embedded_env_open(st, dir, map_size, err) < 0)
        goto fail_free;
    if (committer_open(base, st->env, &st->committer, err) < 0)
        goto fail_env;
    *out = st;
    return 0;
fail_env:
    mdb_txn_abort(st->rtxn);
    mdb_env_close(st->env);
fail_free:
    free(st);
    return -1;
}

int embedded_open(struct event_base *base, const char *dir, struct embedded **out,
                  struct err *err)
{
    return embedded_open_sized(base, dir, EMBEDDED_MAP_SIZE, out, err);
}

void embedded_stop(struct embedded *st)
{
    if (!st)
        return;
    st->closing = true;
    /* Applies what is queued and delivers every completion first. */
    committer_close(st->committer);
    st->committer = NULL;
}

void embedded_close(struct embedded *st)
{
    if (!st)
        return;
    embedded_stop(st);
    mdb_txn_abort(st->rtxn);
    mdb_env_sync(st->env, 1);
    mdb_env_close(st->env);
    free(st);
}
