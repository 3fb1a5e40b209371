/* forward: sends a parsed request where it belongs (Meridian's own
 * endpoints, the embedded store, or the HTTP backend) and relays the answer
 * to the client connection. Owns the request's backend exchange; the
 * replication write path hooks in here, between routing and the backend. */
#ifndef MERIDIAN_FORWARD_H
#define MERIDIAN_FORWARD_H

struct downstream;

/* Starts serving the current request; the answer comes through
 * downstream_reply() or the downstream_stream_*() calls, now or later. */
void forward_request(struct downstream *c);

/* The client went away or the connection is closing: drop the exchange. */
void forward_cancel(struct downstream *c);

/* The client's output drained: a paused backend may read again. */
void forward_writable(struct downstream *c);

#endif
