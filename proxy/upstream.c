#include "upstream.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <llhttp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "../util/log.h"
#include "node.h"
#include "sockio.h"

enum uc_state {
    UC_CONNECTING,  /* TCP connect in progress, exchange waiting */
    UC_BUSY,        /* request sent or being sent, response being read */
    UC_IDLE,        /* kept alive in the pool */
};

struct upstream_conn {
    TAILQ_ENTRY(upstream_conn) link;
    struct upstream_pool *pool;
    struct bufferevent *bev;
    llhttp_t parser;
    enum uc_state state;
    struct upstream_exchange *ex;
    struct hdr_block head;
    uint64_t deadline_ms;
    bool reused;                 /* served an exchange before this one */
    bool got_bytes;              /* the current response has started */
    bool complete;               /* the current response has ended */
    bool skip_interim;           /* the message being parsed is a 1xx */
    struct event *rev;           /* the socket's read event, once connected (see sockio) */
    bool reading;
};

TAILQ_HEAD(uc_list, upstream_conn);

struct upstream_exchange {
    struct upstream_pool *pool;
    struct upstream_conn *conn;
    const struct upstream_handler *h;
    void *ctx;
    struct sbuf req;
    bool head_request, idempotent, retried, head_sent, paused;
    uint64_t started_ms;
};

struct upstream_pool {
    struct node *node;
    char *name;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct uc_list idle;
    struct uc_list busy;
    uint32_t n_idle;
    size_t read_max;       /* bytes per recv, so one callback's work stays bounded */
};

static const llhttp_settings_t response_settings;

static void uc_read_cb(struct bufferevent *bev, void *arg);
static void uc_reading(struct upstream_conn *c, bool on);
static void uc_event_cb(struct bufferevent *bev, short what, void *arg);
static struct upstream_exchange *uc_detach(struct upstream_conn *c);
static void ex_fail(struct upstream_exchange *ex, enum stats_upstream_error kind,
                    const char *reason);

const char *upstream_pool_name(const struct upstream_pool *pool)
{
    return pool->name;
}

void upstream_pool_set_read_max(struct upstream_pool *pool, size_t bytes)
{
    pool->read_max = bytes;
}

int upstream_pool_new(struct node *node, const char *url, const char *host, uint16_t port,
                      struct upstream_pool **out, struct err *err)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0)
        return err_set(err, "backend %s: cannot resolve '%s': %s", url, host, gai_strerror(rc));
    struct upstream_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->name = strdup(url))) {
        free(p);
        freeaddrinfo(res);
        return err_set(err, "out of memory");
    }
    memcpy(&p->addr, res->ai_addr, res->ai_addrlen);
    p->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    p->node = node;
    p->read_max = UPSTREAM_READ_MAX;
    TAILQ_INIT(&p->idle);
    TAILQ_INIT(&p->busy);
    *out = p;
    return 0;
}

static void uc_free(void *arg)
{
    struct upstream_conn *c = arg;
    hdr_block_free(&c->head);
    free(c);
}

/* Closes the connection now; its memory goes at the end of the iteration. */
static void uc_close(struct upstream_conn *c)
{
    struct upstream_pool *p = c->pool;
    if (c->state == UC_IDLE) {
        TAILQ_REMOVE(&p->idle, c, link);
        p->n_idle--;
    } else {
        TAILQ_REMOVE(&p->busy, c, link);
    }
    if (c->rev)
        event_free(c->rev);
    c->rev = NULL;
    bufferevent_free(c->bev);
    c->bev = NULL;
    p->node->stats.upstream_open--;
    node_defer_free(p->node, uc_free, c);
}

static void ex_free(void *arg)
{
    struct upstream_exchange *ex = arg;
    sbuf_free(&ex->req);
    free(ex);
}

void upstream_pool_free(struct upstream_pool *pool)
{
    if (!pool)
        return;
    while (!TAILQ_EMPTY(&pool->idle))
        uc_close(TAILQ_FIRST(&pool->idle));
    while (!TAILQ_EMPTY(&pool->busy)) {
        struct upstream_conn *c = TAILQ_FIRST(&pool->busy);
        struct upstream_exchange *ex = uc_detach(c);
        uc_close(c);
        if (ex)
            ex_fail(ex, SUE_RESET, "shutting down");
    }
    free(pool->name);
    free(pool);
}

static uint64_t now_ms(struct upstream_pool *p)
{
    return node_now_ms(p->node);
}

static void uc_write_request(struct upstream_conn *c)
{
    struct upstream_exchange *ex = c->ex;
    c->state = UC_BUSY;
    c->got_bytes = c->complete = false;
    c->deadline_ms = now_ms(c->pool) + c->pool->node->conf->limits.upstream_response_timeout_ms;
    hdr_block_reset(&c->head);
    llhttp_init(&c->parser, HTTP_RESPONSE, &response_settings);
    c->parser.data = c;
    bufferevent_write(c->bev, ex->req.p, ex->req.len);
    uc_reading(c, true);
    /* A socket error shows up in the event callback. */
    (void)sockio_flush(c->bev);
}

static void uc_write_cb(struct bufferevent *bev, void *arg)
{
    sockio_drained(bev);
}

/* The socket is readable: one recv, then what a bufferevent read callback
 * would get. */
static void uc_sock_read(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_conn *c = arg;
    long n = sockio_read(c->bev, c->pool->read_max);
    if (n == SOCKIO_AGAIN)
        return;
    if (n <= 0)
        uc_event_cb(c->bev, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
    else
        uc_read_cb(c->bev, c);
}

static void uc_reading(struct upstream_conn *c, bool on)
{
    if (!c->rev && on) {
        c->rev = event_new(c->pool->node->base, bufferevent_getfd(c->bev), EV_READ | EV_PERSIST,
                           uc_sock_read, c);
        if (!c->rev)
            return; /* out of memory: the response timeout reports it */
    }
    sockio_watch(c->rev, &c->reading, on);
}

static struct upstream_conn *uc_connect(struct upstream_pool *p)
{
    struct upstream_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pool = p;
    c->bev = bufferevent_socket_new(p->node->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        free(c);
        return NULL;
    }
    bufferevent_setcb(c->bev, NULL, uc_write_cb, uc_event_cb, c);
    /* Writes go out through sockio_flush(); the connect still watches
     * writability on its own. */
    bufferevent_disable(c->bev, EV_WRITE);
    c->state = UC_CONNECTING;
    c->deadline_ms = now_ms(p) + p->node->conf->limits.upstream_connect_timeout_ms;
    TAILQ_INSERT_TAIL(&p->busy, c, link);
    p->node->stats.upstream_open++;
    p->node->stats.upstream_connects++;
    /* A refused connect on loopback may be reported right here: the event
     * callback then runs from inside this call, with the connection queued. */
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&p->addr, (int)p->addr_len) < 0)
        c->deadline_ms = 1; /* no socket: the next sweep reports it */
    return c;
}

/* Binds an exchange to a kept-alive connection, or to a new one. */
static int ex_start(struct upstream_exchange *ex)
{
    struct upstream_pool *p = ex->pool;
    struct upstream_conn *c = TAILQ_FIRST(&p->idle);
    if (c) {
        TAILQ_REMOVE(&p->idle, c, link);
        p->n_idle--;
        TAILQ_INSERT_TAIL(&p->busy, c, link);
        c->ex = ex;
        ex->conn = c;
        c->reused = true;
        p->node->stats.upstream_reused++;
        uc_write_request(c);
        return 0;
    }
    c = uc_connect(p);
    if (!c)
        return -1;
    c->ex = ex;
    ex->conn = c;
    return 0;
}

struct upstream_exchange *upstream_send(struct upstream_pool *pool, struct sbuf *req,
                                        bool head_request, bool idempotent,
                                        const struct upstream_handler *h, void *ctx)
{
    struct upstream_exchange *ex = calloc(1, sizeof *ex);
    if (!ex)
        return NULL;
    ex->pool = pool;
    ex->h = h;
    ex->ctx = ctx;
    ex->req = *req;
    *req = (struct sbuf){ 0 };
    ex->head_request = head_request;
    ex->idempotent = idempotent;
    ex->started_ms = now_ms(pool);
    if (ex_start(ex) < 0) {
        *req = ex->req;
        free(ex);
        return NULL;
    }
    return ex;
}

/* Ends the exchange bound to `c` (if any) and returns it detached. */
static struct upstream_exchange *uc_detach(struct upstream_conn *c)
{
    struct upstream_exchange *ex = c->ex;
    c->ex = NULL;
    if (ex)
        ex->conn = NULL;
    return ex;
}

void upstream_cancel(struct upstream_exchange *ex)
{
    if (!ex)
        return;
    struct upstream_conn *c = ex->conn;
    if (c) {
        uc_detach(c);
        /* The response was not read to its end: the connection cannot be reused. */
        uc_close(c);
    }
    node_defer_free(ex->pool->node, ex_free, ex);
}

void upstream_pause(struct upstream_exchange *ex)
{
    if (ex && ex->conn && !ex->paused) {
        ex->paused = true;
        uc_reading(ex->conn, false);
    }
}

void upstream_resume(struct upstream_exchange *ex)
{
    if (ex && ex->paused) {
        ex->paused = false;
        if (ex->conn)
            uc_reading(ex->conn, true);
    }
}

static void ex_fail(struct upstream_exchange *ex, enum stats_upstream_error kind,
                    const char *reason)
{
    struct upstream_pool *p = ex->pool;
    p->node->stats.upstream_errors[kind]++;
    log_warn("backend %s: %s", p->name, reason);
    ex->h->on_error(ex->ctx, kind, reason, ex->head_sent);
    node_defer_free(p->node, ex_free, ex);
}

/* The connection failed. Retry once on a fresh connection when that cannot
 * apply the request twice; otherwise report the failure. */
static void uc_fail(struct upstream_conn *c, enum stats_upstream_error kind, const char *reason)
{
    bool retry = c->reused && !c->got_bytes && c->ex && c->ex->idempotent && !c->ex->retried;
    struct upstream_exchange *ex = uc_detach(c);
    uc_close(c);
    if (!ex)
        return;
    if (retry) {
        ex->retried = true;
        if (ex_start(ex) == 0)
            return;
    }
    ex_fail(ex, kind, reason);
}

/* A response ended: the connection goes back to the pool (before the caller
 * hears of it, so a pipelined next request may pick it up), then the caller
 * is told. */
static void uc_complete(struct upstream_conn *c, bool keep)
{
    struct upstream_pool *p = c->pool;
    struct upstream_exchange *ex = uc_detach(c);
    if (keep && p->n_idle < p->node->conf->limits.upstream_pool_size &&
        evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
        TAILQ_REMOVE(&p->busy, c, link);
        TAILQ_INSERT_HEAD(&p->idle, c, link);
        p->n_idle++;
        c->state = UC_IDLE;
        c->deadline_ms = now_ms(p) + p->node->conf->limits.idle_timeout_ms;
        uc_reading(c, true);
    } else {
        uc_close(c);
    }
    if (!ex)
        return;
    stats_observe(&p->node->stats.upstream_seconds, (now_ms(p) - ex->started_ms) / 1000.0);
    ex->h->on_done(ex->ctx);
    node_defer_free(p->node, ex_free, ex);
}

/* llhttp callbacks: they only fill the connection's state. */
static int on_status(llhttp_t *ps, const char *at, size_t len)
{
    struct upstream_conn *c = ps->data;
    return hdr_block_add_line(&c->head, at, len);
}

static int on_status_complete(llhttp_t *ps)
{
    struct upstream_conn *c = ps->data;
    return hdr_block_end_line(&c->head);
}

static int on_header_field(llhttp_t *ps, const char *at, size_t len)
{
    struct upstream_conn *c = ps->data;
    return hdr_block_add_name(&c->head, at, len);
}

static int on_header_field_complete(llhttp_t *ps)
{
    struct upstream_conn *c = ps->data;
    return hdr_block_end_name(&c->head);
}

static int on_header_value(llhttp_t *ps, const char *at, size_t len)
{
    struct upstream_conn *c = ps->data;
    return hdr_block_add_value(&c->head, at, len);
}

static int on_header_value_complete(llhttp_t *ps)
{
    struct upstream_conn *c = ps->data;
    return hdr_block_end_value(&c->head);
}

static int on_message_begin(llhttp_t *ps)
{
    struct upstream_conn *c = ps->data;
    hdr_block_reset(&c->head);
    return 0;
}

static int on_headers_complete(llhttp_t *ps)
{
    struct upstream_conn *c = ps->data;
    struct upstream_exchange *ex = c->ex;
    int status = ps->status_code;
    hdr_block_end_value(&c->head);
    if (status >= 100 && status < 200 && status != 101) {
        c->skip_interim = true; /* 100 Continue, 103 Early Hints: not relayed */
        return 0;
    }
    bool no_body = ex->head_request || status == 204 || status == 304;
    bool has_len = (ps->flags & F_CONTENT_LENGTH) && !(ps->flags & F_CHUNKED);
    struct upstream_head h = {
        .status = status,
        .http_minor = ps->http_minor,
        .headers = &c->head,
        .content_length = has_len ? (int64_t)ps->content_length : -1,
        .no_body = no_body,
    };
    if (no_body && ex->head_request) {
        size_t n;
        const char *cl = hdr_block_get(&c->head, "content-length", &n);
        h.content_length = cl ? strtoll(cl, NULL, 10) : -1;
    }
    ex->head_sent = true;
    ex->h->on_head(ex->ctx, &h);
    return no_body ? 1 : 0;
}

static int on_body(llhttp_t *ps, const char *at, size_t len)
{
    struct upstream_conn *c = ps->data;
    if (c->ex)
        c->ex->h->on_body(c->ex->ctx, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *ps)
{
    struct upstream_conn *c = ps->data;
    if (c->skip_interim) {
        c->skip_interim = false;
        return 0;
    }
    c->complete = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t response_settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_status_complete = on_status_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Feeds one contiguous piece to the parser. Returns bytes consumed, or -1
 * when the response is malformed. */
static ssize_t uc_parse(struct upstream_conn *c, const char *data, size_t len)
{
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    if (e == HPE_OK)
        return (ssize_t)len;
    if (e == HPE_PAUSED && c->complete)
        return llhttp_get_error_pos(&c->parser) - data;
    return -1;
}

static void uc_read_cb(struct bufferevent *bev, void *arg)
{
    struct upstream_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->state != UC_BUSY || !c->ex) {
        /* Bytes on an idle connection: the backend is confused; drop it. */
        uc_close(c);
        return;
    }
    c->got_bytes = true;
    c->deadline_ms = now_ms(c->pool) + c->pool->node->conf->limits.upstream_response_timeout_ms;
    while (evbuffer_get_length(in) > 0 && c->ex && !c->complete) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t used = uc_parse(c, v.iov_base, v.iov_len);
        if (used < 0) {
            char why[256];
            snprintf(why, sizeof why, "malformed response: %s",
                     llhttp_get_error_reason(&c->parser));
            uc_fail(c, SUE_BAD_RESPONSE, why);
            return;
        }
        evbuffer_drain(in, (size_t)used);
    }
    if (c->complete)
        uc_complete(c, llhttp_should_keep_alive(&c->parser));
    else if (!c->ex)
        uc_close(c); /* cancelled from inside a callback */
}

static void uc_connected(struct upstream_conn *c)
{
    int one = 1;
    setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->ex)
        uc_write_request(c);
}

/* The backend closed: that ends a response delimited by close, and is an
 * error anywhere else. */
static void uc_eof(struct upstream_conn *c)
{
    if (c->state == UC_IDLE || !c->ex) {
        uc_close(c);
        return;
    }
    if (c->got_bytes && llhttp_message_needs_eof(&c->parser)) {
        /* finish() runs on_message_complete, which pauses the parser. */
        llhttp_errno_t e = llhttp_finish(&c->parser);
        if (e == HPE_OK || e == HPE_PAUSED) {
            c->complete = true;
            uc_complete(c, false);
            return;
        }
    }
    uc_fail(c, SUE_RESET, c->got_bytes ? "backend closed the connection in the middle of the response"
                                       : "backend closed the connection without answering");
}

static void uc_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct upstream_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        uc_connected(c);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        uc_eof(c);
        return;
    }
    char why[256];
    int e = EVUTIL_SOCKET_ERROR();
    if (c->state == UC_CONNECTING) {
        snprintf(why, sizeof why, "cannot connect: %s", evutil_socket_error_to_string(e));
        uc_fail(c, SUE_REFUSED, why);
    } else {
        snprintf(why, sizeof why, "connection failed: %s", evutil_socket_error_to_string(e));
        uc_fail(c, SUE_RESET, why);
    }
}

static void uc_timeout(struct upstream_conn *c)
{
    if (c->state == UC_IDLE) {
        uc_close(c);
        return;
    }
    if (c->ex && c->ex->paused) /* waiting on the client, not on the backend */
        return;
    if (c->state == UC_CONNECTING) {
        uc_fail(c, SUE_CONNECT_TIMEOUT, "connect timed out");
    } else {
        /* Not retried: the backend may have applied the request. */
        if (c->ex)
            c->ex->retried = true;
        uc_fail(c, SUE_RESPONSE_TIMEOUT, "no response within upstream_response_timeout_ms");
    }
}

bool upstream_pool_unused(const struct upstream_pool *pool)
{
    return TAILQ_EMPTY(&pool->busy);
}

void upstream_sweep(struct upstream_pool *pool, uint64_t now)
{
    struct upstream_conn *c, *next;
    for (c = TAILQ_FIRST(&pool->busy); c; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->deadline_ms && now >= c->deadline_ms)
            uc_timeout(c);
    }
    for (c = TAILQ_FIRST(&pool->idle); c; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->deadline_ms && now >= c->deadline_ms)
            uc_timeout(c);
    }
}
