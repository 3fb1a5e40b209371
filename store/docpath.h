/* docpath: the pure parsing behind the embedded store — what a request target
 * names (collection, percent-decoded id, listing query), strong ETags and the
 * If-Match / If-None-Match decision. No I/O, no LMDB, no allocation it does not
 * hand back; must never accept an id the store could not address again
 * (NUL, '/', invalid UTF-8). */
#ifndef MERIDIAN_DOCPATH_H
#define MERIDIAN_DOCPATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"

#define DOCPATH_LIMIT_DEFAULT 100
#define DOCPATH_LIMIT_MAX 1000
/* '"' + up to 16 hex digits + '"' + NUL */
#define DOCPATH_ETAG_MAX 20

/* A request target split at its last '/': "/orders/abc?x" is collection
 * "/orders/" (raw, pointing into the target) and id "abc" (decoded, owned).
 * A target ending in '/' names the collection itself: id is NULL. */
struct docpath {
    const char *coll;
    size_t coll_len;
    char *id;
    size_t id_len;
    const char *query;          /* text after '?', or NULL */
    size_t query_len;
};

/* What a listing asked for: ?limit=N&after=ID. `after` is decoded and owned. */
struct docpath_list {
    size_t limit;
    char *after;
    size_t after_len;
};

/* Splits and decodes `target`; the caller releases `out` with docpath_release
 * (also after a failure, which leaves it released). */
int docpath_parse(const char *target, size_t len, struct docpath *out, struct err *err) MUST_CHECK;
void docpath_release(struct docpath *dp);

/* Parses a listing query (may be NULL); unknown parameters are ignored. The
 * caller releases `out` with docpath_list_release. */
int docpath_parse_list(const char *query, size_t len, struct docpath_list *out,
                       struct err *err) MUST_CHECK;
void docpath_list_release(struct docpath_list *list);

/* Percent-decodes `in` into a NUL-terminated malloc'd string (owned by the
 * caller). In a query, '+' stands for a space (form encoding). Rejects bad
 * escapes, NUL, '/' when `allow_slash` is false, and invalid UTF-8. */
int docpath_decode(const char *in, size_t len, bool plus_is_space, bool allow_slash,
                   char **out, size_t *out_len, struct err *err) MUST_CHECK;

/* Percent-encodes an id for use as one path segment; malloc'd, owned by the
 * caller, NULL only when out of memory. */
char *docpath_encode_segment(const char *id, size_t len);

bool docpath_utf8_valid(const char *s, size_t len);

/* Replaces every byte that is not part of valid UTF-8 with '?', so a reason
 * quoting user input can always become a JSON string. */
void docpath_utf8_sanitize(char *s, size_t len);

/* Writes the quoted strong ETag of sequence `seq`, e.g. "\"1a\"". */
void docpath_etag_format(uint64_t seq, char out[DOCPATH_ETAG_MAX]);

/* Decides the write preconditions against the document's current ETag (NULL
 * when absent). Returns 0 when the write may proceed, -1 with the reason. */
int docpath_preconditions(const char *if_match, const char *if_none_match,
                          const char *current_etag, struct err *err) MUST_CHECK;

#endif
