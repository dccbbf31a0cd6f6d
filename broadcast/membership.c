/* Per-node room counts and heartbeats in Redis, batched. */
#include "broadcast/membership.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <hiredis/hiredis.h>

#include <event2/event.h>

#include "broadcast/room.h"
#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/online.h"
#include "common/redis.h"

#define DM_MEMBERSHIP_MAGIC 0x6d656d62u
#define FLUSH_DELAY_MS      50     /* coalesces join/leave bursts into one pipeline */
#define CHANGES_MAX         100000 /* queued changes kept while Redis is away */
#define KEY_MAX             (64 + DM_ROOM_MAX + 128 + 16)

/* A room whose count changed; the count is read at flush time. */
struct change {
    char room[DM_ROOM_MAX + 1];
};

struct dm_membership {
    unsigned magic;
    const struct dm_config *cfg;
    const char *node;
    struct dm_rooms *rooms;
    struct dm_redis *redis;
    struct change *changes; /* since the last flush */
    size_t nchanges, cap;
    bool resync;           /* changes were lost while Redis was away */
    bool withdrawn;        /* draining: nothing more is written */
    struct event *flush;   /* one-shot, FLUSH_DELAY_MS after the first change */
    struct event *refresh; /* every third of the TTL */
};

static void share_key(const struct dm_membership *m, const char *room, char out[KEY_MAX])
{
    snprintf(out, KEY_MAX, "%sonline:%s:%s", m->cfg->redis_prefix, room, m->node);
}

static void write_share(struct dm_membership *m, const char *room, size_t count)
{
    char key[KEY_MAX];
    share_key(m, room, key);
    if (count > 0)
        dm_redis_commandf(m->redis, NULL, NULL, "SET %s %llu PX %lld", key,
                          (unsigned long long)count, (long long)m->cfg->membership_ttl_ms);
    else
        dm_redis_commandf(m->redis, NULL, NULL, "DEL %s", key);
}

static void heartbeat(struct dm_membership *m)
{
    char key[KEY_MAX];
    /* Readers count a node live for membership_ttl_ms after its heartbeat;
     * the entry stays a little longer for clock skew between nodes. */
    long long now = (long long)dm_now_ms(), keep = 3 * (long long)m->cfg->membership_ttl_ms;
    snprintf(key, sizeof(key), "%snodes", m->cfg->redis_prefix);
    dm_redis_commandf(m->redis, NULL, NULL, "ZADD %s %lld %s", key, now, m->node);
    /* Dead nodes leave the registry, and when every node is gone the
     * registry itself expires. */
    dm_redis_commandf(m->redis, NULL, NULL, "ZREMRANGEBYSCORE %s -inf %lld", key, now - keep);
    dm_redis_commandf(m->redis, NULL, NULL, "PEXPIRE %s %lld", key, keep);
}

static void write_room(struct dm_room *r, void *arg)
{
    r->membership_dirty = false;
    write_share(arg, r->name, r->count);
}

/* Writes the queued changes: a room's count now, or DEL for a room gone. */
static void write_changes(struct dm_membership *m)
{
    for (size_t i = 0; i < m->nchanges; i++) {
        const char *name = m->changes[i].room;
        struct dm_room *r = dm_rooms_find(m->rooms, name, strlen(name));
        if (r != NULL)
            r->membership_dirty = false;
        write_share(m, name, r != NULL ? r->count : 0);
    }
    m->nchanges = 0;
}

static void refresh_all(struct dm_membership *m)
{
    heartbeat(m);
    dm_rooms_foreach(m->rooms, write_room, m);
    m->resync = false;
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct dm_membership *m = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);

    if (!dm_redis_connected(m->redis)) {
        /* Kept for when Redis is back, within a bound: past it the shares
         * of rooms left meanwhile expire with their TTL instead. */
        if (m->nchanges > CHANGES_MAX)
            m->nchanges = 0;
        m->resync = true;
        return;
    }
    write_changes(m);
    if (m->resync)
        refresh_all(m);
}

static void on_refresh(evutil_socket_t fd, short what, void *arg)
{
    struct dm_membership *m = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    if (dm_redis_connected(m->redis)) {
        write_changes(m);
        refresh_all(m);
    } else {
        m->resync = true;
    }
}

struct dm_membership *dm_membership_new(struct event_base *base, const struct dm_config *cfg,
                                        const char *node, struct dm_rooms *rooms)
{
    struct dm_membership *m = dm_calloc(1, sizeof(*m));
    int64_t every = cfg->membership_ttl_ms / 3;
    struct timeval tv = dm_timeval_ms(every);

    m->magic = DM_MEMBERSHIP_MAGIC;
    m->cfg = cfg;
    m->node = node;
    m->rooms = rooms;
    m->redis =
        dm_redis_new(base, cfg->redis_host, (int)cfg->redis_port, (int)cfg->redis_timeout_ms);
    dm_redis_set_auth(m->redis, cfg->redis_user, cfg->redis_password_file);
    m->resync = true; /* the first flush registers the node */
    m->flush = evtimer_new(base, on_flush, m);
    m->refresh = event_new(base, -1, EV_PERSIST, on_refresh, m);
    DM_AN(m->flush);
    DM_AN(m->refresh);
    event_add(m->refresh, &tv);
    return m;
}

void dm_membership_changed(struct dm_membership *m, struct dm_room *r)
{
    DM_CHECK_OBJ(m, DM_MEMBERSHIP_MAGIC);
    if (r->membership_dirty || m->withdrawn)
        return;
    r->membership_dirty = true;
    if (m->nchanges == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->changes = dm_realloc(m->changes, m->cap * sizeof(*m->changes));
    }
    struct change *c = &m->changes[m->nchanges++];
    memcpy(c->room, r->name, r->name_len + 1);
    if (!evtimer_pending(m->flush, NULL)) {
        struct timeval tv = dm_timeval_ms(FLUSH_DELAY_MS);
        evtimer_add(m->flush, &tv);
    }
}

static void delete_room(struct dm_room *r, void *arg)
{
    write_share(arg, r->name, 0);
}

size_t dm_membership_withdraw(struct dm_membership *m)
{
    char key[KEY_MAX];

    DM_CHECK_OBJ(m, DM_MEMBERSHIP_MAGIC);
    if (m->withdrawn)
        return dm_redis_pending(m->redis);
    m->withdrawn = true;
    event_del(m->flush);
    event_del(m->refresh);
    if (dm_redis_connected(m->redis)) {
        snprintf(key, sizeof(key), "%snodes", m->cfg->redis_prefix);
        dm_redis_commandf(m->redis, NULL, NULL, "ZREM %s %s", key, m->node);
        write_changes(m); /* deletes the shares of rooms already gone */
        dm_rooms_foreach(m->rooms, delete_room, m);
    }
    m->nchanges = 0;
    return dm_redis_pending(m->redis);
}

void dm_membership_query_online(struct dm_membership *m, const char *room,
                                void (*cb)(int64_t online, void *arg), void *arg)
{
    dm_online_query(m->redis, m->cfg->redis_prefix, room, m->cfg->membership_ttl_ms, cb, arg);
}

struct epoch_query {
    void (*cb)(int64_t epoch, void *arg);
    void *arg;
};

static void on_epoch_reply(const struct redisReply *reply, void *arg)
{
    struct epoch_query *q = arg;
    q->cb(reply != NULL && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1, q->arg);
    free(q);
}

void dm_membership_epoch(struct dm_membership *m, int32_t partition,
                         void (*cb)(int64_t epoch, void *arg), void *arg)
{
    static const char script[] =
        "local e = redis.call('GET', KEYS[1]) "
        "if not e then redis.call('SET', KEYS[1], ARGV[1]) e = ARGV[1] end "
        "return tonumber(e)";
    char key[KEY_MAX], fresh[32];
    uint64_t r;
    struct epoch_query *q = dm_malloc(sizeof(*q));

    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (uint64_t)dm_mono_us();
    /* 1..2^52: exact in JSON numbers everywhere, and never 0 (unknown). */
    snprintf(fresh, sizeof(fresh), "%llu", (unsigned long long)(r % (UINT64_C(1) << 52) + 1));
    snprintf(key, sizeof(key), "%sepoch:%s:%d", m->cfg->redis_prefix, m->cfg->kafka_topic,
             (int)partition);
    q->cb = cb;
    q->arg = arg;
    if (dm_redis_commandf(m->redis, on_epoch_reply, q, "EVAL %s 1 %s %s", script, key, fresh) < 0) {
        free(q);
        cb(-1, arg);
    }
}

unsigned long dm_membership_redis_errors(const struct dm_membership *m)
{
    return dm_redis_errors(m->redis);
}

void dm_membership_history(struct dm_membership *m, const char *room, int64_t before, size_t limit,
                           dm_history_cb cb, void *arg)
{
    dm_history_before(m->redis, m->cfg->redis_prefix, room, before, limit, cb, arg);
}

bool dm_membership_redis_usable(const struct dm_membership *m)
{
    return dm_redis_usable(m->redis);
}

void dm_membership_free(struct dm_membership *m)
{
    if (m == NULL)
        return;
    DM_CHECK_OBJ(m, DM_MEMBERSHIP_MAGIC);
    dm_redis_free(m->redis);
    event_free(m->flush);
    event_free(m->refresh);
    free(m->changes);
    m->magic = 0;
    free(m);
}
