/* jsonscan: checks JSON text without building it: one value's extent, and
 * an object's members one by one, so a caller can find where a member's
 * value starts and ends and keep those bytes as they are. Pure, no
 * allocation; never reads past `end`. Accepts JSON (RFC 8259) within
 * Jansson's default limits: valid UTF-8, no \u0000 and no unpaired
 * surrogate escape, nesting up to 2048, integers that fit int64 and reals
 * that do not overflow a double. Whatever it accepts, Jansson accepts; it
 * refuses a few things Jansson takes (a number token of 64 characters or
 * more), so a caller that must not refuse what Jansson takes asks Jansson
 * when this says no. */
#ifndef MERIDIAN_JSONSCAN_H
#define MERIDIAN_JSONSCAN_H

#include <stdbool.h>
#include <stddef.h>

/* Where the JSON value starting at `p` (after optional whitespace) ends,
 * or NULL when it is not valid JSON. */
const char *jsonscan_value(const char *p, const char *end);

/* Whether s[0..n) is valid UTF-8 (what a JSON string may hold). */
bool jsonscan_utf8(const char *s, size_t n);

/* Writes s[0..n) as a JSON string literal, quotes included, into out, which
 * has room for 6 * n + 2 bytes; returns the length written. */
size_t jsonscan_quote(char *out, const char *s, size_t n);

/* Walking one object's members: jsonscan_object_open at its '{', then
 * jsonscan_member until it returns false. */
struct jsonscan_member {
    const char *key;          /* the key's bytes as written, without quotes */
    size_t key_len;
    bool key_escaped;         /* the key holds a backslash escape */
    const char *value, *value_end;
};

struct jsonscan_object {
    const char *p, *end;
    bool first, failed;
};

/* Walking an array's elements the same way: element spans one by one. */
struct jsonscan_array {
    const char *p, *end;
    bool first, failed;
};
bool jsonscan_array_open(struct jsonscan_array *a, const char *p, const char *end);
/* The next element's extent; false at the end (a->p then points past its
 * ']') or on invalid text (a->failed). */
bool jsonscan_element(struct jsonscan_array *a, const char **value, const char **value_end);

/* false when `p` (after whitespace) does not start an object. */
bool jsonscan_object_open(struct jsonscan_object *o, const char *p, const char *end);
/* The next member; false at the end of the object (o->p then points past its
 * '}') or on invalid text (o->failed). */
bool jsonscan_member(struct jsonscan_object *o, struct jsonscan_member *m);

#endif
