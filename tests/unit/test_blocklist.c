/* Unit tests for common/blocklist.c: normalization (case, fullwidth, spaces
 * and zero-width evasion, Latin-1/Greek/Cyrillic), CJK substrings, masking
 * (overlaps, adjacency, spacing, in place, valid UTF-8), the list format and
 * its bounds and errors, a randomized comparison with a naive matcher,
 * concurrent readers, and a timing printed as a TAP comment (no assertion).
 * Run from the repository root (fixtures in tests/fixtures, or $DM_FIXTURES). */
#include "common/blocklist.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "common/utf8.h"
#include "common/util.h"
#include "tests/unit/tap.h"

static char err[DM_ERRLEN];

/* ---- helpers ------------------------------------------------------------ */

static struct dm_blocklist *list_of(const char *data)
{
    struct dm_blocklist *b;

    err[0] = '\0';
    b = dm_blocklist_new(data, strlen(data), err);
    if (b == NULL)
        printf("# unexpected error: %s\n", err);
    DM_AN(b);
    return b;
}

static bool match(const struct dm_blocklist *b, const char *text)
{
    return dm_blocklist_match(b, text, strlen(text));
}

/* Masks text into a fresh buffer and also in place; checks that both agree
 * and returns the masked text in a static buffer (count in *n). */
static const char *mask(const struct dm_blocklist *b, const char *text, size_t *n)
{
    static char out[4096];
    char inplace[4096];
    size_t len = strlen(text), outlen = 0, inlen = 0, n2;

    DM_ASSERT(len < sizeof(out));
    *n = dm_blocklist_mask(b, text, len, out, len + 1, &outlen);
    DM_ASSERT(outlen == strlen(out));
    memcpy(inplace, text, len + 1);
    n2 = dm_blocklist_mask(b, inplace, len, inplace, len + 1, &inlen);
    DM_ASSERT(n2 == *n && inlen == outlen && memcmp(inplace, out, outlen + 1) == 0);
    return out;
}

static bool masks_to(const struct dm_blocklist *b, const char *text, const char *want,
                     size_t want_n)
{
    size_t n;
    const char *got = mask(b, text, &n);
    bool same = strcmp(got, want) == 0 && n == want_n;

    if (!same)
        printf("# mask(\"%s\") = \"%s\" (%zu), want \"%s\" (%zu)\n", text, got, n, want, want_n);
    return same;
}

static bool err_has(const char *needle)
{
    if (strstr(err, needle) != NULL)
        return true;
    printf("# err \"%s\" lacks \"%s\"\n", err, needle);
    return false;
}

static char tmp_paths[8][512];
static int ntmp;

/* Writes data[0..len) to a new temporary file; removed by remove_tmp_files. */
static const char *tmp_file(const char *data, size_t len)
{
    const char *dir = getenv("TMPDIR");
    char *path;
    int fd;

    DM_ASSERT(ntmp < (int)DM_ARRAY_LEN(tmp_paths));
    path = tmp_paths[ntmp++];
    snprintf(path, sizeof(tmp_paths[0]), "%s/dm-test-blocklist.XXXXXX",
             dir != NULL && *dir != '\0' ? dir : "/tmp");
    fd = mkstemp(path);
    DM_ASSERT(fd >= 0);
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        DM_ASSERT(w > 0);
        off += (size_t)w;
    }
    DM_AZ(close(fd));
    return path;
}

static void remove_tmp_files(void)
{
    for (int i = 0; i < ntmp; i++)
        unlink(tmp_paths[i]);
    ntmp = 0;
}

/* xorshift64*: deterministic test data. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 33) % n;
}

static size_t put_utf8(char *p, uint32_t c)
{
    if (c < 0x80) {
        p[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        p[0] = (char)(0xC0 | c >> 6);
        p[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        p[0] = (char)(0xE0 | c >> 12);
        p[1] = (char)(0x80 | (c >> 6 & 0x3F));
        p[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    p[0] = (char)(0xF0 | c >> 18);
    p[1] = (char)(0x80 | (c >> 12 & 0x3F));
    p[2] = (char)(0x80 | (c >> 6 & 0x3F));
    p[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---- normalization ------------------------------------------------------ */

static void test_case_insensitive(void)
{
    struct dm_blocklist *b = list_of("bad\nSpam\n");

    ok(match(b, "this is bad"), "lower-case entry in lower-case text");
    ok(match(b, "this is BAD!") && match(b, "BaD") && match(b, "xxBAdxx"),
       "upper and mixed case text match");
    ok(match(b, "buy SPAM now") && match(b, "spam"), "mixed-case entry normalized at load");
    ok(!match(b, "good") && !match(b, "ba") && !match(b, "b-a-d"), "no match: good, ba, b-a-d");
    ok(!match(b, ""), "empty text matches nothing");
    ok(dm_blocklist_match(b, NULL, 0) == false, "NULL text of length 0");
    ok(dm_blocklist_count(b) == 2, "two entries");
    dm_blocklist_free(b);
}

static void test_fullwidth(void)
{
    struct dm_blocklist *b = list_of("bad\n\xEF\xBC\xA6\xEF\xBC\xB5\n"); /* "bad", "ＦＵ" */

    ok(match(b, "\xEF\xBD\x82\xEF\xBD\x81\xEF\xBD\x84"), "fullwidth lower ｂａｄ matches bad");
    ok(match(b, "\xEF\xBC\xA2\xEF\xBC\xA1\xEF\xBC\xA4"), "fullwidth upper ＢＡＤ matches bad");
    ok(match(b, "b\xEF\xBC\xA1"
                "d"),
       "mixed half/fullwidth bＡd matches");
    ok(match(b, "fu") && match(b, "FU") && match(b, "\xEF\xBD\x86\xEF\xBD\x95"),
       "fullwidth entry ＦＵ matches fu, FU, ｆｕ");
    ok(!match(b, "\xEF\xBC\xA2\xEF\xBC\xA1"), "ＢＡ alone does not match");
    dm_blocklist_free(b);
}

static void test_spacing_evasion(void)
{
    struct dm_blocklist *b = list_of("bad\nb a d d y\n");

    ok(match(b, "b a d"), "spaces between letters: \"b a d\"");
    ok(match(b, "b\ta\r\nd"), "tab, CR, LF between letters");
    ok(match(b, "b\xE2\x80\x8B"
                "ad"),
       "zero-width space U+200B");
    ok(match(b, "b\xE2\x80\x8C"
                "a\xE2\x80\x8D"
                "d"),
       "ZWNJ U+200C and ZWJ U+200D");
    ok(match(b, "b\xE2\x81\xA0"
                "a\xEF\xBB\xBF"
                "d"),
       "word joiner U+2060 and BOM U+FEFF");
    ok(match(b, "b\xE3\x80\x80"
                "a\xC2\xA0"
                "d"),
       "ideographic space U+3000 and NBSP U+00A0");
    ok(match(b, "b\xC2\xAD"
                "a\xE2\x80\xAE"
                "d"),
       "soft hyphen U+00AD and RLO U+202E");
    ok(match(b, "\xEF\xBC\xA2 \xE2\x80\x8B\xEF\xBD\x81\xE3\x80\x80"
                "D"),
       "fullwidth, case, spaces and zero-width combined");
    ok(!match(b, "b_a_d") && !match(b, "b.a.d"), "punctuation is not ignored");

    dm_blocklist_free(b);
    b = list_of("b a d\n");
    ok(match(b, "bad") && match(b, "b\xE2\x80\x8B"
                                   "a d"),
       "an entry with spaces is normalized too");
    dm_blocklist_free(b);
    b = list_of("b\xE2\x80\x8B"
                "ad\n");
    ok(match(b, "bad"), "an entry with a zero-width space is normalized too");
    dm_blocklist_free(b);
}

static void test_cjk(void)
{
    /* 坏词, 傻瓜 */
    struct dm_blocklist *b = list_of("\xE5\x9D\x8F\xE8\xAF\x8D\n\xE5\x82\xBB\xE7\x93\x9C\n");

    ok(match(b, "\xE8\xBF\x99\xE6\x98\xAF\xE5\x9D\x8F\xE8\xAF\x8D\xE5\x90\x97"),
       "坏词 inside 这是坏词吗");
    ok(match(b, "\xE5\x9D\x8F\xE3\x80\x80\xE8\xAF\x8D"), "坏　词 with an ideographic space");
    ok(match(b, "\xE5\x9D\x8F\xE2\x80\x8B\xE8\xAF\x8D"), "坏<ZWSP>词");
    ok(!match(b, "\xE5\x9D\x8F\xE4\xBA\xBA"), "坏人 does not match");
    ok(!match(b, "\xE8\xAF\x8D\xE5\x9D\x8F"), "词坏 (reversed) does not match");
    ok(match(b, "abc\xE5\x82\xBB\xE7\x93\x9C!!"), "傻瓜 between ASCII");
    dm_blocklist_free(b);
}

static void test_other_scripts(void)
{
    /* école, σοφος (final sigma), привет, ёж, łódź, straße */
    struct dm_blocklist *b = list_of("\xC3\xA9"
                                     "cole\n"
                                     "\xCF\x83\xCE\xBF\xCF\x86\xCE\xBF\xCF\x82\n"
                                     "\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82\n"
                                     "\xD1\x91\xD0\xB6\n"
                                     "\xC5\x82\xC3\xB3"
                                     "d\xC5\xBA\n");

    ok(match(b, "\xC3\x89"
                "COLE"),
       "Latin-1: ÉCOLE matches école");
    ok(!match(b, "ecole"), "no decomposition: ecole does not match école");
    ok(match(b, "\xCE\xA3\xCE\x9F\xCE\xA6\xCE\x9F\xCE\xA3"), "Greek: ΣΟΦΟΣ matches σοφος");
    ok(match(b, "\xCF\x83\xCE\xBF\xCF\x86\xCE\xBF\xCF\x83"), "Greek: σοφοσ matches σοφος");
    ok(match(b, "\xD0\x9F\xD0\xA0\xD0\x98\xD0\x92\xD0\x95\xD0\xA2"), "Cyrillic: ПРИВЕТ");
    ok(match(b, "\xD0\x81\xD0\x96"), "Cyrillic: ЁЖ matches ёж (U+0401 -> U+0451)");
    ok(match(b, "\xC5\x81\xC3\x93"
                "D\xC5\xB9"),
       "Latin Extended-A: ŁÓDŹ matches łódź");
    dm_blocklist_free(b);

    b = list_of("\xC3\x97\n"); /* × U+00D7 is not a letter */
    ok(match(b, "\xC3\x97") && !match(b, "\xC3\xB7"), "U+00D7 is not folded to U+00F7");
    dm_blocklist_free(b);
}

static void test_invalid_text(void)
{
    struct dm_blocklist *b = list_of("bad\n");

    ok(!match(b, "b\xFF"
                 "ad"),
       "an invalid byte breaks a match");
    ok(match(b, "\xFF"
                "bad\xC0"),
       "invalid bytes around a match");
    ok(match(b, "\xE5\x9D"
                "bad"),
       "a truncated sequence before a match");
    ok(masks_to(b,
                "\xFF"
                "bad\xE5\x9D",
                "\xFF***\xE5\x9D", 3),
       "mask copies invalid bytes");
    dm_blocklist_free(b);
}

/* ---- masking ------------------------------------------------------------ */

static void test_mask(void)
{
    struct dm_blocklist *b =
        list_of("abc\ncde\nxy\nb a d\n\xE5\x9D\x8F\xE8\xAF\x8D\nq\nlong entry\n");
    size_t n;

    ok(masks_to(b, "hello", "hello", 0), "no match: copied, 0 masked");
    ok(masks_to(b, "", "", 0), "empty text");
    ok(masks_to(b, "zabcz", "z***z", 3), "one occurrence");
    ok(masks_to(b, "zABCz", "z***z", 3), "case-folded occurrence");
    ok(masks_to(b, "zabcdez", "z*****z", 5), "overlapping abc+cde");
    ok(masks_to(b, "abcabc", "******", 6), "adjacent abcabc");
    ok(masks_to(b, "xyxyx", "****x", 4), "adjacent xyxy");
    ok(masks_to(b, "this is b a d!", "this is * * *!", 3), "spacing inside a match kept");
    ok(masks_to(b,
                "b\xE2\x80\x8B"
                "ad",
                "*\xE2\x80\x8B**", 3),
       "zero-width inside kept");
    ok(masks_to(b, "\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3!", "***!", 3),
       "fullwidth ＡＢＣ: one '*' per code point");
    ok(masks_to(b, "\xE8\xBF\x99\xE6\x98\xAF\xE5\x9D\x8F\xE8\xAF\x8D\xE5\x90\x97",
                "\xE8\xBF\x99\xE6\x98\xAF**\xE5\x90\x97", 2),
       "这是坏词吗 -> 这是**吗");
    ok(masks_to(b, "Q\xE5\x9D\x8F\xE8\xAF\x8Dq\xF0\x9F\x98\x80", "****\xF0\x9F\x98\x80", 4),
       "adjacent single-letter and CJK matches, emoji kept");
    ok(masks_to(b, "a long entry here", "a **** ***** here", 9), "phrase with a space");
    ok(masks_to(b, "  abc  ", "  ***  ", 3), "leading and trailing spaces kept");

    {
        const char *t = "\xE8\xBF\x99"
                        "abc\xE6\x98\xAF\xE5\x9D\x8F\xE8\xAF\x8D \xC3\xA9xy";
        const char *got = mask(b, t, &n);
        ok(dm_utf8_valid((const uint8_t *)got, strlen(got)) && n == 7,
           "masked mixed text is valid UTF-8 (%zu masked)", n);
    }
    {
        /* outcap = len + 1 exactly, outlen NULL, out not NUL-initialized */
        char out[8];
        memset(out, 'Z', sizeof(out));
        n = dm_blocklist_mask(b, "abcd", 4, out, 5, NULL);
        ok(n == 3 && strcmp(out, "***d") == 0, "outcap len + 1 suffices, outlen may be NULL");
    }
    dm_blocklist_free(b);
}

/* Matches longer than the window and near its ends: the entry of 64 code
 * points, nested short entries, in texts of 300 code points. */
static void test_mask_long(void)
{
    char list[1024], text[2048], want[2048];
    size_t p = 0, n;
    struct dm_blocklist *b;
    bool all = true;

    /* entry: 64 CJK code points U+4E00.. then a short "q" entry */
    for (uint32_t i = 0; i < DM_BLOCKLIST_MAX_CPS; i++)
        p += put_utf8(list + p, 0x4E00 + i);
    memcpy(list + p, "\nq\n", 4);
    b = list_of(list);

    for (size_t at = 0; at <= 300 - DM_BLOCKLIST_MAX_CPS; at += 7) {
        size_t tp = 0, wp = 0, want_n = 0;
        for (size_t i = 0; i < 300; i++) {
            bool in = i >= at && i < at + DM_BLOCKLIST_MAX_CPS;
            uint32_t c = in ? 0x4E00 + (uint32_t)(i - at) : (i % 5 == 0 ? 'q' : 'z');
            size_t k = put_utf8(text + tp, c);
            if (in || c == 'q') {
                want[wp++] = '*';
                want_n++;
            } else {
                memcpy(want + wp, text + tp, k);
                wp += k;
            }
            tp += k;
        }
        text[tp] = want[wp] = '\0';
        if (strcmp(mask(b, text, &n), want) != 0 || n != want_n || !match(b, text))
            all = false;
    }
    ok(all, "a 64-code-point entry at 34 positions of a 300-code-point text, with q's");

    /* 63 of the 64 do not match */
    p = 0;
    for (uint32_t i = 0; i < DM_BLOCKLIST_MAX_CPS - 1; i++)
        p += put_utf8(text + p, 0x4E00 + i);
    text[p] = '\0';
    ok(!match(b, text) && masks_to(b, text, text, 0), "the first 63 code points do not match");
    dm_blocklist_free(b);
}

/* ---- list format and errors --------------------------------------------- */

static void test_format(void)
{
    struct dm_blocklist *b;
    char path[512];
    const char *dir = getenv("DM_FIXTURES");

    b = list_of("# comment\n\n   \n\t# indented comment\nfoo  \r\n  bar baz\r\n"
                "\xE3\x80\x80qux\xE2\x80\x8B\nno-newline");
    ok(dm_blocklist_count(b) == 4, "4 entries among comments and blank lines");
    ok(match(b, "FOO") && match(b, "barbaz") && match(b, "QUX") && match(b, "no-newline"),
       "trimmed entries, CRLF, last line without newline");
    ok(!match(b, "comment") && !match(b, "indented"), "comment lines are not entries");
    ok(!match(b, "#"), "'#' is not an entry");
    dm_blocklist_free(b);

    b = list_of("a#b\n");
    ok(match(b, "xa#bx") && !match(b, "a"), "'#' inside an entry is literal");
    dm_blocklist_free(b);

    b = list_of("\xEF\xBB\xBF# comment after a BOM\nfoo\n");
    ok(dm_blocklist_count(b) == 1 && !match(b, "comment"), "BOM before a comment line");
    dm_blocklist_free(b);

    b = list_of("");
    ok(b != NULL && dm_blocklist_count(b) == 0 && !match(b, "anything") &&
           masks_to(b, "anything", "anything", 0),
       "empty list matches nothing");
    dm_blocklist_free(b);
    b = dm_blocklist_new(NULL, 0, err);
    ok(b != NULL && !match(b, "x"), "NULL data of length 0");
    dm_blocklist_free(b);
    b = list_of("# only\n\n# comments\n\xE2\x80\x8B\n");
    ok(dm_blocklist_count(b) == 0 && !match(b, "only"), "comments and invisible lines only");
    dm_blocklist_free(b);
    dm_blocklist_free(NULL);
    ok(1, "dm_blocklist_free(NULL) is a no-op");

    b = list_of("dup\nDUP\n\xEF\xBD\x84up\n");
    ok(dm_blocklist_count(b) == 3 && match(b, "dup") && masks_to(b, "dupdup", "******", 6),
       "duplicate entries are harmless");
    dm_blocklist_free(b);

    snprintf(path, sizeof(path), "%s/blocked-words-test.txt", dir ? dir : "tests/fixtures");
    b = dm_blocklist_load(path, err);
    ok(b != NULL, "fixture loads (%s)", b ? "ok" : err);
    if (b != NULL) {
        ok(dm_blocklist_count(b) == 6, "fixture has 6 entries");
        ok(match(b, "BadWord") && match(b, "spam link") && match(b, "fubar") &&
               match(b, "\xD0\xBF\xD1\x80\xD0\xBE\xD0\xBA\xD1\x81\xD0\xB8") &&
               match(b, "\xE6\x9F\x90\xE6\x9F\x90\xE6\x9F\x90") &&
               match(b, "\xE8\xBF\x99\xE6\x98\xAF\xE5\x9D\x8F\xE8\xAF\x8D\xE5\x90\x97"),
           "fixture entries match");
        ok(!match(b, "Blocked words for the unit tests"), "fixture comments are not entries");
        dm_blocklist_free(b);
    }
}

static void test_errors(void)
{
    struct dm_blocklist *b;
    char buf[600];
    size_t p = 0;
    const char *path;
    char *big;

    b = dm_blocklist_new("ok\n# fine\nbad\xFFword\n", 19, err);
    ok(b == NULL && err_has("line 3") && err_has("invalid UTF-8"), "invalid UTF-8: line 3");
    b = dm_blocklist_new("\xC0\x80\n", 3, err);
    ok(b == NULL && err_has("line 1"), "overlong NUL on line 1 refused");
    b = dm_blocklist_new("ok\n\xED\xA0\x80\n", 7, err);
    ok(b == NULL && err_has("line 2"), "surrogate on line 2 refused");
    b = dm_blocklist_new("# bad \xE5\x9D\n", 9, err);
    ok(b == NULL && err_has("line 1"), "invalid UTF-8 is refused in a comment too");

    /* 64 code points (with interior spaces counted) load; 65 do not */
    p = 0;
    buf[p++] = ' ';
    for (int i = 0; i < DM_BLOCKLIST_MAX_CPS; i++)
        p += put_utf8(buf + p, i == 10 ? ' ' : 0x4E00 + (uint32_t)i);
    memcpy(buf + p, "  \n", 3);
    p += 3;
    b = dm_blocklist_new(buf, p, err);
    ok(b != NULL, "an entry of 64 code points (trimmed) loads");
    dm_blocklist_free(b);
    memmove(buf + 4, buf, p); /* "a\nb\n" then the same line with 'x' for its leading space */
    memcpy(buf, "a\nb\n", 4);
    buf[4] = 'x';
    b = dm_blocklist_new(buf, p + 4, err);
    ok(b == NULL && err_has("line 3") && err_has("longer than 64"),
       "an entry of 65 code points is refused with its line");

    big = dm_malloc(DM_BLOCKLIST_MAX_BYTES + 2);
    memset(big, '#', DM_BLOCKLIST_MAX_BYTES + 1);
    b = dm_blocklist_new(big, DM_BLOCKLIST_MAX_BYTES, err);
    ok(b != NULL && dm_blocklist_count(b) == 0, "a list of exactly the byte bound loads");
    dm_blocklist_free(b);
    b = dm_blocklist_new(big, DM_BLOCKLIST_MAX_BYTES + 1, err);
    ok(b == NULL && err_has("larger than"), "one byte over the bound is refused");
    path = tmp_file(big, DM_BLOCKLIST_MAX_BYTES + 1);
    b = dm_blocklist_load(path, err);
    ok(b == NULL && err_has(path) && err_has("larger than"), "a file over the bound is refused");
    free(big);

    {
        const char *bad = "fine\nstill fine\n\xF5\x80\x80\x80\n";
        path = tmp_file(bad, strlen(bad));
    }
    b = dm_blocklist_load(path, err);
    ok(b == NULL && err_has(path) && err_has("line 3: invalid UTF-8"),
       "file error names the path and line (%s)", err);
    b = dm_blocklist_load("/nonexistent/dm-blocked-words.txt", err);
    ok(b == NULL && err_has("/nonexistent/dm-blocked-words.txt") && err_has("No such file"),
       "a missing file is refused");
    b = dm_blocklist_load("/", err);
    ok(b == NULL && err_has("/:"), "a directory is refused (%s)", err);
    remove_tmp_files();
}

/* Exactly DM_BLOCKLIST_MAX_ENTRIES load, one more does not. */
static void test_entry_bound(void)
{
    size_t cap = (size_t)(DM_BLOCKLIST_MAX_ENTRIES + 1) * 8, len = 0;
    char *data = dm_malloc(cap);
    struct dm_blocklist *b;

    for (int i = 0; i < DM_BLOCKLIST_MAX_ENTRIES; i++)
        len += (size_t)snprintf(data + len, cap - len, "w%dz\n", i);
    b = dm_blocklist_new(data, len, err);
    ok(b != NULL && dm_blocklist_count(b) == DM_BLOCKLIST_MAX_ENTRIES, "%d entries load",
       DM_BLOCKLIST_MAX_ENTRIES);
    if (b != NULL) {
        ok(match(b, "xx W99999Z xx") && match(b, "w0z") && !match(b, "w100000z") &&
               !match(b, "w12"),
           "all of them are matched");
        dm_blocklist_free(b);
    }
    len += (size_t)snprintf(data + len, cap - len, "\n# c\nlast\n");
    b = dm_blocklist_new(data, len, err);
    ok(b == NULL && err_has("line 100003") && err_has("more than 100000"),
       "one more entry is refused with its line");
    free(data);
}

/* ---- randomized comparison with a naive matcher ------------------------- */

/* Small alphabet so that matches, overlaps and shared prefixes are common:
 * a b c, their fullwidth upper case, 坏 词, and ignored space / ZWSP. */
static const uint32_t alpha[] = {'a', 'b', 'c', 0xFF21, 0xFF22, 0x574F, 0x8BCD, ' ', 0x200B};
static const uint32_t alpha_norm[] = {'a', 'b', 'c', 'a', 'b', 0x574F, 0x8BCD, 0, 0};

struct ref_entry {
    uint32_t cp[8];
    size_t n;
};

static void test_random(void)
{
    enum { NENT = 40, NTEXT = 3000 };
    struct ref_entry ents[NENT];
    char list[NENT * 40], text[256], want[256];
    size_t lp = 0;
    bool match_ok = true, mask_ok = true;

    for (int e = 0; e < NENT; e++) {
        ents[e].n = 1 + rnd(e < 10 ? 2 : 5);
        for (size_t i = 0; i < ents[e].n; i++) {
            uint32_t k = rnd(7); /* no ignored code points inside: keeps the reference simple */
            ents[e].cp[i] = alpha_norm[k];
            lp += put_utf8(list + lp, alpha[k]);
        }
        list[lp++] = '\n';
    }
    list[lp] = '\0';

    for (int round = 0; round < 4; round++) {
        struct dm_blocklist *b;
        size_t nent = round == 0 ? NENT : (size_t)(NENT / (round + 1));
        /* the first nent lines */
        char sub[sizeof(list)];
        size_t sl = 0, lines = 0;
        while (lines < nent) {
            sub[sl] = list[sl];
            if (list[sl++] == '\n')
                lines++;
        }
        sub[sl] = '\0';
        b = list_of(sub);

        for (int t = 0; t < NTEXT; t++) {
            uint32_t norm[40];
            size_t off[40], blen[40], nn = 0, tp = 0, wp = 0, want_n = 0, got_n;
            bool masked[40] = {false}, any = false;
            size_t ncp = rnd(40), last = 0;
            const char *got;

            for (size_t i = 0; i < ncp; i++) {
                uint32_t k = rnd(DM_ARRAY_LEN(alpha));
                size_t w = put_utf8(text + tp, alpha[k]);
                if (alpha_norm[k] != 0) {
                    norm[nn] = alpha_norm[k];
                    off[nn] = tp;
                    blen[nn++] = w;
                }
                tp += w;
            }
            text[tp] = '\0';
            for (size_t s = 0; s < nn; s++)
                for (size_t e = 0; e < nent; e++)
                    if (ents[e].n <= nn - s &&
                        memcmp(norm + s, ents[e].cp, ents[e].n * sizeof(uint32_t)) == 0) {
                        any = true;
                        for (size_t i = 0; i < ents[e].n; i++)
                            masked[s + i] = true;
                    }
            for (size_t i = 0; i < nn; i++) {
                memcpy(want + wp, text + last, off[i] - last);
                wp += off[i] - last;
                if (masked[i]) {
                    want[wp++] = '*';
                    want_n++;
                } else {
                    memcpy(want + wp, text + off[i], blen[i]);
                    wp += blen[i];
                }
                last = off[i] + blen[i];
            }
            memcpy(want + wp, text + last, tp - last + 1);
            if (match(b, text) != any)
                match_ok = false;
            got = mask(b, text, &got_n);
            if (strcmp(got, want) != 0 || got_n != want_n) {
                if (mask_ok)
                    printf("# text \"%s\": got \"%s\" want \"%s\"\n", text, got, want);
                mask_ok = false;
            }
        }
        dm_blocklist_free(b);
    }
    ok(match_ok, "match agrees with a naive matcher on 12000 random texts");
    ok(mask_ok, "mask agrees with a naive masker on 12000 random texts");
}

/* ---- many entries, threads, timing --------------------------------------- */

/* A random text code point: 10% spaces, 50% common CJK (U+4E00 + 0..3499),
 * 40% ASCII letters. */
static uint32_t random_cp(void)
{
    uint32_t r = rnd(100);
    if (r < 10)
        return ' ';
    if (r < 60)
        return 0x4E00 + rnd(3500);
    return 'a' + rnd(26);
}

/* nent random entries: half 2-4 CJK code points, half 4-8 ASCII letters. */
static char *random_list(size_t nent)
{
    size_t cap = nent * 40, len = 0;
    char *data = dm_malloc(cap);

    for (size_t e = 0; e < nent; e++) {
        bool cjk = rnd(2) == 0;
        size_t n = cjk ? 2 + rnd(3) : 4 + rnd(5);
        for (size_t i = 0; i < n; i++)
            len += put_utf8(data + len, cjk ? 0x4E00 + rnd(3500) : 'a' + rnd(26));
        data[len++] = '\n';
    }
    data[len] = '\0';
    return data;
}

static size_t random_text(char *p, size_t ncp)
{
    size_t len = 0;
    for (size_t i = 0; i < ncp; i++)
        len += put_utf8(p + len, random_cp());
    p[len] = '\0';
    return len;
}

struct reader {
    pthread_t tid;
    const struct dm_blocklist *b;
    const char *texts;
    const size_t *lens;
    const bool *want;
    size_t ntexts;
    bool ok;
};

static void *run_reader(void *arg)
{
    struct reader *r = arg;
    char out[512];

    r->ok = true;
    for (int round = 0; round < 20; round++)
        for (size_t i = 0; i < r->ntexts; i++) {
            const char *t = r->texts + i * 512;
            if (dm_blocklist_match(r->b, t, r->lens[i]) != r->want[i] ||
                (dm_blocklist_mask(r->b, t, r->lens[i], out, sizeof(out), NULL) > 0) != r->want[i])
                r->ok = false;
        }
    return NULL;
}

static void test_many_entries(void)
{
    enum { NENT = 10000, NTEXT = 2000, NTHREAD = 4, ITERS = 20 };
    char *data = random_list(NENT);
    char *texts = dm_malloc((size_t)NTEXT * 512);
    size_t lens[NTEXT];
    bool want[NTEXT];
    struct reader rd[NTHREAD];
    struct dm_blocklist *b;
    size_t hits = 0, masked_total = 0;
    int64_t t0, t1, t2;
    char out[512];
    volatile size_t sink = 0;
    bool all = true;

    t0 = dm_mono_us();
    b = dm_blocklist_new(data, strlen(data), err);
    t1 = dm_mono_us();
    ok(b != NULL && dm_blocklist_count(b) == NENT, "10000 random entries load");
    printf("# build: 10000 entries in %.1f ms\n", (double)(t1 - t0) / 1000.0);

    for (size_t i = 0; i < NTEXT; i++) {
        lens[i] = random_text(texts + i * 512, 100);
        want[i] = dm_blocklist_match(b, texts + i * 512, lens[i]);
        hits += want[i];
    }
    /* Every entry matches itself embedded in text. */
    {
        const char *p = data;
        char buf[256];
        while (*p != '\0') {
            const char *nl = strchr(p, '\n');
            int n = snprintf(buf, sizeof(buf), "x %.*s y", (int)(nl - p), p);
            if (!dm_blocklist_match(b, buf, (size_t)n) ||
                dm_blocklist_mask(b, buf, (size_t)n, out, sizeof(out), NULL) == 0)
                all = false;
            p = nl + 1;
        }
    }
    ok(all, "each of the 10000 entries is found in a text containing it");
    printf("# %zu of %d random 100-code-point texts match some entry\n", hits, NTEXT);

    t1 = dm_mono_us();
    for (int it = 0; it < ITERS; it++)
        for (size_t i = 0; i < NTEXT; i++)
            sink += dm_blocklist_match(b, texts + i * 512, lens[i]);
    t2 = dm_mono_us();
    printf("# match: %.3f us/call (100 code points, 10000 entries, %d calls)\n",
           (double)(t2 - t1) / (ITERS * NTEXT), ITERS * NTEXT);
    t1 = dm_mono_us();
    for (int it = 0; it < ITERS; it++)
        for (size_t i = 0; i < NTEXT; i++)
            masked_total += dm_blocklist_mask(b, texts + i * 512, lens[i], out, sizeof(out), NULL);
    t2 = dm_mono_us();
    printf("# mask:  %.3f us/call (%zu code points masked in all)\n",
           (double)(t2 - t1) / (ITERS * NTEXT), masked_total);
    /* The worst case for match: nothing matches, so the whole text is read. */
    {
        size_t nomatch = 0;
        t1 = dm_mono_us();
        for (int it = 0; it < ITERS; it++)
            for (size_t i = 0; i < NTEXT; i++)
                if (!want[i]) {
                    sink += dm_blocklist_match(b, texts + i * 512, lens[i]);
                    nomatch++;
                }
        t2 = dm_mono_us();
        if (nomatch > 0)
            printf("# match, texts without a match: %.3f us/call\n",
                   (double)(t2 - t1) / (double)nomatch);
    }
    DM_UNUSED(sink);

    for (int i = 0; i < NTHREAD; i++) {
        rd[i] =
            (struct reader){.b = b, .texts = texts, .lens = lens, .want = want, .ntexts = NTEXT};
        DM_AZ(pthread_create(&rd[i].tid, NULL, run_reader, &rd[i]));
    }
    all = true;
    for (int i = 0; i < NTHREAD; i++) {
        DM_AZ(pthread_join(rd[i].tid, NULL));
        all = all && rd[i].ok;
    }
    ok(all, "%d threads matching and masking the same list agree", NTHREAD);

    dm_blocklist_free(b);
    free(texts);
    free(data);
}

int main(void)
{
    subtest("case-insensitive", test_case_insensitive);
    subtest("fullwidth", test_fullwidth);
    subtest("spaces and zero-width evasion", test_spacing_evasion);
    subtest("CJK substrings", test_cjk);
    subtest("Latin-1, Latin Extended-A, Greek, Cyrillic", test_other_scripts);
    subtest("invalid UTF-8 in text", test_invalid_text);
    subtest("masking", test_mask);
    subtest("masking long entries and texts", test_mask_long);
    subtest("list format", test_format);
    subtest("errors and bounds", test_errors);
    subtest("entry bound", test_entry_bound);
    subtest("random texts against a naive matcher", test_random);
    subtest("many entries, threads, timing", test_many_entries);
    return done_testing();
}
