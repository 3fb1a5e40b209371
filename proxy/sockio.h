/* sockio: moves bytes between a socket and its bufferevent's buffers with
 * one syscall each way. Reading: connections watch their socket with their
 * own read event and call sockio_read(), one recv into the input buffer (a
 * bufferevent's own reads ask the kernel for the readable size first, an
 * extra ioctl per read). Writing: sockio_flush() writes a bufferevent's queued output straight to its socket.
 * Connections keep EV_WRITE disabled and call sockio_flush() once their
 * output for this loop iteration is queued: one writev, and no epoll
 * changes unless the socket is full (then EV_WRITE is enabled until the
 * output drains, and sockio_drained() disables it again). Owns nothing. */
#ifndef MERIDIAN_SOCKIO_H
#define MERIDIAN_SOCKIO_H

#include <stdbool.h>
#include <stddef.h>

struct bufferevent;

/* Returns 0 when everything was written, 1 when the rest waits for the
 * socket (EV_WRITE enabled), -1 on a socket error (EV_WRITE enabled, so the
 * bufferevent reports it through its event callback). */
int sockio_flush(struct bufferevent *bev);

/* From the write callback: the output drained; stop watching for writability. */
void sockio_drained(struct bufferevent *bev);

/* Adds or removes a read event; `*watching` remembers which, so repeated
 * calls make no epoll changes. */
struct event;
void sockio_watch(struct event *rev, bool *watching, bool on);

/* One recv of at most `max` bytes into the input buffer. Returns the bytes
 * read, 0 at end of stream, SOCKIO_AGAIN when nothing is there yet, -1 on a
 * socket error (errno says which). */
#define SOCKIO_AGAIN (-2)
long sockio_read(struct bufferevent *bev, size_t max);

#endif
