/* The open-loop publisher: comments at a constant rate on a fixed schedule,
 * through ingest (HTTP keep-alive connections, tokens minted here) or
 * straight into Kafka (keyed by room, partition from the room hash). Each
 * comment's text carries its sequence in the room and its scheduled send
 * time ("lt <seq> <sched_us> xxxx"), so a stall anywhere shows up as
 * latency instead of silently slowing the sender down. Runs on the caller's
 * event loop. */
#ifndef DM_LOADTEST_PUBLISHER_H
#define DM_LOADTEST_PUBLISHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

struct event_base;
struct lt_hist;
struct lt_ledger;
struct lt_publisher;

struct lt_publisher_config {
    bool via_kafka;     /* false: through ingest */
    const char *ingest; /* host:port */
    const char *kafka_brokers;
    const char *kafka_topic;
    int32_t partitions;
    const char *const *room_names;
    size_t nrooms;
    double hot_share;    /* share of comments for room 0 */
    double rate;         /* comments per second */
    size_t message_size; /* bytes of text */
    int http_conns;
    const unsigned char *secret; /* HS256, for sender tokens (http) */
    size_t secret_len;
    int senders;
};

struct lt_publisher_stats {
    uint64_t scheduled; /* comments whose send time has come */
    uint64_t sent;      /* handed to HTTP or Kafka */
    uint64_t acked;     /* 201 / delivery report ok */
    uint64_t failed;    /* any other answer */
    uint64_t backlog;   /* scheduled, not yet sent (HTTP connections busy) */
    uint64_t status_429, status_503, status_other, transport_errors;
};

/* cfg, base and ledger are borrowed. NULL with err. */
struct lt_publisher *lt_publisher_new(struct event_base *base,
                                      const struct lt_publisher_config *cfg,
                                      struct lt_ledger *ledger, char err[DM_ERRLEN]);

/* Starts the schedule: comment i is due at start_us + i / rate. */
void lt_publisher_start(struct lt_publisher *p, int64_t start_us);

/* No comment is scheduled at or after end_us. */
void lt_publisher_stop_at(struct lt_publisher *p, int64_t end_us);

/* Comments sent and not yet answered, plus the backlog. */
uint64_t lt_publisher_outstanding(const struct lt_publisher *p);

void lt_publisher_stats(const struct lt_publisher *p, struct lt_publisher_stats *out);

/* Time from the scheduled send to the acknowledgement (201 or Kafka ack). */
const struct lt_hist *lt_publisher_ack_latency(const struct lt_publisher *p);

/* Frees; with Kafka, waits briefly for outstanding delivery reports. */
void lt_publisher_free(struct lt_publisher *p);

#endif
