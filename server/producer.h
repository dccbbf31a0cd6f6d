/* The ingest node's Kafka producer: the only rdkafka.h user in server/.
 * Idempotent, acks=all; delivery reports are dispatched from the event loop
 * (the main queue wakes a pipe registered with libevent). */
#ifndef DM_SERVER_PRODUCER_H
#define DM_SERVER_PRODUCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

struct event_base;
struct dm_config;
struct dm_producer;
struct dm_metrics_shard;

/* Called exactly once per accepted send, from the event loop. err is NULL
 * when the record is durably in Kafka at (partition, offset); otherwise a
 * static description and the offset is -1, and maybe_written tells that
 * the record may be in Kafka all the same (it timed out while the broker
 * had it: librdkafka's RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED). */
typedef void (*dm_producer_delivery_cb)(const char *err, bool maybe_written, int32_t partition,
                                        int64_t offset, void *arg);

/* Creates the producer and registers its events on base (borrowed; must
 * outlive the producer). cfg and the metrics shard m are borrowed likewise.
 * NULL with err on failure. */
struct dm_producer *dm_producer_new(struct event_base *base, const struct dm_config *cfg,
                                    struct dm_metrics_shard *m, char err[DM_ERRLEN]);

/* Purges the records not yet acknowledged (their callbacks fire with an
 * error, blocking up to a second for them), then frees everything. Call
 * only at shutdown, after the loop has had its chance to collect the
 * acknowledgements. NULL is a no-op. */
void dm_producer_free(struct dm_producer *p);

/* Queues value (copied) for partition with key (copied). Returns 0 when
 * queued — cb fires exactly once later — or -1 when the local queue is full
 * or the producer has failed fatally; then cb is never called. */
int dm_producer_send(struct dm_producer *p, int32_t partition, const char *key, size_t keylen,
                     const char *value, size_t len, dm_producer_delivery_cb cb, void *arg);

/* True while a broker is up as far as the client knows (updated every
 * second from librdkafka's statistics, and by every delivery). */
bool dm_producer_ready(const struct dm_producer *p);

/* Records queued and not yet reported. */
int dm_producer_in_flight(const struct dm_producer *p);

#endif
