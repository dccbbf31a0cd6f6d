/* Idempotency keys in Redis. */
#include "server/idempotency.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "common/check.h"
#include "common/jwt.h"
#include "common/redis.h"
#include "common/util.h"

/* KEYS[1]; ARGV[1] the pending mark, ARGV[2] its TTL. The stored value, or
 * nil after claiming. */
static const char begin_script[] = "local v = redis.call('GET', KEYS[1]) "
                                   "if v then return v end "
                                   "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
                                   "return false";

/* KEYS[1]; ARGV[1] our pending mark, ARGV[2] the answer, ARGV[3] its TTL.
 * Only over our own claim: an expired one may belong to a retry by now. */
static const char finish_script[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end "
                                    "return 1";

static const char abandon_script[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                     "redis.call('DEL', KEYS[1]) end "
                                     "return 1";

#define KEY_LEN  (160 + DM_JWT_MAX_SUB + DM_IDEM_KEY_MAX)
#define MARK_LEN 18 /* "P" + 16 hex digits + NUL */

bool dm_idem_key_valid(const char *key)
{
    size_t n = 0;
    for (; key[n] != '\0'; n++) {
        if (n >= DM_IDEM_KEY_MAX || key[n] < 0x21 || key[n] > 0x7e)
            return false;
    }
    return n > 0;
}

uint64_t dm_idem_fingerprint(const char *room, const void *body, size_t len)
{
    /* FNV-1a: not a defence against a user colliding their own keys, only a
     * way to tell a reused key from a retry. */
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *p = (const unsigned char *)room;
    for (; *p != '\0'; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    h = (h ^ 0) * 0x100000001b3ull;
    p = body;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void idem_key(char out[KEY_LEN], const char *prefix, const char *uid, const char *key)
{
    /* The uid's length first: uids and keys may both hold ':'. */
    snprintf(out, KEY_LEN, "%.128sidem:%zu:%s:%s", prefix, strlen(uid), uid, key);
}

static void mark(char out[MARK_LEN], char kind, uint64_t fp)
{
    snprintf(out, MARK_LEN, "%c%016llx", kind, (unsigned long long)fp);
}

struct begin {
    uint64_t fp;
    dm_idem_cb cb;
    void *arg;
};

static void on_begin(const struct redisReply *reply, void *arg)
{
    struct begin *q = arg;
    char pending[MARK_LEN], done[MARK_LEN];

    char unknown[MARK_LEN];
    mark(pending, 'P', q->fp);
    mark(done, 'D', q->fp);
    mark(unknown, 'U', q->fp);
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        q->cb(DM_IDEM_UNAVAILABLE, NULL, 0, q->arg);
    else if (reply->type == REDIS_REPLY_NIL)
        q->cb(DM_IDEM_NEW, NULL, 0, q->arg);
    else if (reply->type != REDIS_REPLY_STRING)
        q->cb(DM_IDEM_UNAVAILABLE, NULL, 0, q->arg);
    else if (strcmp(reply->str, pending) == 0)
        q->cb(DM_IDEM_IN_PROGRESS, NULL, 0, q->arg);
    else if (strcmp(reply->str, unknown) == 0)
        q->cb(DM_IDEM_UNKNOWN, NULL, 0, q->arg);
    else if (reply->len > MARK_LEN && memcmp(reply->str, done, MARK_LEN - 1) == 0 &&
             reply->str[MARK_LEN - 1] == ' ')
        q->cb(DM_IDEM_REPLAY, reply->str + MARK_LEN, reply->len - MARK_LEN, q->arg);
    else
        q->cb(DM_IDEM_MISMATCH, NULL, 0, q->arg);
    free(q);
}

void dm_idem_begin(struct dm_redis *r, const char *prefix, const char *uid, const char *key,
                   uint64_t fp, int64_t pending_ms, dm_idem_cb cb, void *arg)
{
    char k[KEY_LEN], pending[MARK_LEN];
    struct begin *q = dm_malloc(sizeof(*q));

    q->fp = fp;
    q->cb = cb;
    q->arg = arg;
    idem_key(k, prefix, uid, key);
    mark(pending, 'P', fp);
    if (dm_redis_commandf(r, on_begin, q, "EVAL %s 1 %s %s %lld", begin_script, k, pending,
                          (long long)pending_ms) < 0) {
        free(q);
        cb(DM_IDEM_UNAVAILABLE, NULL, 0, arg);
    }
}

void dm_idem_finish(struct dm_redis *r, const char *prefix, const char *uid, const char *key,
                    uint64_t fp, const char *body, size_t len, int64_t ttl_ms)
{
    char k[KEY_LEN], pending[MARK_LEN];
    size_t n = MARK_LEN + len;
    char *value = dm_malloc(n);

    idem_key(k, prefix, uid, key);
    mark(pending, 'P', fp);
    mark(value, 'D', fp);
    value[MARK_LEN - 1] = ' ';
    memcpy(value + MARK_LEN, body, len);
    (void)dm_redis_commandf(r, NULL, NULL, "EVAL %s 1 %s %s %b %lld", finish_script, k, pending,
                            value, n, (long long)ttl_ms);
    free(value);
}

void dm_idem_unknown(struct dm_redis *r, const char *prefix, const char *uid, const char *key,
                     uint64_t fp, int64_t ttl_ms)
{
    char k[KEY_LEN], pending[MARK_LEN], unknown[MARK_LEN];

    idem_key(k, prefix, uid, key);
    mark(pending, 'P', fp);
    mark(unknown, 'U', fp);
    (void)dm_redis_commandf(r, NULL, NULL, "EVAL %s 1 %s %s %s %lld", finish_script, k, pending,
                            unknown, (long long)ttl_ms);
}

void dm_idem_abandon(struct dm_redis *r, const char *prefix, const char *uid, const char *key,
                     uint64_t fp)
{
    char k[KEY_LEN], pending[MARK_LEN];

    idem_key(k, prefix, uid, key);
    mark(pending, 'P', fp);
    (void)dm_redis_commandf(r, NULL, NULL, "EVAL %s 1 %s %s", abandon_script, k, pending);
}
