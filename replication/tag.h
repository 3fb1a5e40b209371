/* tag: a client's document, checked and tagged as text (write path step 3)
 * without building it: the members Meridian writes (`_ts`, the metadata
 * object, an auto-versioned top-level LWW member, a POST's new "id") are
 * replaced in place or appended, and every other byte stays as the client
 * sent it. Pure, no I/O. Never guesses: a document it cannot handle as
 * text (an escaped member name, a nested auto-versioned path, anything
 * jsonscan refuses) is TAG_SLOW, and the caller parses it with Jansson. */
#ifndef MERIDIAN_TAG_H
#define MERIDIAN_TAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "version.h"

#define TAG_REPLACE_MAX 8

/* What a container asks of its documents' tags. */
struct tag_spec {
    const char *metadata_field;   /* clients may not write it */
    const char *lww_key;          /* the LWW path's member when it is top-level ("/v"), or NULL */
    size_t lww_key_len;
    bool auto_version;            /* Meridian sets that member from the HLC */
};

/* The client's object, copied from its '{' to its '}', and the value spans
 * (offsets into text) the tag replaces. */
struct tag_doc {
    char *text;
    size_t len;
    bool empty;                   /* no members */
    size_t n;
    struct tag_span { size_t at, end; bool lww; } rep[TAG_REPLACE_MAX]; /* "_ts" or LWW values */
    bool has_id, has_lww;         /* the last "id" / LWW member's value span: */
    size_t id_at, id_end, lww_at, lww_end;
};

/* The write's metadata, as the tag writes it. */
struct tag_meta {
    const char *region;
    uint32_t region_id;
    uint64_t lsn, hlc;
    struct version base;
    const char *new_id;           /* appended as "id" (a POST without one), or NULL */
};

enum tag_result { TAG_OK, TAG_SLOW, TAG_FORGED };

/* The container's spec (lww_path: a JSON pointer or NULL); false when its
 * documents must be tagged by the parsed path (a nested auto-versioned path). */
bool tag_spec_of(struct tag_spec *s, const char *metadata_field, const char *lww_path,
                 bool auto_version);

/* Checks body[0..len) and fills d (TAG_OK: d->text is the caller's, freed by
 * tag_doc_clear). TAG_FORGED: a top-level member is the metadata field. */
enum tag_result tag_scan(struct tag_doc *d, const char *body, size_t len,
                         const struct tag_spec *s);

/* The tagged document as JSON text (NUL-terminated, caller frees), or NULL
 * when memory runs out. */
char *tag_apply(const struct tag_doc *d, const struct tag_spec *s, const struct tag_meta *m,
                size_t *out_len);

/* The number the top-level LWW member holds as sent (false when it is
 * missing or not a number). */
bool tag_lww_value(const struct tag_doc *d, double *out);

/* The POST id the document holds, when it is a plain string usable as an
 * id (not empty, no escape, no '/'): its bytes in *id, *len. */
bool tag_plain_id(const struct tag_doc *d, const char **id, size_t *len);

void tag_doc_clear(struct tag_doc *d);

#endif
