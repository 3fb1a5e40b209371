/* downstream: one client connection and the request it is being served.
 * Owns the socket, the llhttp request parser and the request's state;
 * answers requests strictly in arrival order (a pipelined request is parsed
 * only once the one before it is answered). Never lets one client's bad
 * input reach another connection. */
#ifndef MERIDIAN_DOWNSTREAM_H
#define MERIDIAN_DOWNSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "headers.h"

struct node;
struct downstream;

enum ds_state {
    DS_IDLE,          /* waiting for a request's first byte (idle timeout) */
    DS_READ_HEAD,     /* receiving the request head (header timeout) */
    DS_READ_BODY,     /* receiving the request body */
    DS_DISPATCHED,    /* waiting for the backend, the store or an ops handler */
    DS_STREAMING,     /* relaying the response body */
    DS_CLOSING,       /* flushing the last answer, then closing */
    DS_LINGER,        /* answer sent, half-closed, discarding the rest of a refused request */
};

/* The parsed request, valid from dispatch until its answer ends. */
struct ds_request {
    int method;                  /* llhttp_method_t */
    int http_major, http_minor;
    bool keep_alive;
    bool expect_continue;
    struct hdr_block head;       /* URL in hdr_block_line() */
    struct sbuf body;
    uint64_t started_ms;
};

/* What a request has in flight at the backend (owned by forward). */
struct ds_backend {
    struct upstream_exchange *ux;
    struct embedded_op *sop;
    struct write_op *write;      /* a replicated write in progress */
    struct peer_stream *stream;  /* a confirmed-log stream being served */
    struct ship_req *ship;       /* a shipped batch being decided */
    struct read_wait *read;      /* a read waiting for a write to its key */
    struct dismiss_req *dismiss; /* a conflict being removed from the feed */
    struct read_route *route;    /* a read waiting or forwarded for its session */
    struct write_wait *wait;     /* a write's answer held for X-Meridian-Wait */
    bool paused;                 /* the backend's reads wait for the client */
};

/* One extra response header. */
struct reply_hdr {
    const char *name;
    const char *value;
};

/* Accepts a new client connection on `fd`. Returns -1 when it cannot be
 * set up (the fd is then closed). */
int downstream_new(struct node *node, int fd, const struct sockaddr *addr, int addr_len,
                   bool peer);

/* Closes every connection that is between requests; the rest close after
 * their current answer. */
void downstream_drain_all(struct node *node);

/* Writes the output queued this iteration (called by node at its end). */
void downstream_flush(struct downstream *c);

/* Closes every connection now (exit). */
void downstream_close_all(struct node *node);

/* Enforces header, body and idle timeouts; called by the maintenance timer. */
void downstream_sweep(struct node *node, uint64_t now_ms);

const struct ds_request *downstream_request(const struct downstream *c);
const char *downstream_client_ip(const struct downstream *c);
struct node *downstream_node(const struct downstream *c);
struct ds_backend *downstream_backend(struct downstream *c);
bool downstream_is_peer(const struct downstream *c);

/* Adds a header to the current request's answer (before it is started). */
void downstream_add_header(struct downstream *c, const char *name, const char *value);

/* Answers with a status, ready-made end-to-end header lines ("Name: v\r\n",
 * without Content-Length) and a complete body. */
void downstream_reply_relay(struct downstream *c, int status, const char *headers, size_t hlen,
                            const char *body, size_t len);

/* Answers the current request with a complete response. */
void downstream_reply(struct downstream *c, int status, const struct reply_hdr *extra, size_t n,
                      const char *content_type, const char *body, size_t len);

/* Answers with Meridian's JSON error {"error": code, "reason": reason[, "backend": ...]}. */
void downstream_reply_error(struct downstream *c, int status, const char *code,
                            const char *reason);

/* Streaming an answer whose body arrives in pieces (the HTTP backend).
 * content_length < 0: the length is unknown (chunked to HTTP/1.1 clients,
 * delimited by close for HTTP/1.0 ones). `head` is the status line's reason
 * and the end-to-end headers to relay. */
void downstream_stream_head(struct downstream *c, int status, const struct hdr_block *head,
                            int64_t content_length, bool no_body);
/* Returns true when the client's output is full and the producer should pause. */
bool downstream_stream_body(struct downstream *c, const char *p, size_t n);
void downstream_stream_end(struct downstream *c);
/* The answer was cut short after its head: the client connection is closed. */
void downstream_stream_abort(struct downstream *c);

#endif
