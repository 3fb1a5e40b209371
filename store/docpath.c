#include "docpath.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence starting at s, or 0 when it is invalid
 * (truncated, overlong, a surrogate or beyond U+10FFFF). */
static size_t docpath_utf8_seq_len(const unsigned char *s, size_t left)
{
    size_t need;
    uint32_t cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        need = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        need = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        need = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (left < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return need;
}

bool docpath_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = docpath_utf8_seq_len(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

void docpath_utf8_sanitize(char *s, size_t len)
{
    unsigned char *p = (unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = docpath_utf8_seq_len(p + i, len - i);
        if (n == 0) {
            p[i] = '?';
            n = 1;
        }
        i += n;
    }
}

static int docpath_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes one byte at in[*i], advancing *i; -1 on a malformed escape. */
static int docpath_decode_byte(const char *in, size_t len, size_t *i, bool plus_is_space)
{
    char c = in[*i];

    if (c == '+' && plus_is_space) {
        *i += 1;
        return ' ';
    }
    if (c != '%') {
        *i += 1;
        return (unsigned char)c;
    }
    if (*i + 2 >= len)
        return -1;
    int hi = docpath_hex(in[*i + 1]), lo = docpath_hex(in[*i + 2]);
    if (hi < 0 || lo < 0)
        return -1;
    *i += 3;
    return hi * 16 + lo;
}

int docpath_decode(const char *in, size_t len, bool plus_is_space, bool allow_slash,
                   char **out, size_t *out_len, struct err *err)
{
    char *buf = malloc(len + 1);
    size_t n = 0;

    *out = NULL;
    if (!buf)
        return err_set(err, "out of memory");
    for (size_t i = 0; i < len;) {
        size_t at = i;
        int b = docpath_decode_byte(in, len, &i, plus_is_space);
        if (b < 0) {
            free(buf);
            return err_set(err, "has a malformed percent-escape at byte %zu", at);
        }
        if (b == 0 || (b == '/' && !allow_slash)) {
            free(buf);
            return err_set(err, "contains %s once percent-decoded", b ? "'/'" : "NUL");
        }
        buf[n++] = (char)b;
    }
    buf[n] = '\0';
    if (!docpath_utf8_valid(buf, n)) {
        free(buf);
        return err_set(err, "is not valid UTF-8 once percent-decoded");
    }
    *out = buf;
    *out_len = n;
    return 0;
}

char *docpath_encode_segment(const char *id, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(len * 3 + 1), *w = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        /* Only RFC 3986 unreserved characters go through as they are: the
         * result must survive any client's path normalisation. */
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            *w++ = (char)c;
        } else {
            *w++ = '%';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        }
    }
    *w = '\0';
    return out;
}

/* The collection is kept as received (containers match raw prefixes too), but
 * it becomes part of LMDB keys and JSON reasons, so it must be NUL-free UTF-8. */
static int docpath_check_collection(const char *coll, size_t len, struct err *err)
{
    if (memchr(coll, '\0', len))
        return err_set(err, "the request path contains a NUL byte");
    if (!docpath_utf8_valid(coll, len))
        return err_set(err, "the request path is not valid UTF-8");
    return 0;
}

int docpath_parse(const char *target, size_t len, struct docpath *out, struct err *err)
{
    struct err why;

    memset(out, 0, sizeof *out);
    if (len == 0 || target[0] != '/')
        return err_set(err, "the request path must start with '/'");
    const char *q = memchr(target, '?', len);
    size_t path_len = q ? (size_t)(q - target) : len;
    size_t slash = path_len - 1;
    while (target[slash] != '/')
        slash--;
    out->coll = target;
    out->coll_len = slash + 1;
    if (docpath_check_collection(target, out->coll_len, err) < 0)
        return -1;
    if (out->coll_len < path_len &&
        docpath_decode(target + out->coll_len, path_len - out->coll_len, false, false, &out->id,
                       &out->id_len, &why) < 0) {
        return err_set(err, "document id '%.*s' %s", (int)(path_len - out->coll_len),
                       target + out->coll_len, why.msg);
    }
    if (q) {
        out->query = q + 1;
        out->query_len = len - path_len - 1;
    }
    return 0;
}

void docpath_release(struct docpath *dp)
{
    free(dp->id);
    dp->id = NULL;
}

static int docpath_parse_limit(const char *v, size_t len, size_t *out, struct err *err)
{
    size_t n = 0;

    if (len == 0 || len > 4)
        goto bad;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            goto bad;
        n = n * 10 + (size_t)(v[i] - '0');
    }
    if (n < 1 || n > DOCPATH_LIMIT_MAX)
        goto bad;
    *out = n;
    return 0;
bad:
    return err_set(err, "limit must be an integer from 1 to %d, got '%.*s'", DOCPATH_LIMIT_MAX,
                   (int)(len > 40 ? 40 : len), v);
}

/* Applies one "key=value" pair of a listing query to `out`. */
static int docpath_list_param(const char *p, size_t len, struct docpath_list *out,
                              struct err *err)
{
    const char *eq = memchr(p, '=', len);
    size_t klen = eq ? (size_t)(eq - p) : len;
    const char *v = eq ? eq + 1 : p + len;
    size_t vlen = len - klen - (eq ? 1 : 0);
    struct err why;

    if (klen == 5 && memcmp(p, "limit", 5) == 0)
        return docpath_parse_limit(v, vlen, &out->limit, err);
    if (klen == 5 && memcmp(p, "after", 5) == 0) {
        free(out->after);
        out->after = NULL;
        out->after_len = 0;
        if (docpath_decode(v, vlen, true, true, &out->after, &out->after_len, &why) < 0)
            return err_set(err, "after '%.*s' %s", (int)(vlen > 100 ? 100 : vlen), v, why.msg);
    }
    return 0;
}

int docpath_parse_list(const char *query, size_t len, struct docpath_list *out,
                       struct err *err)
{
    out->limit = DOCPATH_LIMIT_DEFAULT;
    out->after = NULL;
    out->after_len = 0;
    for (size_t start = 0; query && start < len;) {
        const char *amp = memchr(query + start, '&', len - start);
        size_t end = amp ? (size_t)(amp - query) : len;
        if (docpath_list_param(query + start, end - start, out, err) < 0) {
            docpath_list_release(out);
            return -1;
        }
        start = end + 1;
    }
    return 0;
}

void docpath_list_release(struct docpath_list *list)
{
    free(list->after);
    list->after = NULL;
}

void docpath_etag_format(uint64_t seq, char out[DOCPATH_ETAG_MAX])
{
    snprintf(out, DOCPATH_ETAG_MAX, "\"%" PRIx64 "\"", seq);
}

static const char *docpath_skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == ',')
        p++;
    return p;
}

/* Whether the entity-tag list `header` names `etag` ("*" names any). Weak tags
 * (W/"x") match only when `weak_ok`: If-Match compares strongly, If-None-Match
 * weakly (RFC 9110 13.1). A malformed element ends the list. */
static bool docpath_etag_listed(const char *header, const char *etag, bool weak_ok)
{
    size_t etag_len = strlen(etag);
    const char *p = docpath_skip_ows(header);

    if (p[0] == '*')
        return true;
    while (*p) {
        bool weak = p[0] == 'W' && p[1] == '/';
        if (weak)
            p += 2;
        if (*p != '"')
            return false;
        const char *close = strchr(p + 1, '"');
        if (!close)
            return false;
        size_t tag_len = (size_t)(close - p) + 1;
        if ((weak_ok || !weak) && tag_len == etag_len && memcmp(p, etag, etag_len) == 0)
            return true;
        p = docpath_skip_ows(close + 1);
    }
    return false;
}

int docpath_preconditions(const char *if_match, const char *if_none_match,
                          const char *current_etag, struct err *err)
{
    if (if_match && !current_etag)
        return err_set(err, "If-Match: %.100s, but the document does not exist", if_match);
    if (if_match && !docpath_etag_listed(if_match, current_etag, false))
        return err_set(err, "If-Match: %.100s does not match the current ETag %s", if_match,
                       current_etag);
    if (if_none_match && current_etag && docpath_etag_listed(if_none_match, current_etag, true))
        return err_set(err, "If-None-Match: %.100s, but the document exists with ETag %s",
                       if_none_match, current_etag);
    return 0;
}
