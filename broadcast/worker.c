/* Worker threads of the broadcast node. */
#include "broadcast/worker.h"

#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "broadcast/bcast.h"
#include "common/check.h"
#include "common/loop_thread.h"

#define DRAIN_POLL_MS 10

struct dm_worker {
    char node[256];
    struct dm_loop_thread *loop;
    struct dm_bcast *b;
    int deadline_ms; /* written before the loop is told to stop */
    int64_t deadline_us;
};

static void on_drain_poll(evutil_socket_t fd, short what, void *arg)
{
    struct dm_worker *w = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    if (dm_bcast_drain(w->b) == 0 || dm_mono_us() >= w->deadline_us)
        event_base_loopexit(dm_loop_thread_base(w->loop), NULL);
}

/* Draining: viewers are told to reconnect and closed (1012), then the
 * node leaves Redis; the loop runs until that is done or the deadline. */
static void finish(struct event_base *base, void *arg)
{
    struct dm_worker *w = arg;
    struct timeval tv = dm_timeval_ms(DRAIN_POLL_MS);
    struct event *poll = event_new(base, -1, EV_PERSIST, on_drain_poll, w);

    DM_AN(poll);
    w->deadline_us = dm_mono_us() + (int64_t)w->deadline_ms * 1000;
    if (dm_bcast_drain(w->b) > 0) {
        event_add(poll, &tv);
        event_base_dispatch(base);
    }
    event_free(poll);
}

struct dm_worker *dm_worker_start(const struct dm_config *cfg, const char *node,
                                  struct dm_metrics *metrics, int listen_fd,
                                  struct dm_connlimit *limits, char err[DM_ERRLEN])
{
    struct dm_worker *w = dm_calloc(1, sizeof(*w));

    snprintf(w->node, sizeof(w->node), "%s", node);
    w->loop = dm_loop_thread_new(err);
    if (w->loop == NULL) {
        evutil_closesocket(listen_fd);
        goto fail;
    }
    w->b =
        dm_bcast_new(dm_loop_thread_base(w->loop), cfg, w->node, metrics, listen_fd, limits, err);
    if (w->b == NULL || dm_loop_thread_start(w->loop, finish, w, err) < 0)
        goto fail;
    return w;

fail:
    dm_worker_join(w);
    return NULL;
}

void dm_worker_drain(struct dm_worker *w, int deadline_ms)
{
    w->deadline_ms = deadline_ms;
    dm_loop_thread_stop(w->loop);
}

void dm_worker_join(struct dm_worker *w)
{
    if (w == NULL)
        return;
    if (w->loop != NULL)
        dm_loop_thread_join(w->loop);
    dm_bcast_free(w->b);
    dm_loop_thread_free(w->loop);
    free(w);
}
