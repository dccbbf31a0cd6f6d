/* Worker threads of the broadcast node. */
#include "broadcast/worker.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "broadcast/bcast.h"
#include "common/check.h"
#include "common/log.h"

#define DRAIN_POLL_MS 10

struct dm_worker {
    char node[256];
    struct event_base *base;
    struct dm_bcast *b;
    pthread_t thread;
    bool started;
    struct event *drain;      /* activated from another thread */
    struct event *drain_poll; /* while draining: done yet? */
    int64_t deadline_us;
    int deadline_ms; /* written before the drain event is activated */
};

static void on_drain_poll(evutil_socket_t fd, short what, void *arg)
{
    struct dm_worker *w = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    if (dm_bcast_drain(w->b) == 0 || dm_mono_us() >= w->deadline_us)
        event_base_loopexit(w->base, NULL);
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct dm_worker *w = arg;
    struct timeval tv = dm_timeval_ms(DRAIN_POLL_MS);
    DM_UNUSED(fd);
    DM_UNUSED(what);
    w->deadline_us = dm_mono_us() + (int64_t)w->deadline_ms * 1000;
    dm_bcast_drain(w->b);
    event_add(w->drain_poll, &tv);
}

static void *run(void *arg)
{
    struct dm_worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

struct dm_worker *dm_worker_start(const struct dm_config *cfg, const char *node,
                                  struct dm_metrics *metrics, int listen_fd, size_t max_connections,
                                  char err[DM_ERRLEN])
{
    struct dm_worker *w = dm_calloc(1, sizeof(*w));

    snprintf(w->node, sizeof(w->node), "%s", node);
    w->base = event_base_new();
    if (w->base == NULL) {
        evutil_closesocket(listen_fd);
        snprintf(err, DM_ERRLEN, "event_base_new failed");
        goto fail;
    }
    w->drain = event_new(w->base, -1, 0, on_drain, w);
    w->drain_poll = event_new(w->base, -1, EV_PERSIST, on_drain_poll, w);
    if (w->drain == NULL || w->drain_poll == NULL) {
        evutil_closesocket(listen_fd);
        snprintf(err, DM_ERRLEN, "cannot register worker events");
        goto fail;
    }
    w->b = dm_bcast_new(w->base, cfg, w->node, metrics, listen_fd, max_connections, err);
    if (w->b == NULL)
        goto fail;
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        snprintf(err, DM_ERRLEN, "cannot start a worker thread");
        goto fail;
    }
    w->started = true;
    return w;

fail:
    dm_worker_join(w);
    return NULL;
}

void dm_worker_drain(struct dm_worker *w, int deadline_ms)
{
    w->deadline_ms = deadline_ms;
    event_active(w->drain, EV_TIMEOUT, 0);
}

void dm_worker_join(struct dm_worker *w)
{
    if (w == NULL)
        return;
    if (w->started)
        pthread_join(w->thread, NULL);
    dm_bcast_free(w->b);
    if (w->drain != NULL)
        event_free(w->drain);
    if (w->drain_poll != NULL)
        event_free(w->drain_poll);
    if (w->base != NULL)
        event_base_free(w->base);
    free(w);
}
