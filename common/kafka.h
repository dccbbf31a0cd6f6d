/* librdkafka settings shared by the producer, the consumer and the tools:
 * error-reporting conf setters and the route of its logs into ours. */
#ifndef DM_COMMON_KAFKA_H
#define DM_COMMON_KAFKA_H

#include <stdbool.h>
#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "common/util.h"

/* A new conf with bootstrap.servers = brokers, the operator's properties
 * (dm_kafka_load_properties) and librdkafka's log lines routed into DM_LOG.
 * What the caller sets afterwards wins, so the settings the guarantees rest
 * on (acks, idempotence, offsets) cannot be weakened by the file. Caller
 * owns it (rd_kafka_new takes it over). */
rd_kafka_conf_t *dm_kafka_conf_new(const char *brokers);

/* Reads librdkafka properties from path (kafka_properties_file): `name =
 * value` lines, blank lines and # comments; at most 128 of them. Each is
 * tried on a scratch conf, so an unknown name or a bad value stops start-up
 * here with err naming the line (never the value: it may be a password).
 * bootstrap.servers is refused (kafka_brokers is its one place), and so is
 * delivery.report.only.error (ingest's 201 comes from the reports). Call once
 * at start-up, before any Kafka client or thread exists; afterwards the
 * properties are only read. Replaces what an earlier call loaded. */
int dm_kafka_load_properties(const char *path, char err[DM_ERRLEN]);

/* Forgets the loaded properties (at exit, after every client is gone). */
void dm_kafka_free_properties(void);

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

/* Reading a bounded range of one partition, for the rare reads outside the
 * live stream: a broadcast node's catch-up of a resuming viewer, an ingest
 * node's search for the record of an attempt that died with its node. */
struct dm_kafka_range {
    const char *brokers; /* borrowed, like every pointer here */
    const char *topic;
    const char *group; /* group.id of the throwaway consumer (assign needs one) */
    int32_t partition;
    int64_t from;        /* first offset, when from_ts_ms < 0 */
    int64_t from_ts_ms;  /* >= 0: start at the first record stamped at or after it */
    int64_t ts_fallback; /* when the broker finds none stamped so late (or cannot look
                          * times up, like librdkafka's mock cluster): start this many
                          * records before the log end instead */
    int64_t until;       /* end offset, exclusive; < 0: the log end seen at the start */
    const char *key;     /* only records with this key are visited */
    size_t keylen;
    int timeout_ms; /* for the whole read */
};

enum dm_kafka_read_result {
    DM_KAFKA_READ_DONE,    /* every record of the range was visited */
    DM_KAFKA_READ_STOPPED, /* the visitor asked to stop */
    DM_KAFKA_READ_GONE,    /* the range starts before the log start, or ends past its end */
    DM_KAFKA_READ_FAILED,  /* Kafka did not answer in time, or refused */
};

/* Called for each record of the range with the range's key, in offset
 * order; returns false to stop. */
typedef bool (*dm_kafka_visit_cb)(const rd_kafka_message_t *m, void *arg);

/* Reads the range with a consumer of its own, created and destroyed here.
 * Blocks up to r->timeout_ms and a little more for the client's teardown:
 * call it from a thread of its own, never from an event loop. */
enum dm_kafka_read_result dm_kafka_read_range(const struct dm_kafka_range *r,
                                              dm_kafka_visit_cb visit, void *arg);

#endif
