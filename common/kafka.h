/* librdkafka settings shared by the producer, the consumer and the tools:
 * error-reporting conf setters and the route of its logs into ours. */
#ifndef DM_COMMON_KAFKA_H
#define DM_COMMON_KAFKA_H

#include <stdbool.h>
#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "common/util.h"

/* A new conf with bootstrap.servers = brokers and librdkafka's log lines
 * routed into DM_LOG. Caller owns it (rd_kafka_new takes it over). */
rd_kafka_conf_t *dm_kafka_conf_new(const char *brokers);

/* Sets name = value; -1 with err naming both on failure. */
int dm_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                      char err[DM_ERRLEN]);

/* Same, for an integer value. */
int dm_kafka_conf_set_int(rd_kafka_conf_t *conf, const char *name, long long value,
                          char err[DM_ERRLEN]);

/* Whether librdkafka's statistics JSON (statistics.interval.ms) show a
 * broker connection in state UP, the bootstrap connection included. A client
 * with no broker up cannot produce or fetch: that is what readiness
 * reports. */
bool dm_kafka_stats_broker_up(const char *json, size_t len);

/* Wakes the event loop when a librdkafka queue has something to serve.
 * librdkafka writes to a pipe when the queue goes from empty to non-empty;
 * the read end is watched by libevent, and a 100 ms timer covers a wake-up
 * that could be missed. on_ready must serve the queue until it is empty. */
struct event_base;
struct dm_kafka_waker;
typedef void (*dm_kafka_ready_cb)(void *arg);

/* queue and base are borrowed and must outlive the waker. NULL with err. */
struct dm_kafka_waker *dm_kafka_waker_new(struct event_base *base, rd_kafka_queue_t *queue,
                                          dm_kafka_ready_cb on_ready, void *arg,
                                          char err[DM_ERRLEN]);

/* Stops the wake-ups (the queue no longer writes to the pipe). NULL: no-op. */
void dm_kafka_waker_free(struct dm_kafka_waker *w);

#endif
