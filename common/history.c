/* Recent comments of a room in Redis. */
#include "common/history.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "common/proto.h"
#include "common/redis.h"
#include "common/util.h"

/* KEYS[1] the room's set; ARGV: offset, record, max members, TTL (ms). One
 * script, so the set never holds more than max between the two steps. */
static const char append_script[] =
    "redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) "
    "local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3]) "
    "if over > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1) end "
    "redis.call('PEXPIRE', KEYS[1], ARGV[4]) "
    "return 1";

/* KEYS[1] the room's set; ARGV[1] the id. Members are records as ingest
 * encodes them (compact JSON), so the id appears as "id":"<id>"; the set is
 * bounded by history_max, so the scan is too. */
static const char remove_script[] =
    "local needle = '\"id\":\"' .. ARGV[1] .. '\"' "
    "for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do "
    "  if string.find(m, needle, 1, true) then redis.call('ZREM', KEYS[1], m) end "
    "end "
    "return 1";

static void history_key(char *buf, size_t size, const char *prefix, const char *room)
{
    snprintf(buf, size, "%.128shist:%s", prefix, room);
}

void dm_history_append(struct dm_redis *r, const char *prefix, const char *room, int64_t offset,
                       const char *record, size_t len, int64_t max, int64_t ttl_ms)
{
    char key[160 + DM_ROOM_MAX], off[24], maxs[24], ttl[24];

    if (max <= 0)
        return;
    history_key(key, sizeof(key), prefix, room);
    snprintf(off, sizeof(off), "%lld", (long long)offset);
    snprintf(maxs, sizeof(maxs), "%lld", (long long)max);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
    const char *argv[] = {"EVAL", append_script, "1", key, off, record, maxs, ttl};
    size_t argvlen[] = {
        4, sizeof(append_script) - 1, 1, strlen(key), strlen(off), len, strlen(maxs), strlen(ttl)};
    /* Not connected: the comment is in Kafka all the same; the history
     * just misses it (counted by the client). */
    (void)dm_redis_command(r, NULL, NULL, 8, argv, argvlen);
}

void dm_history_remove(struct dm_redis *r, const char *prefix, const char *room, const char *id)
{
    char key[160 + DM_ROOM_MAX];
    history_key(key, sizeof(key), prefix, room);
    (void)dm_redis_commandf(r, NULL, NULL, "EVAL %s 1 %s %s", remove_script, key, id);
}

struct read {
    dm_history_cb cb;
    void *arg;
    int reverse; /* the reply is newest first */
};

static void on_read(const struct redisReply *reply, void *arg)
{
    struct read *q = arg;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0) {
        q->cb(NULL, (size_t)-1, q->arg);
        free(q);
        return;
    }
    size_t n = reply->elements / 2, kept = 0;
    struct dm_history_entry *e = dm_calloc(n > 0 ? n : 1, sizeof(*e));
    for (size_t i = 0; i < n; i++) {
        const struct redisReply *member = reply->element[q->reverse ? 2 * (n - 1 - i) : 2 * i];
        const struct redisReply *score =
            reply->element[q->reverse ? 2 * (n - 1 - i) + 1 : 2 * i + 1];
        if (member->type != REDIS_REPLY_STRING || score->type != REDIS_REPLY_STRING)
            continue;
        char *end;
        long long off = strtoll(score->str, &end, 10);
        if (end == score->str || *end != '\0' || off < 0)
            continue;
        e[kept++] = (struct dm_history_entry){off, member->str, member->len};
    }
    q->cb(e, kept, q->arg);
    free(e);
    free(q);
}

static void read_range(struct dm_redis *r, const char *prefix, const char *room, const char *from,
                       const char *to, int reverse, size_t limit, dm_history_cb cb, void *arg)
{
    char key[160 + DM_ROOM_MAX], count[24];
    struct read *q = dm_malloc(sizeof(*q));

    q->cb = cb;
    q->arg = arg;
    q->reverse = reverse;
    history_key(key, sizeof(key), prefix, room);
    snprintf(count, sizeof(count), "%zu", limit);
    const char *argv[10];
    size_t argvlen[10];
    int argc = 0;
    argv[argc++] = "ZRANGE";
    argv[argc++] = key;
    argv[argc++] = from;
    argv[argc++] = to;
    argv[argc++] = "BYSCORE";
    if (reverse)
        argv[argc++] = "REV";
    argv[argc++] = "LIMIT";
    argv[argc++] = "0";
    argv[argc++] = count;
    argv[argc++] = "WITHSCORES";
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    if (dm_redis_command(r, on_read, q, argc, argv, argvlen) < 0) {
        free(q);
        cb(NULL, (size_t)-1, arg);
    }
}

void dm_history_after(struct dm_redis *r, const char *prefix, const char *room, int64_t after,
                      size_t limit, dm_history_cb cb, void *arg)
{
    char from[24];
    snprintf(from, sizeof(from), "(%lld", (long long)after);
    read_range(r, prefix, room, from, "+inf", 0, limit, cb, arg);
}

void dm_history_before(struct dm_redis *r, const char *prefix, const char *room, int64_t before,
                       size_t limit, dm_history_cb cb, void *arg)
{
    char to[24];
    snprintf(to, sizeof(to), "(%lld", (long long)before);
    /* With REV, BYSCORE takes the bounds high first. */
    read_range(r, prefix, room, to, "-inf", 1, limit, cb, arg);
}
