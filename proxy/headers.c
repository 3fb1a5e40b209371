#include "headers.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int sbuf_reserve(struct sbuf *s, size_t extra)
{
    if (s->len + extra <= s->cap)
        return 0;
    size_t cap = s->cap ? s->cap : 512;
    while (cap < s->len + extra)
        cap *= 2;
    char *p = realloc(s->p, cap);
    if (!p)
        return -1;
    s->p = p;
    s->cap = cap;
    return 0;
}

int sbuf_add(struct sbuf *s, const char *p, size_t n)
{
    if (sbuf_reserve(s, n + 1) < 0)
        return -1;
    if (n)
        memcpy(s->p + s->len, p, n);
    s->len += n;
    s->p[s->len] = '\0';
    return 0;
}

int sbuf_adds(struct sbuf *s, const char *str)
{
    return sbuf_add(s, str, strlen(str));
}

int sbuf_printf(struct sbuf *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sbuf_reserve(s, (size_t)n + 1) < 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
    return 0;
}

void sbuf_free(struct sbuf *s)
{
    free(s->p);
    s->p = NULL;
    s->len = s->cap = 0;
}

void hdr_block_reset(struct hdr_block *b)
{
    b->len = 0;
    b->n = 0;
    b->line_off = b->line_len = 0;
    b->open = HDR_OPEN_NONE;
}

void hdr_block_free(struct hdr_block *b)
{
    free(b->buf);
    free(b->refs);
    memset(b, 0, sizeof *b);
}

/* Appends raw bytes and keeps the buffer NUL-terminated so that the last
 * piece can be used as a C string. */
static int hdr_block_append(struct hdr_block *b, const char *at, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->buf, cap);
        if (!p)
            return -1;
        b->buf = p;
        b->cap = (uint32_t)cap;
    }
    memcpy(b->buf + b->len, at, len);
    b->len += (uint32_t)len;
    b->buf[b->len] = '\0';
    return 0;
}

int hdr_block_add_line(struct hdr_block *b, const char *at, size_t len)
{
    if (b->line_len == 0)
        b->line_off = b->len;
    b->line_len += (uint32_t)len;
    return hdr_block_append(b, at, len);
}

/* Each piece is followed by a NUL so values can be handed to C APIs. */
static int hdr_block_terminate(struct hdr_block *b)
{
    if (hdr_block_append(b, "", 0) < 0)
        return -1;
    b->len++;
    return 0;
}

int hdr_block_end_line(struct hdr_block *b)
{
    return hdr_block_terminate(b);
}

int hdr_block_add_name(struct hdr_block *b, const char *at, size_t len)
{
    if (b->open != HDR_OPEN_NAME) {
        if (b->open == HDR_OPEN_VALUE && hdr_block_terminate(b) < 0)
            return -1;
        if (b->n == b->ref_cap) {
            uint32_t cap = b->ref_cap ? b->ref_cap * 2 : 16;
            struct hdr_ref *r = realloc(b->refs, cap * sizeof *r);
            if (!r)
                return -1;
            b->refs = r;
            b->ref_cap = cap;
        }
        b->refs[b->n++] = (struct hdr_ref){ .name_off = b->len };
        b->open = HDR_OPEN_NAME;
    }
    b->refs[b->n - 1].name_len += (uint32_t)len;
    return hdr_block_append(b, at, len);
}

int hdr_block_end_name(struct hdr_block *b)
{
    if (b->open != HDR_OPEN_NAME || hdr_block_terminate(b) < 0)
        return -1;
    b->refs[b->n - 1].val_off = b->len;
    b->open = HDR_OPEN_VALUE;
    return 0;
}

int hdr_block_add_value(struct hdr_block *b, const char *at, size_t len)
{
    if (b->open != HDR_OPEN_VALUE)
        return -1;
    b->refs[b->n - 1].val_len += (uint32_t)len;
    return hdr_block_append(b, at, len);
}

int hdr_block_end_value(struct hdr_block *b)
{
    if (b->open != HDR_OPEN_VALUE)
        return 0;
    b->open = HDR_OPEN_NONE;
    return hdr_block_terminate(b);
}

bool headers_token_eq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && strncasecmp(a, lit, n) == 0;
}

const char *hdr_block_get(const struct hdr_block *b, const char *name, size_t *len)
{
    for (uint32_t i = 0; i < b->n; i++) {
        const struct hdr_ref *r = &b->refs[i];
        if (headers_token_eq(b->buf + r->name_off, r->name_len, name)) {
            if (len)
                *len = r->val_len;
            return b->buf + r->val_off;
        }
    }
    return NULL;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

bool headers_list_has(const char *list, size_t len, const char *tok)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (is_ows(list[i]) || list[i] == ','))
            i++;
        size_t start = i;
        while (i < len && list[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows(list[end - 1]))
            end--;
        if (end > start && headers_token_eq(list + start, end - start, tok))
            return true;
    }
    return false;
}

static const char *const hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization",
};

bool headers_is_hop_by_hop(const char *name, size_t name_len, const char *connection,
                           size_t connection_len)
{
    for (size_t i = 0; i < sizeof hop_by_hop / sizeof *hop_by_hop; i++)
        if (headers_token_eq(name, name_len, hop_by_hop[i]))
            return true;
    if (!connection)
        return false;
    char tok[128];
    if (name_len >= sizeof tok)
        return false;
    memcpy(tok, name, name_len);
    tok[name_len] = '\0';
    return headers_list_has(connection, connection_len, tok);
}

static int write_line(struct sbuf *out, const char *name, size_t nlen, const char *val,
                      size_t vlen)
{
    if (sbuf_add(out, name, nlen) < 0 || sbuf_add(out, ": ", 2) < 0 ||
        sbuf_add(out, val, vlen) < 0 || sbuf_add(out, "\r\n", 2) < 0)
        return -1;
    return 0;
}

/* Appends `extra` to an existing list header value, or writes it alone. */
static int write_extended(struct sbuf *out, const char *name, const char *have, size_t have_len,
                          const char *extra)
{
    if (sbuf_adds(out, name) < 0 || sbuf_add(out, ": ", 2) < 0)
        return -1;
    if (have && have_len && (sbuf_add(out, have, have_len) < 0 || sbuf_add(out, ", ", 2) < 0))
        return -1;
    return sbuf_adds(out, extra) < 0 || sbuf_add(out, "\r\n", 2) < 0 ? -1 : 0;
}

/* Whether a header is hop-by-hop for this block, or one the caller rewrites. */
static bool skip_header(const struct hdr_block *b, const struct hdr_ref *r, const char *conn,
                        size_t conn_len, const char *const *rewritten)
{
    const char *name = b->buf + r->name_off;
    if (headers_is_hop_by_hop(name, r->name_len, conn, conn_len))
        return true;
    for (; *rewritten; rewritten++)
        if (headers_token_eq(name, r->name_len, *rewritten))
            return true;
    return false;
}

/* Copies the end-to-end headers of `b` that the caller does not rewrite. */
static int write_kept(struct sbuf *out, const struct hdr_block *b, const char *const *rewritten)
{
    size_t conn_len = 0;
    const char *conn = hdr_block_get(b, "connection", &conn_len);
    for (uint32_t i = 0; i < b->n; i++) {
        const struct hdr_ref *r = &b->refs[i];
        if (skip_header(b, r, conn, conn_len, rewritten))
            continue;
        if (write_line(out, b->buf + r->name_off, r->name_len, b->buf + r->val_off, r->val_len) < 0)
            return -1;
    }
    return 0;
}

int headers_write_request(struct sbuf *out, const struct hdr_block *b, const struct fwd_info *fi)
{
    static const char *const rewritten[] = { "content-length", "expect", "x-forwarded-for",
                                             "x-forwarded-proto", "via", NULL };
    size_t xff_len = 0, via_len = 0;
    const char *xff = hdr_block_get(b, "x-forwarded-for", &xff_len);
    const char *via = hdr_block_get(b, "via", &via_len);
    if (write_kept(out, b, rewritten) < 0)
        return -1;
    if (fi->default_host && !hdr_block_get(b, "host", NULL) &&
        write_line(out, "Host", 4, fi->default_host, strlen(fi->default_host)) < 0)
        return -1;
    if (write_extended(out, "X-Forwarded-For", xff, xff_len, fi->client_ip) < 0 ||
        write_extended(out, "X-Forwarded-Proto", NULL, 0, fi->proto) < 0 ||
        write_extended(out, "Via", via, via_len, fi->via) < 0)
        return -1;
    return 0;
}

int headers_write_forward(struct sbuf *out, const char *method, const char *target,
                          const struct hdr_block *client, const struct fwd_info *fi,
                          const char *extra, const char *body, size_t len, bool with_length)
{
    static const struct hdr_block none = { 0 };
    if (sbuf_printf(out, "%s %s HTTP/1.1\r\n", method, target) < 0 ||
        headers_write_request(out, client ? client : &none, fi) < 0 ||
        (extra && sbuf_adds(out, extra) < 0))
        return -1;
    if ((len || with_length) && sbuf_printf(out, "Content-Length: %zu\r\n", len) < 0)
        return -1;
    return sbuf_add(out, "\r\n", 2) < 0 || sbuf_add(out, body ? body : "", len) < 0 ? -1 : 0;
}

int headers_write_response(struct sbuf *out, const struct hdr_block *b, const char *via_self)
{
    static const char *const rewritten[] = { "content-length", "via", NULL };
    size_t via_len = 0;
    const char *via = hdr_block_get(b, "via", &via_len);
    if (write_kept(out, b, rewritten) < 0)
        return -1;
    return write_extended(out, "Via", via, via_len, via_self);
}
