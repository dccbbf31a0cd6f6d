/* Room online counts summed over live broadcast nodes. */
#include "common/online.h"

#include <stdio.h>
#include <stdlib.h>

#include <hiredis/hiredis.h>

#include "common/proto.h"
#include "common/redis.h"
#include "common/util.h"

/* KEYS[1] node registry; ARGV[1] share key prefix ("dm:online:<room>:"),
 * ARGV[2] oldest live heartbeat (Unix ms). Share keys are derived in the
 * script, so this assumes a single Redis (not Redis Cluster). */
static const char online_script[] =
    "local sum = 0 "
    "for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf')) do "
    "  local v = redis.call('GET', ARGV[1] .. n) "
    "  if v then sum = sum + tonumber(v) end "
    "end "
    "return sum";

struct query {
    dm_online_cb cb;
    void *arg;
};

static void on_reply(const struct redisReply *reply, void *arg)
{
    struct query *q = arg;
    int64_t online = reply != NULL && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
    q->cb(online, q->arg);
    free(q);
}

void dm_online_query(struct dm_redis *r, const char *prefix, const char *room, int64_t ttl_ms,
                     dm_online_cb cb, void *arg)
{
    char nodes[160], share[160 + DM_ROOM_MAX], oldest[32];
    struct query *q = dm_malloc(sizeof(*q));

    q->cb = cb;
    q->arg = arg;
    snprintf(nodes, sizeof(nodes), "%.128snodes", prefix);
    snprintf(share, sizeof(share), "%.128sonline:%s:", prefix, room);
    snprintf(oldest, sizeof(oldest), "%lld", (long long)(dm_now_ms() - ttl_ms));
    if (dm_redis_commandf(r, on_reply, q, "EVAL %s 1 %s %s %s", online_script, nodes, share,
                          oldest) < 0) {
        free(q);
        cb(-1, arg);
    }
}
