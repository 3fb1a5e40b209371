#include "journal.h"

#include "../util/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void journal_u64_key(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

uint64_t journal_u64_of_key(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

size_t journal_key(const char *container, const char *id, char *buf, size_t cap)
{
    size_t cl = strlen(container), il = strlen(id);
    if (cl + 1 + il > cap || cl + 1 + il > 511)
        return 0;
    memcpy(buf, container, cl);
    buf[cl] = '\0';
    memcpy(buf + cl + 1, id, il);
    return cl + 1 + il;
}

/* The journal's databases; in another part's environment their names carry
 * a prefix, so that they never mix with that part's own ("meta"). */
static int open_dbs(struct journal *j, const char *prefix, struct err *err)
{
    static const char *const names[] = { "meta", "writes", "heads", "clog", "decided", "cheads",
                                         "conflicts", "policies" };
    MDB_dbi *dbis[] = { &j->meta, &j->writes, &j->heads, &j->clog, &j->decided, &j->cheads,
                        &j->conflicts, &j->policies };
    char name[64];
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->env, NULL, 0, &txn);
    for (size_t i = 0; rc == 0 && i < sizeof names / sizeof *names; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, names[i]);
        rc = mdb_dbi_open(txn, name, MDB_CREATE, dbis[i]);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return err_set(err, "replication state: %s", mdb_strerror(rc));
    }
    j->next_lsn = journal_get_meta(txn, j, "next_lsn");
    j->applied_crts = journal_get_meta(txn, j, "applied_crts");
    j->hlc_persisted = journal_get_meta(txn, j, "hlc");
    MDB_cursor *cur;
    MDB_val k, v;
    if (mdb_cursor_open(txn, j->clog, &cur) == 0) {
        if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8)
            j->stored_crts = journal_u64_of_key(k.mv_data);
        mdb_cursor_close(cur);
    }
    if (j->next_lsn == 0)
        j->next_lsn = 1;
    rc = mdb_txn_commit(txn);
    return rc ? err_set(err, "replication state: %s", mdb_strerror(rc)) : 0;
}

int journal_open(struct event_base *base, const char *dir, uint32_t region, struct journal **out,
                 struct err *err)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/replication", dir);
    if (fs_mkdirs(path, err) < 0)
        return -1;
    struct journal *j = calloc(1, sizeof *j);
    if (!j)
        return err_set(err, "out of memory");
    j->region = region;
    int rc = mdb_env_create(&j->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(j->env, 16);
    if (rc == 0)
        rc = mdb_env_set_mapsize(j->env, JOURNAL_MAP_SIZE);
    if (rc == 0)
        rc = mdb_env_open(j->env, path, MDB_NOMETASYNC | MDB_NOTLS, 0644);
    if (rc != 0) {
        err_set(err, "replication state in %s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    if (open_dbs(j, "", err) < 0 || committer_open(base, j->env, &j->committer, err) < 0)
        goto fail;
    *out = j;
    return 0;
fail:
    if (j->env)
        mdb_env_close(j->env);
    free(j);
    return -1;
}

int journal_open_in(MDB_env *env, struct committer *c, uint32_t region, struct journal **out,
                    struct err *err)
{
    struct journal *j = calloc(1, sizeof *j);
    if (!j)
        return err_set(err, "out of memory");
    *j = (struct journal){ .env = env, .committer = c, .shared = true, .region = region };
    if (open_dbs(j, "journal.", err) < 0) {
        free(j);
        return -1;
    }
    *out = j;
    return 0;
}

void journal_close(struct journal *j)
{
    if (!j)
        return;
    if (!j->shared)
        committer_close(j->committer);
    if (j->rtxn)
        mdb_txn_abort(j->rtxn);
    if (!j->shared) {
        mdb_env_sync(j->env, 1);
        mdb_env_close(j->env);
    }
    free(j);
}

MDB_txn *journal_rtxn(struct journal *j)
{
    if (j->rtxn) {
        mdb_txn_reset(j->rtxn);
        if (mdb_txn_renew(j->rtxn) == 0)
            return j->rtxn;
        mdb_txn_abort(j->rtxn);
        j->rtxn = NULL;
    }
    if (mdb_txn_begin(j->env, NULL, MDB_RDONLY, &j->rtxn) != 0)
        j->rtxn = NULL;
    return j->rtxn;
}

void journal_rtxn_done(struct journal *j)
{
    if (j->rtxn)
        mdb_txn_reset(j->rtxn);
}

/* Heads are stored as fixed-size records. */
struct head_disk {
    uint64_t lsn, hlc, crts;
    uint32_t region, pending;
    uint8_t deleted;
    uint8_t pad[7];
};

static int head_get(MDB_txn *txn, struct journal *j, const char *container, const char *id,
                    struct head_rec *out)
{
    char key[512];
    memset(out, 0, sizeof *out);
    MDB_val k = { journal_key(container, id, key, sizeof key), key }, v;
    if (k.mv_size == 0 || mdb_get(txn, j->heads, &k, &v) != 0 || v.mv_size != sizeof(struct head_disk))
        return 0;
    struct head_disk d;
    memcpy(&d, v.mv_data, sizeof d);
    *out = (struct head_rec){ .exists = true, .version = { d.region, d.lsn }, .hlc = d.hlc,
                              .crts = d.crts, .pending = d.pending, .deleted = d.deleted };
    return 0;
}

int journal_head(struct journal *j, const char *container, const char *id, struct head_rec *out)
{
    MDB_txn *txn = journal_rtxn(j);
    if (!txn) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    int rc = head_get(txn, j, container, id, out);
    journal_rtxn_done(j);
    return rc;
}

int journal_get_head_txn(MDB_txn *txn, struct journal *j, const char *container, const char *id,
                         struct head_rec *out)
{
    return head_get(txn, j, container, id, out);
}

int journal_put_head(MDB_txn *txn, struct journal *j, const char *container, const char *id,
                     const struct head_rec *h, struct err *err)
{
    char key[512];
    struct head_disk d = { .lsn = h->version.lsn, .hlc = h->hlc, .crts = h->crts,
                           .region = h->version.region, .pending = h->pending,
                           .deleted = h->deleted };
    MDB_val k = { journal_key(container, id, key, sizeof key), key }, v = { sizeof d, &d };
    if (k.mv_size == 0)
        return err_set(err, "key too long");
    int rc = mdb_put(txn, j->heads, &k, &v, 0);
    return rc ? err_set(err, "heads: %s", mdb_strerror(rc)) : 0;
}

/* Puts a u64-keyed record. The journal and the log grow at their end:
 * MDB_APPEND makes LMDB split a full last page by starting a new one,
 * where an ordinary put splits it in the middle and leaves pages of one
 * record of a kilobyte behind (a page written per record). A key that is
 * not past the last one (a journal entry rewritten) is put as usual. */
static int put_u64(MDB_txn *txn, MDB_dbi dbi, uint64_t at, MDB_val *v)
{
    unsigned char kb[8];
    journal_u64_key(kb, at);
    MDB_val k = { 8, kb };
    int rc = mdb_put(txn, dbi, &k, v, MDB_APPEND);
    return rc == MDB_KEYEXIST ? mdb_put(txn, dbi, &k, v, 0) : rc;
}

static int put_json_at(MDB_txn *txn, MDB_dbi dbi, uint64_t at, const char *json, size_t len,
                       struct err *err)
{
    MDB_val v = { len, (void *)json };
    int rc = put_u64(txn, dbi, at, &v);
    return rc ? err_set(err, "%s", mdb_strerror(rc)) : 0;
}

/* Journal entries are binary: a fixed header, then container, id and
 * document bytes. They never leave this node, and this keeps JSON work off
 * the write path. An entry whose document is the embedded store's copy (in
 * the same environment) holds the store's key instead of the document. */
enum { DOC_NONE, DOC_INLINE, DOC_IN_STORE };

struct write_disk {
    uint64_t lsn, hlc, base_lsn;
    double value;
    uint32_t origin, base_region, doc_len;
    uint16_t container_len, id_len;
    uint8_t state, is_delete, has_value, has_doc;
};

/* doc: the document, or with DOC_IN_STORE the store's key. */
static int write_encode(const struct repl_write *w, uint8_t has_doc, const char *doc,
                        size_t doc_len, MDB_val *out)
{
    struct write_disk d = {
        .lsn = w->lsn, .hlc = w->hlc, .base_lsn = w->base.lsn, .value = w->value,
        .origin = w->origin, .base_region = w->base.region, .doc_len = (uint32_t)doc_len,
        .container_len = (uint16_t)strlen(w->container), .id_len = (uint16_t)strlen(w->id),
        .state = (uint8_t)w->state, .is_delete = w->is_delete, .has_value = w->has_value,
        .has_doc = has_doc,
    };
    size_t n = sizeof d + d.container_len + d.id_len + d.doc_len;
    char *p = malloc(n);
    if (!p)
        return -1;
    memcpy(p, &d, sizeof d);
    memcpy(p + sizeof d, w->container, d.container_len);
    memcpy(p + sizeof d + d.container_len, w->id, d.id_len);
    if (d.doc_len)
        memcpy(p + sizeof d + d.container_len + d.id_len, doc, d.doc_len);
    *out = (MDB_val){ n, p };
    return 0;
}

static int write_header(const MDB_val *v, struct write_disk *d)
{
    if (v->mv_size < sizeof *d)
        return -1;
    memcpy(d, v->mv_data, sizeof *d);
    return v->mv_size == sizeof *d + d->container_len + d->id_len + d->doc_len ? 0 : -1;
}

/* The document an entry refers to, as the store holds it in txn. */
static const char *write_store_doc(MDB_txn *txn, struct journal *j, const struct write_disk *d,
                                   const char *key, size_t *len)
{
    return j->doc_fn ? j->doc_fn(j->doc_ctx, txn, key, d->doc_len, len) : NULL;
}

static int write_decode(MDB_txn *txn, struct journal *j, const MDB_val *v, struct repl_write *w)
{
    struct write_disk d;
    memset(w, 0, sizeof *w);
    if (write_header(v, &d) < 0)
        return -1;
    const char *p = (const char *)v->mv_data + sizeof d, *doc = p + d.container_len + d.id_len;
    size_t doc_len = d.doc_len;
    if (d.has_doc == DOC_IN_STORE && !(doc = write_store_doc(txn, j, &d, doc, &doc_len)))
        return -1;
    *w = (struct repl_write){ .origin = d.origin, .lsn = d.lsn, .hlc = d.hlc,
                              .base = { d.base_region, d.base_lsn }, .is_delete = d.is_delete,
                              .state = (enum write_state)d.state, .has_value = d.has_value,
                              .value = d.value };
    w->container = strndup(p, d.container_len);
    w->id = strndup(p + d.container_len, d.id_len);
    w->doc = d.has_doc ? strndup(doc, doc_len) : NULL;
    if (!w->container || !w->id || (d.has_doc && !w->doc)) {
        repl_write_clear(w);
        return -1;
    }
    return 0;
}

void journal_set_doc_source(struct journal *j, journal_doc_fn fn, void *ctx)
{
    j->doc_fn = fn;
    j->doc_ctx = ctx;
}

static int put_write(MDB_txn *txn, struct journal *j, const struct repl_write *w,
                     uint8_t has_doc, const char *doc, size_t doc_len, struct err *err)
{
    MDB_val v;
    if (write_encode(w, has_doc, doc, doc_len, &v) < 0)
        return err_set(err, "out of memory encoding a journal entry");
    int rc = put_u64(txn, j->writes, w->lsn, &v);
    free(v.mv_data);
    if (rc)
        return err_set(err, "journal: %s", mdb_strerror(rc));
    if (rc == 0 && w->lsn >= journal_get_meta(txn, j, "next_lsn"))
        rc = journal_put_meta(txn, j, "next_lsn", w->lsn + 1, err);
    if (rc == 0 && w->hlc > journal_get_meta(txn, j, "hlc"))
        rc = journal_put_meta(txn, j, "hlc", w->hlc, err);
    return rc;
}

int journal_put_write(MDB_txn *txn, struct journal *j, const struct repl_write *w,
                      struct err *err)
{
    return put_write(txn, j, w, w->doc ? DOC_INLINE : DOC_NONE, w->doc,
                     w->doc ? strlen(w->doc) : 0, err);
}

int journal_put_write_ref(MDB_txn *txn, struct journal *j, const struct repl_write *w,
                          const char *store_key, size_t key_len, struct err *err)
{
    return put_write(txn, j, w, DOC_IN_STORE, store_key, key_len, err);
}

int journal_keep_doc(MDB_txn *txn, struct journal *j, uint64_t lsn, struct err *err)
{
    unsigned char kb[8];
    journal_u64_key(kb, lsn);
    MDB_val k = { 8, kb }, v;
    struct write_disk d;
    if (mdb_get(txn, j->writes, &k, &v) != 0 || write_header(&v, &d) < 0 ||
        d.has_doc != DOC_IN_STORE)
        return 0;
    struct repl_write w;
    if (write_decode(txn, j, &v, &w) < 0)
        return err_set(err, "journal entry %llu: its document is not in the store",
                       (unsigned long long)lsn);
    int rc = put_write(txn, j, &w, DOC_INLINE, w.doc, strlen(w.doc), err);
    repl_write_clear(&w);
    return rc;
}

int journal_del_write(MDB_txn *txn, struct journal *j, uint64_t lsn, struct err *err)
{
    unsigned char kb[8];
    journal_u64_key(kb, lsn);
    MDB_val k = { 8, kb };
    int rc = mdb_del(txn, j->writes, &k, NULL);
    return rc && rc != MDB_NOTFOUND ? err_set(err, "%s", mdb_strerror(rc)) : 0;
}

int journal_put_clog(MDB_txn *txn, struct journal *j, uint64_t crts, const char *json,
                     size_t len, struct err *err)
{
    return put_json_at(txn, j->clog, crts, json, len, err);
}

int journal_put_meta(MDB_txn *txn, struct journal *j, const char *name, uint64_t v,
                     struct err *err)
{
    unsigned char vb[8];
    journal_u64_key(vb, v);
    MDB_val k = { strlen(name), (void *)name }, val = { 8, vb };
    int rc = mdb_put(txn, j->meta, &k, &val, 0);
    return rc ? err_set(err, "meta %s: %s", name, mdb_strerror(rc)) : 0;
}

uint64_t journal_get_meta(MDB_txn *txn, struct journal *j, const char *name)
{
    MDB_val k = { strlen(name), (void *)name }, v;
    if (mdb_get(txn, j->meta, &k, &v) != 0 || v.mv_size != 8)
        return 0;
    return journal_u64_of_key(v.mv_data);
}

struct chead_disk {
    uint64_t lsn, base_lsn, hlc, crts;
    double value;
    uint32_t region, base_region;
    uint8_t is_delete, has_value;
    uint8_t pad[6];
};

int journal_chead_get(MDB_txn *txn, struct journal *j, const char *key, size_t klen,
                      struct chead_rec *out)
{
    MDB_val k = { klen, (void *)key }, v;
    memset(out, 0, sizeof *out);
    if (mdb_get(txn, j->cheads, &k, &v) != 0 || v.mv_size != sizeof(struct chead_disk))
        return 0;
    struct chead_disk d;
    memcpy(&d, v.mv_data, sizeof d);
    out->exists = true;
    out->crts = d.crts;
    out->w = (struct lww_write){ .version = { d.region, d.lsn }, .base = { d.base_region, d.base_lsn },
                                 .hlc = d.hlc, .is_delete = d.is_delete, .has_value = d.has_value,
                                 .value = d.value };
    return 0;
}

int journal_chead_put(MDB_txn *txn, struct journal *j, const char *key, size_t klen,
                      const struct chead_rec *c, struct err *err)
{
    struct chead_disk d = { .lsn = c->w.version.lsn, .base_lsn = c->w.base.lsn, .hlc = c->w.hlc,
                            .crts = c->crts, .value = c->w.value, .region = c->w.version.region,
                            .base_region = c->w.base.region, .is_delete = c->w.is_delete,
                            .has_value = c->w.has_value };
    MDB_val k = { klen, (void *)key }, v = { sizeof d, &d };
    int rc = mdb_put(txn, j->cheads, &k, &v, 0);
    return rc ? err_set(err, "confirmed heads: %s", mdb_strerror(rc)) : 0;
}

uint64_t journal_decided_get(MDB_txn *txn, struct journal *j, uint32_t origin)
{
    unsigned char kb[8];
    journal_u64_key(kb, origin);
    MDB_val k = { 8, kb }, v;
    if (mdb_get(txn, j->decided, &k, &v) != 0 || v.mv_size != 8)
        return 0;
    return journal_u64_of_key(v.mv_data);
}

int journal_decided_put(MDB_txn *txn, struct journal *j, uint32_t origin, uint64_t lsn,
                        struct err *err)
{
    unsigned char kb[8], vb[8];
    journal_u64_key(kb, origin);
    journal_u64_key(vb, lsn);
    MDB_val k = { 8, kb }, v = { 8, vb };
    int rc = mdb_put(txn, j->decided, &k, &v, 0);
    return rc ? err_set(err, "decided: %s", mdb_strerror(rc)) : 0;
}

int journal_clog_get(MDB_txn *txn, struct journal *j, uint64_t crts, struct clog_entry *out,
                     struct err *err)
{
    unsigned char kb[8];
    journal_u64_key(kb, crts);
    MDB_val k = { 8, kb }, v;
    if (mdb_get(txn, j->clog, &k, &v) != 0)
        return err_set(err, "confirmed-log entry %llu missing", (unsigned long long)crts);
    json_error_t je;
    json_t *root = json_loadb(v.mv_data, v.mv_size, 0, &je);
    int rc = clog_entry_from_json(root, out, err);
    json_decref(root);
    return rc;
}

int journal_scan_u64(MDB_txn *txn, MDB_dbi dbi, uint64_t after, uint64_t upto, size_t max,
                    int (*cb)(void *, uint64_t, const MDB_val *), void *arg)
{
    MDB_cursor *cur;
    unsigned char kb[8];
    journal_u64_key(kb, after + 1);
    MDB_val k = { 8, kb }, v;
    if (mdb_cursor_open(txn, dbi, &cur) != 0)
        return -1;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    for (size_t n = 0; rc == 0 && n < max; n++) {
        uint64_t at = journal_u64_of_key(k.mv_data);
        if (at > upto || cb(arg, at, &v))
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return 0;
}

bool journal_has_write(struct journal *j, uint64_t lsn)
{
    MDB_txn *txn = journal_rtxn(j);
    unsigned char kb[8];
    journal_u64_key(kb, lsn);
    MDB_val k = { 8, kb }, v;
    bool found = txn && mdb_get(txn, j->writes, &k, &v) == 0;
    journal_rtxn_done(j);
    return found;
}

static int backlog_first(void *arg, const struct repl_write *w)
{
    *(uint64_t *)arg = w->hlc;
    return 1;
}

int journal_backlog(struct journal *j, uint64_t *count, uint64_t *oldest_hlc)
{
    MDB_txn *txn = journal_rtxn(j);
    MDB_stat st;
    *count = *oldest_hlc = 0;
    if (!txn || mdb_stat(txn, j->writes, &st) != 0) {
        journal_rtxn_done(j);
        return -1;
    }
    *count = st.ms_entries;
    return journal_scan_writes(j, 0, 1, backlog_first, oldest_hlc);
}

struct write_scan {
    MDB_txn *txn;
    struct journal *j;
    int (*cb)(void *, const struct repl_write *);
    void *arg;
};

static int write_scan_one(void *arg, uint64_t lsn, const MDB_val *v)
{
    struct write_scan *ws = arg;
    struct repl_write w;
    if (write_decode(ws->txn, ws->j, v, &w) < 0)
        return 0; /* unreadable entries are skipped, never fatal */
    int rc = ws->cb(ws->arg, &w);
    repl_write_clear(&w);
    return rc;
}

int journal_scan_writes_txn(MDB_txn *txn, struct journal *j, uint64_t after, size_t max,
                            int (*cb)(void *arg, const struct repl_write *w), void *arg)
{
    struct write_scan ws = { txn, j, cb, arg };
    return txn ? journal_scan_u64(txn, j->writes, after, UINT64_MAX, max, write_scan_one, &ws) : -1;
}

int journal_scan_writes(struct journal *j, uint64_t after, size_t max,
                        int (*cb)(void *arg, const struct repl_write *w), void *arg)
{
    int rc = journal_scan_writes_txn(journal_rtxn(j), j, after, max, cb, arg);
    journal_rtxn_done(j);
    return rc;
}

struct clog_scan {
    int (*cb)(void *, uint64_t, const char *, size_t);
    void *arg;
};

static int clog_scan_one(void *arg, uint64_t crts, const MDB_val *v)
{
    struct clog_scan *cs = arg;
    return cs->cb(cs->arg, crts, v->mv_data, v->mv_size);
}

int journal_scan_clog(struct journal *j, uint64_t after, uint64_t upto, size_t max,
                      int (*cb)(void *arg, uint64_t crts, const char *json, size_t len),
                      void *arg)
{
    MDB_txn *txn = journal_rtxn(j);
    struct clog_scan cs = { cb, arg };
    int rc = txn ? journal_scan_u64(txn, j->clog, after, upto, max, clog_scan_one, &cs) : -1;
    journal_rtxn_done(j);
    return rc;
}

int journal_scan_clog_back(struct journal *j, uint64_t from, size_t max,
                           int (*cb)(void *arg, uint64_t crts, const char *json, size_t len),
                           void *arg)
{
    MDB_txn *txn = journal_rtxn(j);
    MDB_cursor *cur;
    if (!txn || mdb_cursor_open(txn, j->clog, &cur) != 0) {
        journal_rtxn_done(j);
        return -1;
    }
    unsigned char kb[8];
    journal_u64_key(kb, from);
    MDB_val k = { 8, kb }, v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && journal_u64_of_key(k.mv_data) > from)
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    else if (rc == MDB_NOTFOUND)
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    for (size_t n = 0; rc == 0 && n < max; n++) {
        if (cb(arg, journal_u64_of_key(k.mv_data), v.mv_data, v.mv_size))
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    }
    mdb_cursor_close(cur);
    journal_rtxn_done(j);
    return 0;
}
