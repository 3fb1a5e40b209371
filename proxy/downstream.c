/*
 * downstream: the path of one client request.
 *
 *   listener accept ──▶ downstream_new()                        state IDLE
 *                         │
 *   ds_read_cb() ──▶ ds_parse() ── llhttp_execute() ──┐
 *                         │   on_message_begin          READ_HEAD (header timeout)
 *                         │   on_url / on_header_*      ds_check_head_size() → 431
 *                         │   on_headers_complete       READ_BODY; 413 / 100 Continue
 *                         │   on_body                   body into req.body → 413
 *                         │   on_message_complete       returns HPE_PAUSED
 *                         ▼
 *                   ds_dispatch() ──▶ forward_request()     DISPATCHED
 *                                         │ (ops, embedded store, HTTP backend)
 *                                         ▼
 *             downstream_reply()  or  downstream_stream_head/body/end()   STREAMING
 *                                         │
 *                                         ▼
 *                   ds_answer_done() ── keep-alive? ──▶ IDLE, llhttp_resume(),
 *                         │                             parse the next pipelined request
 *                         └── close ──▶ CLOSING ──▶ ds_write_cb() drained ──▶ ds_close()
 *
 * Errors found while parsing (400, 408, 413, 431) are answered with
 * Connection: close; the connection then closes once the answer is written.
 * The maintenance timer calls downstream_sweep() for header and idle timeouts.
 */
#include "downstream.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../util/log.h"
#include "forward.h"
#include "node.h"
#include "sockio.h"
#include "upstream.h"

/* Pause producing a streamed answer while this much waits for the client. */
#define DS_OUTPUT_HIGH (256 * 1024)
/* Stop reading a client while this much of its next requests is buffered. */
#define DS_INPUT_HIGH (256 * 1024)

struct downstream {
    TAILQ_ENTRY(downstream) link;
    struct node *node;
    struct bufferevent *bev;
    llhttp_t parser;
    enum ds_state state;
    uint64_t deadline_ms;            /* header or idle timeout; 0: none */
    char client_ip[INET6_ADDRSTRLEN];
    struct ds_request req;
    struct ds_backend backend;
    int error_status;                /* set by a callback that refuses the request */
    const char *error_reason;
    int status;                      /* of the answer being sent */
    uint64_t bytes_out;
    bool paused;                     /* parser paused after a complete request */
    bool upgrade;                    /* ... and it asked for an upgrade */
    bool close_after;                /* close once the current answer is sent */
    bool chunked_out;                /* the current answer is chunk-encoded */
    bool in_parse;                   /* ds_parse() is on the stack */
    bool linger;                     /* unread request bytes may follow the answer */
    bool peer;                       /* accepted on the peer port */
    bool flush_queued;               /* output waits for the end of the iteration */
    struct event *rev;               /* the socket's read event (see sockio) */
    bool reading;                    /* rev is added */
    bool throttled;                  /* reading stopped: DS_INPUT_HIGH buffered */
    struct sbuf extra;               /* headers added to the current answer */
};

static const llhttp_settings_t request_settings;

static void ds_parse(struct downstream *c);

struct node *downstream_node(const struct downstream *c) { return c->node; }
const struct ds_request *downstream_request(const struct downstream *c) { return &c->req; }
const char *downstream_client_ip(const struct downstream *c) { return c->client_ip; }
struct ds_backend *downstream_backend(struct downstream *c) { return &c->backend; }
bool downstream_is_peer(const struct downstream *c) { return c->peer; }

void downstream_add_header(struct downstream *c, const char *name, const char *value)
{
    (void)sbuf_printf(&c->extra, "%s: %s\r\n", name, value);
}

static void ds_set_state(struct downstream *c, enum ds_state s)
{
    const struct conf_limits *l = &c->node->conf->limits;
    uint64_t now = node_now_ms(c->node);
    c->state = s;
    switch (s) {
    case DS_IDLE: c->deadline_ms = now + l->idle_timeout_ms; break;
    case DS_READ_HEAD: c->deadline_ms = now + l->header_timeout_ms; break;
    /* A body gets the idle timeout between its pieces (refreshed on read). */
    case DS_READ_BODY: c->deadline_ms = now + l->idle_timeout_ms; break;
    default: c->deadline_ms = 0; break;
    }
}

static void ds_free(void *arg)
{
    struct downstream *c = arg;
    hdr_block_free(&c->req.head);
    sbuf_free(&c->req.body);
    sbuf_free(&c->extra);
    free(c);
}

static void ds_reading(struct downstream *c, bool on)
{
    if (!(on && c->throttled))
        sockio_watch(c->rev, &c->reading, on);
}

static void ds_close(struct downstream *c)
{
    if (!c->bev)
        return;
    forward_cancel(c);
    TAILQ_REMOVE(&c->node->clients, c, link);
    event_free(c->rev);
    c->rev = NULL;
    bufferevent_free(c->bev);
    c->bev = NULL;
    c->node->stats.connections_open--;
    node_defer_free(c->node, ds_free, c);
    node_client_gone(c->node);
}

/* After refusing a request whose bytes may still be arriving, closing at
 * once would make the kernel reset the connection and the client could lose
 * the answer: half-close and discard input for a moment instead. */
static void ds_finish_close(struct downstream *c)
{
    if (!c->linger) {
        ds_close(c);
        return;
    }
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    c->state = DS_LINGER;
    c->deadline_ms = node_now_ms(c->node) + 1000;
    c->throttled = false;
    ds_reading(c, true);
}

/* Output is written once per loop iteration (node_flush_later), so an
 * answer's head and body, or several pipelined answers, share one writev. */
static void ds_output(struct downstream *c)
{
    if (!c->flush_queued) {
        c->flush_queued = true;
        node_flush_later(c->node, c);
    }
}

static void ds_write_cb(struct bufferevent *bev, void *arg)
{
    struct downstream *c = arg;
    sockio_drained(bev);
    if (c->state == DS_CLOSING) {
        ds_finish_close(c);
        return;
    }
    if (c->backend.paused)
        forward_writable(c);
}

static void ds_read_cb(struct bufferevent *bev, void *arg)
{
    struct downstream *c = arg;
    if (c->state == DS_LINGER) {
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        return;
    }
    if (c->state == DS_READ_BODY)
        c->deadline_ms = node_now_ms(c->node) + c->node->conf->limits.idle_timeout_ms;
    if (!c->paused && c->state != DS_CLOSING)
        ds_parse(c);
}

static void ds_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct downstream *c = arg;
    bool in_flight = c->state == DS_DISPATCHED || c->state == DS_STREAMING;
    if ((what & BEV_EVENT_EOF) && in_flight) {
        /* Half-close after sending a request: answer it, then close. */
        c->close_after = true;
        ds_reading(c, false);
        return;
    }
    if (in_flight)
        c->node->stats.client_errors[SCE_CLOSED_IN_FLIGHT]++;
    ds_close(c);
}

/* The socket is readable: one recv, then the same handling a bufferevent
 * read callback would get. */
static void ds_sock_read(evutil_socket_t fd, short what, void *arg)
{
    struct downstream *c = arg;
    long n = sockio_read(c->bev, 16384);
    if (n == SOCKIO_AGAIN)
        return;
    if (n <= 0) {
        ds_event_cb(c->bev, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
        return;
    }
    ds_read_cb(c->bev, c);
    if (c->bev && evbuffer_get_length(bufferevent_get_input(c->bev)) >= DS_INPUT_HIGH) {
        ds_reading(c, false);
        c->throttled = true;
    }
}

int downstream_new(struct node *node, int fd, const struct sockaddr *addr, int addr_len,
                   bool peer)
{
    struct downstream *c = calloc(1, sizeof *c);
    if (!c)
        goto fail;
    c->bev = bufferevent_socket_new(node->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev)
        goto fail_conn;
    c->rev = event_new(node->base, fd, EV_READ | EV_PERSIST, ds_sock_read, c);
    if (!c->rev)
        goto fail_bev;
    c->node = node;
    c->peer = peer;
    c->req.method = -1;
    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, c->client_ip,
                  sizeof c->client_ip);
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, c->client_ip,
                  sizeof c->client_ip);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    llhttp_init(&c->parser, HTTP_REQUEST, &request_settings);
    c->parser.data = c;
    /* Reads come through rev; the bufferevent writes and reports errors. */
    bufferevent_setcb(c->bev, NULL, ds_write_cb, ds_event_cb, c);
    bufferevent_disable(c->bev, EV_WRITE);
    ds_reading(c, true);
    TAILQ_INSERT_TAIL(&node->clients, c, link);
    node->stats.connections_open++;
    ds_set_state(c, DS_IDLE);
    return 0;
fail_bev:
    bufferevent_free(c->bev); /* closes fd */
    free(c);
    return -1;
fail_conn:
    free(c);
fail:
    close(fd);
    return -1;
}

/* --- answers ------------------------------------------------------------ */

static const char *status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

static bool ds_is_head(const struct downstream *c)
{
    return c->req.method == HTTP_HEAD;
}

/* Writes the status line and the headers Meridian adds to every answer. */
static int ds_write_status(struct downstream *c, struct sbuf *out, int status, const char *reason,
                           size_t reason_len)
{
    c->status = status;
    if (!c->req.keep_alive || c->node->state != NODE_RUNNING)
        c->close_after = true;
    if (sbuf_printf(out, "HTTP/1.1 %d ", status) < 0 || sbuf_add(out, reason, reason_len) < 0 ||
        sbuf_add(out, "\r\n", 2) < 0)
        return -1;
    if (sbuf_printf(out, "X-Meridian-Region: %s\r\n", c->node->region->name) < 0)
        return -1;
    return c->extra.len ? sbuf_add(out, c->extra.p, c->extra.len) : 0;
}

static int ds_write_connection(struct downstream *c, struct sbuf *out)
{
    if (c->close_after)
        return sbuf_adds(out, "Connection: close\r\n\r\n");
    if (c->req.http_minor == 0)
        return sbuf_adds(out, "Connection: keep-alive\r\n\r\n");
    return sbuf_add(out, "\r\n", 2);
}

/* The answer is complete: account for it, then close or wait for the next
 * request, parsing what the client already pipelined. */
static void ds_answer_done(struct downstream *c)
{
    struct node *n = c->node;
    double secs = (node_now_ms(n) - c->req.started_ms) / 1000.0;
    stats_request(&n->stats, stats_method_index(c->req.method), c->status, secs);
    if (n->conf->access_log)
        log_info("access %s \"%s %s HTTP/%d.%d\" %d %llu %.3fms", c->client_ip,
                 llhttp_method_name((llhttp_method_t)c->req.method), hdr_block_line(&c->req.head),
                 c->req.http_major, c->req.http_minor, c->status,
                 (unsigned long long)c->bytes_out, secs * 1000.0);
    c->backend = (struct ds_backend){ 0 };
    if (c->close_after) {
        ds_set_state(c, DS_CLOSING);
        ds_reading(c, false);
        ds_output(c);
        return;
    }
    ds_set_state(c, DS_IDLE);
    c->paused = false;
    if (c->upgrade)
        llhttp_resume_after_upgrade(&c->parser);
    else
        llhttp_resume(&c->parser);
    c->upgrade = false;
    if (!c->in_parse)
        ds_parse(c);
}

void downstream_reply(struct downstream *c, int status, const struct reply_hdr *extra, size_t n,
                      const char *content_type, const char *body, size_t len)
{
    struct sbuf headers = { 0 };
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = sbuf_printf(&headers, "%s: %s\r\n", extra[i].name, extra[i].value);
    if (rc == 0 && content_type)
        rc = sbuf_printf(&headers, "Content-Type: %s\r\n", content_type);
    if (rc < 0)
        c->close_after = true;
    downstream_reply_relay(c, status, headers.p ? headers.p : "", headers.len, body, len);
    sbuf_free(&headers);
}

void downstream_reply_relay(struct downstream *c, int status, const char *headers, size_t hlen,
                            const char *body, size_t len)
{
    struct sbuf out = { 0 };
    const char *reason = status_reason(status);
    int rc = ds_write_status(c, &out, status, reason, strlen(reason));
    rc = rc ? rc : sbuf_add(&out, headers, hlen);
    rc = rc ? rc : sbuf_printf(&out, "Content-Length: %zu\r\n", len);
    rc = rc ? rc : ds_write_connection(c, &out);
    if (rc == 0 && !ds_is_head(c))
        rc = sbuf_add(&out, body, len);
    if (rc < 0)
        c->close_after = true;
    else
        bufferevent_write(c->bev, out.p, out.len);
    c->bytes_out += out.len;
    sbuf_free(&out);
    ds_output(c);
    ds_answer_done(c);
}

/* Appends `s` to `out` as the inside of a JSON string. */
static int json_escape(struct sbuf *out, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int rc;
        if (ch == '"' || ch == '\\')
            rc = sbuf_printf(out, "\\%c", ch);
        else if (ch < 0x20)
            rc = sbuf_printf(out, "\\u%04x", ch);
        else
            rc = sbuf_add(out, (const char *)&ch, 1);
        if (rc < 0)
            return -1;
    }
    return 0;
}

void downstream_reply_error(struct downstream *c, int status, const char *code,
                            const char *reason)
{
    struct sbuf body = { 0 };
    int rc = sbuf_adds(&body, "{\"error\":\"");
    rc = rc ? rc : json_escape(&body, code);
    rc = rc ? rc : sbuf_adds(&body, "\",\"reason\":\"");
    rc = rc ? rc : json_escape(&body, reason);
    if (rc == 0 && (status == 502 || status == 504) && c->node->pool) {
        rc = sbuf_adds(&body, "\",\"backend\":\"");
        rc = rc ? rc : json_escape(&body, upstream_pool_name(c->node->pool));
    }
    rc = rc ? rc : sbuf_adds(&body, "\"}\n");
    downstream_reply(c, status, NULL, 0, "application/json", rc ? "" : body.p, rc ? 0 : body.len);
    sbuf_free(&body);
}

void downstream_stream_head(struct downstream *c, int status, const struct hdr_block *head,
                            int64_t content_length, bool no_body)
{
    struct sbuf out = { 0 };
    const char *reason = head->line_len ? hdr_block_line(head) : status_reason(status);
    size_t rlen = head->line_len ? head->line_len : strlen(reason);
    c->chunked_out = false;
    if (!no_body && content_length < 0) {
        if (c->req.http_minor >= 1)
            c->chunked_out = true;
        else
            c->close_after = true; /* HTTP/1.0: the close delimits the body */
    }
    int rc = ds_write_status(c, &out, status, reason, rlen);
    rc = rc ? rc : headers_write_response(&out, head, c->node->via);
    if (rc == 0 && content_length >= 0)
        rc = sbuf_printf(&out, "Content-Length: %lld\r\n", (long long)content_length);
    if (rc == 0 && c->chunked_out)
        rc = sbuf_adds(&out, "Transfer-Encoding: chunked\r\n");
    rc = rc ? rc : ds_write_connection(c, &out);
    if (rc == 0)
        bufferevent_write(c->bev, out.p, out.len);
    c->bytes_out += out.len;
    sbuf_free(&out);
    ds_output(c);
    ds_set_state(c, DS_STREAMING);
}

bool downstream_stream_body(struct downstream *c, const char *p, size_t n)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (n == 0)
        return false;
    if (c->chunked_out) {
        evbuffer_add_printf(out, "%zx\r\n", n);
        evbuffer_add(out, p, n);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_add(out, p, n);
    }
    c->bytes_out += n;
    ds_output(c);
    return evbuffer_get_length(out) > DS_OUTPUT_HIGH;
}

void downstream_stream_end(struct downstream *c)
{
    if (c->chunked_out)
        bufferevent_write(c->bev, "0\r\n\r\n", 5);
    ds_output(c);
    ds_answer_done(c);
}

void downstream_stream_abort(struct downstream *c)
{
    c->status = 502;
    c->close_after = true;
    c->backend = (struct ds_backend){ 0 };
    /* Whatever was already sent must not look like a complete answer. */
    ds_close(c);
}

/* --- parsing ------------------------------------------------------------ */

static int ds_refuse(struct downstream *c, int status, const char *reason)
{
    c->error_status = status;
    c->error_reason = reason;
    return -1;
}

static int ds_check_head_size(struct downstream *c, size_t more)
{
    if (c->req.head.len + more > c->node->conf->limits.max_header_bytes)
        return ds_refuse(c, 431, "request header fields exceed max_header_bytes");
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct downstream *c = p->data;
    hdr_block_reset(&c->req.head);
    c->req.body.len = 0;
    c->req.method = -1;
    c->req.keep_alive = false;
    c->error_status = 0;
    c->extra.len = 0;
    c->req.started_ms = node_now_ms(c->node);
    c->bytes_out = 0;
    c->status = 0;
    ds_set_state(c, DS_READ_HEAD);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct downstream *c = p->data;
    return ds_check_head_size(c, len) ? -1 : hdr_block_add_line(&c->req.head, at, len);
}

static int on_url_complete(llhttp_t *p)
{
    struct downstream *c = p->data;
    return hdr_block_end_line(&c->req.head);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct downstream *c = p->data;
    return ds_check_head_size(c, len + 4) ? -1 : hdr_block_add_name(&c->req.head, at, len);
}

/* RFC 9110 token characters: what a header name may contain. Checked here
 * because a name with a space would reach the backend otherwise. */
static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int on_header_field_complete(llhttp_t *p)
{
    struct downstream *c = p->data;
    struct hdr_block *b = &c->req.head;
    const struct hdr_ref *r = &b->refs[b->n - 1];
    for (uint32_t i = 0; i < r->name_len; i++)
        if (!is_tchar((unsigned char)b->buf[r->name_off + i]))
            return ds_refuse(c, 400, "malformed request: invalid character in a header name");
    return hdr_block_end_name(b);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct downstream *c = p->data;
    return ds_check_head_size(c, len) ? -1 : hdr_block_add_value(&c->req.head, at, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct downstream *c = p->data;
    return hdr_block_end_value(&c->req.head);
}

/* The peer port carries batches of documents, each up to max_body_bytes
 * plus Meridian's metadata. */
static uint64_t ds_body_limit(const struct downstream *c)
{
    uint64_t limit = c->node->conf->limits.max_body_bytes;
    return c->peer ? 4 * limit + 65536 : limit;
}

static int on_headers_complete(llhttp_t *p)
{
    struct downstream *c = p->data;
    struct ds_request *r = &c->req;
    hdr_block_end_value(&r->head);
    r->method = p->method;
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->keep_alive = llhttp_should_keep_alive(p);
    size_t n = 0;
    const char *expect = hdr_block_get(&r->head, "expect", &n);
    r->expect_continue = expect && headers_token_eq(expect, n, "100-continue");
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > ds_body_limit(c))
        return ds_refuse(c, 413, "request body exceeds max_body_bytes");
    ds_set_state(c, DS_READ_BODY);
    bool has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    if (r->expect_continue && has_body && r->http_minor >= 1) {
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        ds_output(c);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct downstream *c = p->data;
    if (c->req.body.len + len > ds_body_limit(c))
        return ds_refuse(c, 413, "request body exceeds max_body_bytes");
    return sbuf_add(&c->req.body, at, len);
}

static int on_message_complete(llhttp_t *p)
{
    return HPE_PAUSED;
}

static const llhttp_settings_t request_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void ds_dispatch(struct downstream *c)
{
    ds_set_state(c, DS_DISPATCHED);
    forward_request(c);
}

/* Answers a request the parser refused, then closes. */
static void ds_parse_error(struct downstream *c, llhttp_errno_t e)
{
    struct stats *st = &c->node->stats;
    int status = c->error_status ? c->error_status : 400;
    char reason[256];
    if (c->error_status)
        snprintf(reason, sizeof reason, "%s", c->error_reason);
    else
        snprintf(reason, sizeof reason, "malformed request: %s (%s)",
                 llhttp_get_error_reason(&c->parser), llhttp_errno_name(e));
    st->client_errors[status == 431   ? SCE_HEADER_TOO_LARGE
                      : status == 413 ? SCE_BODY_TOO_LARGE
                                      : SCE_BAD_REQUEST]++;
    log_info("client %s: %d %s", c->client_ip, status, reason);
    c->close_after = true;
    c->linger = true;
    if (c->req.started_ms == 0)
        c->req.started_ms = node_now_ms(c->node);
    downstream_reply_error(c, status,
                           status == 400   ? "bad_request"
                           : status == 413 ? "body_too_large"
                                           : "header_too_large",
                           reason);
}

/* Feeds buffered input to llhttp until a request is complete (then
 * dispatches it) or the input runs out. Requests answered synchronously let
 * the loop go on with the next pipelined one, without recursion. */
static void ds_parse(struct downstream *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->in_parse = true;
    while (c->bev && !c->paused && c->state != DS_CLOSING && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        llhttp_errno_t e = llhttp_execute(&c->parser, v.iov_base, v.iov_len);
        if (e == HPE_OK) {
            evbuffer_drain(in, v.iov_len);
            continue;
        }
        if (e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE) {
            evbuffer_drain(in, evbuffer_get_length(in));
            ds_parse_error(c, e);
            break;
        }
        evbuffer_drain(in, (size_t)(llhttp_get_error_pos(&c->parser) - (const char *)v.iov_base));
        c->paused = true;
        c->upgrade = e == HPE_PAUSED_UPGRADE;
        ds_dispatch(c);
    }
    if (!c->bev)
        return;
    c->in_parse = false;
    if (c->throttled && evbuffer_get_length(in) < DS_INPUT_HIGH) {
        c->throttled = false;
        if (c->state != DS_CLOSING && c->state != DS_LINGER)
            ds_reading(c, true);
    }
}

/* --- node-wide walks ---------------------------------------------------- */

void downstream_drain_all(struct node *node)
{
    struct downstream *c, *next;
    for (c = TAILQ_FIRST(&node->clients); c; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->state == DS_IDLE)
            ds_close(c);
        else
            c->close_after = true;
    }
}

void downstream_flush(struct downstream *c)
{
    c->flush_queued = false;
    if (!c->bev)
        return; /* closed since it queued output */
    if (sockio_flush(c->bev) != 0)
        return; /* the write callback takes over */
    if (c->state == DS_CLOSING)
        ds_finish_close(c);
    else if (c->backend.paused)
        forward_writable(c);
}

void downstream_close_all(struct node *node)
{
    struct downstream *c;
    while ((c = TAILQ_FIRST(&node->clients)))
        ds_close(c);
}

static void ds_timeout(struct downstream *c)
{
    struct stats *st = &c->node->stats;
    if (c->state == DS_IDLE || c->state == DS_LINGER) {
        if (c->state == DS_IDLE)
            st->client_errors[SCE_IDLE_TIMEOUT]++;
        ds_close(c);
        return;
    }
    c->linger = true;
    st->client_errors[SCE_HEADER_TIMEOUT]++;
    c->close_after = true;
    c->paused = true;
    ds_reading(c, false);
    log_info("client %s: 408 request not received in time", c->client_ip);
    downstream_reply_error(c, 408, "request_timeout",
                           c->state == DS_READ_HEAD
                               ? "request headers not received within header_timeout_ms"
                               : "request body stalled for idle_timeout_ms");
}

void downstream_sweep(struct node *node, uint64_t now)
{
    struct downstream *c, *next;
    for (c = TAILQ_FIRST(&node->clients); c; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->deadline_ms && now >= c->deadline_ms)
            ds_timeout(c);
    }
}
