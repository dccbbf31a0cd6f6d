/* Ingest node wiring: verifier, producer, Redis, HTTP, in that order, and back. */
#include "server/ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/auth.h"
#include "common/check.h"
#include "common/config.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/metrics.h"
#include "server/http.h"
#include "server/producer.h"
#include "server/recovery.h"
#include "server/ratelimit.h"
#include "server/store.h"

/* How long the answers of a stopping node get to reach their sockets. */
#define FLUSH_WRITES_MS 200

/* This worker's share of the figures its clients keep themselves. */
static void update_metrics(struct dm_ingest *in)
{
    static const enum dm_metric verdicts[DM_RATELIMIT_NVERDICTS] = {
        [DM_RATELIMIT_ADMIT] = DM_M_RATELIMIT_ADMIT,
        [DM_RATELIMIT_USER_RATE] = DM_M_RATELIMIT_USER_RATE,
        [DM_RATELIMIT_ROOM_RATE] = DM_M_RATELIMIT_ROOM_RATE,
        [DM_RATELIMIT_SLOW_MODE] = DM_M_RATELIMIT_SLOW_MODE,
        [DM_RATELIMIT_DUPLICATE] = DM_M_RATELIMIT_DUPLICATE,
        [DM_RATELIMIT_MUTED] = DM_M_RATELIMIT_MUTED,
    };
    for (int v = 0; v < DM_RATELIMIT_NVERDICTS; v++) {
        unsigned long n = dm_ratelimit_decisions(in->ratelimit, (enum dm_ratelimit_verdict)v);
        dm_metrics_inc(in->m, verdicts[v], n - in->ratelimit_seen[v]);
        in->ratelimit_seen[v] = n;
    }
    unsigned long fallbacks = dm_ratelimit_fallbacks(in->ratelimit);
    dm_metrics_inc(in->m, DM_M_RATELIMIT_FALLBACK, fallbacks - in->fallbacks_seen);
    in->fallbacks_seen = fallbacks;
    unsigned long redis_errors = dm_store_redis_errors(in->store);
    dm_metrics_inc(in->m, DM_M_REDIS_ERRORS, redis_errors - in->redis_errors_seen);
    in->redis_errors_seen = redis_errors;
    dm_metrics_gauge_set(in->m, DM_M_KAFKA_IN_FLIGHT, dm_producer_in_flight(in->producer));
}

/* Other workers' figures are at most this old when one renders /metrics. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    update_metrics(arg);
}

struct dm_ingest *dm_ingest_new(struct event_base *base, const struct dm_config *cfg,
                                const char *node, const struct dm_ingest_shared *shared,
                                int listen_fd, char err[DM_ERRLEN])
{
    struct dm_ingest *in = dm_calloc(1, sizeof(*in));
    struct timeval second = {1, 0};

    in->base = base;
    in->cfg = cfg;
    in->node = node;
    in->verifier = shared->verifier;
    in->metrics = shared->metrics;
    in->blocked = shared->blocked;
    in->mask_blocked = shared->mask_blocked;
    in->limits = shared->limits;
    in->m = dm_metrics_shard_new(in->metrics);
    in->producer = dm_producer_new(base, cfg, in->m, err);
    if (in->producer == NULL) {
        close(listen_fd);
        goto fail;
    }
    in->recovery = dm_recovery_new(base, cfg);
    in->store = dm_store_new(base, cfg);
    in->ratelimit = dm_ratelimit_new(dm_store_redis(in->store), cfg);
    in->http = dm_http_new(in, listen_fd, err);
    if (in->http == NULL)
        goto fail;
    in->tick = event_new(base, -1, EV_PERSIST, on_tick, in);
    if (in->tick == NULL || event_add(in->tick, &second) < 0) {
        snprintf(err, DM_ERRLEN, "cannot register the metrics tick");
        goto fail;
    }
    return in;

fail:
    dm_ingest_free(in);
    return NULL;
}

char *dm_ingest_metrics(struct dm_ingest *in, size_t *len)
{
    update_metrics(in);
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
    if (in->tick != NULL)
        event_free(in->tick);
    /* Redis and Kafka go first, while the HTTP server exists: their last
     * callbacks answer the requests still waiting (503), and one more
     * loop run writes those answers out before the server is freed. */
    /* The limiter's Redis calls are answered (NULL) by the store's free. */
    dm_recovery_free(in->recovery); /* its answers may still write Redis */
    dm_store_free(in->store);
    dm_ratelimit_free(in->ratelimit);
    in->store = NULL;
    dm_producer_free(in->producer);
    in->producer = NULL;
    if (in->http != NULL)
        run_loop_for(in->base, FLUSH_WRITES_MS);
    dm_http_free(in->http);
    free(in);
}
