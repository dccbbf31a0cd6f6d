/* One event-loop thread of the broadcast node (STYLE §14): its own
 * event_base, listener (SO_REUSEPORT), rooms, Kafka consumer and Redis
 * membership — a whole node in miniature, so workers share nothing on the
 * delivery path and need no locks. The kernel spreads new connections over
 * the workers' listeners; metrics are one registry, a shard per worker. */
#ifndef DM_BROADCAST_WORKER_H
#define DM_BROADCAST_WORKER_H

#include <stddef.h>

#include "common/util.h"

struct dm_config;
struct dm_connlimit;
struct dm_metrics;
struct dm_worker;

/* Builds the worker (on the calling thread, so start-up errors come back
 * here) and starts its thread. cfg, metrics and limits (the process's
 * connection limits) are borrowed; listen_fd is taken over; node is copied.
 * libevent's thread support must be on. NULL with err. */
struct dm_worker *dm_worker_start(const struct dm_config *cfg, const char *node,
                                  struct dm_metrics *metrics, int listen_fd,
                                  struct dm_connlimit *limits, char err[DM_ERRLEN]);

/* Asks the worker, from any thread, to drain (viewers told to reconnect,
 * close 1012, Redis share withdrawn) and end its loop within deadline_ms. */
void dm_worker_drain(struct dm_worker *w, int deadline_ms);

/* Waits for the worker's thread to end and frees it. NULL is a no-op. */
void dm_worker_join(struct dm_worker *w);

#endif
