/* Worker threads of the ingest node. */
#include "server/worker.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "common/check.h"
#include "server/ingest.h"

struct dm_ingest_worker {
    char node[256];
    struct event_base *base;
    struct dm_ingest *in;
    pthread_t thread;
    bool started;
    struct event *stop; /* activated from another thread */
    int drain_ms;       /* written before stop is activated */
};

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct dm_ingest_worker *w = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    event_base_loopbreak(w->base);
}

static void *run(void *arg)
{
    struct dm_ingest_worker *w = arg;
    event_base_dispatch(w->base);
    /* Stopping: comments in flight get their answer once Kafka has
     * acknowledged them (or failed them). */
    dm_ingest_drain(w->in, w->drain_ms);
    return NULL;
}

struct dm_ingest_worker *dm_ingest_worker_start(const struct dm_config *cfg, const char *node,
                                                const struct dm_ingest_shared *shared,
                                                int listen_fd, char err[DM_ERRLEN])
{
    struct dm_ingest_worker *w = dm_calloc(1, sizeof(*w));

    snprintf(w->node, sizeof(w->node), "%s", node);
    w->base = event_base_new();
    w->stop = w->base != NULL ? event_new(w->base, -1, 0, on_stop, w) : NULL;
    if (w->stop == NULL) {
        evutil_closesocket(listen_fd);
        snprintf(err, DM_ERRLEN, "cannot create the worker's event loop");
        goto fail;
    }
    w->in = dm_ingest_new(w->base, cfg, w->node, shared, listen_fd, err);
    if (w->in == NULL)
        goto fail;
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        snprintf(err, DM_ERRLEN, "cannot start a worker thread");
        goto fail;
    }
    w->started = true;
    return w;

fail:
    dm_ingest_worker_join(w);
    return NULL;
}

void dm_ingest_worker_stop(struct dm_ingest_worker *w, int drain_ms)
{
    w->drain_ms = drain_ms;
    event_active(w->stop, EV_TIMEOUT, 0);
}

void dm_ingest_worker_join(struct dm_ingest_worker *w)
{
    if (w == NULL)
        return;
    if (w->started)
        pthread_join(w->thread, NULL);
    dm_ingest_free(w->in);
    if (w->stop != NULL)
        event_free(w->stop);
    if (w->base != NULL)
        event_base_free(w->base);
    free(w);
}
