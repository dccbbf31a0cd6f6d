/* Accept pauses on descriptor exhaustion. */
#include "common/accept_pause.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "common/check.h"
#include "common/log.h"

#define WARN_EVERY_US (10 * 1000 * 1000)

struct dm_accept_pause {
    struct evconnlistener *l; /* borrowed */
    struct event *resume;
    bool paused;
    int64_t warned_us;      /* last warning (monotonic), 0: never */
    unsigned long unwarned; /* pauses since that warning */
};

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct dm_accept_pause *p = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    p->paused = false;
    DM_LOG(DM_LOG_DEBUG, "msg=\"accepting again\"");
    evconnlistener_enable(p->l);
}

struct dm_accept_pause *dm_accept_pause_new(struct event_base *base, struct evconnlistener *l,
                                            char err[DM_ERRLEN])
{
    struct dm_accept_pause *p = dm_calloc(1, sizeof(*p));

    p->l = l;
    p->resume = evtimer_new(base, on_resume, p);
    if (p->resume == NULL) {
        snprintf(err, DM_ERRLEN, "cannot make the accept pause timer");
        free(p);
        return NULL;
    }
    return p;
}

bool dm_accept_pause_on_error(struct dm_accept_pause *p, int err)
{
    struct timeval tv = dm_timeval_ms(DM_ACCEPT_PAUSE_MS);

    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
        return false;
    evconnlistener_disable(p->l);
    p->paused = true;
    evtimer_add(p->resume, &tv);
    p->unwarned++;
    int64_t now = dm_mono_us();
    if (p->warned_us == 0 || now - p->warned_us >= WARN_EVERY_US) {
        DM_LOG(DM_LOG_WARN,
               "msg=\"accept paused: out of file descriptors or socket memory\" err=\"%s\" "
               "pause_ms=%d pauses=%lu",
               evutil_socket_error_to_string(err), DM_ACCEPT_PAUSE_MS, p->unwarned);
        p->warned_us = now;
        p->unwarned = 0;
    }
    return true;
}

bool dm_accept_pause_active(const struct dm_accept_pause *p)
{
    return p->paused;
}

void dm_accept_pause_free(struct dm_accept_pause *p)
{
    if (p == NULL)
        return;
    event_free(p->resume);
    free(p);
}
