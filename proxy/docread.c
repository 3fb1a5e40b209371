/* docread: the reads Meridian answers itself or annotates: a document read
 * (it waits for a write in progress on its key, then carries
 * X-Meridian-Version, X-Meridian-Confirmed, X-Meridian-Crts and the session
 * token), and the change feed of confirmed writes. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "downstream.h"
#include "keylock.h"
#include "node.h"
#include "repl.h"
#include "route.h"

/* --- reads and the change feed ----------------------------------------------- */

void repl_reply_json(struct downstream *c, int status, json_t *j)
{
    char *text = entry_dump(j);
    if (!text) {
        downstream_reply_error(c, 500, "internal", "out of memory");
        return;
    }
    downstream_reply(c, status, NULL, 0, "application/json", text, strlen(text));
    free(text);
}

static void annotate_read(struct repl *r, struct downstream *c, const struct conf_container *ct,
                          const char *id)
{
    struct head_rec h;
    char crts[24];
    bool found = journal_head(r->j, ct->name, id, &h) == 0 && h.exists;
    bool confirmed = found && h.pending == 0 && h.crts != 0;
    /* Reading this region's own tentative write puts it in the session; so
     * does reading a confirmed version (its crts). */
    repl_add_token(r, c, found && h.pending && h.version.region == r->self->id ? h.version.lsn : 0,
                   confirmed ? h.crts : 0);
    if (!found)
        return;
    downstream_add_header(c, "X-Meridian-Confirmed", confirmed ? "true" : "false");
    if (confirmed) {
        snprintf(crts, sizeof crts, "%llu", (unsigned long long)h.crts);
        downstream_add_header(c, "X-Meridian-Crts", crts);
    }
    char v[VERSION_TEXT_MAX];
    version_format(h.version, v);
    downstream_add_header(c, "X-Meridian-Version", v);
}

struct read_wait {
    struct repl *r;
    struct downstream *c;        /* NULL once the client went away */
    const struct conf_container *ct;
    void (*proceed)(struct downstream *c);
    char key[512];
    size_t klen;
    char id[512];
};

static void read_locked(void *arg)
{
    struct read_wait *rw = arg;
    struct downstream *c = rw->c;
    /* The write before us is committed: the index describes what the
     * backend holds. The lock is not needed for the read itself. */
    keylock_release(rw->r->locks, rw->key, rw->klen);
    if (c && !rw->r->closing) {
        downstream_backend(c)->read = NULL;
        annotate_read(rw->r, c, rw->ct, rw->id);
        rw->proceed(c);
    }
    free(rw);
}

bool repl_read(struct repl *r, struct downstream *c, const struct conf_container *ct,
               const char *id, void (*proceed)(struct downstream *c))
{
    char key[512];
    size_t klen = repl_key(ct->name, id, key, sizeof key);
    struct read_wait *rw = NULL;
    if (klen && keylock_is_held(r->locks, key, klen))
        rw = calloc(1, sizeof *rw);
    if (!rw) {
        annotate_read(r, c, ct, id);
        return false;
    }
    *rw = (struct read_wait){ .r = r, .c = c, .ct = ct, .proceed = proceed, .klen = klen };
    memcpy(rw->key, key, klen);
    snprintf(rw->id, sizeof rw->id, "%s", id);
    downstream_backend(c)->read = rw;
    if (keylock_acquire(r->locks, rw->key, rw->klen, read_locked, rw) < 0) {
        downstream_backend(c)->read = NULL;
        free(rw);
        annotate_read(r, c, ct, id);
        return false;
    }
    return true;
}

void repl_read_cancel(struct read_wait *rw)
{
    if (rw)
        rw->c = NULL;
}

struct changes_scan {
    struct repl *r;
    const char *container;
    json_t *list;
    size_t limit;
    uint64_t last;
};

/* A confirmed write, or a procedure's resolution (the document the hub made,
 * version 0:crts, naming the write it resolved). */
static json_t *change_json(struct repl *r, const struct clog_entry *e)
{
    bool resolved = e->outcome == LWW_RESOLVED;
    struct version ver = resolved ? e->head : repl_write_version(&e->w);
    bool del = resolved ? e->head_delete : e->w.is_delete;
    const char *doc = resolved ? e->head_doc : e->w.doc;
    char v[VERSION_TEXT_MAX];
    version_format(ver, v);
    const char *op = del ? "delete" : !resolved && version_is_none(e->w.base) ? "create" : "replace";
    json_t *j = json_pack("{s:I,s:I,s:s,s:I,s:s,s:s,s:s,s:I}", "crts", (json_int_t)e->crts, "lsn",
                          (json_int_t)ver.lsn, "region",
                          resolved ? "resolver" : repl_region_name(r, e->w.origin), "regionId",
                          (json_int_t)ver.region, "op", op, "id", e->w.id, "version", v, "hlc",
                          (json_int_t)(resolved ? e->head_hlc : e->w.hlc));
    if (!j)
        return NULL;
    if (del)
        json_object_set_new(j, "tombstone", json_true());
    else
        json_object_set_new(j, "doc", json_loads(doc, 0, NULL));
    if (resolved) {
        version_format(repl_write_version(&e->w), v);
        json_object_set_new(j, "resolves", json_string(v));
    }
    return j;
}

static int changes_one(void *arg, uint64_t crts, const char *text, size_t len)
{
    struct changes_scan *cs = arg;
    struct clog_entry e;
    struct err err;
    cs->last = crts;
    if (clog_entry_parse(text, len, &e, &err) == 0) {
        if ((e.outcome == LWW_CONFIRMED || e.outcome == LWW_RESOLVED) &&
            strcmp(e.w.container, cs->container) == 0)
            json_array_append_new(cs->list, change_json(cs->r, &e));
        clog_entry_clear(&e);
    }
    return json_array_size(cs->list) >= cs->limit;
}

void repl_changes(struct repl *r, struct downstream *c, const struct conf_container *ct)
{
    const char *target = hdr_block_line(&downstream_request(c)->head);
    bool bad = false;
    uint64_t since = route_query_u64(target, "since", 0, &bad);
    uint64_t limit = route_query_u64(target, "limit", 1000, &bad);
    if (bad || limit == 0 || limit > 10000) {
        downstream_reply_error(c, 400, "bad_request",
                               "_changes takes since=CRTS and limit=N (1..10000), both decimal");
        return;
    }
    if (since < r->history_from && !r->is_hub && !readpath_is_forwarded(c)) {
        /* Joined by snapshot: before history_from this log holds only the
         * entries of the state then; the hub has them all. */
        readpath_to_hub(c, "change feed before this region's history");
        return;
    }
    struct changes_scan cs = { r, ct->name, json_array(), limit, since };
    journal_scan_clog(r->j, since, r->j->applied_crts, SIZE_MAX, changes_one, &cs);
    json_t *body = json_pack("{s:s,s:o,s:I,s:I}", "container", ct->name, "changes", cs.list,
                             "last", (json_int_t)cs.last, "applied", (json_int_t)r->j->applied_crts);
    repl_add_token(r, c, 0, 0);
    repl_reply_json(c, 200, body);
}

