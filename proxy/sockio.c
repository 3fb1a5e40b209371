#include "sockio.h"

#include <errno.h>
#include <stdbool.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

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

void sockio_drained(struct bufferevent *bev)
{
    bufferevent_disable(bev, EV_WRITE);
}
