/* entry: the records replication moves around: one region's write (journal
 * entry and shipped frame) and one decision of the hub (confirmed-log entry),
 * with their JSON forms. Pure: encoding, decoding and validation, no I/O.
 * Decoding never trusts its input: a bad frame is an error naming the field. */
#ifndef MERIDIAN_ENTRY_H
#define MERIDIAN_ENTRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "../resolver/lww.h"
#include "../util/err.h"
#include "version.h"

enum write_state { WRITE_INTENT = 1, WRITE_COMMITTED = 2 };

/* One write of one key, as its origin region tagged and journaled it. */
struct repl_write {
    uint32_t origin;
    uint64_t lsn;
    uint64_t hlc;
    struct version base;
    bool is_delete;
    enum write_state state;  /* journal only; not shipped */
    bool has_value;          /* the container's LWW path held a number */
    double value;
    char *container;
    char *id;
    char *doc;               /* tagged JSON text; NULL for a delete */
};

/* One decision of the hub, in crts order. */
struct clog_entry {
    uint64_t crts;
    struct repl_write w;             /* the write decided */
    enum lww_outcome outcome;
    enum lww_conflict conflict;
    /* The head after the decision: w itself when confirmed, the winner when
     * w was superseded, the procedure's result (version 0:crts) when
     * resolved, the unchanged head when filed. None when dismissed. */
    struct version head;
    uint64_t head_hlc;
    bool head_delete;
    char *head_doc;                  /* NULL for a tombstone */
    char *error;                     /* filed: why the procedure failed; NULL without one */
    uint64_t conflict_id;            /* dismissed: the crts of the filed entry removed */
};

static inline struct version repl_write_version(const struct repl_write *w)
{
    return (struct version){ w->origin, w->lsn };
}

void repl_write_clear(struct repl_write *w);
int repl_write_copy(struct repl_write *dst, const struct repl_write *src) MUST_CHECK;
json_t *repl_write_to_json(const struct repl_write *w);
int repl_write_from_json(const json_t *j, struct repl_write *w, struct err *err) MUST_CHECK;
/* repl_write_from_json of a write's JSON text (a shipped frame), validated
 * the same way, its document kept as the text holds it. */
int repl_write_parse(const char *text, size_t len, struct repl_write *w,
                     struct err *err) MUST_CHECK;

/* The JSON text of a write as shipped (repl_write_to_json without "state"),
 * with the document spliced in as it is, unparsed: it must be JSON Meridian
 * produced itself. Caller frees; NULL when memory runs out. */
char *repl_write_frame(const struct repl_write *w);

void clog_entry_clear(struct clog_entry *e);
/* A confirmed entry's head is its write: sets head, head_hlc, head_delete
 * and a copy of the document as head_doc. -1 without memory. */
int clog_entry_head_of_write(struct clog_entry *e) MUST_CHECK;
/* The JSON text of a decision as the confirmed log stores it: the same as
 * entry_dump(clog_entry_to_json(e)) up to key order, with the documents
 * spliced in as they are (JSON Meridian produced itself), not parsed and
 * written again. Caller frees; NULL when memory runs out. */
char *clog_entry_text(const struct clog_entry *e);
json_t *clog_entry_to_json(const struct clog_entry *e);
int clog_entry_from_json(const json_t *j, struct clog_entry *e, struct err *err) MUST_CHECK;
/* "confirmed", "superseded", "resolved", "filed" or "dismissed". */
const char *clog_outcome_name(enum lww_outcome o);
/* clog_entry_from_json of the entry's JSON text, validated the same way,
 * with the documents kept as the text holds them: they are checked, not
 * parsed and written again. */
int clog_entry_parse(const char *text, size_t len, struct clog_entry *e,
                     struct err *err) MUST_CHECK;

/* Compact JSON text of `j`, which it releases; the caller frees the text.
 * NULL when j is NULL or memory runs out. */
char *entry_dump(json_t *j);

/* The LWW input of a write (value read from `path` of its document). */
struct lww_write repl_write_lww(const struct repl_write *w);

/* Number at JSON pointer `path` ("/a/b") of `doc`; false when missing or not
 * numeric (or path NULL). */
bool entry_path_number(const char *doc, const char *path, double *out);
/* The same on a parsed document. */
bool entry_json_number(const json_t *doc, const char *path, double *out);

#endif
