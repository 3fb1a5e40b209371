#include "listener.h"

#include <event2/listener.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../util/log.h"
#include "downstream.h"
#include "node.h"

struct listener {
    struct node *node;
    bool peer;
    struct evconnlistener *ev;
};

static void listener_accept_cb(struct evconnlistener *ev, evutil_socket_t fd,
                               struct sockaddr *addr, int len, void *arg)
{
    struct listener *l = arg;
    struct stats *st = &l->node->stats;
    if ((uint64_t)st->connections_open >= l->node->conf->limits.max_connections) {
        st->connections_refused++;
        close(fd);
        return;
    }
    st->connections_accepted++;
    if (downstream_new(l->node, fd, addr, len, l->peer) < 0)
        log_warn("cannot set up a client connection: out of memory");
}

static void listener_error_cb(struct evconnlistener *ev, void *arg)
{
    /* EMFILE and friends: keep listening; the next accept may succeed. */
    log_warn("accept failed: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

int listener_open(struct node *node, const char *host, unsigned port, bool peer,
                  struct listener **out, struct err *err)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0)
        return err_set(err, "listen %s:%u: %s", host, port, gai_strerror(rc));
    struct listener *l = calloc(1, sizeof *l);
    if (!l) {
        freeaddrinfo(res);
        return err_set(err, "out of memory");
    }
    l->node = node;
    l->peer = peer;
    l->ev = evconnlistener_new_bind(node->base, listener_accept_cb, l,
                                    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                        LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
                                    1024, res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (!l->ev) {
        free(l);
        return err_set(err, "listen %s:%u: %s", host, port,
                       evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    }
    evconnlistener_set_error_cb(l->ev, listener_error_cb);
    *out = l;
    return 0;
}

void listener_close(struct listener *l)
{
    if (!l)
        return;
    evconnlistener_free(l->ev);
    free(l);
}
