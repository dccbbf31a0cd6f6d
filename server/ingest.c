/* Ingest node wiring: verifier, producer, Redis, HTTP, in that order, and back. */
#include "server/ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/auth.h"
#include "common/check.h"
#include "common/config.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/metrics.h"
#include "server/http.h"
#include "server/producer.h"
#include "server/store.h"

/* How long the answers of a stopping node get to reach their sockets. */
#define FLUSH_WRITES_MS 200

struct dm_ingest *dm_ingest_new(struct event_base *base, const struct dm_config *cfg,
                                const char *node, char err[DM_ERRLEN])
{
    struct dm_ingest *in = dm_calloc(1, sizeof(*in));

    in->base = base;
    in->cfg = cfg;
    in->node = node;
    in->metrics = dm_metrics_new(DM_METRICS_I);
    in->m = dm_metrics_shard_new(in->metrics);
    in->verifier = dm_auth_verifier_new(cfg, err);
    if (in->verifier == NULL)
        goto fail;
    in->producer = dm_producer_new(base, cfg, in->m, err);
    if (in->producer == NULL)
        goto fail;
    in->store = dm_store_new(base, cfg);
    in->http = dm_http_new(in, err);
    if (in->http == NULL)
        goto fail;
    return in;

fail:
    dm_ingest_free(in);
    return NULL;
}

char *dm_ingest_metrics(struct dm_ingest *in, size_t *len)
{
    unsigned long redis_errors = dm_store_redis_errors(in->store);
    dm_metrics_inc(in->m, DM_M_REDIS_ERRORS, redis_errors - in->redis_errors_seen);
    in->redis_errors_seen = redis_errors;
    dm_metrics_gauge_set(in->m, DM_M_KAFKA_IN_FLIGHT, dm_producer_in_flight(in->producer));
    return dm_metrics_render(in->metrics, len);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    *(bool *)arg = true;
}

/* Runs the loop for ms. */
static void run_loop_for(struct event_base *base, int ms)
{
    struct timeval tv = dm_timeval_ms(ms);
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

void dm_ingest_drain(struct dm_ingest *in, int timeout_ms)
{
    bool passed = false;
    struct timeval tv = dm_timeval_ms(timeout_ms);

    dm_http_start_draining(in->http);
    event_base_once(in->base, -1, EV_TIMEOUT, on_deadline, &passed, &tv);
    while (in->waiting > 0 && !passed)
        event_base_loop(in->base, EVLOOP_ONCE);
    DM_LOG(DM_LOG_INFO, "msg=\"drained\" unanswered=%zu", in->waiting);
    /* Give the answers time to reach their sockets. */
    run_loop_for(in->base, FLUSH_WRITES_MS);
}

void dm_ingest_free(struct dm_ingest *in)
{
    if (in == NULL)
        return;
    /* Redis and Kafka go first, while the HTTP server exists: their last
     * callbacks answer the requests still waiting (503), and one more
     * loop run writes those answers out before the server is freed. */
    dm_store_free(in->store);
    in->store = NULL;
    dm_producer_free(in->producer);
    in->producer = NULL;
    if (in->http != NULL)
        run_loop_for(in->base, FLUSH_WRITES_MS);
    dm_http_free(in->http);
    dm_jwt_verifier_free(in->verifier);
    dm_metrics_free(in->metrics);
    free(in);
}
