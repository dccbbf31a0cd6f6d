/* The ingest node's Redis reads and writes (DESIGN §3): the room online
 * count, summed over the live broadcast nodes' shares that
 * broadcast/membership.c writes, and the rooms' recent history
 * (common/history.h). */
#ifndef DM_SERVER_STORE_H
#define DM_SERVER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/history.h"
#include "common/online.h"

struct event_base;
struct dm_config;
struct dm_store;
struct dm_redis;

/* base and cfg are borrowed. Never fails: Redis is reconnected in the
 * background. */
struct dm_store *dm_store_new(struct event_base *base, const struct dm_config *cfg);
void dm_store_free(struct dm_store *s);

/* Asks for the online count of room (validated by the caller); see
 * common/online.h for when and how cb fires. */
void dm_store_online(struct dm_store *s, const char *room, dm_online_cb cb, void *arg);

/* Adds an acknowledged record to room's history (bounded by history_max
 * and history_ttl_ms; fire and forget). */
void dm_store_history_append(struct dm_store *s, const char *room, int64_t offset,
                             const char *record, size_t len);

/* Reads room's history: the first `limit` entries after offset `after`,
 * or the last `limit` when after < 0 (see common/history.h for cb). */
void dm_store_history(struct dm_store *s, const char *room, int64_t after, size_t limit,
                      dm_history_cb cb, void *arg);

/* Removes comment id from room's history (a retract; fire and forget). */
void dm_store_history_remove(struct dm_store *s, const char *room, const char *id);

/* The connection, for the modules with their own Redis protocol
 * (idempotency.c). Borrowed. */
struct dm_redis *dm_store_redis(struct dm_store *s);

/* Redis commands that failed so far (for the metrics). */
unsigned long dm_store_redis_errors(const struct dm_store *s);

/* True while Redis is connected and answering (common/redis.h). */
bool dm_store_ready(const struct dm_store *s);

#endif
