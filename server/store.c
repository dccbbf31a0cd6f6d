/* Ingest-side Redis access. */
#include "server/store.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/check.h"
#include "common/config.h"
#include "common/proto.h"
#include "common/history.h"
#include "common/online.h"
#include "common/redis.h"

struct dm_store {
    const struct dm_config *cfg;
    struct dm_redis *redis;
};

struct dm_store *dm_store_new(struct event_base *base, const struct dm_config *cfg)
{
    struct dm_store *s = dm_calloc(1, sizeof(*s));
    s->cfg = cfg;
    s->redis =
        dm_redis_new(base, cfg->redis_host, (int)cfg->redis_port, (int)cfg->redis_timeout_ms);
    dm_redis_set_auth(s->redis, cfg->redis_user, cfg->redis_password_file);
    return s;
}

void dm_store_free(struct dm_store *s)
{
    if (s == NULL)
        return;
    dm_redis_free(s->redis);
    free(s);
}

void dm_store_online(struct dm_store *s, const char *room, dm_online_cb cb, void *arg)
{
    dm_online_query(s->redis, s->cfg->redis_prefix, room, s->cfg->membership_ttl_ms, cb, arg);
}

void dm_store_history_append(struct dm_store *s, const char *room, int64_t offset,
                             const char *record, size_t len)
{
    dm_history_append(s->redis, s->cfg->redis_prefix, room, offset, record, len,
                      s->cfg->history_max, s->cfg->history_ttl_ms);
}

void dm_store_history(struct dm_store *s, const char *room, int64_t after, size_t limit,
                      dm_history_cb cb, void *arg)
{
    if (after < 0)
        dm_history_before(s->redis, s->cfg->redis_prefix, room, INT64_MAX, limit, cb, arg);
    else
        dm_history_after(s->redis, s->cfg->redis_prefix, room, after, limit, cb, arg);
}

void dm_store_history_remove(struct dm_store *s, const char *room, const char *id)
{
    dm_history_remove(s->redis, s->cfg->redis_prefix, room, id);
}

struct dm_redis *dm_store_redis(struct dm_store *s)
{
    return s->redis;
}

bool dm_store_ready(const struct dm_store *s)
{
    return dm_redis_usable(s->redis);
}

unsigned long dm_store_redis_errors(const struct dm_store *s)
{
    return dm_redis_errors(s->redis);
}
