/* One ingest worker: the handles every ingest module is given. A node runs
 * one per thread (worker.h), each with its own loop, listener (SO_REUSEPORT),
 * Kafka producer and Redis connection; the JWT verifier and the metrics
 * registry are shared. */
#ifndef DM_SERVER_INGEST_H
#define DM_SERVER_INGEST_H

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"
#include "server/ratelimit.h"

struct event;
struct event_base;
struct dm_blocklist;
struct dm_connlimit;
struct dm_ratelimit;
struct dm_config;
struct dm_jwt_verifier;
struct dm_producer;
struct dm_recovery;
struct dm_http;
struct dm_store;
struct dm_metrics;
struct dm_metrics_shard;

/* What the workers share, built once by main (borrowed by every worker;
 * immutable while they run). */
struct dm_ingest_shared {
    const struct dm_jwt_verifier *verifier;
    struct dm_metrics *metrics;         /* a shard per worker */
    const struct dm_blocklist *blocked; /* NULL: no blocked words */
    bool mask_blocked;                  /* mask them instead of refusing the comment */
    struct dm_connlimit *limits;        /* connections of the process, all workers */
};

struct dm_ingest {
    struct event_base *base;                /* borrowed from main */
    const struct dm_config *cfg;            /* borrowed from main */
    const char *node;                       /* borrowed: cfg->node_id or a generated name */
    const struct dm_jwt_verifier *verifier; /* borrowed: immutable, shared by the workers */
    const struct dm_blocklist *blocked;     /* borrowed from the shared part; may be NULL */
    bool mask_blocked;
    struct dm_connlimit *limits;     /* borrowed from the shared part */
    struct dm_ratelimit *ratelimit;  /* owned: over this worker's Redis connection */
    struct dm_producer *producer;    /* owned */
    struct dm_recovery *recovery;    /* owned: Idempotency-Key claims of dead attempts */
    struct dm_store *store;          /* owned: Redis */
    struct dm_metrics *metrics;      /* borrowed: shared by the workers */
    struct dm_metrics_shard *m;      /* this loop's shard */
    struct event *tick;              /* every second: gauges and counters from the clients */
    unsigned long redis_errors_seen; /* last Redis error total counted */
    size_t waiting;                  /* requests waiting for Kafka or Redis (request.h) */
    unsigned long ratelimit_seen[DM_RATELIMIT_NVERDICTS]; /* decisions by verdict already counted */
    unsigned long fallbacks_seen;
    struct dm_http *http; /* owned */
};

/* Builds a worker: Kafka producer, Redis, rate limiter, HTTP on listen_fd
 * (taken over). base, cfg, node and shared are borrowed. Returns NULL with
 * err filled on a startup error. */
struct dm_ingest *dm_ingest_new(struct event_base *base, const struct dm_config *cfg,
                                const char *node, const struct dm_ingest_shared *shared,
                                int listen_fd, char err[DM_ERRLEN]);

/* The Prometheus text of /metrics; caller frees. */
char *dm_ingest_metrics(struct dm_ingest *in, size_t *len);

/* Graceful stop (SIGTERM): stops accepting, answers new requests 503, and
 * runs the loop until every request waiting for Kafka or Redis has its
 * answer, or timeout_ms passes. */
void dm_ingest_drain(struct dm_ingest *in, int timeout_ms);

/* Frees the node. Requests still waiting are answered 503 first (their
 * comments may still reach Kafka: never a false 201). NULL is a no-op. */
void dm_ingest_free(struct dm_ingest *in);

#endif
