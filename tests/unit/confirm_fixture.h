/* The shared fixture of the hub's unit tests (confirm_fixture.c): one hub
 * journal per test in a temporary directory, batches of writes, and the
 * hub's state read back. */
#ifndef MERIDIAN_CONFIRM_FIXTURE_H
#define MERIDIAN_CONFIRM_FIXTURE_H

#include <criterion/criterion.h>
#include <event2/event.h>
#include <jansson.h>
#include <lmdb.h>

#include "replication/confirm.h"
#include "replication/feed.h"
#include "replication/journal.h"

#define HUB 1
#define SAT_A 2
#define SAT_B 3
#define CONTAINER "orders"
#define MAX_LOG 64

/* A realistic HLC: 48-bit milliseconds, 16-bit counter. */
#define HLC(ms) ((uint64_t)(1700000000000ULL + (ms)) << 16)
#define V(r, l) ((struct version){ (r), (l) })

struct hub {
    struct event_base *base;
    struct journal *j;
    char root[64];
};

extern struct hub hub;
/* The container policy the hub applies: last-writer-wins unless a test
 * sets `custom` (for every container). */
extern struct confirm_policy custom;
extern const char *const worker[];

void hub_open(void);
void confirm_setup(void);
void confirm_teardown(void);

/* A put as its origin tagged it (the LWW value read from "/v"), a delete. */
struct repl_write put_in(const char *container, uint32_t origin, uint64_t lsn, uint64_t hlc,
                         struct version base, const char *id, const char *doc);
struct repl_write put(uint32_t origin, uint64_t lsn, uint64_t hlc, struct version base,
                      const char *id, const char *doc);
struct repl_write del(uint32_t origin, uint64_t lsn, uint64_t hlc, struct version base,
                      const char *id);
struct confirm_batch *batch_new(uint32_t origin, uint64_t crts_floor, struct repl_write *ws,
                                size_t n);
/* Decides one batch in its own committed transaction; its results. */
struct confirm_batch decide(uint32_t origin, uint64_t crts_floor, struct repl_write *ws, size_t n);

#define WRITES(...) ((struct repl_write[]){ __VA_ARGS__ })
#define NWRITES(...) (sizeof WRITES(__VA_ARGS__) / sizeof(struct repl_write))
#define DECIDE(origin, crts_floor, ...) decide((origin), (crts_floor), WRITES(__VA_ARGS__), NWRITES(__VA_ARGS__))

MDB_txn *read_txn(void);
struct chead_rec chead_in(const char *container, const char *id);
struct chead_rec chead(const char *id);
/* The log entry at crts; the caller clears it. */
struct clog_entry clog_at(uint64_t crts);
uint64_t decided_mark(uint32_t origin);
uint64_t last_crts_meta(void);

struct log_list {
    size_t n;
    uint64_t crts[MAX_LOG];
};
/* Every crts in the confirmed log, ascending. */
struct log_list log_all(void);

void expect_version(struct version got, struct version want, const char *what);
void expect_doc(const char *got, const char *want, const char *what);
size_t count_of(const struct confirm_batch *b, enum lww_conflict k, enum lww_outcome o);

#endif
