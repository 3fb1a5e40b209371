/*
 * writepath: a client's write to a container document.
 *
 *   writepath_start ── parse target, token, body (400: not an object, forged metadata)
 *        │
 *   keylock_acquire(key) ─▶ wp_locked        one write per key at a time
 *        │   PATCH: backend GET, JSON Merge Patch onto the current document
 *        ▼
 *   wp_tag: LSN, HLC, base = local head; _ts + metadata (+ auto-versioned LWW path),
 *        │   spliced into the client's text (replication/tag), or on the parsed
 *        │   document when the text needs it (PATCH, escaped names, nested paths)
 *        │
 *   embedded store: one durable committer job ─▶ wp_stored ─▶ wp_store_answer
 *        │   the store's write + the journal entry, committed (+ hub: decided);
 *        │   2xx: answer (as below); else nothing is journaled, relay the answer
 *        │
 *   HTTP backend: committer job: journal intent (durable) ─▶ wp_intent_done
 *        │
 *   backend_request(PUT|DELETE) ─▶ wp_backend_done
 *        ├─ 2xx: answer at once (backend's answer + ETag, X-Meridian-Version,
 *        │        X-Session-Token): the intent is durable and the backend holds the
 *        │        write, so recovery would commit it; then repl_commit_write (hub:
 *        │        decided in the same step) ─▶ wp_committed releases the key
 *        ├─ other status: repl_abort_write ─▶ relay the backend's answer unchanged
 *        └─ no answer: the entry stays an intent; recovery reads the document back
 *   keylock_release(key)
 */
#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../replication/tag.h"
#include "../store/embedded.h"
#include "../util/log.h"
#include "backend.h"
#include "downstream.h"
#include "keylock.h"
#include "node.h"
#include "repl.h"
#include "route.h"

struct write_op {
    struct repl *r;
    struct downstream *c;              /* NULL once the client went away */
    const struct conf_container *ct;
    int method;
    char *id;
    char key[512];
    size_t klen;
    char path[1024];
    json_t *doc;                       /* the client's document, parsed (PATCH, and text
                                        * the tag leaves to Jansson), else NULL */
    struct tag_spec spec;
    struct tag_doc text;               /* ... and otherwise as text (PUT, POST) */
    bool new_id;                       /* POST: the id was assigned here */
    struct repl_write w;
    struct embedded_op *sop;           /* embedded store: the write, until finished */
    int status;
    char *headers, *body;              /* a refused write's answer, relayed later */
    size_t headers_len, body_len;
    bool locked;
    bool tagged;                       /* has an LSN: counted in repl's writes_tagged */
};

static void wp_free(struct write_op *w)
{
    if (w->c && downstream_backend(w->c)->write == w)
        downstream_backend(w->c)->write = NULL;
    if (w->tagged)
        topology_write_done(w->r, w->w.lsn);
    json_decref(w->doc);
    tag_doc_clear(&w->text);
    repl_write_clear(&w->w);
    free(w->id);
    free(w->headers);
    free(w->body);
    free(w);
}

void writepath_detach(struct write_op *w)
{
    if (w)
        w->c = NULL;
}

/* Ends the operation: answers (when the client is still there), unlocks. */
static void wp_end_error(struct write_op *w, int status, const char *code, const char *reason)
{
    if (w->c)
        downstream_reply_error(w->c, status, code, reason);
    if (w->locked)
        keylock_release(w->r->locks, w->key, w->klen);
    wp_free(w);
}

const char *writepath_doc_id(const struct conf_container *ct, const char *target, size_t tlen,
                             size_t *id_len)
{
    size_t rl = strlen(ct->route), pl = route_path_len(target, tlen);
    if (pl <= rl || memchr(target + rl, '/', pl - rl))
        return NULL;
    *id_len = pl - rl;
    return target + rl;
}

/* JSON Merge Patch (RFC 7396) of `patch` onto `target`, in place. */
static void merge_patch(json_t *target, json_t *patch)
{
    const char *k;
    json_t *v;
    json_object_foreach(patch, k, v) {
        if (json_is_null(v)) {
            json_object_del(target, k);
        } else if (json_is_object(v)) {
            json_t *t = json_object_get(target, k);
            if (!json_is_object(t)) {
                t = json_object();
                json_object_set_new(target, k, t);
            }
            merge_patch(t, v);
        } else {
            json_object_set(target, k, v);
        }
    }
}

/* Sets the JSON pointer `path` (objects created as needed) to `v`. */
static void set_path(json_t *doc, const char *path, json_t *v)
{
    char seg[256];
    json_t *cur = doc;
    const char *p = path;
    while (*p == '/') {
        const char *end = strchr(p + 1, '/');
        size_t n = end ? (size_t)(end - p - 1) : strlen(p + 1);
        if (n >= sizeof seg)
            break;
        memcpy(seg, p + 1, n);
        seg[n] = '\0';
        if (!end) {
            json_object_set_new(cur, seg, v);
            return;
        }
        json_t *next = json_object_get(cur, seg);
        if (!json_is_object(next)) {
            next = json_object();
            json_object_set_new(cur, seg, next);
        }
        cur = next;
        p = end;
    }
    json_decref(v);
}

/* The tag spliced into the client's text. */
static int wp_tag_text(struct write_op *w)
{
    struct repl *r = w->r;
    struct tag_meta m = { .region = r->self->name, .region_id = r->self->id, .lsn = w->w.lsn,
                          .hlc = w->w.hlc, .base = w->w.base,
                          .new_id = w->new_id ? w->id : NULL };
    size_t len;
    w->w.doc = tag_apply(&w->text, &w->spec, &m, &len);
    if (!w->w.doc)
        return -1;
    if (w->spec.lww_key && w->spec.auto_version) {
        w->w.has_value = true;
        w->w.value = (double)(json_int_t)w->w.hlc;
    } else if (w->spec.lww_key) {
        w->w.has_value = tag_lww_value(&w->text, &w->w.value);
    } else {
        w->w.has_value = entry_path_number(w->w.doc, w->ct->lww_path, &w->w.value);
    }
    return 0;
}

static int wp_tag(struct write_op *w, const struct head_rec *h)
{
    struct repl *r = w->r;
    const struct conf_container *ct = w->ct;
    w->w.origin = r->self->id;
    w->w.lsn = r->j->next_lsn++;
    w->tagged = true;
    r->writes_tagged++;
    w->w.hlc = repl_hlc_now(r);
    w->w.base = h->exists ? h->version : VERSION_NONE;
    w->w.is_delete = w->method == HTTP_DELETE;
    w->w.state = WRITE_INTENT;
    w->w.container = strdup(ct->name);
    w->w.id = strdup(w->id);
    if (!w->w.container || !w->w.id)
        return -1;
    if (w->w.is_delete)
        return 0;
    if (!w->doc)
        return wp_tag_text(w);
    char base[VERSION_TEXT_MAX];
    version_format(w->w.base, base);
    json_object_set_new(w->doc, "_ts", json_integer((json_int_t)(HLC_MS(w->w.hlc) / 1000)));
    json_object_set_new(w->doc, ct->metadata_field,
                        json_pack("{s:s,s:I,s:I,s:I,s:o}", "region", r->self->name, "regionId",
                                  (json_int_t)r->self->id, "lsn", (json_int_t)w->w.lsn, "hlc",
                                  (json_int_t)w->w.hlc, "base",
                                  base[0] ? json_string(base) : json_null()));
    if (ct->auto_version && ct->lww_path)
        set_path(w->doc, ct->lww_path, json_integer((json_int_t)w->w.hlc));
    w->w.doc = json_dumps(w->doc, JSON_COMPACT);
    if (!w->w.doc)
        return -1;
    w->w.has_value = entry_json_number(w->doc, ct->lww_path, &w->w.value);
    return 0;
}

/* Answers the client with the backend's answer `a` and the write's headers. */
static void wp_answer(struct write_op *w, const struct backend_answer *a)
{
    char v[VERSION_TEXT_MAX], tok[SESSION_TOKEN_TEXT_MAX], etag[VERSION_TEXT_MAX + 4];
    struct err e;
    struct downstream *c = w->c;
    version_format(repl_write_version(&w->w), v);
    downstream_add_header(c, "X-Meridian-Version", v);
    if (repl_session_token(w->r, &downstream_request(c)->head, w->w.lsn, 0, tok, &e) == 0)
        downstream_add_header(c, "X-Session-Token", tok);
    if (!a->etag) {
        snprintf(etag, sizeof etag, "\"%s\"", v);
        downstream_add_header(c, "ETag", etag);
    }
    if (writewait_hold(w->r, c, w->w.lsn, a->status, a->headers, a->headers_len, a->body,
                       a->body_len))
        return;
    downstream_reply_relay(c, a->status, a->headers, a->headers_len, a->body, a->body_len);
}

/* Shutting down: leave the journal as it is (recovery finishes the job at
 * the next start) and let the next waiter of the key run. */
static bool wp_closing(struct write_op *w)
{
    if (!w->r->closing)
        return false;
    wp_end_error(w, 503, "shutting_down", "the node is shutting down");
    return true;
}

static void wp_committed(void *arg, int rc, const char *reason)
{
    struct write_op *w = arg;
    if (rc < 0) {
        /* The backend has the write but the journal could not record it:
         * recovery reads it back and commits it. */
        log_error("journal commit of lsn %llu failed: %s", (unsigned long long)w->w.lsn, reason);
        w->r->recover_again = true;
    }
    keylock_release(w->r->locks, w->key, w->klen);
    wp_free(w);
}

static void wp_aborted(void *arg, int rc, const char *reason)
{
    struct write_op *w = arg;
    if (w->c)
        downstream_reply_relay(w->c, w->status, w->headers, w->headers_len, w->body, w->body_len);
    keylock_release(w->r->locks, w->key, w->klen);
    wp_free(w);
}

static void wp_keep_answer(struct write_op *w, const struct backend_answer *a)
{
    w->status = a->status;
    w->headers = strndup(a->headers, a->headers_len);
    w->headers_len = w->headers ? a->headers_len : 0;
    w->body = malloc(a->body_len + 1);
    w->body_len = w->body ? a->body_len : 0;
    if (w->body)
        memcpy(w->body, a->body, a->body_len);
}

static void wp_backend_done(void *arg, const struct backend_answer *a)
{
    struct write_op *w = arg;
    if (wp_closing(w))
        return;
    if (a->status == 0) {
        /* Unknown whether the backend applied it: recovery decides. */
        w->r->stats.writes_unknown++;
        w->r->recover_again = true;
        wp_end_error(w, a->timeout ? 504 : 502, a->timeout ? "backend_timeout" : "backend_unavailable",
                     a->error);
        return;
    }
    if (a->status < 200 || a->status > 299) {
        wp_keep_answer(w, a); /* relayed once the entry is dropped */
        repl_abort_write(w->r, w->w.lsn, wp_aborted, w);
        return;
    }
    if (w->c) {
        wp_answer(w, a);
        w->c = NULL; /* answered: the rest happens without the client */
    }
    repl_commit_write(w->r, &w->w, wp_committed, w);
}

static int wp_intent_apply(MDB_txn *txn, void *arg, struct err *err)
{
    struct write_op *w = arg;
    return journal_put_write(txn, w->r->j, &w->w, err);
}

static void wp_intent_done(void *arg, int rc, const char *reason)
{
    struct write_op *w = arg;
    if (wp_closing(w))
        return;
    if (rc < 0) {
        wp_end_error(w, 500, "journal_failed", reason);
        return;
    }
    const char *method = w->w.is_delete ? "DELETE" : "PUT";
    const struct hdr_block *head = w->c ? &downstream_request(w->c)->head : NULL;
    backend_request(w->r->node, method, w->path, head,
                    w->c ? downstream_client_ip(w->c) : NULL, w->w.doc,
                    w->w.doc ? strlen(w->w.doc) : 0, wp_backend_done, w);
}

/* The store's answer: relayed as it is (copied only if it is held). */
static void wp_store_answer(void *arg, const struct backend_answer *a)
{
    struct write_op *w = arg;
    if (a->status < 200 || a->status > 299) {
        w->r->stats.writes_aborted++;
        if (w->c)
            downstream_reply_relay(w->c, a->status, a->headers, a->headers_len, a->body,
                                   a->body_len);
    } else if (w->c) {
        wp_answer(w, a);
    }
    keylock_release(w->r->locks, w->key, w->klen);
    wp_free(w);
}

static void wp_store_answered(void *ctx, const struct store_response *resp)
{
    backend_store_answer(resp, wp_store_answer, ctx);
}

static void wp_stored(void *arg, int rc, const char *reason)
{
    struct write_op *w = arg;
    struct embedded_op *sop = w->sop;
    w->sop = NULL;
    embedded_write_finish(sop, rc, reason);
}

/* The embedded store: the write and its journal entry are one transaction,
 * so there is no intent to resolve after a crash. */
static void wp_store_write(struct write_op *w)
{
    struct store_request sr;
    const char *method = w->w.is_delete ? "DELETE" : "PUT";
    backend_store_request(method, w->path, w->c ? &downstream_request(w->c)->head : NULL,
                          w->w.doc, w->w.doc ? strlen(w->w.doc) : 0, &sr);
    sr.doc = w->w.is_delete ? NULL : w->doc;
    sr.checked = !w->w.is_delete && !w->doc; /* the tag scanned it: a JSON object */
    /* A refusal is answered (and `w` freed) before this returns. */
    struct embedded_op *sop = embedded_write_prepare(w->r->node->store, &sr, wp_store_answered, w);
    if (!sop)
        return;
    w->sop = sop;
    repl_commit_store_write(w->r, &w->w, sop, wp_stored, w);
}

static void wp_journal(struct write_op *w)
{
    struct head_rec h;
    journal_head(w->r->j, w->ct->name, w->id, &h);
    if (w->method == HTTP_POST && h.exists && !h.deleted) {
        wp_end_error(w, 409, "conflict", "a document with this id exists; use PUT to replace it");
        return;
    }
    if (wp_tag(w, &h) < 0) {
        wp_end_error(w, 500, "internal", "out of memory tagging the document");
        return;
    }
    if (w->r->node->store)
        wp_store_write(w);
    else if (committer_submit(w->r->j->committer, wp_intent_apply, wp_intent_done, w, true) < 0)
        wp_end_error(w, 500, "internal", "out of memory");
}

static void wp_patch_read(void *arg, const struct backend_answer *a)
{
    struct write_op *w = arg;
    if (wp_closing(w))
        return;
    if (a->status != 200) {
        wp_end_error(w, a->status == 404 ? 404 : 502, a->status == 404 ? "not_found" : "backend_unavailable",
                     a->status == 404 ? "PATCH needs an existing document" :
                     a->error ? a->error : "cannot read the document to patch");
        return;
    }
    json_t *cur = json_loadb(a->body, a->body_len, 0, NULL);
    if (!json_is_object(cur)) {
        json_decref(cur);
        wp_end_error(w, 502, "backend_unavailable", "the stored document is not a JSON object");
        return;
    }
    json_object_del(cur, w->ct->metadata_field);
    merge_patch(cur, w->doc);
    json_decref(w->doc);
    w->doc = cur;
    wp_journal(w);
}

static void wp_locked(void *arg)
{
    struct write_op *w = arg;
    w->locked = true;
    if (wp_closing(w))
        return;
    if (w->method == HTTP_PATCH)
        backend_request(w->r->node, "GET", w->path, NULL, NULL, NULL, 0, wp_patch_read, w);
    else
        wp_journal(w);
}

static const char *wp_forged(struct write_op *w, char *why, size_t cap)
{
    w->r->stats.forged++;
    snprintf(why, cap, "field '%s' is Meridian's metadata and cannot be written by clients",
             w->ct->metadata_field);
    return why;
}

/* Parses the body with Jansson: what the text path leaves to it. */
static const char *wp_parse_json(struct write_op *w, const char *body, size_t len, char *why,
                                 size_t cap)
{
    json_error_t je;
    tag_doc_clear(&w->text);
    w->doc = json_loadb(body ? body : "", len, JSON_DECODE_ANY, &je);
    if (!w->doc) {
        snprintf(why, cap, "body is not valid JSON: %s at line %d column %d", je.text, je.line,
                 je.column);
        return why;
    }
    if (!json_is_object(w->doc))
        return "body must be a JSON object";
    if (json_object_get(w->doc, w->ct->metadata_field))
        return wp_forged(w, why, cap);
    return NULL;
}

/* Checks the body: a JSON object without Meridian's metadata field. It is
 * kept as text when the tag can be spliced into it, else parsed. */
static const char *wp_parse_body(struct write_op *w, const struct ds_request *req, char *why,
                                 size_t cap)
{
    const struct conf_container *ct = w->ct;
    if (w->method != HTTP_PATCH &&
        tag_spec_of(&w->spec, ct->metadata_field, ct->lww_path, ct->auto_version)) {
        switch (tag_scan(&w->text, req->body.p, req->body.len, &w->spec)) {
        case TAG_OK:
            return NULL;
        case TAG_FORGED:
            return wp_forged(w, why, cap);
        case TAG_SLOW:
            break;
        }
    }
    return wp_parse_json(w, req->body.p, req->body.len, why, cap);
}

/* A POST's id from the text: the body's own when it is a plain string,
 * else assigned (`gen`); NULL when the body needs Jansson to tell. */
static char *wp_text_id(struct write_op *w, const char *gen)
{
    const char *id;
    size_t len;
    if (!w->text.has_id) {
        w->new_id = true;
        return strdup(gen);
    }
    return tag_plain_id(&w->text, &id, &len) ? strndup(id, len) : NULL;
}

/* A POST's id: the body's "id", or a new one added to the document. */
static const char *wp_post_id(struct write_op *w)
{
    char gen[48];
    snprintf(gen, sizeof gen, "%llx-%u", (unsigned long long)repl_hlc_now(w->r),
             w->r->self->id);
    if (!w->doc && (w->id = wp_text_id(w, gen)))
        return NULL;
    if (!w->doc) {
        /* An id that is not a plain string (or no memory): Jansson tells. */
        struct tag_doc text = w->text;
        char why[512];
        w->text = (struct tag_doc){ 0 };
        w->new_id = false;
        const char *bad = wp_parse_json(w, text.text, text.len, why, sizeof why);
        tag_doc_clear(&text);
        if (bad)
            return "out of memory";
    }
    json_t *jid = json_object_get(w->doc, "id");
    if (jid && (!json_is_string(jid) || json_string_length(jid) == 0 ||
                strchr(json_string_value(jid), '/')))
        return "field 'id' must be a non-empty string without '/'";
    if (!jid) {
        json_object_set_new(w->doc, "id", json_string(gen));
        jid = json_object_get(w->doc, "id");
    }
    w->id = strdup(json_string_value(jid));
    return w->id ? NULL : "out of memory";
}

/* The document id: from the URL, or for POST from the body's "id" (or a new one). */
static const char *wp_target(struct write_op *w, const struct ds_request *req)
{
    size_t id_len = 0;
    const char *target = hdr_block_line(&req->head);
    const char *id = writepath_doc_id(w->ct, target, req->head.line_len, &id_len);
    if (w->method == HTTP_POST)
        return id ? "POST goes to the container's route; use PUT for a document" : wp_post_id(w);
    if (!id)
        return "a write needs a document id after the container's route";
    if (id[0] == '_')
        return "document ids starting with '_' are reserved (_changes, _conflicts)";
    w->id = strndup(id, id_len);
    return w->id ? NULL : "out of memory";
}

void writepath_start(struct downstream *c, const struct conf_container *ct)
{
    struct node *n = downstream_node(c);
    const struct ds_request *req = downstream_request(c);
    struct write_op *w = calloc(1, sizeof *w);
    char why[512], tok[SESSION_TOKEN_TEXT_MAX];
    struct err e;
    if (!w) {
        downstream_reply_error(c, 500, "internal", "out of memory");
        return;
    }
    *w = (struct write_op){ .r = n->repl, .c = c, .ct = ct, .method = req->method };
    const char *bad = NULL;
    if (repl_session_token(w->r, &req->head, 0, 0, tok, &e) < 0)
        bad = e.msg;
    if (!bad && w->method != HTTP_DELETE)
        bad = wp_parse_body(w, req, why, sizeof why);
    if (!bad)
        bad = wp_target(w, req);
    if (bad) {
        wp_end_error(w, 400, "bad_request", bad);
        return;
    }
    w->klen = repl_key(ct->name, w->id, w->key, sizeof w->key);
    snprintf(w->path, sizeof w->path, "%s%s", ct->route, w->id);
    if (w->klen == 0 || strlen(ct->route) + strlen(w->id) >= sizeof w->path) {
        wp_end_error(w, 400, "bad_request", "document id too long");
        return;
    }
    downstream_backend(c)->write = w;
    if (keylock_acquire(w->r->locks, w->key, w->klen, wp_locked, w) < 0)
        wp_end_error(w, 500, "internal", "out of memory");
}
