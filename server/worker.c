/* Worker threads of the ingest node. */
#include "server/worker.h"

#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "common/check.h"
#include "common/loop_thread.h"
#include "server/ingest.h"

struct dm_ingest_worker {
    char node[256];
    struct dm_loop_thread *loop;
    struct dm_ingest *in;
    int drain_ms; /* written before the loop is told to stop */
};

/* Stopping: comments in flight get their answer once Kafka has
 * acknowledged them (or failed them). */
static void finish(struct event_base *base, void *arg)
{
    struct dm_ingest_worker *w = arg;
    DM_UNUSED(base);
    dm_ingest_drain(w->in, w->drain_ms);
}

struct dm_ingest_worker *dm_ingest_worker_start(const struct dm_config *cfg, const char *node,
                                                const struct dm_ingest_shared *shared,
                                                int listen_fd, char err[DM_ERRLEN])
{
    struct dm_ingest_worker *w = dm_calloc(1, sizeof(*w));

    snprintf(w->node, sizeof(w->node), "%s", node);
    w->loop = dm_loop_thread_new(err);
    if (w->loop == NULL) {
        evutil_closesocket(listen_fd);
        goto fail;
    }
    w->in = dm_ingest_new(dm_loop_thread_base(w->loop), cfg, w->node, shared, listen_fd, err);
    if (w->in == NULL || dm_loop_thread_start(w->loop, finish, w, err) < 0)
        goto fail;
    return w;

fail:
    dm_ingest_worker_join(w);
    return NULL;
}

void dm_ingest_worker_stop(struct dm_ingest_worker *w, int drain_ms)
{
    w->drain_ms = drain_ms;
    dm_loop_thread_stop(w->loop);
}

void dm_ingest_worker_join(struct dm_ingest_worker *w)
{
    if (w == NULL)
        return;
    if (w->loop != NULL)
        dm_loop_thread_join(w->loop);
    dm_ingest_free(w->in);
    dm_loop_thread_free(w->loop);
    free(w);
}
