/* Idempotency keys in Redis. */
#include "server/idempotency.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#include "common/check.h"
#include "common/jwt.h"
#include "common/redis.h"
#include "common/util.h"

/* KEYS[1]; ARGV[1] fp, [2] owner, [3] pending_ms, [4] recover_ms, [5] our
 * attempt "id partition ts", [6] ttl_ms. Claims a free key (nil), takes
 * over a pending claim past its deadline ({"orphan", its attempt}), or
 * returns the stored state. Deadlines are on Redis's clock, in ms, so every
 * node's agree. */
static const char begin_script[] =
    "local v = redis.call('GET', KEYS[1]) "
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "if v then "
    "  local fp, deadline, attempt = string.match(v, '^P(%x+) %S+ (%d+) (.+)$') "
    "  if fp == ARGV[1] and tonumber(deadline) < now then "
    "    redis.call('SET', KEYS[1], string.format('P%s %s %.0f %s', fp, ARGV[2], "
    "               now + tonumber(ARGV[4]), attempt), 'KEEPTTL') "
    "    return {'orphan', attempt} "
    "  end "
    "  return v "
    "end "
    "redis.call('SET', KEYS[1], string.format('P%s %s %.0f %s', ARGV[1], ARGV[2], "
    "           now + tonumber(ARGV[3]), ARGV[5]), 'PX', ARGV[6]) "
    "return false";

/* KEYS[1]; ARGV[1] fp, [2] owner, [3] what to do with the claim if it is
 * still ours (an expired or taken-over one may be a retry's by now):
 *   "set" value ttl_ms | "del" | "renew" pending_ms attempt | "release". */
static const char holder_script[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if not v then return 0 end "
    "local fp, owner, attempt = string.match(v, '^P(%x+) (%S+) %d+ (.+)$') "
    "if fp ~= ARGV[1] or owner ~= ARGV[2] then return 0 end "
    "if ARGV[3] == 'set' then "
    "  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5]) "
    "elseif ARGV[3] == 'del' then "
    "  redis.call('DEL', KEYS[1]) "
    "else "
    "  local t = redis.call('TIME') "
    "  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "  local deadline = 0 "
    "  if ARGV[3] == 'renew' then deadline = now + tonumber(ARGV[4]); attempt = ARGV[5] end "
    "  redis.call('SET', KEYS[1], string.format('P%s %s %.0f %s', fp, owner, deadline, attempt), "
    "             'KEEPTTL') "
    "end "
    "return 1";

#define KEY_LEN     (160 + DM_JWT_MAX_SUB + DM_IDEM_KEY_MAX)
#define FP_LEN      17 /* 16 hex digits + NUL */
#define ATTEMPT_LEN (DM_ID_LEN + 48)

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

void dm_idem_new_owner(char owner[DM_IDEM_OWNER_LEN + 1])
{
    uint8_t b[DM_IDEM_OWNER_LEN / 2];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        DM_PANIC("getrandom failed");
    for (size_t i = 0; i < sizeof(b); i++)
        snprintf(owner + 2 * i, 3, "%02x", b[i]);
}

static void idem_key(char out[KEY_LEN], const struct dm_idem_ref *ref)
{
    /* The uid's length first: uids and keys may both hold ':'. */
    snprintf(out, KEY_LEN, "%.128sidem:%zu:%s:%s", ref->prefix, strlen(ref->uid), ref->uid,
             ref->key);
}

static void hex_fp(char out[FP_LEN], uint64_t fp)
{
    snprintf(out, FP_LEN, "%016llx", (unsigned long long)fp);
}

static void format_attempt(char out[ATTEMPT_LEN], const struct dm_idem_attempt *a)
{
    snprintf(out, ATTEMPT_LEN, "%s %d %lld", a->id, (int)a->partition, (long long)a->ts);
}

static bool parse_attempt(const char *s, size_t len, struct dm_idem_attempt *a)
{
    char buf[ATTEMPT_LEN], id[DM_ID_LEN + 2];
    int partition, n = 0;
    long long ts;

    if (len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (sscanf(buf, "%27s %d %lld%n", id, &partition, &ts, &n) != 3 || (size_t)n != len ||
        !dm_comment_id_valid(id, strlen(id)) || partition < 0)
        return false;
    memcpy(a->id, id, DM_ID_LEN + 1);
    a->partition = partition;
    a->ts = ts;
    return true;
}

struct begin {
    uint64_t fp;
    dm_idem_cb cb;
    void *arg;
};

/* What a stored value says, for a request with fingerprint fp. */
static enum dm_idem_state stored_state(const char *v, size_t len, uint64_t fp, size_t *body_at)
{
    char hex[FP_LEN];
    hex_fp(hex, fp);
    if (len < FP_LEN || memcmp(v + 1, hex, FP_LEN - 1) != 0)
        return DM_IDEM_MISMATCH;
    switch (v[0]) {
    case 'P':
        return DM_IDEM_IN_PROGRESS;
    case 'U':
        return len == FP_LEN ? DM_IDEM_UNKNOWN : DM_IDEM_MISMATCH;
    case 'D':
        if (len <= FP_LEN || v[FP_LEN] != ' ')
            return DM_IDEM_MISMATCH;
        *body_at = FP_LEN + 1;
        return DM_IDEM_REPLAY;
    default:
        return DM_IDEM_MISMATCH;
    }
}

static void on_begin(const struct redisReply *reply, void *arg)
{
    struct begin *q = arg;
    struct dm_idem_attempt orphan;
    size_t at = 0;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        q->cb(DM_IDEM_UNAVAILABLE, NULL, 0, NULL, q->arg);
    } else if (reply->type == REDIS_REPLY_NIL) {
        q->cb(DM_IDEM_NEW, NULL, 0, NULL, q->arg);
    } else if (reply->type == REDIS_REPLY_ARRAY) {
        /* {"orphan", attempt}: a claim we now hold; one we cannot read
         * would block the key until it expires. */
        if (reply->elements == 2 && reply->element[1]->type == REDIS_REPLY_STRING &&
            parse_attempt(reply->element[1]->str, reply->element[1]->len, &orphan))
            q->cb(DM_IDEM_ORPHANED, NULL, 0, &orphan, q->arg);
        else
            q->cb(DM_IDEM_UNAVAILABLE, NULL, 0, NULL, q->arg);
    } else if (reply->type != REDIS_REPLY_STRING) {
        q->cb(DM_IDEM_UNAVAILABLE, NULL, 0, NULL, q->arg);
    } else {
        enum dm_idem_state st = stored_state(reply->str, reply->len, q->fp, &at);
        if (st == DM_IDEM_REPLAY)
            q->cb(st, reply->str + at, reply->len - at, NULL, q->arg);
        else
            q->cb(st, NULL, 0, NULL, q->arg);
    }
    free(q);
}

void dm_idem_begin(const struct dm_idem_ref *ref, const struct dm_idem_attempt *mine,
                   int64_t pending_ms, int64_t recover_ms, int64_t ttl_ms, dm_idem_cb cb, void *arg)
{
    char k[KEY_LEN], fp[FP_LEN], attempt[ATTEMPT_LEN];
    struct begin *q = dm_malloc(sizeof(*q));

    q->fp = ref->fp;
    q->cb = cb;
    q->arg = arg;
    idem_key(k, ref);
    hex_fp(fp, ref->fp);
    format_attempt(attempt, mine);
    if (dm_redis_commandf(ref->redis, on_begin, q, "EVAL %s 1 %s %s %s %lld %lld %s %lld",
                          begin_script, k, fp, ref->owner, (long long)pending_ms,
                          (long long)recover_ms, attempt, (long long)ttl_ms) < 0) {
        free(q);
        cb(DM_IDEM_UNAVAILABLE, NULL, 0, NULL, arg);
    }
}

struct done {
    dm_idem_done_cb cb;
    void *arg;
};

static void on_done(const struct redisReply *reply, void *arg)
{
    struct done *q = arg;
    q->cb(reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1, q->arg);
    free(q);
}

/* Runs the holder script with argv after KEYS[1] fp owner; cb (may be
 * NULL: fire and forget) gets whether the claim was ours and changed. */
static void holder(const struct dm_idem_ref *ref, dm_idem_done_cb cb, void *arg, int argc,
                   const char **argv, const size_t *argvlen)
{
    char k[KEY_LEN], fp[FP_LEN];
    const char *all[12];
    size_t lens[12];
    struct done *q = NULL;

    DM_ASSERT(argc <= 6);
    idem_key(k, ref);
    hex_fp(fp, ref->fp);
    const char *head[] = {"EVAL", holder_script, "1", k, fp, ref->owner};
    for (int i = 0; i < 6; i++) {
        all[i] = head[i];
        lens[i] = strlen(head[i]);
    }
    for (int i = 0; i < argc; i++) {
        all[6 + i] = argv[i];
        lens[6 + i] = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
    }
    if (cb != NULL) {
        q = dm_malloc(sizeof(*q));
        q->cb = cb;
        q->arg = arg;
    }
    if (dm_redis_command(ref->redis, cb != NULL ? on_done : NULL, q, 6 + argc, all, lens) < 0 &&
        q != NULL) {
        free(q);
        cb(false, arg);
    }
}

void dm_idem_finish(const struct dm_idem_ref *ref, const char *body, size_t len, int64_t ttl_ms,
                    dm_idem_done_cb cb, void *arg)
{
    char fp[FP_LEN], ttl[24];
    size_t n = FP_LEN + 1 + len;
    char *value = dm_malloc(n);

    hex_fp(fp, ref->fp);
    snprintf(value, n, "D%s ", fp);
    memcpy(value + FP_LEN + 1, body, len);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
    const char *argv[] = {"set", value, ttl};
    const size_t lens[] = {3, n, strlen(ttl)};
    holder(ref, cb, arg, 3, argv, lens);
    free(value);
}

void dm_idem_abandon(const struct dm_idem_ref *ref)
{
    const char *argv[] = {"del"};
    holder(ref, NULL, NULL, 1, argv, NULL);
}

void dm_idem_renew(const struct dm_idem_ref *ref, const struct dm_idem_attempt *mine,
                   int64_t pending_ms, dm_idem_done_cb cb, void *arg)
{
    char pending[24], attempt[ATTEMPT_LEN];

    snprintf(pending, sizeof(pending), "%lld", (long long)pending_ms);
    format_attempt(attempt, mine);
    const char *argv[] = {"renew", pending, attempt};
    holder(ref, cb, arg, 3, argv, NULL);
}

void dm_idem_release(const struct dm_idem_ref *ref)
{
    const char *argv[] = {"release"};
    holder(ref, NULL, NULL, 1, argv, NULL);
}
