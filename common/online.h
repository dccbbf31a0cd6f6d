/* A room's online count, read from what broadcast nodes publish in Redis:
 * the sum of the shares of every node whose heartbeat is younger than the
 * TTL (key layout in broadcast/membership.h). One Lua call, atomic. Shared
 * by ingest (GET /v1/rooms/{room}) and broadcast (`online` pushes). */
#ifndef DM_COMMON_ONLINE_H
#define DM_COMMON_ONLINE_H

#include <stdint.h>

struct dm_redis;

/* Fires once from the event loop: online >= 0, or -1 when Redis did not
 * answer in time or is unreachable. */
typedef void (*dm_online_cb)(int64_t online, void *arg);

/* Asks for the online count of room. cb fires exactly once, possibly
 * before this returns (Redis not connected). prefix and room borrowed. */
void dm_online_query(struct dm_redis *r, const char *prefix, const char *room, int64_t ttl_ms,
                     dm_online_cb cb, void *arg);

#endif
