#include "feed.h"

#include <stdio.h>
#include <string.h>

int feed_put(MDB_txn *txn, struct journal *j, uint64_t id, const char *key, size_t klen,
             struct err *err)
{
    unsigned char kb[8];
    journal_u64_key(kb, id);
    MDB_val k = { 8, kb }, v = { klen, (void *)key };
    int rc = mdb_put(txn, j->conflicts, &k, &v, 0);
    return rc ? err_set(err, "conflicts feed: %s", mdb_strerror(rc)) : 0;
}

int feed_del(MDB_txn *txn, struct journal *j, uint64_t id, bool *found, struct err *err)
{
    unsigned char kb[8];
    journal_u64_key(kb, id);
    MDB_val k = { 8, kb };
    int rc = mdb_del(txn, j->conflicts, &k, NULL);
    *found = rc == 0;
    return rc && rc != MDB_NOTFOUND ? err_set(err, "conflicts feed: %s", mdb_strerror(rc)) : 0;
}

struct key_scan {
    const char *key;
    size_t klen;
    uint64_t *ids;
    size_t n, max;
};

static int key_scan_one(void *arg, uint64_t id, const MDB_val *v)
{
    struct key_scan *ks = arg;
    if (v->mv_size == ks->klen && memcmp(v->mv_data, ks->key, ks->klen) == 0)
        ks->ids[ks->n++] = id;
    return ks->n >= ks->max;
}

size_t feed_ids_of_key(MDB_txn *txn, struct journal *j, const char *key, size_t klen,
                       uint64_t *ids, size_t max)
{
    struct key_scan ks = { key, klen, ids, 0, max };
    if (max)
        journal_scan_u64(txn, j->conflicts, 0, UINT64_MAX, SIZE_MAX, key_scan_one, &ks);
    return ks.n;
}

bool feed_listed(MDB_txn *txn, struct journal *j, uint64_t id)
{
    unsigned char kb[8];
    journal_u64_key(kb, id);
    MDB_val k = { 8, kb }, v;
    return mdb_get(txn, j->conflicts, &k, &v) == 0;
}

struct container_scan {
    const char *container;
    size_t clen;
    int (*cb)(void *, uint64_t);
    void *arg;
};

static int container_scan_one(void *arg, uint64_t id, const MDB_val *v)
{
    struct container_scan *cs = arg;
    if (v->mv_size <= cs->clen || memcmp(v->mv_data, cs->container, cs->clen + 1) != 0)
        return 0;
    return cs->cb(cs->arg, id);
}

int feed_scan(MDB_txn *txn, struct journal *j, const char *container, uint64_t after,
              int (*cb)(void *arg, uint64_t id), void *arg)
{
    struct container_scan cs = { container, strlen(container), cb, arg };
    return txn ? journal_scan_u64(txn, j->conflicts, after, UINT64_MAX, SIZE_MAX,
                                  container_scan_one, &cs)
               : -1;
}

uint64_t feed_count(struct journal *j)
{
    MDB_txn *txn = journal_rtxn(j);
    MDB_stat st;
    uint64_t n = txn && mdb_stat(txn, j->conflicts, &st) == 0 ? st.ms_entries : 0;
    journal_rtxn_done(j);
    return n;
}

int feed_policy_get(struct journal *j, const char *container, char *stored, size_t cap)
{
    MDB_txn *txn = journal_rtxn(j);
    MDB_val k = { strlen(container), (void *)container }, v;
    int rc = txn ? mdb_get(txn, j->policies, &k, &v) : -1;
    if (rc == 0)
        snprintf(stored, cap, "%.*s", (int)v.mv_size, (const char *)v.mv_data);
    journal_rtxn_done(j);
    return rc == 0 ? 1 : rc == MDB_NOTFOUND ? 0 : -1;
}

int feed_policy_put(MDB_txn *txn, struct journal *j, const char *container, const char *policy,
                    struct err *err)
{
    MDB_val k = { strlen(container), (void *)container }, v = { strlen(policy), (void *)policy };
    int rc = mdb_put(txn, j->policies, &k, &v, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        return v.mv_size == strlen(policy) && memcmp(v.mv_data, policy, v.mv_size) == 0
                   ? 0
                   : err_set(err, "container '%s' was recorded with policy '%.*s' meanwhile",
                             container, (int)v.mv_size, (const char *)v.mv_data);
    return rc ? err_set(err, "container policies: %s", mdb_strerror(rc)) : 0;
}
