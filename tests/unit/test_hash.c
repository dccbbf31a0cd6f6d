/* Room hash: Kafka's known vectors, then thousands of keys against
 * librdkafka's Java-compatible murmur2 partitioner; room id syntax. */
#include "common/hash.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "common/util.h"
#include "tests/unit/tap.h"

#define NKEYS 5000

static rd_kafka_t *rk;
static rd_kafka_topic_t *rkt;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void on_rdkafka_log(const rd_kafka_t *r, int level, const char *fac, const char *buf)
{
    /* No brokers are configured on purpose; keep the TAP output clean. */
    DM_UNUSED(r);
    DM_UNUSED(level);
    DM_UNUSED(fac);
    DM_UNUSED(buf);
}

static void setup_rdkafka(void)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set_log_cb(conf, on_rdkafka_log);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        printf("# rd_kafka_new: %s\n", errstr);
        return;
    }
    rkt = rd_kafka_topic_new(rk, "danmaku.hash-test", NULL);
}

static void teardown_rdkafka(void)
{
    if (rkt != NULL)
        rd_kafka_topic_destroy(rkt);
    if (rk != NULL)
        rd_kafka_destroy(rk);
}

static void test_vectors(void)
{
    ok((dm_murmur2("21", 2) & 0x7fffffffu) == 1173551340u, "murmur2(\"21\") & 0x7fffffff");
    ok((dm_murmur2("abc", 3) & 0x7fffffffu) == 479470107u, "murmur2(\"abc\") & 0x7fffffff");
    ok(dm_room_partition("21", 2, 1) == 0, "one partition is always 0");
    ok(dm_room_partition("abc", 3, 32) == (int32_t)(479470107u % 32), "abc mod 32");
    ok(dm_room_partition("21", 2, INT32_MAX) == 1173551340, "\"21\" with INT32_MAX partitions");
    ok(dm_room_partition("", 0, 7) == dm_room_partition(NULL, 0, 7), "empty key, NULL or not");
}

static void fill_random_key(unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)rng_next(); /* all 256 values, high bit included */
}

static size_t fill_room_key(char *buf, size_t cap, unsigned i)
{
    static const char *const forms[][2] = {{"room-", ""},         {"live:", ""}, {"r", ""},
                                           {"channel_", ".main"}, {"", ""},      {"a-b:c_d.", ""}};
    const char *const *f = forms[i % DM_ARRAY_LEN(forms)];
    int n = snprintf(buf, cap, "%s%u%s", f[0], i * 2654435761u % 1000003u, f[1]);
    return (size_t)n;
}

/* Compares one key under every partition count; returns 0 or the failing count. */
static int32_t compare_key(const void *key, size_t len, const int32_t *counts, size_t ncounts)
{
    /* librdkafka reads nothing but the key for a non-NULL key; a real
     * topic handle is passed anyway so the call is exactly the producer's. */
    static const char empty;
    const void *k = len ? key : &empty;
    for (size_t c = 0; c < ncounts; c++) {
        int32_t want = rd_kafka_msg_partitioner_murmur2(rkt, k, len, counts[c], NULL, NULL);
        if (dm_room_partition(k, len, counts[c]) != want)
            return counts[c];
    }
    return 0;
}

static void test_against_librdkafka(void)
{
    static const int32_t counts[] = {1, 7, 32, 1000, 1024, INT32_MAX};
    unsigned char key[128];
    char room[DM_ROOM_ID_MAX + 1];
    unsigned bad_random = 0, bad_room = 0;

    ok(rkt != NULL, "producer and topic handle without brokers");
    if (rkt == NULL)
        return;

    for (unsigned i = 0; i < NKEYS; i++) {
        size_t len = i <= 100 ? i : (size_t)(rng_next() % 101); /* every length 0..100 */
        fill_random_key(key, len);
        int32_t bad = compare_key(key, len, counts, DM_ARRAY_LEN(counts));
        if (bad && !bad_random++)
            printf("# first mismatch: random key #%u len %zu partitions %d\n", i, len, bad);
    }
    ok(bad_random == 0, "%d random keys (len 0..100) match librdkafka (%u bad)", NKEYS, bad_random);

    for (unsigned i = 0; i < NKEYS; i++) {
        size_t len = fill_room_key(room, sizeof(room), i);
        if (compare_key(room, len, counts, DM_ARRAY_LEN(counts)) && !bad_room++)
            printf("# first mismatch: room %.*s\n", (int)len, room);
    }
    ok(bad_room == 0, "%d room ids match librdkafka (%u bad)", NKEYS, bad_room);

    /* Every tail length with every high-bit byte value in the tail. */
    unsigned bad_tail = 0;
    for (size_t len = 1; len <= 7; len++) {
        for (unsigned b = 0x80; b <= 0xff; b++) {
            memset(key, (int)b, len);
            bad_tail += compare_key(key, len, counts, DM_ARRAY_LEN(counts)) != 0;
        }
    }
    ok(bad_tail == 0, "high-bit tail bytes match librdkafka (%u bad)", bad_tail);
}

/* The same hash with the tail bytes sign-extended (a classic port bug: Java
 * bytes are signed, Kafka masks them with 0xff). Only used to prove that the
 * keys above would catch that bug. */
static uint32_t murmur2_signed_tail(const unsigned char *p, size_t len)
{
    const uint32_t m = 0x5bd1e995u;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t i = 0;

    for (; i + 4 <= len; i += 4) {
        uint32_t k = (uint32_t)p[i] | (uint32_t)p[i + 1] << 8 | (uint32_t)p[i + 2] << 16 |
                     (uint32_t)p[i + 3] << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h = h * m ^ k;
    }
    switch (len - i) {
    case 3:
        h ^= (uint32_t)(int32_t)(signed char)p[i + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)(int32_t)(signed char)p[i + 1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)(int32_t)(signed char)p[i];
        h *= m;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

static void test_signed_tail_sensitivity(void)
{
    const unsigned char lo[] = {'a', 'b', 'c'}, hi[] = {'a', 0xe9, 0x80};

    ok(murmur2_signed_tail(lo, sizeof(lo)) == dm_murmur2(lo, sizeof(lo)),
       "ASCII tails agree either way");
    ok(murmur2_signed_tail(hi, sizeof(hi)) != dm_murmur2(hi, sizeof(hi)),
       "a sign-extending tail differs on high-bit bytes (so the comparison above catches it)");
}

static void test_partition_range(void)
{
    unsigned out_of_range = 0;
    unsigned hist[7] = {0};
    char room[32];

    for (unsigned i = 0; i < 7000; i++) {
        int n = snprintf(room, sizeof(room), "room-%u", i);
        int32_t p = dm_room_partition(room, (size_t)n, 7);
        if (p < 0 || p >= 7)
            out_of_range++;
        else
            hist[p]++;
    }
    ok(out_of_range == 0, "partition always in [0, P)");
    unsigned lo = hist[0], hi = hist[0];
    for (size_t i = 1; i < DM_ARRAY_LEN(hist); i++) {
        lo = hist[i] < lo ? hist[i] : lo;
        hi = hist[i] > hi ? hist[i] : hi;
    }
    ok(lo > 800 && hi < 1200, "7000 rooms spread over 7 partitions (min %u max %u)", lo, hi);
}

static void test_room_id(void)
{
    static const struct {
        const char *s;
        bool valid;
    } cases[] = {
        {"a", true},
        {"room-1", true},
        {"live:12345", true},
        {"A.b_c:d-e", true},
        {"0123456789012345678901234567890123456789012345678901234567890123", true},   /* 64 */
        {"01234567890123456789012345678901234567890123456789012345678901234", false}, /* 65 */
        {"", false},
        {"room 1", false},
        {"room/1", false},
        {"room*", false},
        {"ro\xc3\xa9m", false},
        {"room\t", false},
        {"room#1", false},
        {"%00", false},
    };
    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        ok(dm_room_id_valid(cases[i].s, strlen(cases[i].s)) == cases[i].valid,
           "room id #%zu (%zu bytes) %s", i, strlen(cases[i].s),
           cases[i].valid ? "valid" : "invalid");
    }
    ok(!dm_room_id_valid("ab\0cd", 5), "embedded NUL is invalid");
    ok(dm_room_id_valid("abc-not-the-rest", 3), "length bounds the check");
    ok(!dm_room_id_valid(NULL, 0), "NULL with length 0 is invalid");
}

int main(void)
{
    setup_rdkafka();
    subtest("known vectors", test_vectors);
    subtest("against librdkafka", test_against_librdkafka);
    subtest("signed tail sensitivity", test_signed_tail_sensitivity);
    subtest("partition range", test_partition_range);
    subtest("room id", test_room_id);
    teardown_rdkafka();
    return done_testing();
}
