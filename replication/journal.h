/* journal: a region's durable replication state in LMDB, under
 * DATA_DIR/replication: the journal of its own writes (intent → committed,
 * dropped once the hub's decision on it is applied here), the per-key heads
 * index (with tombstones), the confirmed log this region holds, and, at the
 * hub, the confirmed heads and per-origin "decided up to" marks. Every change
 * goes through one committer thread (group commit); reads run on the loop
 * against LMDB's memory map. Never half-applies a job. With the embedded
 * store the databases live in the store's environment and the jobs go to
 * its committer, so a write and its journal entry commit together. */
#ifndef MERIDIAN_JOURNAL_H
#define MERIDIAN_JOURNAL_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/committer.h"
#include "../util/err.h"
#include "entry.h"

struct event_base;

/* The LMDB map size of the journal's own environment (journal_open). */
#define JOURNAL_MAP_SIZE ((size_t)2 << 30)

/* What this region's backend holds for a key, as far as replication knows. */
struct head_rec {
    bool exists;
    struct version version;  /* the write the backend holds */
    uint64_t hlc;
    uint64_t crts;           /* confirmed-log position it reflects; 0 while tentative */
    uint32_t pending;        /* own writes committed here, not yet decided and applied */
    bool deleted;            /* tombstone */
};

/* The hub's confirmed head of a key. */
struct chead_rec {
    bool exists;
    struct lww_write w;
    uint64_t crts;           /* its confirmed-log entry */
};

/* The document stored under `key` (klen bytes) in the environment the
 * journal shares, as seen by txn; *len its length. NULL when there is none.
 * Valid until txn ends. */
typedef const char *(*journal_doc_fn)(void *ctx, MDB_txn *txn, const char *key, size_t klen,
                                      size_t *len);

struct journal {
    MDB_env *env;
    MDB_dbi meta, writes, heads, clog, decided, cheads;
    MDB_dbi conflicts, policies;   /* replication/feed.c */
    struct committer *committer;
    bool shared;             /* env and committer belong to the embedded store */
    MDB_txn *rtxn;           /* the loop's read transaction, reset after each use */
    uint32_t region;
    /* Loop-thread copies of meta, advanced by job completions. */
    uint64_t next_lsn;       /* next LSN to assign */
    uint64_t applied_crts;   /* confirmed-log position applied to the backend */
    uint64_t stored_crts;    /* highest confirmed-log entry held here */
    uint64_t hlc_persisted;  /* last HLC recorded, so restarts never go back */
    journal_doc_fn doc_fn;   /* documents of entries that refer to the store's copy */
    void *doc_ctx;
};

int journal_open(struct event_base *base, const char *dir, uint32_t region, struct journal **out,
                 struct err *err) MUST_CHECK;
/* The journal's databases (named "journal.*") inside another part's
 * environment, its jobs on that part's committer (the environment must be
 * opened as committer.h says); journal_close then leaves both open. */
int journal_open_in(MDB_env *env, struct committer *c, uint32_t region, struct journal **out,
                    struct err *err) MUST_CHECK;
void journal_close(struct journal *j);

/* The loop's read transaction, renewed per use so it sees the latest commit
 * (NULL when LMDB refuses one). Every use ends with journal_rtxn_done: a
 * read transaction left open pins its snapshot, so the committer can reuse
 * no page freed after it and the file and LMDB's free list grow for as long
 * as it stays open. */
MDB_txn *journal_rtxn(struct journal *j);
void journal_rtxn_done(struct journal *j);

/* Big-endian u64 keys, so that LMDB orders them numerically. */
void journal_u64_key(unsigned char *p, uint64_t v);
uint64_t journal_u64_of_key(const unsigned char *p);
/* Walks u64-keyed `dbi` from `after` (exclusive) to `upto`, at most max
 * records; cb returns nonzero to stop. */
int journal_scan_u64(MDB_txn *txn, MDB_dbi dbi, uint64_t after, uint64_t upto, size_t max,
                     int (*cb)(void *arg, uint64_t key, const MDB_val *v), void *arg);

/* Keys are "container\0id". Returns the length written into buf (at least
 * 512 bytes), or 0 when too long for LMDB. */
size_t journal_key(const char *container, const char *id, char *buf, size_t cap);

/* --- reads on the loop thread ------------------------------------------- */
int journal_head(struct journal *j, const char *container, const char *id, struct head_rec *out);
int journal_chead_get(MDB_txn *txn, struct journal *j, const char *key, size_t klen,
                      struct chead_rec *out);

/* Whether the journal still holds own write `lsn`. */
bool journal_has_write(struct journal *j, uint64_t lsn);

/* How many own writes are journaled and not yet applied as decided (the
 * tentative backlog), and the HLC of the oldest (0 when none). */
int journal_backlog(struct journal *j, uint64_t *count, uint64_t *oldest_hlc);

/* Calls cb for the journal's writes with lsn > after, ascending, at most max;
 * cb returns nonzero to stop. */
int journal_scan_writes(struct journal *j, uint64_t after, size_t max,
                        int (*cb)(void *arg, const struct repl_write *w), void *arg);
/* The same inside `txn` (the committer thread's). */
int journal_scan_writes_txn(MDB_txn *txn, struct journal *j, uint64_t after, size_t max,
                            int (*cb)(void *arg, const struct repl_write *w), void *arg);

/* Calls cb with the raw JSON of confirmed-log entries with crts > after and
 * <= upto, ascending, at most max; cb returns nonzero to stop. */
int journal_scan_clog(struct journal *j, uint64_t after, uint64_t upto, size_t max,
                      int (*cb)(void *arg, uint64_t crts, const char *json, size_t len),
                      void *arg);

/* The same backwards: entries with crts <= from, descending. */
int journal_scan_clog_back(struct journal *j, uint64_t from, size_t max,
                           int (*cb)(void *arg, uint64_t crts, const char *json, size_t len),
                           void *arg);

/* Where documents of entries stored by reference come from (the embedded
 * store, sharing the journal's environment). Without one, such entries
 * cannot be read. */
void journal_set_doc_source(struct journal *j, journal_doc_fn fn, void *ctx);

/* --- changes, run on the committer thread inside one transaction ------- */
int journal_put_write(MDB_txn *txn, struct journal *j, const struct repl_write *w,
                      struct err *err);

/* As journal_put_write, for a write whose document (w->doc) is, byte for
 * byte, what the store holds under store_key in the same transaction: the
 * entry keeps the key, not a second copy. Reads of the entry fetch the
 * document from the store, so before the store's document under that key
 * changes while the entry is still in the journal, journal_keep_doc must
 * copy it in. */
int journal_put_write_ref(MDB_txn *txn, struct journal *j, const struct repl_write *w,
                          const char *store_key, size_t key_len, struct err *err);

/* The entry at lsn, if it refers to the store's document, gets its own copy
 * of it (read in txn, so call it before the store's document changes). No
 * entry, or one with its own document: nothing to do. */
int journal_keep_doc(MDB_txn *txn, struct journal *j, uint64_t lsn, struct err *err);
int journal_del_write(MDB_txn *txn, struct journal *j, uint64_t lsn, struct err *err);
int journal_put_head(MDB_txn *txn, struct journal *j, const char *container, const char *id,
                     const struct head_rec *h, struct err *err);
int journal_get_head_txn(MDB_txn *txn, struct journal *j, const char *container, const char *id,
                         struct head_rec *out);
int journal_put_clog(MDB_txn *txn, struct journal *j, uint64_t crts, const char *json,
                     size_t len, struct err *err);
int journal_put_meta(MDB_txn *txn, struct journal *j, const char *name, uint64_t v,
                     struct err *err);
uint64_t journal_get_meta(MDB_txn *txn, struct journal *j, const char *name);
int journal_chead_put(MDB_txn *txn, struct journal *j, const char *key, size_t klen,
                      const struct chead_rec *c, struct err *err);
uint64_t journal_decided_get(MDB_txn *txn, struct journal *j, uint32_t origin);
int journal_decided_put(MDB_txn *txn, struct journal *j, uint32_t origin, uint64_t lsn,
                        struct err *err);
/* Reads clog[crts] inside a write transaction. */
int journal_clog_get(MDB_txn *txn, struct journal *j, uint64_t crts, struct clog_entry *out,
                     struct err *err);

#endif
