/* One event-loop thread of the ingest node: its own event_base and a whole
 * dm_ingest (listener with SO_REUSEPORT, Kafka producer, Redis). Workers
 * share only the immutable JWT verifier and the metrics registry (a shard
 * each), so requests never wait for another thread. */
#ifndef DM_SERVER_WORKER_H
#define DM_SERVER_WORKER_H

#include "common/util.h"

struct dm_config;
struct dm_ingest_shared;
struct dm_ingest_worker;

/* Builds the worker on the calling thread (so start-up errors come back
 * here) and starts its thread. cfg and shared are borrowed; listen_fd is
 * taken over; node is copied. libevent's thread support must be on. NULL
 * with err. */
struct dm_ingest_worker *dm_ingest_worker_start(const struct dm_config *cfg, const char *node,
                                                const struct dm_ingest_shared *shared,
                                                int listen_fd, char err[DM_ERRLEN]);

/* Asks the worker, from any thread, to stop: it answers new requests 503,
 * gives the waiting ones their real answer (within drain_ms), and ends. */
void dm_ingest_worker_stop(struct dm_ingest_worker *w, int drain_ms);

/* Waits for the worker's thread to end and frees it. NULL is a no-op. */
void dm_ingest_worker_join(struct dm_ingest_worker *w);

#endif
