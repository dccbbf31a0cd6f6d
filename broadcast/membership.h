/* Room membership in Redis (DESIGN §3): this node's viewer count per room,
 * and its heartbeat in the node registry, so a room's online count is the
 * sum over live nodes and a dead node's share disappears with its TTL.
 *
 * Keys (prefix from cfg->redis_prefix, "dm:" by default):
 *   <prefix>online:<room>:<node>  string  viewers of room on node (PX membership_ttl_ms)
 *   <prefix>nodes                 zset    node -> last heartbeat, Unix ms
 * A reader sums the share of every node whose heartbeat is younger than the
 * TTL (see server/store.c).
 * Writes are batched: changes are flushed at most every FLUSH_DELAY_MS, and
 * every room is refreshed every third of the TTL. Redis down: counts are
 * kept locally and written again once it is back. */
#ifndef DM_BROADCAST_MEMBERSHIP_H
#define DM_BROADCAST_MEMBERSHIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/history.h"

struct event_base;
struct dm_config;
struct dm_room;
struct dm_rooms;
struct dm_membership;

/* rooms is the node's room table (borrowed), read at each refresh. */
struct dm_membership *dm_membership_new(struct event_base *base, const struct dm_config *cfg,
                                        const char *node, struct dm_rooms *rooms);

/* Removes this node from Redis (best effort) and frees. NULL is a no-op. */
void dm_membership_free(struct dm_membership *m);

/* The member count of room r changed; call it before r may be freed (its
 * last member leaving). The count written is the one at flush time. */
void dm_membership_changed(struct dm_membership *m, struct dm_room *r);

/* Asks Redis for room's online count over all live nodes (common/online.h);
 * cb fires once with -1 when Redis does not answer in time. */
void dm_membership_query_online(struct dm_membership *m, const char *room,
                                void (*cb)(int64_t online, void *arg), void *arg);

/* The epoch of a partition's stream: created once in Redis (SET if absent)
 * and shared by every node, so an (epoch, offset) from one node means the
 * same on another. cb fires once with -1 when Redis does not answer. The
 * keys (<prefix>epoch:<topic>:<partition>) are bounded by the partition
 * count and carry no TTL: losing one only costs viewers a recovered:false. */
void dm_membership_epoch(struct dm_membership *m, int32_t partition,
                         void (*cb)(int64_t epoch, void *arg), void *arg);

/* Redis commands that failed so far (for the metrics). */
unsigned long dm_membership_redis_errors(const struct dm_membership *m);

/* The last `limit` records of room's history in Redis with offset < before
 * (written by ingest; common/history.h), for a fresh viewer's backfill. */
void dm_membership_history(struct dm_membership *m, const char *room, int64_t before, size_t limit,
                           dm_history_cb cb, void *arg);

/* Whether Redis is connected and answering (common/redis.h). */
bool dm_membership_redis_usable(const struct dm_membership *m);

/* Draining: removes this node's heartbeat and shares from Redis (once;
 * later calls only report) and stops writing. Returns the number of Redis
 * commands still unanswered. */
size_t dm_membership_withdraw(struct dm_membership *m);

#endif
