/* A room's recent comments in Redis (DESIGN §3): written by ingest after
 * Kafka acknowledged them, read by the history API and by broadcast nodes
 * for a fresh viewer's backfill.
 *
 * Key <prefix>hist:<room>, a sorted set: score = Kafka offset (a room lives
 * in one partition, so offsets order it), member = the record as published
 * (its id makes it unique). Bounded: at most `max` members, and the key
 * expires ttl_ms after the room's last comment. It is a convenience, not a
 * log: a write can be lost (Redis away) or land after a reader looked, so
 * exact resume never relies on it. */
#ifndef DM_COMMON_HISTORY_H
#define DM_COMMON_HISTORY_H

#include <stddef.h>
#include <stdint.h>

struct dm_redis;

/* Adds the record at offset (fire and forget: one atomic script, no reply
 * awaited; a failure only counts in the client's errors). */
void dm_history_append(struct dm_redis *r, const char *prefix, const char *room, int64_t offset,
                       const char *record, size_t len, int64_t max, int64_t ttl_ms);

/* Removes comment id from room's history (fire and forget). */
void dm_history_remove(struct dm_redis *r, const char *prefix, const char *room, const char *id);

struct dm_history_entry {
    int64_t offset;
    const char *record; /* borrowed from the reply: valid during the callback */
    size_t len;
};

/* Fires once from the event loop with entries in offset order, or with
 * n = (size_t)-1 when Redis did not answer (unreachable, timeout, error). */
typedef void (*dm_history_cb)(const struct dm_history_entry *e, size_t n, void *arg);

/* The first `limit` entries with offset > after, oldest first. */
void dm_history_after(struct dm_redis *r, const char *prefix, const char *room, int64_t after,
                      size_t limit, dm_history_cb cb, void *arg);

/* The last `limit` entries with offset < before, oldest first. */
void dm_history_before(struct dm_redis *r, const char *prefix, const char *room, int64_t before,
                       size_t limit, dm_history_cb cb, void *arg);

#endif
