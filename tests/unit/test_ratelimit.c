/* server/ratelimit.c: the GCRA step exactly over injected time, the text
 * hash, the local limiter's rules and its bounded table, and — when
 * DANMAKU_TEST_REDIS_PORT names a Redis (tests/run.sh sets it) — the Redis
 * path end to end. `test_ratelimit --print-lua` prints the admission script
 * for tests/integration/test_ratelimit_redis.py. */
#include "server/ratelimit.c"

#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <event2/event.h>

#include "tests/unit/tap.h"

#define MS INT64_C(1000)
#define S  INT64_C(1000000)

/* ---- helpers ---- */

static struct dm_config cfg_store[8];
static int ncfg;

/* A config from flags ("--ratelimit-user-rate=2", ...), NULL-terminated. */
static const struct dm_config *config(const char *first, ...)
{
    char *argv[32];
    int argc = 0;
    char err[DM_ERRLEN];
    va_list ap;

    DM_ASSERT(ncfg < (int)DM_ARRAY_LEN(cfg_store));
    argv[argc++] = (char *)"test";
    va_start(ap, first);
    for (const char *a = first; a != NULL && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    struct dm_config *cfg = &cfg_store[ncfg++];
    if (dm_config_load(cfg, DM_CONF_I, "test", argc, argv, stderr, err) != 0) {
        fprintf(stderr, "config: %s\n", err);
        abort();
    }
    dm_log_min_level = DM_LOG_ERROR; /* the load set it from log_level */
    return cfg;
}

static int64_t fake_now;

static int64_t fake_clock(void *arg)
{
    DM_UNUSED(arg);
    return fake_now;
}

struct capture {
    bool done;
    int calls;
    struct dm_ratelimit_result res;
};

static void on_result(const struct dm_ratelimit_result *res, void *arg)
{
    struct capture *c = arg;
    c->done = true;
    c->calls++;
    c->res = *res;
}

struct done {
    bool fired;
    bool ok;
};

static void on_done(bool ok, void *arg)
{
    struct done *d = arg;
    d->fired = true;
    d->ok = ok;
}

/* A synchronous check for a limiter without Redis. */
static struct dm_ratelimit_result check(struct dm_ratelimit *rl, const char *room, const char *uid,
                                        const char *text, bool exempt)
{
    struct capture c = {0};
    struct dm_ratelimit_req req = {room, uid, text, strlen(text), exempt};
    dm_ratelimit_check(rl, &req, on_result, &c);
    DM_ASSERT(c.calls == 1);
    return c.res;
}

static bool is(struct dm_ratelimit_result r, enum dm_ratelimit_verdict v, int64_t retry_ms)
{
    if (r.verdict == v && r.retry_after_ms == retry_ms)
        return true;
    printf("#   got %s retry_after_ms=%lld, want %s %lld\n", dm_ratelimit_verdict_name(r.verdict),
           (long long)r.retry_after_ms, dm_ratelimit_verdict_name(v), (long long)retry_ms);
    return false;
}

static struct dm_ratelimit *local_limiter(const struct dm_config *cfg)
{
    struct dm_ratelimit *rl = dm_ratelimit_new(NULL, cfg);
    dm_ratelimit_set_clock(rl, fake_clock, NULL);
    /* A fixed hash key, so table placement (and any eviction) reproduces. */
    rl->table.seed[0] = UINT64_C(0x0123456789abcdef);
    rl->table.seed[1] = UINT64_C(0xfedcba9876543210);
    fake_now = 1000 * S; /* any start: the clock is opaque */
    return rl;
}

/* ---- pure parts ---- */

static void test_gcra(void)
{
    int64_t tat = 0, next = -1, wait = -1;
    const int64_t T = 500 * MS; /* rate 2/s */

    /* rate 2/s, burst 3: three at t=0, the fourth waits 500 ms. */
    for (int i = 0; i < 3; i++) {
        ok(dm_ratelimit_gcra(tat, 0, T, 3, &next, &wait), "burst %d admitted at t=0", i + 1);
        tat = next;
    }
    ok(tat == 1500 * MS, "TAT after the burst is 1.5 s");
    ok(!dm_ratelimit_gcra(tat, 0, T, 3, &next, &wait) && wait == 500 * MS,
       "fourth at t=0 refused, retry after exactly 500 ms");
    ok(!dm_ratelimit_gcra(tat, 500 * MS - 1, T, 3, &next, &wait) && wait == 1,
       "1 µs early still refused, by 1 µs");
    ok(dm_ratelimit_gcra(tat, 500 * MS, T, 3, &next, &wait) && next == 2000 * MS,
       "admitted at exactly t=500 ms");
    tat = next;
    ok(!dm_ratelimit_gcra(tat, 500 * MS, T, 3, &next, &wait) && wait == 500 * MS,
       "then the next waits 500 ms again");
    ok(dm_ratelimit_gcra(tat, 1000 * MS, T, 3, &next, &wait), "one more at t=1 s");
    tat = next;
    /* A long pause refills the burst, never more. */
    for (int i = 0; i < 3; i++) {
        ok(dm_ratelimit_gcra(tat, 60 * S, T, 3, &next, &wait), "after a pause: burst %d", i + 1);
        tat = next;
    }
    ok(!dm_ratelimit_gcra(tat, 60 * S, T, 3, &next, &wait) && wait == 500 * MS,
       "after a pause: no more than the burst");

    /* Steady rate: exactly one per interval over a long run. */
    int admitted = 0;
    tat = 0;
    for (int64_t t = 0; t < 10 * S; t += 10 * MS)
        if (dm_ratelimit_gcra(tat, t, T, 1, &next, &wait)) {
            tat = next;
            admitted++;
        }
    ok(admitted == 20, "burst 1 over 10 s at 100 tries/s: exactly 20 admitted (got %d)", admitted);

    /* Unix µs times stay exact (the script uses doubles: < 2^53). */
    int64_t big = INT64_C(1700000000123456);
    ok(dm_ratelimit_gcra(0, big, 1 * S, 1, &next, &wait) && next == big + S, "µs epoch times");
    ok(!dm_ratelimit_gcra(next, big + 1, 1 * S, 1, &next, &wait) && wait == S - 1,
       "µs epoch times: wait exact");
}

static void test_retry_after(void)
{
    ok(dm_ratelimit_retry_after_s(0) == 1, "Retry-After at least 1 s (0 ms)");
    ok(dm_ratelimit_retry_after_s(1) == 1, "1 ms -> 1 s");
    ok(dm_ratelimit_retry_after_s(1000) == 1, "1000 ms -> 1 s");
    ok(dm_ratelimit_retry_after_s(1001) == 2, "1001 ms -> 2 s (rounded up)");
    ok(dm_ratelimit_retry_after_s(29001) == 30, "29001 ms -> 30 s");
    ok(dm_ratelimit_retry_after_s(-5) == 1, "negative -> 1 s");
    ok(strcmp(dm_ratelimit_verdict_name(DM_RATELIMIT_SLOW_MODE), "slow_mode") == 0 &&
           strcmp(dm_ratelimit_verdict_name(DM_RATELIMIT_ADMIT), "admit") == 0 &&
           strcmp(dm_ratelimit_verdict_name(DM_RATELIMIT_MUTED), "muted") == 0,
       "verdict names");
}

static uint64_t th(const char *s)
{
    return dm_ratelimit_text_hash(s, strlen(s));
}

static void test_text_hash(void)
{
    /* Pinned: every node must compute the same value. */
    ok(th("") == UINT64_C(0xcbf29ce484222325), "empty text: the FNV-1a offset basis");
    ok(th("a") == UINT64_C(0xaf63dc4c8601ec8c), "FNV-1a 64 of \"a\"");
    ok(th("hello world") == UINT64_C(0x779a65e7023cd2e7), "FNV-1a 64 of \"hello world\"");
    ok(th("Hello World") == th("hello world"), "ASCII case folded");
    ok(th("  hello \t\n world  ") == th("hello world"), "whitespace collapsed and trimmed");
    ok(th("\xef\xbc\xa8\xef\xbd\x85llo\xe3\x80\x80world\xef\xbc\x81") == th("hello world!"),
       "fullwidth letters/punctuation and U+3000 folded");
    ok(th("hel\xe2\x80\x8blo\xc2\xa0wor\xef\xbb\xbfld") == th("hello world"),
       "zero-width characters dropped, U+00A0 is a space");
    ok(th("hello world") != th("helloworld"), "a space still separates words");
    ok(th("hello world") != th("hello world!"), "different text, different hash");
    ok(th("\xe5\xbc\xb9\xe5\xb9\x95") == dm_ratelimit_text_hash("\xe5\xbc\xb9\xe5\xb9\x95x", 6),
       "length-bounded: bytes after len ignored");
    ok(th("\xe5\xbc\xb9\xe5\xb9\x95") != th("\xe5\xbc\xb9"), "other UTF-8 hashed as bytes");
    ok(th("\xef\xbc") != th(""), "a truncated sequence is hashed as bytes, not dropped");
}

static void test_siphash(void)
{
    /* The reference vectors (key 00..0f, input 00..n-1). */
    const uint64_t k[2] = {UINT64_C(0x0706050403020100), UINT64_C(0x0f0e0d0c0b0a0908)};
    unsigned char in[64];
    for (int i = 0; i < 64; i++)
        in[i] = (unsigned char)i;
    ok(siphash(in, 0, k) == UINT64_C(0x726fdb47dd0e0e31), "SipHash-2-4, 0 bytes");
    ok(siphash(in, 7, k) == UINT64_C(0xab0200f58b01d137), "SipHash-2-4, 7 bytes");
    ok(siphash(in, 8, k) == UINT64_C(0x93f5f5799a932462), "SipHash-2-4, 8 bytes");
    ok(siphash(in, 15, k) == UINT64_C(0xa129ca6149be45e5), "SipHash-2-4, 15 bytes");
    ok(siphash(in, 63, k) == UINT64_C(0x958a324ceb064572), "SipHash-2-4, 63 bytes");
}

/* ---- the local limiter through the public API (no Redis) ---- */

static void test_local_rates(void)
{
    const struct dm_config *cfg =
        config("--ratelimit-user-rate=2", "--ratelimit-user-burst=3", "--ratelimit-room-rate=0",
               "--ratelimit-local-max-keys=1024", NULL);
    struct dm_ratelimit *rl = local_limiter(cfg);
    int64_t t0 = fake_now;

    for (int i = 0; i < 3; i++)
        ok(is(check(rl, "r1", "alice", "hi", false), DM_RATELIMIT_ADMIT, 0), "alice %d admitted",
           i + 1);
    struct dm_ratelimit_result r = check(rl, "r1", "alice", "hi", false);
    ok(is(r, DM_RATELIMIT_USER_RATE, 500) && r.local, "4th: user_rate, retry 500 ms, local");
    ok(is(check(rl, "r2", "alice", "hi", false), DM_RATELIMIT_USER_RATE, 500),
       "the user limit spans rooms");
    ok(is(check(rl, "r1", "bob", "hi", false), DM_RATELIMIT_ADMIT, 0), "bob has his own budget");
    fake_now = t0 + 499 * MS + 1;
    ok(is(check(rl, "r1", "alice", "hi", false), DM_RATELIMIT_USER_RATE, 1),
       "just under 500 ms: retry rounds up to 1 ms");
    fake_now = t0 + 500 * MS;
    ok(is(check(rl, "r1", "alice", "hi", false), DM_RATELIMIT_ADMIT, 0), "t=500 ms: admitted");
    ok(is(check(rl, "r1", "alice", "hi", false), DM_RATELIMIT_USER_RATE, 500),
       "and the next waits 500 ms");
    ok(dm_ratelimit_fallbacks(rl) == 9, "every decision counted as local (%lu)",
       dm_ratelimit_fallbacks(rl));
    ok(dm_ratelimit_decisions(rl, DM_RATELIMIT_ADMIT) == 5 &&
           dm_ratelimit_decisions(rl, DM_RATELIMIT_USER_RATE) == 4,
       "decisions counted by verdict");
    dm_ratelimit_free(rl);
}

static void test_local_independence(void)
{
    /* User: one per 10 s; room: one per second. */
    const struct dm_config *cfg =
        config("--ratelimit-user-rate=1", "--ratelimit-user-burst=1", "--ratelimit-room-rate=1",
               "--ratelimit-room-burst=1", NULL);
    struct dm_ratelimit *rl = local_limiter(cfg);
    int64_t t0 = fake_now;
    rl->user_interval_us = 10 * S; /* 0.1/s: not expressible as a whole rate */

    ok(is(check(rl, "r", "a", "x", false), DM_RATELIMIT_ADMIT, 0), "a admitted");
    ok(is(check(rl, "r", "b", "x", false), DM_RATELIMIT_ROOM_RATE, 1000),
       "b refused by the room, retry 1 s");
    fake_now = t0 + 1 * S;
    ok(is(check(rl, "r", "b", "x", false), DM_RATELIMIT_ADMIT, 0),
       "b at 1 s: admitted (the room refusal did not use b's user budget)");
    fake_now = t0 + 2 * S;
    ok(is(check(rl, "r", "a", "x", false), DM_RATELIMIT_USER_RATE, 8000),
       "a at 2 s: user_rate, retry 8 s");
    ok(is(check(rl, "r", "c", "x", false), DM_RATELIMIT_ADMIT, 0),
       "c at 2 s: admitted (a's user refusal did not use the room)");
    ok(is(check(rl, "r", "d", "x", false), DM_RATELIMIT_ROOM_RATE, 1000), "d: room full again");
    ok(is(check(rl, "r", "a", "x", true), DM_RATELIMIT_ADMIT, 0) &&
           is(check(rl, "r", "a", "x", true), DM_RATELIMIT_ADMIT, 0),
       "exempt a: admitted although both limits are exhausted");
    fake_now = t0 + 3 * S;
    ok(is(check(rl, "r", "d", "x", false), DM_RATELIMIT_ADMIT, 0),
       "exempt posts counted against neither the room ...");
    fake_now = t0 + 10 * S;
    ok(is(check(rl, "r2", "a", "x", false), DM_RATELIMIT_ADMIT, 0), "... nor the user");
    unsigned long local = dm_ratelimit_fallbacks(rl);
    ok(local == 8, "exempt decisions are not fallbacks (%lu)", local);
    dm_ratelimit_free(rl);
}

static void test_local_modes(void)
{
    const struct dm_config *cfg =
        config("--ratelimit-user-rate=100", "--ratelimit-user-burst=100", NULL);
    struct dm_ratelimit *rl = local_limiter(cfg);
    struct done d = {0};
    int64_t t = fake_now;

    dm_ratelimit_set_modes(rl, "room.slow", 30, 0, on_done, &d);
    ok(d.fired && d.ok, "without Redis, set_modes applies locally and says ok");
    ok(is(check(rl, "room.slow", "u1", "a", false), DM_RATELIMIT_ADMIT, 0), "slow: first post");
    fake_now = t + 10 * S;
    ok(is(check(rl, "room.slow", "u1", "b", false), DM_RATELIMIT_SLOW_MODE, 20000),
       "slow: 10 s later refused, retry 20 s");
    ok(is(check(rl, "room.slow", "u2", "b", false), DM_RATELIMIT_ADMIT, 0), "slow: per user");
    ok(is(check(rl, "other", "u1", "b", false), DM_RATELIMIT_ADMIT, 0), "slow: per room");
    fake_now = t + 30 * S;
    ok(is(check(rl, "room.slow", "u1", "c", false), DM_RATELIMIT_ADMIT, 0),
       "slow: exactly 30 s later admitted");
    ok(is(check(rl, "room.slow", "mod", "c", true), DM_RATELIMIT_ADMIT, 0) &&
           is(check(rl, "room.slow", "mod", "c", true), DM_RATELIMIT_ADMIT, 0),
       "slow: exempt senders are not slowed");

    t = fake_now += 1 * S;
    d.fired = false;
    dm_ratelimit_set_modes(rl, "room.uniq", 0, 60, on_done, &d);
    ok(d.fired && d.ok, "unique mode set");
    ok(is(check(rl, "room.uniq", "u1", "Hello there", false), DM_RATELIMIT_ADMIT, 0),
       "unique: first text");
    fake_now = t + 1 * S;
    ok(is(check(rl, "room.uniq", "u1", "  hello   THERE ", false), DM_RATELIMIT_DUPLICATE, 59000),
       "unique: same normalized text refused, retry 59 s");
    ok(is(check(rl, "room.uniq", "u2", "Hello there", false), DM_RATELIMIT_ADMIT, 0),
       "unique: another user may say it");
    ok(is(check(rl, "room.uniq", "u1", "something else", false), DM_RATELIMIT_ADMIT, 0),
       "unique: another text passes");
    fake_now = t + 61 * S;
    ok(is(check(rl, "room.uniq", "u1", "Hello there", false), DM_RATELIMIT_ADMIT, 0),
       "unique: after the window the text passes again");

    /* Both modes and the user limit at once: the order and the longest wait. */
    t = fake_now += 1 * S;
    dm_ratelimit_set_modes(rl, "room.both", 5, 60, NULL, NULL);
    rl->user_interval_us = 2 * S;
    rl->user_burst = 1;
    ok(is(check(rl, "room.both", "u9", "x", false), DM_RATELIMIT_ADMIT, 0), "both: first post");
    fake_now = t + 1 * S;
    ok(is(check(rl, "room.both", "u9", "x", false), DM_RATELIMIT_DUPLICATE, 59000),
       "both: duplicate wins over slow mode and user_rate, with the longest wait");
    ok(is(check(rl, "room.both", "u9", "y", false), DM_RATELIMIT_SLOW_MODE, 4000),
       "both: slow mode wins over user_rate (4 s > 1 s)");
    fake_now = t + 5 * S;
    ok(is(check(rl, "room.both", "u9", "y", false), DM_RATELIMIT_ADMIT, 0),
       "both: 5 s later admitted");
    ok(is(check(rl, "room.both", "u9", "z", false), DM_RATELIMIT_SLOW_MODE, 5000),
       "both: a refusal changed nothing (slow mode counts from the admitted post)");

    rl->user_interval_us = 10 * MS;
    rl->user_burst = 100;
    fake_now += 1 * S;
    d.fired = false;
    dm_ratelimit_set_modes(rl, "room.slow", 0, 0, on_done, &d);
    ok(d.fired && d.ok && is(check(rl, "room.slow", "u10", "d", false), DM_RATELIMIT_ADMIT, 0) &&
           is(check(rl, "room.slow", "u10", "d", false), DM_RATELIMIT_ADMIT, 0),
       "modes cleared: no slow mode any more");
    dm_ratelimit_free(rl);
}

static void test_local_mutes(void)
{
    const struct dm_config *cfg = config(NULL);
    struct dm_ratelimit *rl = local_limiter(cfg);
    struct done d = {0};
    int64_t t0 = fake_now;

    dm_ratelimit_set_modes(rl, "r", 10, 10, NULL, NULL);
    dm_ratelimit_mute(rl, "r", "troll", 120, on_done, &d);
    ok(d.fired && d.ok, "mute applied locally");
    ok(is(check(rl, "r", "troll", "x", false), DM_RATELIMIT_MUTED, 120000),
       "muted, retry_after = the mute's remaining time");
    ok(is(check(rl, "r2", "troll", "x", false), DM_RATELIMIT_ADMIT, 0), "a mute is per room");
    ok(is(check(rl, "r", "troll", "x", true), DM_RATELIMIT_ADMIT, 0),
       "exempt senders cannot be muted");
    fake_now = t0 + 100 * S;
    ok(is(check(rl, "r", "troll", "x", false), DM_RATELIMIT_MUTED, 20000), "still muted at 100 s");
    fake_now = t0 + 120 * S;
    ok(is(check(rl, "r", "troll", "x", false), DM_RATELIMIT_ADMIT, 0), "mute over at 120 s");
    dm_ratelimit_mute(rl, "r", "troll", 60, NULL, NULL);
    ok(is(check(rl, "r", "troll", "y", false), DM_RATELIMIT_MUTED, 60000), "muted again");
    d.fired = false;
    dm_ratelimit_unmute(rl, "r", "troll", on_done, &d);
    ok(d.fired && d.ok, "unmute applied");
    fake_now += 10 * S; /* past the slow mode of the earlier post */
    ok(is(check(rl, "r", "troll", "y", false), DM_RATELIMIT_ADMIT, 0), "unmuted");
    ok(dm_ratelimit_decisions(rl, DM_RATELIMIT_MUTED) == 3, "muted decisions counted");
    dm_ratelimit_free(rl);
}

/* ---- the bounded table ---- */

static void test_table_eviction(void)
{
    struct table t = {0};
    bool fresh;
    const size_t n = 64;

    table_init(&t, n);
    /* Keys with the same home slot share one window. */
    for (uint64_t i = 1; i <= WINDOW; i++) {
        struct entry *e = table_claim(&t, i * n + 5, 0, &fresh);
        e->expires_us = (int64_t)(i * 100);
    }
    ok(t.used == WINDOW && t.evictions == 0, "a full window, nothing evicted");
    for (uint64_t i = 1; i <= WINDOW; i++)
        if (table_find(&t, i * n + 5) == NULL)
            ok(0, "key %llu findable", (unsigned long long)i);
    struct entry *e = table_claim(&t, 100 * n + 5, 50, &fresh);
    ok(fresh && table_find(&t, 1 * n + 5) == NULL && t.evictions == 1,
       "a 9th key evicts the entry that ends first (a live one: counted)");
    e->expires_us = 10000;
    ok(table_find(&t, 2 * n + 5) != NULL && table_find(&t, 8 * n + 5) != NULL, "the others stay");
    table_claim(&t, 101 * n + 5, 250, &fresh);
    ok(fresh && table_find(&t, 2 * n + 5) == NULL && t.evictions == 1,
       "an expired entry is reused without counting an eviction");
    e = table_claim(&t, 8 * n + 5, 250, &fresh);
    ok(!fresh && e->expires_us == 800, "claiming a present key returns it unchanged");
    ok(t.used == WINDOW, "used never exceeds the slots taken");
    table_fini(&t);

    /* A window wraps around the end of the table. */
    t = (struct table){0};
    table_init(&t, n);
    for (uint64_t i = 1; i <= WINDOW; i++)
        table_claim(&t, i * n + (n - 1), 0, &fresh);
    bool all = true;
    for (uint64_t i = 1; i <= WINDOW; i++)
        all = all && table_find(&t, i * n + (n - 1)) != NULL;
    ok(all && t.slots[0].key == 2 * n + (n - 1) && t.evictions == 0,
       "a window wraps around the end of the table");
    table_fini(&t);
}

static void test_table_many_users(void)
{
    const struct dm_config *cfg =
        config("--ratelimit-user-rate=1", "--ratelimit-user-burst=1", "--ratelimit-room-rate=0",
               "--ratelimit-local-max-keys=256", NULL);
    struct dm_ratelimit *rl = local_limiter(cfg);
    char uid[32];
    int64_t t0 = fake_now;
    int refused = 0;

    ok(rl->table.nslots == 256, "the table has exactly ratelimit_local_max_keys slots");
    /* A few users fit: each keeps its state. */
    for (int i = 0; i < 32; i++) {
        snprintf(uid, sizeof(uid), "few-%d", i);
        check(rl, "r", uid, "x", false);
    }
    for (int i = 0; i < 32; i++) {
        snprintf(uid, sizeof(uid), "few-%d", i);
        refused += check(rl, "r", uid, "x", false).verdict == DM_RATELIMIT_USER_RATE;
    }
    ok(refused == 32 && dm_ratelimit_local_evictions(rl) == 0,
       "32 users in 256 slots: all remembered, no eviction (refused %d)", refused);

    /* Far more live users than slots: memory stays bounded, the oldest
     * state goes (fail open), every eviction is counted. */
    for (int i = 0; i < 10000; i++) {
        snprintf(uid, sizeof(uid), "many-%d", i);
        fake_now = t0 + i; /* 1 µs apart: all live for a second */
        check(rl, "r", uid, "x", false);
    }
    size_t used = dm_ratelimit_local_entries(rl);
    unsigned long ev = dm_ratelimit_local_evictions(rl);
    ok(used == 256, "table full, never above its size (%zu)", used);
    ok(ev >= 10000 + 32 - 256 && ev <= 10000 + 32, "live evictions counted (%lu)", ev);
    snprintf(uid, sizeof(uid), "many-%d", 9999);
    ok(check(rl, "r", uid, "x", false).verdict == DM_RATELIMIT_USER_RATE,
       "the newest user is still remembered");

    /* Users arriving 8 ms apart, each live for 1 s: about 125 live at a
     * time in 256 slots, so expired entries make room and live ones stay. */
    fake_now = t0 + 10 * S;
    for (int i = 0; i < 1000; i++) {
        snprintf(uid, sizeof(uid), "later-%d", i);
        fake_now += 8 * MS;
        check(rl, "r", uid, "x", false);
    }
    ok(dm_ratelimit_local_evictions(rl) - ev < 50,
       "at half load, expired entries make room: %lu live evictions for 1000 users",
       dm_ratelimit_local_evictions(rl) - ev);
    ev = dm_ratelimit_local_evictions(rl);
    fake_now += 100 * S;
    for (int i = 0; i < 64; i++) {
        snprintf(uid, sizeof(uid), "calm-%d", i);
        check(rl, "r", uid, "x", false);
    }
    ok(dm_ratelimit_local_evictions(rl) == ev,
       "everything expired: 64 new users evict nothing live");
    dm_ratelimit_free(rl);
}

/* ---- through Redis ---- */

static struct event_base *base;
static bool timed_out;

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    DM_UNUSED(arg);
    timed_out = true;
}

/* Runs the loop until *flag or ms pass. */
static bool wait_flag(const bool *flag, int ms)
{
    struct event *t = evtimer_new(base, on_timeout, NULL);
    struct timeval tv = dm_timeval_ms(ms);
    DM_AN(t);
    timed_out = false;
    evtimer_add(t, &tv);
    while (!*flag && !timed_out)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return *flag;
}

static void wait_ms(int ms)
{
    bool never = false;
    wait_flag(&never, ms);
}

static bool wait_connected(struct dm_redis *r, int ms)
{
    for (int i = 0; i < ms / 10 && !dm_redis_connected(r); i++)
        wait_ms(10);
    return dm_redis_connected(r);
}

static struct dm_ratelimit_result check_async(struct dm_ratelimit *rl, const char *room,
                                              const char *uid, const char *text, bool *sync)
{
    struct capture c = {0};
    struct dm_ratelimit_req req = {room, uid, text, strlen(text), false};
    dm_ratelimit_check(rl, &req, on_result, &c);
    if (sync != NULL)
        *sync = c.done;
    if (!wait_flag(&c.done, 5000))
        DM_PANIC("no verdict within 5 s");
    DM_ASSERT(c.calls == 1);
    return c.res;
}

struct reply {
    bool done;
    bool ok;
    long long integer;
    char str[64];
};

static void on_reply(const struct redisReply *r, void *arg)
{
    struct reply *out = arg;
    out->done = true;
    out->ok = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        out->integer = r->integer;
    if (r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
        snprintf(out->str, sizeof(out->str), "%s", r->str);
}

/* One command with one string argument (a key, or "" for none). */
static struct reply cmd(struct dm_redis *r, const char *fmt, const char *arg)
{
    struct reply out = {0};
    if (dm_redis_commandf(r, on_reply, &out, fmt, arg) == 0)
        wait_flag(&out.done, 5000);
    return out;
}

static long long pttl(struct dm_redis *r, const char *prefix, const char *suffix)
{
    char key[KEY_MAX];
    snprintf(key, sizeof(key), "%s%s", prefix, suffix);
    return cmd(r, "PTTL %s", key).integer;
}

static void on_done_wait(bool ok, void *arg)
{
    on_done(ok, arg);
}

static bool moderate_ok(struct done *d)
{
    wait_flag(&d->fired, 5000);
    return d->fired && d->ok;
}

static const char *redis_port;

static void test_redis(void)
{
    char prefix[64], flag[96];
    int port = atoi(redis_port);

    snprintf(prefix, sizeof(prefix), "dmtest:rl:%d:", (int)getpid());
    snprintf(flag, sizeof(flag), "--redis-prefix=%s", prefix);
    const struct dm_config *cfg =
        config(flag, "--ratelimit-user-rate=1", "--ratelimit-user-burst=3",
               "--ratelimit-room-rate=1", "--ratelimit-room-burst=1000", NULL);
    base = event_base_new();
    DM_AN(base);
    struct dm_redis *r = dm_redis_new(base, "127.0.0.1", port, 300);
    if (!ok(wait_connected(r, 5000), "connected to the test Redis on port %d", port)) {
        dm_redis_free(r);
        event_base_free(base);
        return;
    }
    struct dm_ratelimit *rl = dm_ratelimit_new(r, cfg);
    struct dm_ratelimit_result res;
    struct done d;
    bool sync = true;

    /* User limit (rate 1/s, burst 3) on Redis's clock. */
    for (int i = 0; i < 3; i++) {
        res = check_async(rl, "rl-room", "u1", "hi", i == 0 ? &sync : NULL);
        ok(res.verdict == DM_RATELIMIT_ADMIT && !res.local, "redis: u1 post %d admitted", i + 1);
    }
    ok(!sync, "the verdict comes from the event loop");
    ok(rl->script_loaded, "the script is known to Redis after the first EVAL");
    res = check_async(rl, "rl-room", "u1", "hi", NULL);
    ok(res.verdict == DM_RATELIMIT_USER_RATE && !res.local && res.retry_after_ms > 800 &&
           res.retry_after_ms <= 1000,
       "redis: 4th refused, retry_after %lld ms (about 1 s)", (long long)res.retry_after_ms);
    long long ttl = pttl(r, prefix, "rl:user:u1");
    ok(ttl > 2000 && ttl <= 3000, "user TAT key expires when its TAT passes (%lld ms)", ttl);
    ttl = pttl(r, prefix, "rl:room:{rl-room}");
    ok(ttl > 2000 && ttl <= 3000, "room TAT key too (%lld ms)", ttl);

    /* Slow mode. */
    d = (struct done){0};
    dm_ratelimit_set_modes(rl, "rl-slow", 30, 0, on_done_wait, &d);
    ok(moderate_ok(&d), "redis: set_modes ok");
    ttl = pttl(r, prefix, "room:{rl-slow}:modes");
    ok(ttl > (long long)DM_RATELIMIT_MODES_TTL_S * 1000 - 60000, "modes hash has its TTL");
    ok(check_async(rl, "rl-slow", "u2", "a", NULL).verdict == DM_RATELIMIT_ADMIT,
       "redis: slow mode, first post");
    res = check_async(rl, "rl-slow", "u2", "b", NULL);
    ok(res.verdict == DM_RATELIMIT_SLOW_MODE && res.retry_after_ms > 29000 &&
           res.retry_after_ms <= 30000,
       "redis: slow mode refuses the second, retry %lld ms", (long long)res.retry_after_ms);
    ttl = pttl(r, prefix, "rl:slow:{rl-slow}:u2");
    ok(ttl > 29000 && ttl <= 30000, "slow-mode key expires with the interval (%lld)", ttl);
    ok(rl->table.used > 0, "modes cached locally for the fallback");

    /* Unique chat. */
    d = (struct done){0};
    dm_ratelimit_set_modes(rl, "rl-uniq", 0, 60, on_done_wait, &d);
    ok(moderate_ok(&d), "redis: unique mode set");
    ok(check_async(rl, "rl-uniq", "u3", "Hello", NULL).verdict == DM_RATELIMIT_ADMIT,
       "redis: unique, first text");
    res = check_async(rl, "rl-uniq", "u3", " hello ", NULL);
    ok(res.verdict == DM_RATELIMIT_DUPLICATE && res.retry_after_ms > 59000,
       "redis: same normalized text refused (retry %lld ms)", (long long)res.retry_after_ms);
    ok(check_async(rl, "rl-uniq", "u3", "other", NULL).verdict == DM_RATELIMIT_ADMIT,
       "redis: another text passes");
    snprintf(flag, sizeof(flag), "%srl:uniq:{rl-uniq}:u3", prefix);
    ok(cmd(r, "ZCARD %s", flag).integer == 2, "two texts remembered");
    ttl = pttl(r, prefix, "rl:uniq:{rl-uniq}:u3");
    ok(ttl > 59000 && ttl <= 60000, "unique set expires with the window (%lld)", ttl);

    /* Mutes. */
    d = (struct done){0};
    dm_ratelimit_mute(rl, "rl-room", "u4", 120, on_done_wait, &d);
    ok(moderate_ok(&d), "redis: mute ok");
    ttl = pttl(r, prefix, "mute:{rl-room}:u4");
    ok(ttl > 119000 && ttl <= 120000, "mute key has the mute's TTL (%lld)", ttl);
    res = check_async(rl, "rl-room", "u4", "x", NULL);
    ok(res.verdict == DM_RATELIMIT_MUTED && res.retry_after_ms > 119000,
       "redis: muted (remaining %lld ms)", (long long)res.retry_after_ms);
    d = (struct done){0};
    dm_ratelimit_unmute(rl, "rl-room", "u4", on_done_wait, &d);
    ok(moderate_ok(&d), "redis: unmute ok");
    ok(check_async(rl, "rl-room", "u4", "x", NULL).verdict == DM_RATELIMIT_ADMIT, "redis: unmuted");

    /* Redis lost the script (restart, SCRIPT FLUSH): EVALSHA gets NOSCRIPT
     * and the check sends the text again. Simulated with a digest Redis
     * has never seen, so the shared test Redis keeps its scripts. */
    char sha[sizeof(rl->sha)];
    memcpy(sha, rl->sha, sizeof(sha));
    memcpy(rl->sha, "0000000000000000000000000000000000000000", sizeof(sha));
    unsigned long errors = dm_redis_errors(r);
    res = check_async(rl, "rl-room", "u5", "x", NULL);
    ok(res.verdict == DM_RATELIMIT_ADMIT && !res.local && dm_redis_errors(r) == errors + 1,
       "after NOSCRIPT the check is sent again with the script, through Redis");
    memcpy(rl->sha, sha, sizeof(sha));
    ok(dm_ratelimit_fallbacks(rl) == 0, "no fallback so far");

    /* Redis stalls: a listener that accepts and never answers. The deadline
     * answers, the local limiter decides, with what Redis told it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    DM_ASSERT(fd >= 0);
    DM_AZ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
    DM_AZ(listen(fd, 16));
    DM_AZ(getsockname(fd, (struct sockaddr *)&sa, &len));
    struct dm_redis *stalled = dm_redis_new(base, "127.0.0.1", ntohs(sa.sin_port), 300);
    ok(wait_connected(stalled, 5000), "connected to a Redis that never answers");
    rl->redis = stalled; /* white box: the same limiter, its Redis gone quiet */
    int64_t t0 = dm_mono_us();
    res = check_async(rl, "rl-room", "u6", "x", NULL);
    int64_t took = dm_mono_us() - t0;
    ok(res.verdict == DM_RATELIMIT_ADMIT && res.local && dm_ratelimit_fallbacks(rl) == 1,
       "stalled Redis: decided locally after the deadline (%lld ms)", (long long)(took / 1000));
    ok(took >= 250 * MS && took < 2 * S, "within about redis_timeout_ms");
    /* The local limiter knows rl-slow's slow mode from Redis's answers. */
    res = check_async(rl, "rl-slow", "u7", "c", NULL);
    struct dm_ratelimit_result again = check_async(rl, "rl-slow", "u7", "d", NULL);
    ok(res.local && res.verdict == DM_RATELIMIT_ADMIT && again.local &&
           again.verdict == DM_RATELIMIT_SLOW_MODE && again.retry_after_ms > 29000,
       "fallback applies the last known slow mode (retry %lld ms)",
       (long long)again.retry_after_ms);
    dm_redis_free(stalled);
    close(fd);
    rl->redis = r;
    res = check_async(rl, "rl-room", "u8", "x", NULL);
    ok(res.verdict == DM_RATELIMIT_ADMIT && !res.local, "back on Redis");

    /* Every key this run wrote has a TTL; then they go. */
    struct reply all = {0};
    static const char ttl_script[] = "local n = 0 "
                                     "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
                                     "  if redis.call('PTTL', k) < 0 then return -1 end "
                                     "  n = n + 1 "
                                     "end "
                                     "return n";
    char pattern[96];
    snprintf(pattern, sizeof(pattern), "%s*", prefix);
    if (dm_redis_commandf(r, on_reply, &all, "EVAL %s 0 %s", ttl_script, pattern) == 0)
        wait_flag(&all.done, 5000);
    ok(all.integer >= 8, "every key written has a TTL (%lld keys)", all.integer);
    all = (struct reply){0};
    if (dm_redis_commandf(r, on_reply, &all, "EVAL %s 0 %s",
                          "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
                          "redis.call('DEL', k) end return 1",
                          pattern) == 0)
        wait_flag(&all.done, 5000);

    dm_redis_free(r);
    dm_ratelimit_free(rl);
    event_base_free(base);
}

/* Redis configured but unreachable: decided at once, locally, counted. */
static void test_redis_unreachable(void)
{
    const struct dm_config *cfg = config(NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);

    /* A port nothing listens on: bound, never listened. */
    DM_ASSERT(fd >= 0);
    DM_AZ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
    DM_AZ(getsockname(fd, (struct sockaddr *)&sa, &len));
    base = event_base_new();
    DM_AN(base);
    struct dm_redis *r = dm_redis_new(base, "127.0.0.1", ntohs(sa.sin_port), 100);
    struct dm_ratelimit *rl = dm_ratelimit_new(r, cfg);
    bool sync = false;
    struct dm_ratelimit_result res = check_async(rl, "r", "u", "x", &sync);
    ok(sync && res.local && res.verdict == DM_RATELIMIT_ADMIT && dm_ratelimit_fallbacks(rl) == 1,
       "unreachable Redis: decided locally before dm_ratelimit_check returned");
    struct done d = {0};
    dm_ratelimit_mute(rl, "r", "u", 10, on_done, &d);
    ok(d.fired && !d.ok, "unreachable Redis: moderation fails at once");
    ok(check_async(rl, "r", "u", "y", NULL).verdict == DM_RATELIMIT_ADMIT,
       "a failed mute is not applied locally either");
    dm_redis_free(r);
    dm_ratelimit_free(rl);
    event_base_free(base);
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--print-lua") == 0) {
        fputs(dm_ratelimit_script(), stdout);
        return 0;
    }
    dm_log_min_level = DM_LOG_ERROR;
    subtest("GCRA step, exact over injected time", test_gcra);
    subtest("Retry-After and names", test_retry_after);
    subtest("text hash for unique mode", test_text_hash);
    subtest("SipHash-2-4 of the local table", test_siphash);
    subtest("local limiter: user limit over time", test_local_rates);
    subtest("local limiter: user and room limits independent, exempt", test_local_independence);
    subtest("local limiter: slow mode and unique chat", test_local_modes);
    subtest("local limiter: mutes", test_local_mutes);
    subtest("local table: eviction order", test_table_eviction);
    subtest("local table: many users, bounded", test_table_many_users);
    subtest("Redis unreachable", test_redis_unreachable);
    redis_port = getenv("DANMAKU_TEST_REDIS_PORT");
    if (redis_port != NULL && *redis_port != '\0')
        subtest("through Redis", test_redis);
    else
        printf("# skipping the Redis checks: DANMAKU_TEST_REDIS_PORT is not set\n");
    for (int i = 0; i < ncfg; i++)
        dm_config_fini(&cfg_store[i]);
    return done_testing();
}
