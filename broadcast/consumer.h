/* The broadcast node's Kafka consumer: the only rdkafka.h user in
 * broadcast/. Partitions are added and removed one at a time (incremental
 * manual assignment, no group membership, no commits) as local viewers need
 * them. A new partition is positioned at its log end, looked up off the
 * event loop, so the node knows exactly from which offset it has every
 * record. Records are dispatched from the event loop (the consumer queue
 * wakes a pipe registered with libevent). */
#ifndef DM_BROADCAST_CONSUMER_H
#define DM_BROADCAST_CONSUMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

struct event_base;
struct dm_config;
struct dm_consumer;

/* One record of an assigned partition, in offset order per partition. The
 * buffers are valid during the call only. Returns the work it caused (the
 * deliveries it queued): the consumer hands the loop back to the sockets
 * once a round's work passes a budget, so fan-out never starves writes. */
typedef size_t (*dm_consumer_record_cb)(int32_t partition, int64_t offset, int64_t ts_ms,
                                        const char *key, size_t keylen, const char *value,
                                        size_t len, void *arg);

/* A batch of records was handed to on_record: the owner fans out what it
 * gathered. Returns the work it did (deliveries), for the round budget. */
typedef size_t (*dm_consumer_flush_cb)(void *arg);

/* The partition asked for with dm_consumer_acquire is assigned; the next
 * record delivered for it has offset >= next_offset, and every record from
 * next_offset on will be delivered. */
typedef void (*dm_consumer_ready_cb)(int32_t partition, int64_t next_offset, void *arg);

/* The stream of an assigned partition broke: its position fell outside the
 * log (topic recreated, retention overtook it, unclean leader election).
 * The partition is released; the owner decides what its viewers are told
 * and may acquire it again. */
typedef void (*dm_consumer_reset_cb)(int32_t partition, void *arg);

/* base and cfg are borrowed; callbacks fire from the event loop and may call
 * acquire/release. NULL with err on failure. */
struct dm_consumer *dm_consumer_new(struct event_base *base, const struct dm_config *cfg,
                                    const char *node, dm_consumer_record_cb on_record,
                                    dm_consumer_flush_cb on_flush, dm_consumer_ready_cb on_ready,
                                    dm_consumer_reset_cb on_reset, void *arg, char err[DM_ERRLEN]);

/* Stops consuming and frees. Blocks briefly (joins lookup threads). NULL: no-op. */
void dm_consumer_free(struct dm_consumer *c);

/* Starts reading partition from its log end; on_ready fires once positioned
 * (retrying lookups until the broker answers). No-op if already acquired. */
void dm_consumer_acquire(struct dm_consumer *c, int32_t partition);

/* Consumer errors reported so far (for the metrics). */
unsigned long dm_consumer_errors(const struct dm_consumer *c);

/* Whether a Kafka broker connection is up (librdkafka's statistics, every
 * second): false until the first connection and after every broker went
 * away. Any thread may ask. */
bool dm_consumer_broker_up(const struct dm_consumer *c);

/* The partition's log end as last reported by the broker (cached, no
 * request), or -1 when unknown: for the lag gauge. */
int64_t dm_consumer_high_watermark(struct dm_consumer *c, int32_t partition);

/* One record of a room read back by a catch-up. */
struct dm_catchup_record {
    int64_t offset;
    int64_t ts_ms;
    char *value;
    size_t len;
};

/* A catch-up finished: ok with the room's records in offset order (owned
 * by the consumer, valid during the call), or not ok (the range is gone
 * from Kafka, holds more than max_records of the room, or the broker did
 * not answer in time). Fires from the event loop. */
typedef void (*dm_consumer_catchup_cb)(bool ok, const struct dm_catchup_record *recs, size_t n,
                                       void *arg);

/* Reads partition from after+1 up to before (exclusive) on a short-lived
 * reader of its own, off the event loop, keeping the records keyed room.
 * Returns 0 when started (cb fires once), -1 when too many catch-ups run
 * already (cb never fires). room is copied. */
int dm_consumer_catchup(struct dm_consumer *c, int32_t partition, const char *room, int64_t after,
                        int64_t before, size_t max_records, dm_consumer_catchup_cb cb, void *arg);

/* Stops reading partition. A pending acquire is abandoned (on_ready will
 * not fire for it). No-op if not acquired. */
void dm_consumer_release(struct dm_consumer *c, int32_t partition);

#endif
