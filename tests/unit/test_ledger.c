/* The load tester's accounting: known losses, duplicates, reorderings and
 * gaps injected into tracks must be reported exactly. */
#include "loadtest/ledger.h"

#include <string.h>

#include "loadtest/viewers.h"
#include "tests/unit/tap.h"

/* Publishes n comments to room 0 at offsets base, base+2, ... */
static struct lt_ledger *ledger_with(uint32_t n, int64_t base)
{
    struct lt_ledger *l = lt_ledger_new(2);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t seq = lt_ledger_publish(l, 0, 1000 + i);
        lt_ledger_acked(l, 0, seq, base + 2 * (int64_t)i);
    }
    return l;
}

static void test_clean_run(void)
{
    struct lt_ledger *l = ledger_with(100, 10);
    struct lt_track t;
    struct lt_account a;

    lt_track_init(&t);
    lt_track_joined(&t, 9, false);
    for (uint32_t i = 0; i < 100; i++)
        lt_track_received(&t, i, 10 + 2 * (int64_t)i);
    memset(&a, 0, sizeof(a));
    lt_ledger_account(l, 0, &t, &a);
    ok(a.expected == 100 && a.delivered == 100 && a.lost == 0 && a.duplicated == 0 &&
           a.out_of_order == 0 && a.unexpected == 0,
       "every comment once, in order: nothing to report");
    lt_track_fini(&t);
    lt_ledger_free(l);
}

static void test_injected_faults(void)
{
    struct lt_ledger *l = ledger_with(1000, 0);
    struct lt_track t;
    struct lt_account a;
    uint32_t lost = 0, dups = 0;

    lt_track_init(&t);
    lt_track_joined(&t, -1, false);
    for (uint32_t i = 0; i < 1000; i++) {
        if (i % 10 == 3) { /* drop */
            lost++;
            continue;
        }
        lt_track_received(&t, i, 2 * (int64_t)i);
        if (i % 50 == 7) { /* and repeat */
            ok(!lt_track_received(&t, i, 2 * (int64_t)i), "a repeat is reported as duplicate");
            dups++;
        }
    }
    /* Two late arrivals of dropped comments: delivered, but out of order. */
    lt_track_received(&t, 3, 6);
    lt_track_received(&t, 13, 26);
    lost -= 2;
    memset(&a, 0, sizeof(a));
    lt_ledger_account(l, 0, &t, &a);
    ok(a.expected == 1000, "expected %llu", (unsigned long long)a.expected);
    ok(a.lost == lost, "lost %llu == injected %u", (unsigned long long)a.lost, lost);
    ok(a.duplicated == dups, "duplicated %llu == injected %u", (unsigned long long)a.duplicated,
       dups);
    ok(a.out_of_order == 2, "out of order %llu == 2", (unsigned long long)a.out_of_order);
    ok(a.delivered == 1000 - lost, "delivered %llu", (unsigned long long)a.delivered);
    lt_track_fini(&t);
    lt_ledger_free(l);
}

static void test_join_and_gaps(void)
{
    struct lt_ledger *l = ledger_with(100, 0); /* offsets 0, 2, ..., 198 */
    struct lt_track t;
    struct lt_account a;

    /* Joined after offset 19: owed seq 10.. (offset 20..). seq 5 arriving
     * anyway is unexpected, not a delivery. */
    lt_track_init(&t);
    lt_track_joined(&t, 19, false);
    lt_track_received(&t, 5, 10);
    for (uint32_t i = 10; i < 40; i++)
        lt_track_received(&t, i, 2 * (int64_t)i);
    /* Reconnect told recovered:false up to offset 99: seq 40..49 are a gap. */
    lt_track_joined(&t, 99, false);
    for (uint32_t i = 50; i < 100; i++)
        lt_track_received(&t, i, 2 * (int64_t)i);
    memset(&a, 0, sizeof(a));
    lt_ledger_account(l, 0, &t, &a);
    ok(a.expected == 80 && a.delivered == 80 && a.lost == 0,
       "owed from the joined offset on, minus the gap (expected %llu delivered %llu lost %llu)",
       (unsigned long long)a.expected, (unsigned long long)a.delivered, (unsigned long long)a.lost);
    ok(a.unrecoverable == 10, "the announced gap is unrecoverable, not lost (%llu)",
       (unsigned long long)a.unrecoverable);
    ok(a.unexpected == 1 && a.out_of_order == 1,
       "a comment from before the join is unexpected (%llu) and arrived out of order (%llu)",
       (unsigned long long)a.unexpected, (unsigned long long)a.out_of_order);

    /* recovered:true keeps everything owed. */
    struct lt_track r;
    lt_track_init(&r);
    lt_track_joined(&r, -1, false);
    for (uint32_t i = 0; i < 30; i++)
        lt_track_received(&r, i, 2 * (int64_t)i);
    lt_track_joined(&r, 58, true);
    for (uint32_t i = 30; i < 100; i++)
        if (i != 77)
            lt_track_received(&r, i, 2 * (int64_t)i);
    memset(&a, 0, sizeof(a));
    lt_ledger_account(l, 0, &r, &a);
    ok(a.expected == 100 && a.lost == 1 && a.unrecoverable == 0,
       "after recovered:true a missing comment is lost (%llu)", (unsigned long long)a.lost);
    lt_track_fini(&r);
    lt_track_fini(&t);
    lt_ledger_free(l);
}

static void test_failed_skipped_excluded(void)
{
    struct lt_ledger *l = lt_ledger_new(1);
    struct lt_track t;
    struct lt_account a;

    for (uint32_t i = 0; i < 10; i++) {
        uint32_t seq = lt_ledger_publish(l, 0, i);
        if (i == 4)
            lt_ledger_failed(l, 0, seq); /* a 503: never owed */
        else if (i != 9)
            lt_ledger_acked(l, 0, seq, i); /* seq 9 never acknowledged */
    }
    lt_track_init(&t);
    lt_track_joined(&t, -1, false);
    for (uint32_t i = 0; i < 8; i++)
        if (i != 4 && i != 6 && i != 7)
            lt_track_received(&t, i, i);
    t.skipped = 1; /* the server announced one sampled comment */
    memset(&a, 0, sizeof(a));
    lt_ledger_account(l, 0, &t, &a);
    ok(a.expected == 8 && a.delivered == 5 && a.skipped == 1 && a.lost == 2,
       "failed and unacknowledged comments are not owed; skips excuse misses (exp %llu del "
       "%llu skip %llu lost %llu)",
       (unsigned long long)a.expected, (unsigned long long)a.delivered,
       (unsigned long long)a.skipped, (unsigned long long)a.lost);
    lt_track_received(&t, 70, 70);
    memset(&a, 0, sizeof(a));
    lt_ledger_account(l, 0, &t, &a);
    ok(a.unexpected == 1, "a sequence never issued is unexpected");
    t.excluded = true;
    memset(&a, 0, sizeof(a));
    lt_ledger_account(l, 0, &t, &a);
    ok(a.expected == 0 && a.lost == 0, "an excluded (slow) viewer is not accounted");
    lt_track_fini(&t);
    lt_ledger_free(l);
}

static void test_parsers(void)
{
    uint32_t seq;
    int64_t sched, off;
    static const char frame[] =
        "{\"op\":\"danmaku\",\"room\":\"lt-1-0\",\"offset\":12345,\"data\":{\"id\":\"X\","
        "\"room\":\"lt-1-0\",\"uid\":\"u\",\"name\":\"n\",\"text\":\"lt 42 1764000000123456 "
        "xxxx\",\"color\":\"#ffffff\",\"mode\":\"scroll\",\"size\":\"normal\",\"ts\":1}}";

    ok(lt_parse_text("lt 7 123 xx", 11, &seq, &sched) && seq == 7 && sched == 123, "text parsed");
    ok(lt_parse_text("lt 7 123", 8, &seq, &sched), "text without padding parsed");
    ok(!lt_parse_text("hello", 5, &seq, &sched), "foreign text refused");
    ok(!lt_parse_text("lt x 1 ", 7, &seq, &sched), "bad sequence refused");
    ok(!lt_parse_text("lt 99999999999 1 ", 17, &seq, &sched), "sequence over 32 bits refused");
    ok(lt_parse_danmaku(frame, sizeof(frame) - 1, &off, &seq, &sched) && off == 12345 &&
           seq == 42 && sched == 1764000000123456,
       "danmaku frame parsed without JSON");
    ok(!lt_parse_danmaku("{\"op\":\"joined\"}", 15, &off, &seq, &sched), "other ops refused");
    for (size_t n = 0; n < sizeof(frame) - 1; n++) {
        if (lt_parse_danmaku(frame, n, &off, &seq, &sched) && n < 120) {
            ok(0, "a truncated frame (%zu bytes) parsed", n);
            return;
        }
    }
    ok(1, "truncated frames never parse before the text is complete");
}

/* The key search works 16 bytes at a time with a byte-wise tail: put the
 * keys at every alignment and near the end, move them around the record,
 * and hide look-alikes in string values. */
static void test_parser_positions(void)
{
    char frame[512], name[64];
    uint32_t seq;
    int64_t sched, off;
    bool all = true;

    for (int n = 0; n < 48 && all; n++) {
        memset(name, 'n', (size_t)n);
        name[n] = '\0';
        int len = snprintf(frame, sizeof(frame),
                           "{\"op\":\"danmaku\",\"room\":\"%s\",\"offset\":%d,\"data\":{\"name\":"
                           "\"%s\",\"text\":\"lt %d %d\"}}",
                           name, 1000 + n, name, n, 5000 + n);
        all = lt_parse_danmaku(frame, (size_t)len, &off, &seq, &sched) && off == 1000 + n &&
              seq == (uint32_t)n && sched == 5000 + n;
    }
    ok(all, "keys found at every alignment and right at the end");

    static const char reordered[] =
        "{\"op\":\"danmaku\",\"offset\":7,\"room\":\"r\",\"data\":{\"text\":\"lt 3 -42\","
        "\"id\":\"x\"}}";
    ok(lt_parse_danmaku(reordered, sizeof(reordered) - 1, &off, &seq, &sched) && off == 7 &&
           seq == 3 && sched == -42,
       "keys in another order, negative scheduled time");

    static const char lookalike[] =
        "{\"op\":\"danmaku\",\"room\":\"r\",\"offset\":9,\"data\":{\"name\":\"\\\"text\\\":"
        "\\\"lt 1 1\",\"text\":\"lt 2 2\"}}";
    ok(lt_parse_danmaku(lookalike, sizeof(lookalike) - 1, &off, &seq, &sched) && seq == 2 &&
           sched == 2,
       "an escaped look-alike key inside a value is skipped");

    static const char no_text[] =
        "{\"op\":\"danmaku\",\"room\":\"r\",\"offset\":9,\"data\":{\"name\":\"lt 1 1\"}}";
    ok(!lt_parse_danmaku(no_text, sizeof(no_text) - 1, &off, &seq, &sched), "no text key");

    ok(lt_parse_text("lt 4294967295 9223372036854775807", 33, &seq, &sched) && seq == UINT32_MAX &&
           sched == INT64_MAX,
       "largest sequence and time");
    ok(!lt_parse_text("lt 4294967296 1", 15, &seq, &sched), "sequence one over 32 bits refused");
    ok(!lt_parse_text("lt 1 9223372036854775808", 24, &seq, &sched), "time over 63 bits refused");
    ok(!lt_parse_text("lt 1 12345678901234567890123", 28, &seq, &sched), "a 23-digit time refused");
    ok(!lt_parse_text("lt 1 ", 5, &seq, &sched) && !lt_parse_text("lt 1 x", 6, &seq, &sched) &&
           !lt_parse_text("lt 1 2x", 7, &seq, &sched),
       "missing or malformed time refused");
}

int main(void)
{
    subtest("clean run", test_clean_run);
    subtest("injected losses, duplicates, reorderings", test_injected_faults);
    subtest("joins and gaps", test_join_and_gaps);
    subtest("failed, unacknowledged, skipped, excluded", test_failed_skipped_excluded);
    subtest("parsers", test_parsers);
    subtest("parser key positions and bounds", test_parser_positions);
    return done_testing();
}
