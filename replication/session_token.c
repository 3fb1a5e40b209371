#include "session_token.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* One regionId=lsn pair; the header's array element is an anonymous struct,
 * so the module works on its own copy of the shape. */
struct st_entry {
    uint32_t region;
    uint64_t lsn;
};

/* Why a number field was refused; each has a fixed phrase in messages. */
enum st_num { ST_NUM_OK, ST_NUM_EMPTY, ST_NUM_NOT_NUMBER, ST_NUM_LEADING_ZERO, ST_NUM_TOO_BIG };

#define ST_QUOTE_MAX 40  /* bytes of client text echoed in one message */
#define ST_LABEL_MAX 128

/* ---- parsing ---------------------------------------------------------- */

/* Plain decimal no larger than max. Leading zeros are refused so that the
 * canonical text is the only text of a token. */
static enum st_num st_parse_number(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t n = 0;

    if (len == 0)
        return ST_NUM_EMPTY;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9)
            return ST_NUM_NOT_NUMBER;
        if (n > (max - d) / 10)
            return ST_NUM_TOO_BIG;
        n = n * 10 + d;
    }
    if (len > 1 && s[0] == '0')
        return ST_NUM_LEADING_ZERO;
    *out = n;
    return ST_NUM_OK;
}

/* Fills `buf` with the phrase for r (which needs `max` for the range). */
static const char *st_num_problem(enum st_num r, uint64_t max, char *buf, size_t size)
{
    switch (r) {
    case ST_NUM_EMPTY: return "is empty";
    case ST_NUM_NOT_NUMBER: return "is not a number";
    case ST_NUM_LEADING_ZERO: return "has a leading zero";
    case ST_NUM_TOO_BIG:
        snprintf(buf, size, "is larger than %" PRIu64, max);
        return buf;
    case ST_NUM_OK: break;
    }
    return "is fine";
}

/* A bounded, printable copy of client text for an error message: the
 * message reaches logs and HTTP bodies, so control bytes and quotes become
 * '?' and long text is cut with "...". Returns buf. */
static const char *st_quote(const char *s, size_t len, char *buf)
{
    size_t n = len < ST_QUOTE_MAX ? len : ST_QUOTE_MAX;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[i] = (ch < 0x20 || ch >= 0x7f || ch == '\'') ? '?' : (char)ch;
    }
    strcpy(buf + n, len > n ? "..." : "");
    return buf;
}

/* Parses one number field, or fails with "session token: LABEL PROBLEM". */
static int st_parse_field(const char *s, size_t len, uint64_t max, const char *label,
                          uint64_t *out, struct err *err)
{
    char why[48];
    enum st_num r = st_parse_number(s, len, max, out);

    if (r == ST_NUM_OK)
        return 0;
    return err_set(err, "session token: %s %s", label, st_num_problem(r, max, why, sizeof why));
}

/* Parses the header field at s[0..len) named `name` ("topology version"). */
static int st_parse_header_field(const char *s, size_t len, const char *name, uint64_t max,
                                 uint64_t *out, struct err *err)
{
    char label[ST_LABEL_MAX], q[ST_QUOTE_MAX + 4];

    snprintf(label, sizeof label, "%s ('%s')", name, st_quote(s, len, q));
    return st_parse_field(s, len, max, label, out, err);
}

/* Parses entry number `index` (1-based, counted after the two header
 * fields), "REGION=LSN", into e. */
static int st_parse_entry(const char *s, size_t len, uint32_t index, struct st_entry *e,
                          struct err *err)
{
    char label[ST_LABEL_MAX], q[ST_QUOTE_MAX + 4];
    const char *eq = memchr(s, '=', len);
    uint64_t region, lsn;
    int at;

    if (len == 0)
        return err_set(err, "session token: region entry %" PRIu32 " is empty "
                       "(two '#' in a row, or a trailing '#')", index);
    at = snprintf(label, sizeof label, "region entry %" PRIu32 " ('%s'):", index,
                  st_quote(s, len, q));
    if (!eq)
        return err_set(err, "session token: %s expected REGION=LSN", label);
    snprintf(label + at, sizeof label - (size_t)at, " region id");
    if (st_parse_field(s, (size_t)(eq - s), UINT32_MAX, label, &region, err) < 0)
        return -1;
    if (region == 0)
        return err_set(err, "session token: %.*s region id 0 is not allowed (ids start at 1)",
                       at, label);
    snprintf(label + at, sizeof label - (size_t)at, " lsn");
    if (st_parse_field(eq + 1, len - (size_t)(eq - s) - 1, UINT64_MAX, label, &lsn, err) < 0)
        return -1;
    e->region = (uint32_t)region;
    e->lsn = lsn;
    return 0;
}

/* Length of the field starting at s: up to the next '#' or the end. */
static size_t st_field_len(const char *s, size_t len)
{
    const char *hash = memchr(s, '#', len);

    return hash ? (size_t)(hash - s) : len;
}

/* ---- entry lists ------------------------------------------------------ */

static void st_sort(struct st_entry *e, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        struct st_entry x = e[i];
        uint32_t j = i;
        for (; j > 0 && e[j - 1].region > x.region; j--)
            e[j] = e[j - 1];
        e[j] = x;
    }
}

/* Copies t's entries into e sorted by region, leaving out lsn 0 (it asks for
 * nothing) and folding duplicates by maximum, so that the functions below
 * work on a normal form whatever the caller put in the struct. */
static uint32_t st_sorted_copy(const struct session_token *t, struct st_entry *e)
{
    uint32_t n = 0, in = t->n < SESSION_TOKEN_MAX_REGIONS ? t->n : SESSION_TOKEN_MAX_REGIONS;

    for (uint32_t i = 0; i < in; i++) {
        if (t->v[i].lsn == 0)
            continue;
        e[n].region = t->v[i].region;
        e[n++].lsn = t->v[i].lsn;
    }
    st_sort(e, n);
    uint32_t out = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (out > 0 && e[out - 1].region == e[i].region) {
            if (e[i].lsn > e[out - 1].lsn)
                e[out - 1].lsn = e[i].lsn;
        } else {
            e[out++] = e[i];
        }
    }
    return out;
}

/* Merges two sorted lists into u by per-region maximum; returns the count. */
static uint32_t st_union(const struct st_entry *a, uint32_t na, const struct st_entry *b,
                         uint32_t nb, struct st_entry *u)
{
    uint32_t i = 0, j = 0, n = 0;

    while (i < na || j < nb) {
        if (j == nb || (i < na && a[i].region < b[j].region)) {
            u[n++] = a[i++];
        } else if (i == na || b[j].region < a[i].region) {
            u[n++] = b[j++];
        } else {
            u[n] = a[i++];
            if (b[j].lsn > u[n].lsn)
                u[n].lsn = b[j].lsn;
            n++;
            j++;
        }
    }
    return n;
}

/* Stores sorted entries into t. When there are more than the struct holds
 * (only possible with forged or absurd tokens), the lowest region ids are
 * kept: a fixed rule keeps merge commutative and associative, at the price
 * of not requiring anything of the dropped regions. */
static void st_store(struct session_token *t, const struct st_entry *e, uint32_t n)
{
    if (n > SESSION_TOKEN_MAX_REGIONS)
        n = SESSION_TOKEN_MAX_REGIONS;
    for (uint32_t i = 0; i < n; i++) {
        t->v[i].region = e[i].region;
        t->v[i].lsn = e[i].lsn;
    }
    t->n = n;
}

/* ---- the API ---------------------------------------------------------- */

/* Parses the region entries after the two header fields (s starts after
 * the second '#', or is NULL when there are none) into e, in text order,
 * refusing duplicates and more entries than the struct holds. */
static int st_parse_entries(const char *s, size_t len, struct st_entry *e, uint32_t *n,
                            struct err *err)
{
    *n = 0;
    while (s) {
        size_t flen = st_field_len(s, len);
        if (*n == SESSION_TOKEN_MAX_REGIONS)
            return err_set(err, "session token: more than %d region entries",
                           SESSION_TOKEN_MAX_REGIONS);
        if (st_parse_entry(s, flen, *n + 1, &e[*n], err) < 0)
            return -1;
        for (uint32_t i = 0; i < *n; i++)
            if (e[i].region == e[*n].region)
                return err_set(err, "session token: region entry %" PRIu32 ": region %" PRIu32
                               " already appears in entry %" PRIu32, *n + 1, e[i].region, i + 1);
        (*n)++;
        s = flen < len ? s + flen + 1 : NULL;
        len = flen < len ? len - flen - 1 : 0;
    }
    return 0;
}

/* `out` is written only on success, so a caller may parse over a token it
 * still needs. */
int session_token_parse(const char *text, size_t len, struct session_token *out,
                        struct err *err)
{
    struct session_token t = { 0 };
    struct st_entry e[SESSION_TOKEN_MAX_REGIONS];
    uint64_t topology, confirmed;
    size_t flen;
    uint32_t n;

    if (len == 0) {
        *out = t;
        return 0;
    }
    if (len > SESSION_TOKEN_TEXT_MAX - 1)
        return err_set(err, "session token: %zu bytes is longer than the limit of %d",
                       len, SESSION_TOKEN_TEXT_MAX - 1);
    flen = st_field_len(text, len);
    if (st_parse_header_field(text, flen, "topology version", UINT32_MAX, &topology, err) < 0)
        return -1;
    if (flen == len)
        return err_set(err, "session token: the confirmed position is missing "
                       "(expected TOPOLOGY#CONFIRMED[#REGION=LSN...])");
    text += flen + 1;
    len -= flen + 1;
    flen = st_field_len(text, len);
    if (st_parse_header_field(text, flen, "confirmed position", UINT64_MAX, &confirmed, err) < 0)
        return -1;
    if (st_parse_entries(flen < len ? text + flen + 1 : NULL, flen < len ? len - flen - 1 : 0,
                         e, &n, err) < 0)
        return -1;
    t.topology = (uint32_t)topology;
    t.confirmed = confirmed;
    st_store(&t, e, n);
    n = st_sorted_copy(&t, e);
    st_store(&t, e, n);
    *out = t;
    return 0;
}

/* The empty token formats as "", the same text it parses from. Entries are
 * appended whole or not at all: if the text would not fit (only with forged,
 * enormous LSNs) the trailing entries are left out, so the result is always
 * a token that parses. */
void session_token_format(const struct session_token *t, char *buf)
{
    struct st_entry e[SESSION_TOKEN_MAX_REGIONS];
    uint32_t n = st_sorted_copy(t, e);
    size_t used;

    buf[0] = '\0';
    if (t->topology == 0 && t->confirmed == 0 && n == 0)
        return;
    used = (size_t)snprintf(buf, SESSION_TOKEN_TEXT_MAX, "%" PRIu32 "#%" PRIu64,
                            t->topology, t->confirmed);
    for (uint32_t i = 0; i < n; i++) {
        char one[48];
        int len = snprintf(one, sizeof one, "#%" PRIu32 "=%" PRIu64, e[i].region, e[i].lsn);
        if (used + (size_t)len > SESSION_TOKEN_TEXT_MAX - 1)
            break;
        memcpy(buf + used, one, (size_t)len + 1);
        used += (size_t)len;
    }
}

void session_token_merge(struct session_token *dst, const struct session_token *src)
{
    struct st_entry a[SESSION_TOKEN_MAX_REGIONS], b[SESSION_TOKEN_MAX_REGIONS];
    struct st_entry u[2 * SESSION_TOKEN_MAX_REGIONS];
    uint32_t na = st_sorted_copy(dst, a), nb = st_sorted_copy(src, b);

    if (src->topology > dst->topology)
        dst->topology = src->topology;
    if (src->confirmed > dst->confirmed)
        dst->confirmed = src->confirmed;
    st_store(dst, u, st_union(a, na, b, nb, u));
}

/* A note is a merge with a one-entry token, so it obeys the same rules
 * (order kept, lsn 0 asks for nothing). Region 0 names no region and would
 * make the token unparseable, so it is ignored. */
void session_token_note(struct session_token *t, uint32_t region, uint64_t lsn)
{
    struct session_token one = { .n = 1 };

    if (region == 0 || lsn == 0)
        return;
    one.v[0].region = region;
    one.v[0].lsn = lsn;
    session_token_merge(t, &one);
}

uint64_t session_token_lsn(const struct session_token *t, uint32_t region)
{
    uint32_t n = t->n < SESSION_TOKEN_MAX_REGIONS ? t->n : SESSION_TOKEN_MAX_REGIONS;
    uint64_t lsn = 0;

    for (uint32_t i = 0; i < n; i++)
        if (t->v[i].region == region && t->v[i].lsn > lsn)
            lsn = t->v[i].lsn;
    return lsn;
}
