/* Comment admission: GCRA limits and room modes in one Redis script, and a
 * bounded local limiter with the same rules while Redis does not answer. */
#include "server/ratelimit.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "common/check.h"
#include "common/config.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/redis.h"
#include "common/util.h"

#define DM_RATELIMIT_MAGIC 0x726c696du
#define US_PER_S           INT64_C(1000000)
/* A key lives in one of WINDOW slots from its home slot; a lookup compares
 * them all, so slots are reused in place and never leave tombstones. */
#define WINDOW 8
/* Cached room modes stay worth keeping at least this long after Redis (or
 * this node) last told them. */
#define MODES_KEEP_US (600 * US_PER_S)
#define NONE          INT64_MIN
/* Longest Redis key: prefix (cut at 128), fixed parts, room, uid. */
#define KEY_MAX (128 + 32 + DM_ROOM_ID_MAX + DM_RATELIMIT_UID_MAX)
#define NKEYS   6

/* ------------------------------------------------------------------------
 * The script (KEYS and ARGV in ratelimit.h). Numbers are passed to
 * redis.call as Lua numbers, which Redis converts exactly (never with ..,
 * which would print µs times with 14 digits). Decisions use only `now`;
 * the TTLs just clean up.
 * --------------------------------------------------------------------- */

static const char check_script[] =
    "local now = tonumber(ARGV[1])\n"
    "if not now then\n"
    "  if redis.replicate_commands then redis.replicate_commands() end\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "end\n"
    "local m = redis.call('HMGET', KEYS[3], 'slow', 'unique')\n"
    "local slow = math.floor(tonumber(m[1]) or 0)\n"
    "local uniq = math.floor(tonumber(m[2]) or 0)\n"
    "if slow < 0 then slow = 0 end\n"
    "if uniq < 0 then uniq = 0 end\n"
    "if m[1] or m[2] then\n"
    "  local keep = tonumber(ARGV[7])\n"
    "  local ttl = redis.call('PTTL', KEYS[3])\n"
    "  if ttl >= 0 and ttl < keep / 2 then redis.call('PEXPIRE', KEYS[3], keep) end\n"
    "end\n"
    "local mute = redis.call('PTTL', KEYS[4])\n"
    "if mute ~= -2 then\n"
    "  if mute < 0 then mute = 0 end\n"
    "  return {5, mute, slow, uniq}\n"
    "end\n"
    "local verdict, wait = 0, 0\n"
    "local function deny(v, w)\n"
    "  if verdict == 0 then verdict = v end\n"
    "  if w > wait then wait = w end\n"
    "end\n"
    "if uniq > 0 then\n"
    "  local at = tonumber(redis.call('ZSCORE', KEYS[6], ARGV[6]))\n"
    "  if at and now < at + uniq * 1000000 then deny(4, at + uniq * 1000000 - now) end\n"
    "end\n"
    "if slow > 0 then\n"
    "  local last = tonumber(redis.call('GET', KEYS[5]))\n"
    "  if last and now < last + slow * 1000000 then deny(3, last + slow * 1000000 - now) end\n"
    "end\n"
    "local function gcra(key, interval, burst)\n"
    "  if interval <= 0 then return nil, 0 end\n"
    "  local tat = tonumber(redis.call('GET', key)) or now\n"
    "  if tat < now then tat = now end\n"
    "  return tat + interval, tat + interval - interval * burst - now\n"
    "end\n"
    "local utat, uwait = gcra(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))\n"
    "if uwait > 0 then deny(1, uwait) end\n"
    "local rtat, rwait = gcra(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))\n"
    "if rwait > 0 then deny(2, rwait) end\n"
    "if verdict ~= 0 then return {verdict, math.ceil(wait / 1000), slow, uniq} end\n"
    "if utat then redis.call('SET', KEYS[1], utat, 'PX', math.ceil((utat - now) / 1000)) end\n"
    "if rtat then redis.call('SET', KEYS[2], rtat, 'PX', math.ceil((rtat - now) / 1000)) end\n"
    "if slow > 0 then redis.call('SET', KEYS[5], now, 'PX', slow * 1000) end\n"
    "if uniq > 0 then\n"
    "  redis.call('ZADD', KEYS[6], now, ARGV[6])\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - uniq * 1000000)\n"
    "  local over = redis.call('ZCARD', KEYS[6]) - tonumber(ARGV[8])\n"
    "  if over > 0 then redis.call('ZREMRANGEBYRANK', KEYS[6], 0, over - 1) end\n"
    "  redis.call('PEXPIRE', KEYS[6], uniq * 1000)\n"
    "end\n"
    "return {0, 0, slow, uniq}\n";

/* KEYS[1] the modes hash; ARGV slow, unique (seconds), TTL (ms). */
static const char modes_script[] =
    "if tonumber(ARGV[1]) == 0 and tonumber(ARGV[2]) == 0 then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  return 0\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'slow', ARGV[1], 'unique', ARGV[2])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "return 1\n";

/* ------------------------------------------------------------------------
 * The local table
 * --------------------------------------------------------------------- */

enum kind { KIND_USER = 'u', KIND_ROOM = 'r', KIND_MEMBER = 'm' };

/* One slot. The key is a keyed hash (SipHash, per-process random key) of
 * the kind and ids, so ids are not stored and crafted ids cannot aim at
 * another's slot; two ids sharing a 64-bit hash share a budget. */
struct entry {
    uint64_t key;       /* 0: empty */
    int64_t expires_us; /* after this the entry holds nothing worth keeping */
    union {
        struct {
            int64_t tat_us;
        } user;
        struct {
            int64_t tat_us;
            int64_t modes_until_us; /* cached modes worth keeping until then */
            int32_t slow_s;
            int32_t unique_s;
        } room;
        struct {
            int64_t last_post_us; /* slow mode; NONE: none */
            int64_t text_at_us;   /* unique mode: when text_hash was admitted; NONE */
            int64_t muted_until_us;
            uint64_t text_hash;
        } member;
    } u;
};

_Static_assert(sizeof(struct entry) == 48, "ratelimit_local_max_keys help says 48 bytes");

struct table {
    struct entry *slots;
    size_t nslots;
    size_t window; /* min(WINDOW, nslots) */
    size_t used;
    unsigned long evictions;
    uint64_t seed[2];
};

struct dm_ratelimit {
    unsigned magic;
    struct dm_redis *redis;      /* borrowed; NULL: local only */
    const struct dm_config *cfg; /* borrowed */
    int64_t user_interval_us;    /* 0: no user limit */
    int64_t user_burst;
    int64_t room_interval_us; /* 0: no room limit */
    int64_t room_burst;
    char sha[41];       /* of check_script, for EVALSHA */
    bool script_loaded; /* Redis answered an EVAL or EVALSHA of it */
    bool local_mode;    /* the last decision was local (logged on change) */
    size_t inflight;    /* Redis calls whose callback has not fired */
    dm_ratelimit_clock_cb clock;
    void *clock_arg;
    struct table table;
    unsigned long decisions[DM_RATELIMIT_NVERDICTS];
    unsigned long fallbacks;
};

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

/* SipHash-2-4 (Aumasson and Bernstein, reference implementation). */
static uint64_t siphash(const unsigned char *in, size_t len, const uint64_t k[2])
{
    uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k[0];
    uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ k[1];
    uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ k[0];
    uint64_t v3 = UINT64_C(0x7465646279746573) ^ k[1];
    uint64_t b = (uint64_t)len << 56;
    size_t i, full = len - len % 8;

    for (i = 0; i < full; i += 8) {
        uint64_t m = 0;
        for (int j = 0; j < 8; j++)
            m |= (uint64_t)in[i + (size_t)j] << (8 * j);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (int j = 0; i + (size_t)j < len; j++)
        b |= (uint64_t)in[i + (size_t)j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static void table_init(struct table *t, size_t nslots)
{
    DM_ASSERT(nslots > 0);
    t->slots = dm_calloc(nslots, sizeof(*t->slots));
    t->nslots = nslots;
    t->window = nslots < WINDOW ? nslots : WINDOW;
    if (getrandom(t->seed, sizeof(t->seed), GRND_NONBLOCK) != (ssize_t)sizeof(t->seed)) {
        /* No entropy yet (early boot): still distinct per process. */
        t->seed[0] = (uint64_t)dm_now_us() * UINT64_C(0x9e3779b97f4a7c15);
        t->seed[1] = (uint64_t)getpid() ^ (uint64_t)dm_mono_us();
    }
}

static void table_fini(struct table *t)
{
    free(t->slots);
    t->slots = NULL;
}

/* The slot key of (kind, room, uid); room or uid may be NULL. */
static uint64_t table_key(const struct table *t, enum kind kind, const char *room, const char *uid)
{
    unsigned char buf[1 + DM_ROOM_ID_MAX + 1 + DM_RATELIMIT_UID_MAX];
    size_t n = 0, len;

    buf[n++] = (unsigned char)kind;
    if (room != NULL) {
        len = strnlen(room, DM_ROOM_ID_MAX + 1);
        DM_ASSERT(len <= DM_ROOM_ID_MAX);
        memcpy(buf + n, room, len);
        n += len;
    }
    buf[n++] = 0;
    if (uid != NULL) {
        len = strnlen(uid, DM_RATELIMIT_UID_MAX + 1);
        DM_ASSERT(len <= DM_RATELIMIT_UID_MAX);
        memcpy(buf + n, uid, len);
        n += len;
    }
    uint64_t k = siphash(buf, n, t->seed);
    return k != 0 ? k : 1;
}

static struct entry *table_find(struct table *t, uint64_t key)
{
    size_t home = (size_t)(key % t->nslots);
    for (size_t w = 0; w < t->window; w++) {
        struct entry *e = &t->slots[(home + w) % t->nslots];
        if (e->key == key)
            return e;
    }
    return NULL;
}

/* Which slot to give up first: empty ones, then the state that ends first. */
static int64_t rank(const struct entry *e)
{
    return e->key == 0 ? INT64_MIN : e->expires_us;
}

/* The entry of key, or a zeroed one claimed for it (*fresh): an empty slot
 * of the window, else the one whose state ends first (an expired one when
 * there is any). Pointers from earlier calls may now name another key. */
static struct entry *table_claim(struct table *t, uint64_t key, int64_t now, bool *fresh)
{
    size_t home = (size_t)(key % t->nslots);
    struct entry *victim = NULL;

    for (size_t w = 0; w < t->window; w++) {
        struct entry *e = &t->slots[(home + w) % t->nslots];
        if (e->key == key) {
            *fresh = false;
            return e;
        }
        if (victim == NULL || rank(e) < rank(victim))
            victim = e;
    }
    if (victim->key == 0)
        t->used++;
    else if (victim->expires_us > now)
        t->evictions++;
    memset(victim, 0, sizeof(*victim));
    victim->key = key;
    *fresh = true;
    return victim;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static struct entry *claim_member(struct table *t, const char *room, const char *uid, int64_t now)
{
    bool fresh;
    struct entry *e = table_claim(t, table_key(t, KIND_MEMBER, room, uid), now, &fresh);
    if (fresh) {
        e->u.member.last_post_us = NONE;
        e->u.member.text_at_us = NONE;
        e->u.member.muted_until_us = NONE;
        e->expires_us = NONE;
    }
    return e;
}

/* ------------------------------------------------------------------------
 * Pure parts
 * --------------------------------------------------------------------- */

bool dm_ratelimit_gcra(int64_t tat_us, int64_t now_us, int64_t interval_us, int64_t burst,
                       int64_t *new_tat_us, int64_t *wait_us)
{
    DM_ASSERT(interval_us > 0 && burst >= 1);
    int64_t tat = tat_us > now_us ? tat_us : now_us;
    int64_t next = tat + interval_us;
    /* Admitted while the new TAT stays within burst intervals of now. */
    int64_t wait = next - interval_us * burst - now_us;
    if (wait > 0) {
        *wait_us = wait;
        return false;
    }
    *new_tat_us = next;
    return true;
}

int64_t dm_ratelimit_retry_after_s(int64_t retry_after_ms)
{
    int64_t s = retry_after_ms > 0 ? (retry_after_ms + 999) / 1000 : 1;
    return s < 1 ? 1 : s;
}

static int64_t ceil_ms(int64_t us)
{
    return us > 0 ? (us + 999) / 1000 : 0;
}

#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME  UINT64_C(0x100000001b3)

uint64_t dm_ratelimit_text_hash(const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    uint64_t h = FNV_OFFSET;
    bool space = false, any = false;
    size_t i = 0;

    while (i < len) {
        size_t left = len - i, n = 1;
        unsigned c = p[i];
        bool blank = false, skip = false;

        if (left >= 2 && p[i] == 0xc2 && p[i + 1] == 0xa0) {
            n = 2, blank = true; /* U+00A0 */
        } else if (left >= 3 && p[i] == 0xe3 && p[i + 1] == 0x80 && p[i + 2] == 0x80) {
            n = 3, blank = true; /* U+3000 ideographic space */
        } else if (left >= 3 && p[i] == 0xe2 && p[i + 1] == 0x80 && p[i + 2] >= 0x8b &&
                   p[i + 2] <= 0x8d) {
            n = 3, skip = true; /* U+200B..U+200D */
        } else if (left >= 3 && p[i] == 0xe2 && p[i + 1] == 0x81 && p[i + 2] == 0xa0) {
            n = 3, skip = true; /* U+2060 */
        } else if (left >= 3 && p[i] == 0xef && p[i + 1] == 0xbb && p[i + 2] == 0xbf) {
            n = 3, skip = true; /* U+FEFF */
        } else if (left >= 3 && p[i] == 0xef && p[i + 1] == 0xbc && p[i + 2] >= 0x81 &&
                   p[i + 2] <= 0xbf) {
            n = 3, c = 0x21 + (p[i + 2] - 0x81u); /* U+FF01..U+FF3F */
        } else if (left >= 3 && p[i] == 0xef && p[i + 1] == 0xbd && p[i + 2] >= 0x80 &&
                   p[i + 2] <= 0x9e) {
            n = 3, c = 0x60 + (p[i + 2] - 0x80u); /* U+FF40..U+FF5E */
        } else if (c == ' ' || (c >= '\t' && c <= '\r')) {
            blank = true;
        }
        i += n;
        if (skip)
            continue;
        if (blank) {
            space = any;
            continue;
        }
        if (space) {
            h = (h ^ ' ') * FNV_PRIME;
            space = false;
        }
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        h = (h ^ c) * FNV_PRIME;
        any = true;
    }
    return h;
}

const char *dm_ratelimit_verdict_name(enum dm_ratelimit_verdict verdict)
{
    static const char *const names[DM_RATELIMIT_NVERDICTS] = {"admit",     "user_rate", "room_rate",
                                                              "slow_mode", "duplicate", "muted"};
    DM_ASSERT((unsigned)verdict < DM_RATELIMIT_NVERDICTS);
    return names[verdict];
}

const char *dm_ratelimit_script(void)
{
    return check_script;
}

/* ------------------------------------------------------------------------
 * The local limiter: the script's rules on the table
 * --------------------------------------------------------------------- */

struct verdict_acc {
    enum dm_ratelimit_verdict verdict;
    int64_t wait_us;
};

static void deny(struct verdict_acc *a, enum dm_ratelimit_verdict v, int64_t wait_us)
{
    if (a->verdict == DM_RATELIMIT_ADMIT)
        a->verdict = v;
    if (wait_us > a->wait_us)
        a->wait_us = wait_us;
}

static struct dm_ratelimit_result local_check(struct dm_ratelimit *rl, const char *room,
                                              const char *uid, uint64_t text_hash, int64_t now)
{
    struct table *t = &rl->table;
    struct dm_ratelimit_result res = {DM_RATELIMIT_ADMIT, 0, true};
    struct verdict_acc acc = {DM_RATELIMIT_ADMIT, 0};
    uint64_t ukey = table_key(t, KIND_USER, NULL, uid);
    uint64_t rkey = table_key(t, KIND_ROOM, room, NULL);
    struct entry *m = table_find(t, table_key(t, KIND_MEMBER, room, uid));
    struct entry *r = table_find(t, rkey);
    struct entry *u = table_find(t, ukey);
    int64_t slow = r != NULL ? r->u.room.slow_s : 0;
    int64_t uniq = r != NULL ? r->u.room.unique_s : 0;
    int64_t utat = 0, rtat = 0, wait;

    if (m != NULL && m->u.member.muted_until_us > now) {
        res.verdict = DM_RATELIMIT_MUTED;
        res.retry_after_ms = ceil_ms(m->u.member.muted_until_us - now);
        return res;
    }
    if (uniq > 0 && m != NULL && m->u.member.text_at_us != NONE &&
        m->u.member.text_hash == text_hash && now < m->u.member.text_at_us + uniq * US_PER_S)
        deny(&acc, DM_RATELIMIT_DUPLICATE, m->u.member.text_at_us + uniq * US_PER_S - now);
    if (slow > 0 && m != NULL && m->u.member.last_post_us != NONE &&
        now < m->u.member.last_post_us + slow * US_PER_S)
        deny(&acc, DM_RATELIMIT_SLOW_MODE, m->u.member.last_post_us + slow * US_PER_S - now);
    if (rl->user_interval_us > 0 &&
        !dm_ratelimit_gcra(u != NULL ? u->u.user.tat_us : now, now, rl->user_interval_us,
                           rl->user_burst, &utat, &wait))
        deny(&acc, DM_RATELIMIT_USER_RATE, wait);
    if (rl->room_interval_us > 0 &&
        !dm_ratelimit_gcra(r != NULL ? r->u.room.tat_us : now, now, rl->room_interval_us,
                           rl->room_burst, &rtat, &wait))
        deny(&acc, DM_RATELIMIT_ROOM_RATE, wait);
    if (acc.verdict != DM_RATELIMIT_ADMIT) {
        res.verdict = acc.verdict;
        res.retry_after_ms = ceil_ms(acc.wait_us);
        return res;
    }

    /* Admitted: write back. Each claim may evict what an earlier one
     * returned, so every entry is claimed again, and the room's modes are
     * written from the copies above. */
    bool fresh;
    if (rl->user_interval_us > 0) {
        u = table_claim(t, ukey, now, &fresh);
        u->u.user.tat_us = utat;
        u->expires_us = utat;
    }
    if (rl->room_interval_us > 0 || slow > 0 || uniq > 0) {
        r = table_claim(t, rkey, now, &fresh);
        if (fresh && (slow > 0 || uniq > 0))
            r->u.room.modes_until_us = now + MODES_KEEP_US;
        r->u.room.slow_s = (int32_t)slow;
        r->u.room.unique_s = (int32_t)uniq;
        if (rl->room_interval_us > 0)
            r->u.room.tat_us = rtat;
        r->expires_us = max64(r->u.room.tat_us, r->u.room.modes_until_us);
    }
    if (slow > 0 || uniq > 0) {
        m = claim_member(t, room, uid, now);
        if (slow > 0)
            m->u.member.last_post_us = now;
        if (uniq > 0) {
            m->u.member.text_hash = text_hash;
            m->u.member.text_at_us = now;
        }
        m->expires_us =
            max64(max64(now + slow * US_PER_S, now + uniq * US_PER_S), m->u.member.muted_until_us);
    }
    return res;
}

/* What Redis said about a room's modes, kept for the fallback. Absent
 * entries mean no modes, so rooms without any cost no slot. */
static void learn_modes(struct dm_ratelimit *rl, const char *room, int64_t slow, int64_t uniq,
                        int64_t now)
{
    struct table *t = &rl->table;
    uint64_t key = table_key(t, KIND_ROOM, room, NULL);
    struct entry *r = table_find(t, key);
    bool fresh;

    if (r == NULL && slow == 0 && uniq == 0)
        return;
    if (r == NULL)
        r = table_claim(t, key, now, &fresh);
    r->u.room.slow_s = (int32_t)slow;
    r->u.room.unique_s = (int32_t)uniq;
    r->u.room.modes_until_us = slow > 0 || uniq > 0 ? now + MODES_KEEP_US : 0;
    r->expires_us = max64(r->u.room.tat_us, r->u.room.modes_until_us);
}

/* A mute until `until` (NONE: lifted). A lifted mute costs no slot. */
static void learn_mute(struct dm_ratelimit *rl, const char *room, const char *uid, int64_t until,
                       int64_t now)
{
    struct table *t = &rl->table;
    struct entry *m;

    if (until == NONE) {
        m = table_find(t, table_key(t, KIND_MEMBER, room, uid));
        if (m != NULL)
            m->u.member.muted_until_us = NONE;
        return;
    }
    m = claim_member(t, room, uid, now);
    m->u.member.muted_until_us = until;
    m->expires_us = max64(m->expires_us, until);
}

/* ------------------------------------------------------------------------
 * Lifecycle
 * --------------------------------------------------------------------- */

static int64_t default_clock(void *arg)
{
    DM_UNUSED(arg);
    return dm_mono_us();
}

struct dm_ratelimit *dm_ratelimit_new(struct dm_redis *redis, const struct dm_config *cfg)
{
    struct dm_ratelimit *rl = dm_calloc(1, sizeof(*rl));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;

    rl->magic = DM_RATELIMIT_MAGIC;
    rl->redis = redis;
    rl->cfg = cfg;
    rl->user_interval_us = cfg->ratelimit_user_rate > 0 ? US_PER_S / cfg->ratelimit_user_rate : 0;
    rl->user_burst = cfg->ratelimit_user_burst;
    rl->room_interval_us = cfg->ratelimit_room_rate > 0 ? US_PER_S / cfg->ratelimit_room_rate : 0;
    rl->room_burst = cfg->ratelimit_room_burst;
    DM_ASSERT(rl->user_burst >= 1 && rl->room_burst >= 1);
    rl->clock = default_clock;
    DM_AN(EVP_Digest(check_script, sizeof(check_script) - 1, md, &mdlen, EVP_sha1(), NULL));
    DM_ASSERT(mdlen == 20);
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(rl->sha + 2 * i, 3, "%02x", md[i]);
    table_init(&rl->table, (size_t)cfg->ratelimit_local_max_keys);
    return rl;
}

void dm_ratelimit_free(struct dm_ratelimit *rl)
{
    if (rl == NULL)
        return;
    DM_CHECK_OBJ(rl, DM_RATELIMIT_MAGIC);
    DM_ASSERT(rl->inflight == 0);
    table_fini(&rl->table);
    rl->magic = 0;
    free(rl);
}

void dm_ratelimit_set_clock(struct dm_ratelimit *rl, dm_ratelimit_clock_cb clock, void *arg)
{
    DM_CHECK_OBJ(rl, DM_RATELIMIT_MAGIC);
    rl->clock = clock != NULL ? clock : default_clock;
    rl->clock_arg = clock != NULL ? arg : NULL;
}

static int64_t now_us(const struct dm_ratelimit *rl)
{
    return rl->clock(rl->clock_arg);
}

/* ------------------------------------------------------------------------
 * Checks through Redis
 * --------------------------------------------------------------------- */

/* One check in flight. */
struct call {
    struct dm_ratelimit *rl;
    dm_ratelimit_cb cb;
    void *arg;
    uint64_t text_hash;
    bool retried; /* resent with EVAL after NOSCRIPT */
    char room[DM_ROOM_ID_MAX + 1];
    char uid[DM_RATELIMIT_UID_MAX + 1];
};

static void copy_ids(char room[DM_ROOM_ID_MAX + 1], char uid[DM_RATELIMIT_UID_MAX + 1],
                     const char *room_in, const char *uid_in)
{
    size_t rlen = strnlen(room_in, DM_ROOM_ID_MAX + 1);
    DM_ASSERT(rlen >= 1 && rlen <= DM_ROOM_ID_MAX);
    memcpy(room, room_in, rlen + 1);
    if (uid_in != NULL) {
        size_t ulen = strnlen(uid_in, DM_RATELIMIT_UID_MAX + 1);
        DM_ASSERT(ulen >= 1 && ulen <= DM_RATELIMIT_UID_MAX);
        memcpy(uid, uid_in, ulen + 1);
    }
}

static void finish(struct dm_ratelimit *rl, const struct dm_ratelimit_result *res,
                   dm_ratelimit_cb cb, void *arg)
{
    rl->decisions[res->verdict]++;
    if (res->local != rl->local_mode && rl->redis != NULL) {
        rl->local_mode = res->local;
        if (res->local)
            DM_LOG(DM_LOG_WARN, "msg=\"rate limits decided locally: Redis did not answer\"");
        else
            DM_LOG(DM_LOG_INFO, "msg=\"rate limits decided by Redis again\"");
    }
    cb(res, arg);
}

static struct dm_ratelimit_result decide_locally(struct dm_ratelimit *rl, const char *room,
                                                 const char *uid, uint64_t text_hash)
{
    rl->fallbacks++;
    return local_check(rl, room, uid, text_hash, now_us(rl));
}

static void on_check_reply(const struct redisReply *reply, void *arg);

static int send_check(struct call *c)
{
    struct dm_ratelimit *rl = c->rl;
    const char *prefix = rl->cfg->redis_prefix;
    char keys[NKEYS][KEY_MAX];
    char uint_[24], uburst[24], rint[24], rburst[24], hash[24], keep[24], umax[24];
    size_t argvlen[3 + NKEYS + 8];

    snprintf(keys[0], KEY_MAX, "%.128srl:user:%s", prefix, c->uid);
    snprintf(keys[1], KEY_MAX, "%.128srl:room:{%s}", prefix, c->room);
    snprintf(keys[2], KEY_MAX, "%.128sroom:{%s}:modes", prefix, c->room);
    snprintf(keys[3], KEY_MAX, "%.128smute:{%s}:%s", prefix, c->room, c->uid);
    snprintf(keys[4], KEY_MAX, "%.128srl:slow:{%s}:%s", prefix, c->room, c->uid);
    snprintf(keys[5], KEY_MAX, "%.128srl:uniq:{%s}:%s", prefix, c->room, c->uid);
    snprintf(uint_, sizeof(uint_), "%" PRId64, rl->user_interval_us);
    snprintf(uburst, sizeof(uburst), "%" PRId64, rl->user_burst);
    snprintf(rint, sizeof(rint), "%" PRId64, rl->room_interval_us);
    snprintf(rburst, sizeof(rburst), "%" PRId64, rl->room_burst);
    snprintf(hash, sizeof(hash), "%016" PRIx64, c->text_hash);
    snprintf(keep, sizeof(keep), "%" PRId64, (int64_t)DM_RATELIMIT_MODES_TTL_S * 1000);
    snprintf(umax, sizeof(umax), "%d", DM_RATELIMIT_UNIQUE_MAX);

    /* EVALSHA once Redis has the script: 40 bytes instead of the text. */
    const char *argv[] = {rl->script_loaded ? "EVALSHA" : "EVAL",
                          rl->script_loaded ? rl->sha : check_script,
                          "6",
                          keys[0],
                          keys[1],
                          keys[2],
                          keys[3],
                          keys[4],
                          keys[5],
                          "time", /* ARGV[1]: Redis TIME, one clock for every node */
                          uint_,
                          uburst,
                          rint,
                          rburst,
                          hash,
                          keep,
                          umax};
    _Static_assert(DM_ARRAY_LEN(argv) == DM_ARRAY_LEN(argvlen), "argv");
    for (size_t i = 0; i < DM_ARRAY_LEN(argv); i++)
        argvlen[i] = strlen(argv[i]);
    return dm_redis_command(rl->redis, on_check_reply, c, (int)DM_ARRAY_LEN(argv), argv, argvlen);
}

/* The script's {verdict, retry_after_ms, slow_s, unique_s}; false when the
 * reply is anything else. */
static bool parse_reply(const struct redisReply *reply, struct dm_ratelimit_result *res,
                        int64_t *slow, int64_t *uniq)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4)
        return false;
    for (size_t i = 0; i < 4; i++)
        if (reply->element[i]->type != REDIS_REPLY_INTEGER)
            return false;
    long long v = reply->element[0]->integer, wait = reply->element[1]->integer;
    long long s = reply->element[2]->integer, u = reply->element[3]->integer;
    if (v < 0 || v >= DM_RATELIMIT_NVERDICTS || wait < 0 || s < 0 || u < 0)
        return false;
    res->verdict = (enum dm_ratelimit_verdict)v;
    res->retry_after_ms = wait;
    res->local = false;
    *slow = s > DM_RATELIMIT_MODE_MAX_S ? DM_RATELIMIT_MODE_MAX_S : s;
    *uniq = u > DM_RATELIMIT_MODE_MAX_S ? DM_RATELIMIT_MODE_MAX_S : u;
    return true;
}

static void on_check_reply(const struct redisReply *reply, void *arg)
{
    struct call *c = arg;
    struct dm_ratelimit *rl = c->rl;
    struct dm_ratelimit_result res;
    int64_t slow, uniq;

    DM_CHECK_OBJ(rl, DM_RATELIMIT_MAGIC);
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && !c->retried &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* Redis restarted or flushed its scripts: load it again with EVAL. */
        rl->script_loaded = false;
        c->retried = true;
        if (send_check(c) == 0)
            return;
    }
    if (parse_reply(reply, &res, &slow, &uniq)) {
        int64_t now = now_us(rl);
        rl->script_loaded = true;
        learn_modes(rl, c->room, slow, uniq, now);
        learn_mute(rl, c->room, c->uid,
                   res.verdict != DM_RATELIMIT_MUTED ? NONE
                   : res.retry_after_ms > 0          ? now + res.retry_after_ms * 1000
                                                     : now + MODES_KEEP_US,
                   now);
    } else {
        if (reply != NULL && reply->type != REDIS_REPLY_ERROR)
            DM_LOG(DM_LOG_WARN, "msg=\"unexpected ratelimit script reply\" type=%d", reply->type);
        res = decide_locally(rl, c->room, c->uid, c->text_hash);
    }
    dm_ratelimit_cb cb = c->cb;
    void *cb_arg = c->arg;
    rl->inflight--;
    free(c);
    finish(rl, &res, cb, cb_arg);
}

void dm_ratelimit_check(struct dm_ratelimit *rl, const struct dm_ratelimit_req *req,
                        dm_ratelimit_cb cb, void *arg)
{
    struct dm_ratelimit_result res = {DM_RATELIMIT_ADMIT, 0, false};

    DM_CHECK_OBJ(rl, DM_RATELIMIT_MAGIC);
    DM_AN(req->room);
    DM_AN(req->uid);
    DM_AN(cb);
    if (req->exempt) {
        finish(rl, &res, cb, arg);
        return;
    }
    struct call *c = dm_calloc(1, sizeof(*c));
    c->rl = rl;
    c->cb = cb;
    c->arg = arg;
    c->text_hash = dm_ratelimit_text_hash(req->text, req->text_len);
    copy_ids(c->room, c->uid, req->room, req->uid);
    if (rl->redis != NULL) {
        rl->inflight++;
        if (send_check(c) == 0)
            return;
        rl->inflight--;
    }
    res = decide_locally(rl, c->room, c->uid, c->text_hash);
    free(c);
    finish(rl, &res, cb, arg);
}

/* ------------------------------------------------------------------------
 * Moderation
 * --------------------------------------------------------------------- */

enum mod_op { MOD_MODES, MOD_MUTE, MOD_UNMUTE };

struct mod_call {
    struct dm_ratelimit *rl;
    dm_ratelimit_done_cb cb;
    void *arg;
    enum mod_op op;
    int64_t a, b; /* MODES: slow, unique; MUTE: seconds */
    char room[DM_ROOM_ID_MAX + 1];
    char uid[DM_RATELIMIT_UID_MAX + 1];
};

/* This node's cache follows a change Redis stored (or, without Redis, the
 * change is only that). */
static void mod_apply(struct mod_call *mc)
{
    struct dm_ratelimit *rl = mc->rl;
    int64_t now = now_us(rl);

    switch (mc->op) {
    case MOD_MODES:
        learn_modes(rl, mc->room, mc->a, mc->b, now);
        break;
    case MOD_MUTE:
        learn_mute(rl, mc->room, mc->uid, now + mc->a * US_PER_S, now);
        break;
    case MOD_UNMUTE:
        learn_mute(rl, mc->room, mc->uid, NONE, now);
        break;
    }
}

static void mod_finish(struct mod_call *mc, bool ok)
{
    dm_ratelimit_done_cb cb = mc->cb;
    void *arg = mc->arg;
    if (ok)
        mod_apply(mc);
    free(mc);
    if (cb != NULL)
        cb(ok, arg);
}

static void on_mod_reply(const struct redisReply *reply, void *arg)
{
    struct mod_call *mc = arg;
    DM_CHECK_OBJ(mc->rl, DM_RATELIMIT_MAGIC);
    mc->rl->inflight--;
    mod_finish(mc, reply != NULL && reply->type != REDIS_REPLY_ERROR);
}

static void mod_send(struct mod_call *mc)
{
    struct dm_ratelimit *rl = mc->rl;
    const char *prefix = rl->cfg->redis_prefix;
    char key[KEY_MAX], a[24], b[24], ttl[24];
    int rc;

    if (rl->redis == NULL) {
        mod_finish(mc, true);
        return;
    }
    rl->inflight++;
    switch (mc->op) {
    case MOD_MODES:
        snprintf(key, sizeof(key), "%.128sroom:{%s}:modes", prefix, mc->room);
        snprintf(a, sizeof(a), "%" PRId64, mc->a);
        snprintf(b, sizeof(b), "%" PRId64, mc->b);
        snprintf(ttl, sizeof(ttl), "%" PRId64, (int64_t)DM_RATELIMIT_MODES_TTL_S * 1000);
        rc = dm_redis_commandf(rl->redis, on_mod_reply, mc, "EVAL %s 1 %s %s %s %s", modes_script,
                               key, a, b, ttl);
        break;
    case MOD_MUTE:
        snprintf(key, sizeof(key), "%.128smute:{%s}:%s", prefix, mc->room, mc->uid);
        snprintf(ttl, sizeof(ttl), "%" PRId64, mc->a * 1000);
        rc = dm_redis_commandf(rl->redis, on_mod_reply, mc, "SET %s 1 PX %s", key, ttl);
        break;
    case MOD_UNMUTE:
    default:
        snprintf(key, sizeof(key), "%.128smute:{%s}:%s", prefix, mc->room, mc->uid);
        rc = dm_redis_commandf(rl->redis, on_mod_reply, mc, "DEL %s", key);
        break;
    }
    if (rc < 0) {
        rl->inflight--;
        mod_finish(mc, false);
    }
}

static struct mod_call *mod_new(struct dm_ratelimit *rl, enum mod_op op, const char *room,
                                const char *uid, dm_ratelimit_done_cb cb, void *arg)
{
    DM_CHECK_OBJ(rl, DM_RATELIMIT_MAGIC);
    DM_AN(room);
    struct mod_call *mc = dm_calloc(1, sizeof(*mc));
    mc->rl = rl;
    mc->cb = cb;
    mc->arg = arg;
    mc->op = op;
    copy_ids(mc->room, mc->uid, room, uid);
    return mc;
}

void dm_ratelimit_set_modes(struct dm_ratelimit *rl, const char *room, int64_t slow_s,
                            int64_t unique_s, dm_ratelimit_done_cb cb, void *arg)
{
    DM_ASSERT(slow_s >= 0 && slow_s <= DM_RATELIMIT_MODE_MAX_S);
    DM_ASSERT(unique_s >= 0 && unique_s <= DM_RATELIMIT_MODE_MAX_S);
    struct mod_call *mc = mod_new(rl, MOD_MODES, room, NULL, cb, arg);
    mc->a = slow_s;
    mc->b = unique_s;
    mod_send(mc);
}

void dm_ratelimit_mute(struct dm_ratelimit *rl, const char *room, const char *uid, int64_t seconds,
                       dm_ratelimit_done_cb cb, void *arg)
{
    DM_ASSERT(seconds >= 1 && seconds <= DM_RATELIMIT_MUTE_MAX_S);
    DM_AN(uid);
    struct mod_call *mc = mod_new(rl, MOD_MUTE, room, uid, cb, arg);
    mc->a = seconds;
    mod_send(mc);
}

void dm_ratelimit_unmute(struct dm_ratelimit *rl, const char *room, const char *uid,
                         dm_ratelimit_done_cb cb, void *arg)
{
    DM_AN(uid);
    mod_send(mod_new(rl, MOD_UNMUTE, room, uid, cb, arg));
}

/* ------------------------------------------------------------------------
 * Accessors
 * --------------------------------------------------------------------- */

unsigned long dm_ratelimit_decisions(const struct dm_ratelimit *rl,
                                     enum dm_ratelimit_verdict verdict)
{
    DM_ASSERT((unsigned)verdict < DM_RATELIMIT_NVERDICTS);
    return rl->decisions[verdict];
}

unsigned long dm_ratelimit_fallbacks(const struct dm_ratelimit *rl)
{
    return rl->fallbacks;
}

size_t dm_ratelimit_local_entries(const struct dm_ratelimit *rl)
{
    return rl->table.used;
}

unsigned long dm_ratelimit_local_evictions(const struct dm_ratelimit *rl)
{
    return rl->table.evictions;
}
