/* headers: an HTTP header block as llhttp hands it over (in pieces), and the
 * rewriting rules a proxy applies to it (hop-by-hop removal, X-Forwarded-*,
 * Via). Pure: no sockets, no disk; owns only the bytes of its block. */
#ifndef MERIDIAN_HEADERS_H
#define MERIDIAN_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hdr_ref {
    uint32_t name_off, name_len;
    uint32_t val_off, val_len;
};

/* The start line's variable part (URL of a request, reason of a response)
 * followed by every header name and value, stored back to back in `buf`. */
struct hdr_block {
    char *buf;
    uint32_t len, cap;
    uint32_t line_off, line_len;   /* URL or reason phrase */
    struct hdr_ref *refs;
    uint32_t n, ref_cap;
    enum { HDR_OPEN_NONE, HDR_OPEN_NAME, HDR_OPEN_VALUE } open; /* piece being appended */
};

struct sbuf {
    char *p;
    size_t len, cap;
};

/* What the proxy adds to a forwarded request. */
struct fwd_info {
    const char *client_ip;         /* appended to X-Forwarded-For */
    const char *proto;             /* X-Forwarded-Proto */
    const char *via;               /* appended to Via, e.g. "1.1 meridian" */
    const char *default_host;      /* Host when the client sent none (HTTP/1.0) */
};

void hdr_block_reset(struct hdr_block *b);
void hdr_block_free(struct hdr_block *b);
/* Appending pieces; each returns -1 only when memory runs out. */
/* Appending pieces as llhttp delivers them; each returns -1 when memory runs
 * out or the pieces come out of order. */
int hdr_block_add_line(struct hdr_block *b, const char *at, size_t len);
int hdr_block_end_line(struct hdr_block *b);
int hdr_block_add_name(struct hdr_block *b, const char *at, size_t len);
int hdr_block_end_name(struct hdr_block *b);
int hdr_block_add_value(struct hdr_block *b, const char *at, size_t len);
int hdr_block_end_value(struct hdr_block *b);

static inline const char *hdr_block_line(const struct hdr_block *b) { return b->buf + b->line_off; }

/* First value of header `name` (case-insensitive), or NULL; *len gets its length. */
const char *hdr_block_get(const struct hdr_block *b, const char *name, size_t *len);

/* Whether header `name` must not cross the proxy: the fixed hop-by-hop list
 * plus every token of the message's own Connection header. */
bool headers_is_hop_by_hop(const char *name, size_t name_len, const char *connection,
                           size_t connection_len);

/* Writes the end-to-end headers of a request being forwarded, each as
 * "Name: value\r\n": hop-by-hop, Content-Length and Expect dropped,
 * X-Forwarded-For/Proto and Via added or extended. */
int headers_write_request(struct sbuf *out, const struct hdr_block *b, const struct fwd_info *fi);

/* A whole request for the backend: request line, the end-to-end headers of
 * `client` (NULL: none) rewritten as above, the `extra` header lines (or
 * NULL), a Content-Length when there is a body or `with_length`, a blank
 * line and the body. */
int headers_write_forward(struct sbuf *out, const char *method, const char *target,
                          const struct hdr_block *client, const struct fwd_info *fi,
                          const char *extra, const char *body, size_t len, bool with_length);

/* Writes the end-to-end headers of a response being relayed, framing headers
 * (Content-Length, Transfer-Encoding) and hop-by-hop dropped, Via extended. */
int headers_write_response(struct sbuf *out, const struct hdr_block *b, const char *via);

int sbuf_add(struct sbuf *s, const char *p, size_t n);
int sbuf_adds(struct sbuf *s, const char *str);
int sbuf_printf(struct sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_free(struct sbuf *s);

bool headers_token_eq(const char *a, size_t alen, const char *lit);
/* Whether the comma-separated list `list` contains token `tok` (case-insensitive). */
bool headers_list_has(const char *list, size_t len, const char *tok);

#endif
