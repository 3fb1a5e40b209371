/* sockio: writes a bufferevent's queued output straight to its socket.
 * Connections keep EV_WRITE disabled and call sockio_flush() once their
 * output for this loop iteration is queued: one writev, and no epoll
 * changes unless the socket is full (then EV_WRITE is enabled until the
 * output drains, and sockio_drained() disables it again). Owns nothing. */
#ifndef MERIDIAN_SOCKIO_H
#define MERIDIAN_SOCKIO_H

struct bufferevent;

/* Returns 0 when everything was written, 1 when the rest waits for the
 * socket (EV_WRITE enabled), -1 on a socket error (EV_WRITE enabled, so the
 * bufferevent reports it through its event callback). */
int sockio_flush(struct bufferevent *bev);

/* From the write callback: the output drained; stop watching for writability. */
void sockio_drained(struct bufferevent *bev);

#endif
