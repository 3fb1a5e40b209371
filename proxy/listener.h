/* listener: the client port's listening socket. Owns the socket and hands
 * each accepted connection to downstream; refuses connections beyond
 * max_connections. Binds with SO_REUSEPORT so a new process can take over
 * the port for a rolling restart while the old one drains. */
#ifndef MERIDIAN_LISTENER_H
#define MERIDIAN_LISTENER_H

#include <stdbool.h>

#include "../util/err.h"

struct node;
struct listener;

/* `peer`: the peer port (replication between regions), else the client port. */
int listener_open(struct node *node, const char *host, unsigned port, bool peer,
                  struct listener **out, struct err *err) MUST_CHECK;
/* Stops accepting and closes the socket (draining). */
void listener_close(struct listener *l);

#endif
