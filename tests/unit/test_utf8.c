/* Unit tests for common/utf8.c: table of valid and invalid sequences, fail
 * position, feeds split at every byte, and an exhaustive comparison with a
 * straightforward decoder. */
#include "common/utf8.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/util.h"
#include "tests/unit/tap.h"

#define VALID     (-2) /* whole input valid */
#define TRUNCATED (-1) /* no invalid byte, but it ends inside a character */

struct utf8_case {
    const char *name;
    const char *bytes;
    size_t len;
    int bad_at;        /* VALID, TRUNCATED, or the index of the first invalid byte */
    size_t codepoints; /* for VALID cases */
};

#define B(s) s, sizeof(s) - 1

static const struct utf8_case cases[] = {
    {"empty", B(""), VALID, 0},
    {"ascii", B("hello, world"), VALID, 12},
    {"NUL is a character", B("a\0b"), VALID, 3},
    {"U+0080", B("\xC2\x80"), VALID, 1},
    {"U+00E9", B("\xC3\xA9"), VALID, 1},
    {"U+07FF", B("\xDF\xBF"), VALID, 1},
    {"U+0800", B("\xE0\xA0\x80"), VALID, 1},
    {"U+20AC euro", B("\xE2\x82\xAC"), VALID, 1},
    {"U+D7FF below surrogates", B("\xED\x9F\xBF"), VALID, 1},
    {"U+E000 above surrogates", B("\xEE\x80\x80"), VALID, 1},
    {"U+FFFF", B("\xEF\xBF\xBF"), VALID, 1},
    {"U+10000", B("\xF0\x90\x80\x80"), VALID, 1},
    {"U+1D11E clef", B("\xF0\x9D\x84\x9E"), VALID, 1},
    {"U+10FFFF", B("\xF4\x8F\xBF\xBF"), VALID, 1},
    {"mixed CJK danmaku", B("\xE5\xBC\xB9\xE5\xB9\x95 danmaku \xE5\xBC\xB9\xE5\xB9\x95!!"), VALID,
     15},
    {"long ascii then 2-byte", B("abcdefghijklmnopqrstuvwxyz\xC3\xA9"), VALID, 27},
    {"overlong NUL C0 80", B("\xC0\x80"), 0, 0},
    {"overlong C1 BF", B("\xC1\xBF"), 0, 0},
    {"overlong E0 80 80", B("\xE0\x80\x80"), 1, 0},
    {"overlong E0 9F BF", B("\xE0\x9F\xBF"), 1, 0},
    {"overlong F0 80 80 80", B("\xF0\x80\x80\x80"), 1, 0},
    {"overlong F0 8F BF BF", B("\xF0\x8F\xBF\xBF"), 1, 0},
    {"surrogate ED A0 80", B("\xED\xA0\x80"), 1, 0},
    {"surrogate ED BF BF", B("\xED\xBF\xBF"), 1, 0},
    {"above U+10FFFF F4 90 80 80", B("\xF4\x90\x80\x80"), 1, 0},
    {"lead F5", B("\xF5\x80\x80\x80"), 0, 0},
    {"lead FF", B("\xFF"), 0, 0},
    {"lead FE", B("\xFE"), 0, 0},
    {"lone continuation 80", B("\x80"), 0, 0},
    {"lone continuation BF after ascii", B("ab\xBF"), 2, 0},
    {"bad continuation C3 41", B("\xC3\x41"), 1, 0},
    {"bad continuation E2 28 A1", B("\xE2\x28\xA1"), 1, 0},
    {"bad third byte E2 82 41", B("\xE2\x82\x41"), 2, 0},
    {"bad fourth byte F0 9D 84 20", B("\xF0\x9D\x84\x20"), 3, 0},
    {"bad byte after ascii run", B("abcdefghijklmnop\x80"), 16, 0},
    {"bad byte inside ascii run", B("abcdefgh\xFFijklmnop"), 8, 0},
    {"truncated C3", B("\xC3"), TRUNCATED, 0},
    {"truncated E2 82", B("\xE2\x82"), TRUNCATED, 0},
    {"truncated F0 9D 84", B("\xF0\x9D\x84"), TRUNCATED, 0},
    {"truncated after valid text", B("ok \xE5\xBC"), TRUNCATED, 0},
};

/* Feeds p[0..n) in two pieces split at `cut`; returns the combined result. */
static int feed_split(const uint8_t *p, size_t n, size_t cut, bool *complete)
{
    struct dm_utf8 u;
    int rc;

    dm_utf8_init(&u);
    rc = dm_utf8_feed(&u, p, cut);
    if (rc == 0)
        rc = dm_utf8_feed(&u, p + cut, n - cut);
    *complete = dm_utf8_complete(&u);
    return rc;
}

static void test_table(void)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        const struct utf8_case *c = &cases[i];
        const uint8_t *p = (const uint8_t *)c->bytes;
        bool want_valid = c->bad_at == VALID;
        int want_rc = c->bad_at >= 0 ? -1 : 0;
        struct dm_utf8 u;
        bool split_ok = true, bytewise_ok = true;

        ok(dm_utf8_valid(p, c->len) == want_valid, "%s: dm_utf8_valid is %d", c->name, want_valid);

        dm_utf8_init(&u);
        ok(dm_utf8_feed(&u, p, c->len) == want_rc && dm_utf8_complete(&u) == want_valid,
           "%s: one feed returns %d, complete %d", c->name, want_rc, want_valid);

        /* Byte at a time: ok up to the bad byte, -1 exactly there, sticky. */
        dm_utf8_init(&u);
        for (size_t k = 0; k < c->len; k++) {
            int want = (c->bad_at >= 0 && (int)k >= c->bad_at) ? -1 : 0;
            if (dm_utf8_feed(&u, p + k, 1) != want)
                bytewise_ok = false;
        }
        ok(bytewise_ok && dm_utf8_complete(&u) == want_valid,
           "%s: byte-at-a-time fails at the first bad byte", c->name);

        for (size_t cut = 0; cut <= c->len; cut++) {
            bool complete;
            int rc = feed_split(p, c->len, cut, &complete);
            if (rc != want_rc || complete != want_valid)
                split_ok = false;
        }
        ok(split_ok, "%s: same result split into two feeds at every position", c->name);

        if (want_valid)
            ok(dm_utf8_codepoints(p, c->len) == c->codepoints, "%s: %zu code points", c->name,
               c->codepoints);
    }
}

static void test_sticky_and_reset(void)
{
    struct dm_utf8 u;
    static const uint8_t bad[] = {0xC0, 0x80};
    static const uint8_t good[] = {'o', 'k'};

    dm_utf8_init(&u);
    ok(dm_utf8_feed(&u, bad, sizeof(bad)) == -1, "invalid input fails");
    ok(dm_utf8_feed(&u, good, sizeof(good)) == -1, "failure is sticky");
    ok(!dm_utf8_complete(&u), "failed state is not complete");
    ok(dm_utf8_feed(&u, NULL, 0) == -1, "empty feed keeps the failure");
    dm_utf8_init(&u);
    ok(dm_utf8_feed(&u, good, sizeof(good)) == 0 && dm_utf8_complete(&u), "init resets");
    ok(dm_utf8_feed(&u, NULL, 0) == 0 && dm_utf8_complete(&u), "empty feed is fine");
}

/* A bad byte at every position of a long ASCII buffer, so the 8-byte fast
 * path is crossed at every alignment. */
static void test_fast_path_positions(void)
{
    uint8_t buf[67];
    bool all = true;

    for (size_t pos = 0; pos < sizeof(buf); pos++) {
        struct dm_utf8 u;
        memset(buf, 'a', sizeof(buf));
        buf[pos] = 0x80;
        dm_utf8_init(&u);
        if (dm_utf8_feed(&u, buf, sizeof(buf)) != -1)
            all = false;
        /* and the prefix before it is fine */
        dm_utf8_init(&u);
        if (dm_utf8_feed(&u, buf, pos) != 0 || !dm_utf8_complete(&u))
            all = false;
    }
    ok(all, "a stray continuation byte is found at each of 67 positions");

    memset(buf, 'a', sizeof(buf));
    ok(dm_utf8_valid(buf, sizeof(buf)) && dm_utf8_codepoints(buf, sizeof(buf)) == sizeof(buf),
       "67 ASCII bytes are valid and 67 code points");
    for (size_t pos = 0; pos + 3 <= sizeof(buf); pos += 3)
        memcpy(buf + pos, "\xE5\xBC\xB9", 3);
    buf[66] = 'z';
    ok(dm_utf8_valid(buf, sizeof(buf)) && dm_utf8_codepoints(buf, sizeof(buf)) == 23,
       "22 CJK characters and one ASCII: 23 code points");
}

/* Reference: decode each sequence by its bit pattern and check the value. */
static bool ref_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint32_t c = p[i], min;
        size_t k;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1, c &= 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2, c &= 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3, c &= 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i - 1 < k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return false;
            c = c << 6 | (p[i + j] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

static void test_exhaustive(void)
{
    static const uint8_t edge[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F,
                                   0xA0, 0xBF, 0xC0, 0xC2, 0xF4, 0xFF};
    uint8_t b[4];
    size_t mismatches = 0, checked = 0;

    for (unsigned x = 0; x < 256; x++) {
        b[0] = (uint8_t)x;
        checked++;
        mismatches += dm_utf8_valid(b, 1) != ref_valid(b, 1);
        for (unsigned y = 0; y < 256; y++) {
            b[1] = (uint8_t)y;
            checked++;
            mismatches += dm_utf8_valid(b, 2) != ref_valid(b, 2);
            for (size_t z = 0; z < sizeof(edge); z++) {
                b[2] = edge[z];
                checked++;
                mismatches += dm_utf8_valid(b, 3) != ref_valid(b, 3);
                for (size_t w = 0; w < sizeof(edge); w++) {
                    b[3] = edge[w];
                    checked++;
                    mismatches += dm_utf8_valid(b, 4) != ref_valid(b, 4);
                }
            }
        }
    }
    ok(mismatches == 0, "agrees with a reference decoder on %zu inputs", checked);
}

int main(void)
{
    subtest("table", test_table);
    subtest("sticky failure and reset", test_sticky_and_reset);
    subtest("ASCII fast path", test_fast_path_positions);
    subtest("exhaustive 1-4 byte comparison", test_exhaustive);
    return done_testing();
}
