#include "sockio.h"

#include <errno.h>
#include <stdbool.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sys/socket.h>

int sockio_flush(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    while (evbuffer_get_length(out) > 0) {
        /* A socket bufferevent keeps the start of its output frozen so that
         * only its own write callback drains it; it thaws it the same way. */
        evbuffer_unfreeze(out, 1);
        int n = evbuffer_write(out, bufferevent_getfd(bev));
        evbuffer_freeze(out, 1);
        if (n > 0)
            continue;
        bool retry = n == 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        bufferevent_enable(bev, EV_WRITE);
        return retry ? 1 : -1;
    }
    return 0;
}

long sockio_read(struct bufferevent *bev, size_t max)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_iovec v;
    long n = -1;
    /* The bufferevent keeps its input's end frozen against other writers. */
    evbuffer_unfreeze(in, 0);
    if (evbuffer_reserve_space(in, (ev_ssize_t)max, &v, 1) == 1) {
        n = recv(bufferevent_getfd(bev), v.iov_base, v.iov_len, 0);
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(in, &v, 1);
        }
    }
    evbuffer_freeze(in, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return SOCKIO_AGAIN;
    return n;
}

void sockio_watch(struct event *rev, bool *watching, bool on)
{
    if (!rev || on == *watching)
        return;
    *watching = on;
    if (on)
        event_add(rev, NULL);
    else
        event_del(rev);
}

void sockio_drained(struct bufferevent *bev)
{
    bufferevent_disable(bev, EV_WRITE);
}
