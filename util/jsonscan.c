#include "jsonscan.h"

#include <errno.h>
#include <math.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSONSCAN_DEPTH_MAX 2048

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One UTF-8 sequence of 2..4 bytes at p (lead byte >= 0x80); its length or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}

/* The code unit of \uXXXX at p (after the backslash and 'u'), or -1. */
static long escape_u_code(const char *p, const char *end)
{
    long v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        int h = hex(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/* \uXXXX at p (after the backslash and 'u'), with the low half of a
 * surrogate pair after it when it is a high one. NUL and unpaired
 * surrogates are refused, as Jansson does. */
static const char *escape_u(const char *p, const char *end)
{
    long v = escape_u_code(p, end);
    if (v <= 0 || (v >= 0xdc00 && v <= 0xdfff))
        return NULL;
    if (v < 0xd800 || v > 0xdbff)
        return p + 4;
    if (end - p < 10 || p[4] != '\\' || p[5] != 'u')
        return NULL;
    v = escape_u_code(p + 6, end);
    return v >= 0xdc00 && v <= 0xdfff ? p + 10 : NULL;
}

/* Whether any of the 8 bytes in x is zero (exact when none is, which is
 * all the caller relies on). */
#define SWAR_ONES 0x0101010101010101ULL
#define SWAR_HIGH 0x8080808080808080ULL
#define SWAR_ZERO(x) (((x) - SWAR_ONES) & ~(x) & SWAR_HIGH)

/* Past the run of plain string bytes at p (printable ASCII other than '"'
 * and '\\'), 8 at a time: a document's text is mostly such runs. */
static const char *plain_run(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        if ((x & SWAR_HIGH) | (((x - 0x20 * SWAR_ONES) & ~x) & SWAR_HIGH) |
            SWAR_ZERO(x ^ ('"' * SWAR_ONES)) | SWAR_ZERO(x ^ ('\\' * SWAR_ONES)))
            break;
        p += 8;
    }
    while (p < end && (unsigned char)*p >= 0x20 && (unsigned char)*p < 0x80 && *p != '"' &&
           *p != '\\')
        p++;
    return p;
}

/* A string starting at its opening quote; sets *escaped when it holds one. */
static const char *string(const char *p, const char *end, bool *escaped)
{
    if (p >= end || *p != '"')
        return NULL;
    p++;
    while ((p = plain_run(p, end)) < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            *escaped = true;
            if (++p >= end)
                return NULL;
            if (*p == 'u')
                p = escape_u(p + 1, end);
            else if (*p && strchr("\"\\/bfnrt", *p))
                p++;
            else
                return NULL;
            if (!p)
                return NULL;
        } else if (c < 0x80) {
            p++;
        } else {
            size_t n = utf8_seq((const unsigned char *)p, (const unsigned char *)end);
            if (!n)
                return NULL;
            p += n;
        }
    }
    return NULL;
}

static const char *digits(const char *p, const char *end)
{
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p > start ? p : NULL;
}

/* Whether the number token [start, p) is one Jansson takes: an integer
 * must fit int64, a real must not overflow a double. Only the shapes that
 * could fail are converted; a token too long for the buffer is refused
 * (callers fall back to Jansson, which decides). */
static bool number_fits(const char *start, const char *p, bool integer, bool exponent)
{
    char buf[64];
    size_t n = (size_t)(p - start);
    if (n >= sizeof buf)
        return false;
    if (integer ? n - (*start == '-') < 19 : !exponent)
        return true;
    memcpy(buf, start, n);
    buf[n] = '\0';
    errno = 0;
    if (integer) {
        long long v = strtoll(buf, NULL, 10);
        return !((v == LLONG_MAX || v == LLONG_MIN) && errno == ERANGE);
    }
    double d = strtod(buf, NULL);
    return !((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE);
}

static const char *number(const char *p, const char *end)
{
    const char *start = p;
    bool integer = true, exponent = false;
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if (!(p = digits(p, end)))
        return NULL;
    if (p < end && *p == '.') {
        integer = false;
        if (!(p = digits(p + 1, end)))
            return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integer = false;
        exponent = true;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (!(p = digits(p, end)))
            return NULL;
    }
    return number_fits(start, p, integer, exponent) ? p : NULL;
}

static const char *literal(const char *p, const char *end, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

static const char *value(const char *p, const char *end, int depth);

/* The members of an object or the elements of an array, after its opening
 * bracket; `close` is '}' or ']'. */
static const char *container(const char *p, const char *end, char close, int depth)
{
    bool escaped = false;
    p = ws(p, end);
    if (p < end && *p == close)
        return p + 1;
    for (;;) {
        if (close == '}') {
            p = string(ws(p, end), end, &escaped);
            p = p ? ws(p, end) : NULL;
            if (!p || p >= end || *p != ':')
                return NULL;
            p++;
        }
        p = value(p, end, depth);
        p = p ? ws(p, end) : NULL;
        if (!p || p >= end)
            return NULL;
        if (*p == close)
            return p + 1;
        if (*p != ',')
            return NULL;
        p++;
    }
}

static const char *value(const char *p, const char *end, int depth)
{
    bool escaped = false;
    p = ws(p, end);
    if (p >= end)
        return NULL;
    switch (*p) {
    case '{':
    case '[':
        if (depth >= JSONSCAN_DEPTH_MAX)
            return NULL;
        return container(p + 1, end, *p == '{' ? '}' : ']', depth + 1);
    case '"': return string(p, end, &escaped);
    case 't': return literal(p, end, "true");
    case 'f': return literal(p, end, "false");
    case 'n': return literal(p, end, "null");
    default: return number(p, end);
    }
}

const char *jsonscan_value(const char *p, const char *end)
{
    return value(p, end, 0);
}

bool jsonscan_object_open(struct jsonscan_object *o, const char *p, const char *end)
{
    p = ws(p, end);
    *o = (struct jsonscan_object){ .p = p + 1, .end = end, .first = true };
    return p < end && *p == '{';
}

bool jsonscan_member(struct jsonscan_object *o, struct jsonscan_member *m)
{
    const char *p = ws(o->p, o->end);
    if (p < o->end && *p == '}' && o->first) {
        o->p = p + 1;
        return false;
    }
    if (!o->first) {
        if (p < o->end && *p == '}') {
            o->p = p + 1;
            return false;
        }
        if (p >= o->end || *p != ',')
            goto fail;
        p = ws(p + 1, o->end);
    }
    o->first = false;
    *m = (struct jsonscan_member){ .key = p + 1 };
    p = string(p, o->end, &m->key_escaped);
    if (!p)
        goto fail;
    m->key_len = (size_t)(p - 1 - m->key);
    p = ws(p, o->end);
    if (p >= o->end || *p != ':')
        goto fail;
    m->value = ws(p + 1, o->end);
    /* Depth 1: this object is one level already. */
    m->value_end = value(m->value, o->end, 1);
    if (!m->value_end)
        goto fail;
    o->p = m->value_end;
    return true;
fail:
    o->failed = true;
    return false;
}

bool jsonscan_array_open(struct jsonscan_array *a, const char *p, const char *end)
{
    p = ws(p, end);
    *a = (struct jsonscan_array){ .p = p + 1, .end = end, .first = true };
    return p < end && *p == '[';
}

bool jsonscan_element(struct jsonscan_array *a, const char **v, const char **v_end)
{
    const char *p = ws(a->p, a->end);
    if (p < a->end && *p == ']') {
        a->p = p + 1;
        return false;
    }
    if (!a->first) {
        if (p >= a->end || *p != ',')
            goto fail;
        p++;
    }
    a->first = false;
    *v = ws(p, a->end);
    *v_end = value(*v, a->end, 1);
    if (!*v_end)
        goto fail;
    a->p = *v_end;
    return true;
fail:
    a->failed = true;
    return false;
}

bool jsonscan_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t k = *p < 0x80 ? 1 : utf8_seq(p, end);
        if (!k)
            return false;
        p += k;
    }
    return true;
}

size_t jsonscan_quote(char *out, const char *s, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n"
                        : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b"
                        : c == '\f' ? "\\f" : NULL;
        if (esc) {
            out[o++] = esc[0];
            out[o++] = esc[1];
        } else if (c < 0x20) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hexd[c >> 4];
            out[o + 5] = hexd[c & 15];
            o += 6;
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    return o;
}
