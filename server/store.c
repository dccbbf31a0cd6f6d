/* Ingest-side Redis access. */
#include "server/store.h"

#include <stdio.h>
#include <stdlib.h>

#include <hiredis/hiredis.h>

#include "common/check.h"
#include "common/config.h"
#include "common/proto.h"
#include "common/redis.h"

/* Sums the shares of the nodes whose heartbeat is recent enough.
 * KEYS[1] node registry; ARGV[1] share key prefix ("dm:online:<room>:"),
 * ARGV[2] oldest live heartbeat (Unix ms). Share keys are derived in the
 * script, so this assumes a single Redis (not Redis Cluster). */
static const char online_script[] =
    "local sum = 0 "
    "for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf')) do "
    "  local v = redis.call('GET', ARGV[1] .. n) "
    "  if v then sum = sum + tonumber(v) end "
    "end "
    "return sum";

struct dm_store {
    const struct dm_config *cfg;
    struct dm_redis *redis;
};

struct online_query {
    dm_store_online_cb cb;
    void *arg;
};

struct dm_store *dm_store_new(struct event_base *base, const struct dm_config *cfg)
{
    struct dm_store *s = dm_calloc(1, sizeof(*s));
    s->cfg = cfg;
    s->redis =
        dm_redis_new(base, cfg->redis_host, (int)cfg->redis_port, (int)cfg->redis_timeout_ms);
    return s;
}

void dm_store_free(struct dm_store *s)
{
    if (s == NULL)
        return;
    dm_redis_free(s->redis);
    free(s);
}

static void on_online_reply(const struct redisReply *reply, void *arg)
{
    struct online_query *q = arg;
    int64_t online = reply != NULL && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
    q->cb(online, q->arg);
    free(q);
}

void dm_store_online(struct dm_store *s, const char *room, dm_store_online_cb cb, void *arg)
{
    char nodes[128], prefix[128 + DM_ROOM_MAX], oldest[32];
    struct online_query *q = dm_malloc(sizeof(*q));

    q->cb = cb;
    q->arg = arg;
    snprintf(nodes, sizeof(nodes), "%snodes", s->cfg->redis_prefix);
    snprintf(prefix, sizeof(prefix), "%sonline:%s:", s->cfg->redis_prefix, room);
    snprintf(oldest, sizeof(oldest), "%lld", (long long)(dm_now_ms() - s->cfg->membership_ttl_ms));
    if (dm_redis_commandf(s->redis, on_online_reply, q, "EVAL %s 1 %s %s %s", online_script, nodes,
                          prefix, oldest) < 0) {
        free(q);
        cb(-1, arg);
    }
}

bool dm_store_ready(const struct dm_store *s)
{
    return dm_redis_connected(s->redis);
}
