/* Comment records and protocol messages: the request-body accept/reject
 * table, the record round trip, ULIDs, record inspection, the danmaku frame
 * at its buffer boundaries, every server message against the documented
 * JSON (DESIGN §4), and the client message table. */
#include "common/proto.h"

#include "common/history.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/util.h"
#include "tests/unit/tap.h"

#define MAXC 100 /* max_text_chars of the table, the shipped default */

static bool contains(const char *hay, const char *needle)
{
    return hay != NULL && strstr(hay, needle) != NULL;
}

/* ---- dm_comment_parse_request ------------------------------------------- */

struct req_case {
    const char *body;
    size_t max; /* 0: MAXC */
    bool accept;
    const char *named; /* accept: expected text; reject: substring err must hold */
};

static const struct req_case req_cases[] = {
    /* text */
    {"{\"text\":\"hi\"}", 0, true, "hi"},
    {"{\"text\":\"\\u65e5\\u672c \\\"q\\\" \\\\\"}", 0, true, "\xe6\x97\xa5\xe6\x9c\xac \"q\" \\"},
    {"{\"text\":\" a \"}", 0, true, " a "},
    {"{\"text\":\"\\u3000a\"}", 0, true,
     "\xe3\x80\x80"
     "a"},
    {"{\"text\":\"a\\u00a0b\"}", 0, true,
     "a\xc2\xa0"
     "b"},                              /* first code point after C1 */
    {"{\"text\":\"~\"}", 0, true, "~"}, /* last before DEL */
    {"{}", 0, false, "text"},
    {"{\"color\":\"#000000\"}", 0, false, "text"},
    {"{\"text\":\"\"}", 0, false, "text"},
    {"{\"text\":\" \"}", 0, false, "text"},
    {"{\"text\":\"   \"}", 0, false, "text"},
    {"{\"text\":\"\\u3000\\u3000\"}", 0, false, "text"},
    {"{\"text\":\" \\u3000\\u00a0 \"}", 0, false, "text"},
    {"{\"text\":\"\\t\"}", 0, false, "text"},
    {"{\"text\":\"a\\nb\"}", 0, false, "text"},
    {"{\"text\":\"a\\rb\"}", 0, false, "text"},
    {"{\"text\":\"a\\u001fb\"}", 0, false, "text"},
    {"{\"text\":\"a\\u007fb\"}", 0, false, "text"}, /* DEL */
    {"{\"text\":\"a\\u0080b\"}", 0, false, "text"}, /* C1 */
    {"{\"text\":\"a\\u0085b\"}", 0, false, "text"}, /* C1 NEL */
    {"{\"text\":\"a\xc2\x85"
     "b\"}",
     0, false, "text"}, /* NEL as raw UTF-8 */
    {"{\"text\":\"a\\u009fb\"}", 0, false, "text"},
    {"{\"text\":\"a\\u0000b\"}", 0, false, "body"}, /* jansson refuses NUL: a body error */
    {"{\"text\":5}", 0, false, "text"},
    {"{\"text\":null}", 0, false, "text"},
    {"{\"text\":true}", 0, false, "text"},
    {"{\"text\":[\"a\"]}", 0, false, "text"},
    {"{\"text\":{\"a\":1}}", 0, false, "text"},
    /* length in code points, not bytes */
    {"{\"text\":\"abcde\"}", 5, true, "abcde"},
    {"{\"text\":\"abcdef\"}", 5, false, "text"},
    {"{\"text\":\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\"}", 5, true,
     "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac"},
    {"{\"text\":\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\"}", 5,
     false, "text"},
    {"{\"text\":\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\"}", 3, true,
     "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80"},
    {"{\"text\":\"\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\"}", 3, false, "text"},
    {"{\"text\":\"x\"}", 1, true, "x"},
    {"{\"text\":\"xy\"}", 1, false, "text"},
    /* color */
    {"{\"text\":\"c\",\"color\":\"#abcdef\"}", 0, true, "c"},
    {"{\"text\":\"c\",\"color\":\"#ABCDEF\"}", 0, true, "c"},
    {"{\"text\":\"c\",\"color\":\"#abc\"}", 0, false, "color"},
    {"{\"text\":\"c\",\"color\":\"abcdef1\"}", 0, false, "color"},
    {"{\"text\":\"c\",\"color\":\"abcdef\"}", 0, false, "color"},
    {"{\"text\":\"c\",\"color\":\"#abcdeg\"}", 0, false, "color"},
    {"{\"text\":\"c\",\"color\":\"#12345\"}", 0, false, "color"},
    {"{\"text\":\"c\",\"color\":\"#1234567\"}", 0, false, "color"},
    {"{\"text\":\"c\",\"color\":\"\"}", 0, false, "color"},
    {"{\"text\":\"c\",\"color\":\"red\"}", 0, false, "color"},
    {"{\"text\":\"c\",\"color\":16777215}", 0, false, "color"},
    {"{\"text\":\"c\",\"color\":null}", 0, false, "color"},
    /* mode and size */
    {"{\"text\":\"m\",\"mode\":\"top\"}", 0, true, "m"},
    {"{\"text\":\"m\",\"mode\":\"Top\"}", 0, false, "mode"},
    {"{\"text\":\"m\",\"mode\":\"left\"}", 0, false, "mode"},
    {"{\"text\":\"m\",\"mode\":\"\"}", 0, false, "mode"},
    {"{\"text\":\"m\",\"mode\":1}", 0, false, "mode"},
    {"{\"text\":\"s\",\"size\":\"huge\"}", 0, false, "size"},
    {"{\"text\":\"s\",\"size\":\"Large\"}", 0, false, "size"},
    {"{\"text\":\"s\",\"size\":2}", 0, false, "size"},
    /* vt */
    {"{\"text\":\"v\",\"vt\":0}", 0, true, "v"},
    {"{\"text\":\"v\",\"vt\":-1}", 0, false, "vt"},
    {"{\"text\":\"v\",\"vt\":1.5}", 0, false, "vt"},
    {"{\"text\":\"v\",\"vt\":1.0}", 0, false, "vt"},
    {"{\"text\":\"v\",\"vt\":1e3}", 0, false, "vt"},
    {"{\"text\":\"v\",\"vt\":\"5\"}", 0, false, "vt"},
    {"{\"text\":\"v\",\"vt\":true}", 0, false, "vt"},
    {"{\"text\":\"v\",\"vt\":null}", 0, false, "vt"},
    /* unknown and duplicate fields */
    {"{\"text\":\"u\",\"foo\":1}", 0, false, "foo"},
    {"{\"foo\":1,\"text\":\"u\"}", 0, false, "foo"},
    {"{\"text\":\"u\",\"Text\":\"v\"}", 0, false, "Text"},
    {"{\"text\":\"u\",\"prio\":5}", 0, false, "prio"}, /* prio never comes from the body */
    {"{\"text\":\"u\",\"room\":\"r\"}", 0, false, "room"},
    {"{\"text\":\"a\",\"text\":\"b\"}", 0, false, "body"},
    /* not an object, not JSON, not UTF-8 */
    {"[]", 0, false, "body"},
    {"[{\"text\":\"a\"}]", 0, false, "body"},
    {"\"text\"", 0, false, "body"},
    {"1", 0, false, "body"},
    {"null", 0, false, "body"},
    {"", 0, false, "body"},
    {"{\"text\":", 0, false, "body"},
    {"{\"text\":\"a\"} x", 0, false, "body"},
    {"{\"text\":\"a\"}{}", 0, false, "body"},
    {"{\"text\":\"\xff\"}", 0, false, "body"},
    {"{\"text\":\"\xc0\xaf\"}", 0, false, "body"},         /* overlong '/' */
    {"{\"text\":\"\xed\xa0\x80\"}", 0, false, "body"},     /* encoded surrogate */
    {"{\"text\":\"\xe6\x97\"}", 0, false, "body"},         /* truncated sequence */
    {"{\"text\":\"\xf4\x90\x80\x80\"}", 0, false, "body"}, /* above U+10FFFF */
    {"{\"text\":\"\\ud800\"}", 0, false, "body"},          /* lone escaped surrogate */
    {"{\"te\xffxt\":\"a\"}", 0, false, "body"},
};

static void test_parse_request_table(void)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(req_cases); i++) {
        const struct req_case *t = &req_cases[i];
        struct dm_comment c;
        char err[DM_ERRLEN] = "";
        size_t max = t->max ? t->max : MAXC;
        int rc = dm_comment_parse_request(t->body, strlen(t->body), max, &c, err);

        if (t->accept) {
            ok(rc == 0 && c.text != NULL && strcmp(c.text, t->named) == 0, "accept #%zu %s (%s)", i,
               t->body, err);
            dm_comment_fini(&c);
        } else {
            /* Every message starts with the field it is about. */
            ok(rc == -1 && strncmp(err, t->named, strlen(t->named)) == 0 && c.text == NULL,
               "reject #%zu %s: %s", i, t->body, err);
        }
    }
}

static void test_parse_request_fields(void)
{
    struct dm_comment c;
    char err[DM_ERRLEN];
    const char *body;
    int rc;

    body = "{\"text\":\"hi\"}";
    rc = dm_comment_parse_request(body, strlen(body), MAXC, &c, err);
    ok(rc == 0 && strcmp(c.color, "#ffffff") == 0 && c.mode == DM_MODE_SCROLL &&
           c.size == DM_SIZE_NORMAL && !c.has_vt && c.prio == 0,
       "defaults: #ffffff, scroll, normal, no vt");
    dm_comment_fini(&c);

    body = "{\"vt\":123456,\"size\":\"large\",\"mode\":\"bottom\",\"color\":\"#A0b1C2\","
           "\"text\":\"all\"}";
    rc = dm_comment_parse_request(body, strlen(body), MAXC, &c, err);
    ok(rc == 0, "every field set (%s)", rc == 0 ? "" : err);
    ok(rc == 0 && strcmp(c.color, "#a0b1c2") == 0, "color normalised to lower case: %s", c.color);
    ok(rc == 0 && c.mode == DM_MODE_BOTTOM, "mode bottom");
    ok(rc == 0 && c.size == DM_SIZE_LARGE, "size large");
    ok(rc == 0 && c.has_vt && c.vt == 123456, "vt 123456");
    dm_comment_fini(&c);
    ok(c.text == NULL, "fini clears text");

    static const char *const modes[] = {"scroll", "top", "bottom"};
    static const char *const sizes[] = {"small", "normal", "large"};
    char buf[128];
    for (int i = 0; i < 3; i++) {
        snprintf(buf, sizeof(buf), "{\"text\":\"x\",\"mode\":\"%s\",\"size\":\"%s\"}", modes[i],
                 sizes[i]);
        rc = dm_comment_parse_request(buf, strlen(buf), MAXC, &c, err);
        ok(rc == 0 && (int)c.mode == i && (int)c.size == i, "mode %s, size %s", modes[i], sizes[i]);
        dm_comment_fini(&c);
    }

    body = "{\"text\":\"v\",\"vt\":9007199254740993}";
    rc = dm_comment_parse_request(body, strlen(body), MAXC, &c, err);
    ok(rc == 0 && c.vt == INT64_C(9007199254740993), "vt keeps 64-bit precision");
    dm_comment_fini(&c);

    /* len is honoured: the bytes after it are not part of the body. */
    body = "{\"text\":\"hi\"}{\"garbage\"";
    rc = dm_comment_parse_request(body, 13, MAXC, &c, err);
    ok(rc == 0 && strcmp(c.text, "hi") == 0, "only len bytes are parsed");
    dm_comment_fini(&c);
    rc = dm_comment_parse_request(body, 12, MAXC, &c, err);
    ok(rc == -1, "a truncated body is rejected");

    /* Max length at the hard cap, with 3-byte characters. */
    char *big = dm_malloc(DM_TEXT_MAX_CAP * 3 + 32);
    size_t n = (size_t)sprintf(big, "{\"text\":\"");
    for (int i = 0; i < DM_TEXT_MAX_CAP; i++)
        n += (size_t)sprintf(big + n, "\xe5\xad\x97");
    strcpy(big + n, "\"}");
    rc = dm_comment_parse_request(big, strlen(big), DM_TEXT_MAX_CAP, &c, err);
    ok(rc == 0 && strlen(c.text) == DM_TEXT_MAX_CAP * 3, "%d three-byte code points accepted",
       DM_TEXT_MAX_CAP);
    dm_comment_fini(&c);
    strcpy(big + n, "\xe5\xad\x97\"}");
    rc = dm_comment_parse_request(big, strlen(big), DM_TEXT_MAX_CAP, &c, err);
    ok(rc == -1 && contains(err, "text") && contains(err, "long"), "one more rejected: %s", err);
    free(big);

    /* A long unknown key is cut in the message, not overflowing err. */
    char key[300];
    memset(key, 'k', 250);
    key[250] = '\0';
    char *kb = dm_malloc(400);
    snprintf(kb, 400, "{\"text\":\"a\",\"%s\":1}", key);
    rc = dm_comment_parse_request(kb, strlen(kb), MAXC, &c, err);
    ok(rc == -1 && strlen(err) < DM_ERRLEN && strncmp(err, "kkkk", 4) == 0,
       "long unknown key truncated in err");
    free(kb);
}

/* ---- dm_comment_encode --------------------------------------------------- */

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : "(missing)";
}

static void test_encode(void)
{
    struct dm_comment c;
    char err[DM_ERRLEN];
    const char *body = "{\"text\":\"caf\\u00e9 \\\"quote\\\" \\\\ / \\ud83d\\ude00\","
                       "\"color\":\"#00FF7f\",\"mode\":\"top\",\"size\":\"small\",\"vt\":42}";
    size_t len;
    char *out;
    json_t *o;

    if (dm_comment_parse_request(body, strlen(body), MAXC, &c, err) != 0) {
        ok(0, "setup parse: %s", err);
        return;
    }
    dm_comment_new_id(&c, INT64_C(1700000000123));
    strcpy(c.room, "room-1:a.b_c");
    strcpy(c.uid, "user \"42\"");
    strcpy(c.name, "\xe5\x90\x8d\xe5\x89\x8d\\");
    c.ts = INT64_C(1700000000123);
    c.prio = 2;

    out = dm_comment_encode(&c, &len);
    ok(out != NULL && len == strlen(out), "encode returns its length");
    o = json_loads(out, JSON_REJECT_DUPLICATES, NULL);
    ok(json_is_object(o), "output is one JSON object: %s", out);
    ok(strcmp(jstr(o, "id"), c.id) == 0, "id");
    ok(strcmp(jstr(o, "room"), c.room) == 0, "room");
    ok(strcmp(jstr(o, "uid"), c.uid) == 0, "uid (escaped quotes)");
    ok(strcmp(jstr(o, "name"), c.name) == 0, "name (UTF-8, backslash)");
    ok(strcmp(jstr(o, "text"), c.text) == 0, "text (escapes, astral plane)");
    ok(strcmp(jstr(o, "color"), "#00ff7f") == 0, "color");
    ok(strcmp(jstr(o, "mode"), "top") == 0, "mode");
    ok(strcmp(jstr(o, "size"), "small") == 0, "size");
    ok(json_integer_value(json_object_get(o, "ts")) == c.ts &&
           json_is_integer(json_object_get(o, "ts")),
       "ts");
    ok(json_is_integer(json_object_get(o, "vt")) &&
           json_integer_value(json_object_get(o, "vt")) == 42,
       "vt present when set");
    ok(json_is_integer(json_object_get(o, "prio")) &&
           json_integer_value(json_object_get(o, "prio")) == 2,
       "prio present when set");
    ok(json_object_size(o) == 11, "exactly 11 fields (got %zu)", json_object_size(o));
    ok(strstr(out, "\": ") == NULL && strstr(out, "\n") == NULL, "compact");
    ok(dm_record_inspect(out, len, c.room, strlen(c.room)) == DM_RECORD_COMMENT,
       "the record passes dm_record_inspect");
    json_decref(o);
    free(out);

    c.has_vt = false;
    c.prio = 0;
    out = dm_comment_encode(&c, &len);
    o = json_loads(out, 0, NULL);
    ok(o != NULL && json_object_get(o, "vt") == NULL && json_object_get(o, "prio") == NULL &&
           json_object_size(o) == 9,
       "no vt/prio when unset: %s", out);
    json_decref(o);
    free(out);

    c.has_vt = true;
    c.vt = 0;
    out = dm_comment_encode(&c, &len);
    o = json_loads(out, 0, NULL);
    ok(json_is_integer(json_object_get(o, "vt")) &&
           json_integer_value(json_object_get(o, "vt")) == 0,
       "vt 0 is still present");
    json_decref(o);
    free(out);
    dm_comment_fini(&c);
}

/* ---- dm_comment_new_id ---------------------------------------------------- */

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static bool crockford_only(const char *id)
{
    for (size_t i = 0; id[i] != '\0'; i++) {
        if (strchr(crockford, id[i]) == NULL)
            return false;
    }
    return true;
}

/* The 48-bit time in the first 10 characters. */
static int64_t id_time(const char *id)
{
    int64_t t = 0;
    for (int i = 0; i < 10; i++)
        t = t * 32 + (strchr(crockford, id[i]) - crockford);
    return t;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void test_new_id(void)
{
    static const int64_t times[] = {0,
                                    1,
                                    31,
                                    32,
                                    255,
                                    256,
                                    INT64_C(1700000000000),
                                    INT64_C(1700000000001),
                                    INT64_C(1700000001000),
                                    INT64_C(4102444800000),
                                    (INT64_C(1) << 48) - 1};
    struct dm_comment c, prev;
    bool shape = true, alpha = true, decode = true, ordered = true;

    memset(&c, 0, sizeof(c));
    memset(&prev, 0, sizeof(prev));
    for (size_t i = 0; i < DM_ARRAY_LEN(times); i++) {
        dm_comment_new_id(&c, times[i]);
        if (strlen(c.id) != DM_ID_LEN)
            shape = false;
        if (!crockford_only(c.id))
            alpha = false;
        if (id_time(c.id) != times[i]) {
            printf("# %s decodes to %lld, not %lld\n", c.id, (long long)id_time(c.id),
                   (long long)times[i]);
            decode = false;
        }
        if (i > 0 && strcmp(prev.id, c.id) >= 0) {
            printf("# %s !< %s\n", prev.id, c.id);
            ordered = false;
        }
        prev = c;
    }
    ok(shape, "%d characters", DM_ID_LEN);
    ok(alpha, "Crockford base32 alphabet only");
    ok(decode, "the first 10 characters are the millisecond time");
    ok(ordered, "ids sort by time");

    enum { N = 10000 };
    char(*ids)[DM_ID_LEN + 1] = dm_malloc(sizeof(*ids) * N);
    for (int i = 0; i < N; i++) {
        dm_comment_new_id(&c, INT64_C(1700000000000));
        memcpy(ids[i], c.id, sizeof(ids[i]));
    }
    qsort(ids, N, sizeof(ids[0]), cmp_id);
    int dups = 0;
    for (int i = 1; i < N; i++)
        dups += strcmp(ids[i - 1], ids[i]) == 0;
    ok(dups == 0, "%d ids in the same millisecond are unique (%d duplicates)", N, dups);
    /* The random part changes in every position, so it is not a counter stuck at 0. */
    bool last_varies = false;
    for (int i = 1; i < N && !last_varies; i++)
        last_varies = ids[i][DM_ID_LEN - 1] != ids[0][DM_ID_LEN - 1];
    ok(last_varies, "the last character varies");
    free(ids);
}

/* ---- dm_record_inspect ---------------------------------------------------- */

static void test_record_inspect(void)
{
    static const struct {
        const char *value;
        const char *room;
        size_t room_len; /* 0: strlen(room) */
        int want;
    } cases[] = {
        {"{\"room\":\"r1\",\"text\":\"x\"}", "r1", 0, DM_RECORD_COMMENT},
        {"{\"id\":\"A\",\"room\":\"r1\",\"type\":\"retract\"}", "r1", 0, DM_RECORD_RETRACT},
        {"{\"room\":\"r1\",\"type\":\"mute\"}", "r1", 0, DM_RECORD_UNKNOWN},
        {"{\"room\":\"r1\",\"type\":\"Retract\"}", "r1", 0, DM_RECORD_UNKNOWN},
        {"{\"room\":\"r1\",\"type\":5}", "r1", 0, DM_RECORD_UNKNOWN},
        {"{\"room\":\"r1\",\"type\":null}", "r1", 0, DM_RECORD_UNKNOWN},
        {"{\"room\":\"r2\",\"text\":\"x\"}", "r1", 0, -1},
        {"{\"room\":\"r1\",\"text\":\"x\"}", "r1x", 0, -1},
        {"{\"room\":\"r1\",\"text\":\"x\"}", "r", 0, -1},
        {"{\"room\":\"r1\",\"text\":\"x\"}", "r1zzz", 2, DM_RECORD_COMMENT}, /* key not NUL-ended */
        {"{\"room\":\"r1\",\"text\":\"x\"}", "R1", 0, -1},
        {"{\"room\":\"\",\"text\":\"x\"}", "", 0, DM_RECORD_COMMENT},
        {"{\"text\":\"x\"}", "r1", 0, -1},
        {"{\"room\":1}", "1", 0, -1},
        {"{\"room\":null}", "r1", 0, -1},
        {"[\"room\",\"r1\"]", "r1", 0, -1},
        {"\"r1\"", "r1", 0, -1},
        {"42", "r1", 0, -1},
        {"not json", "r1", 0, -1},
        {"{\"room\":\"r1\"", "r1", 0, -1},
        {"", "r1", 0, -1},
    };
    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        size_t rl = cases[i].room_len ? cases[i].room_len : strlen(cases[i].room);
        int got = dm_record_inspect(cases[i].value, strlen(cases[i].value), cases[i].room, rl);
        ok(got == cases[i].want, "inspect %s key %.*s -> %d (got %d)", cases[i].value, (int)rl,
           cases[i].room, cases[i].want, got);
    }
    /* len is honoured. */
    const char *v = "{\"room\":\"r1\"}trailing";
    ok(dm_record_inspect(v, 13, "r1", 2) == DM_RECORD_COMMENT, "only len bytes are read");
}

/* ---- dm_msg_danmaku ------------------------------------------------------ */

static void test_msg_danmaku(void)
{
    const char *want = "{\"op\":\"danmaku\",\"room\":\"r1\",\"offset\":42,\"data\":{\"a\":1}}";
    const char *record = "{\"a\":1}GARBAGE";
    const size_t rlen = 7, wlen = strlen(want);
    char buf[256];
    size_t n;

    n = dm_msg_danmaku(buf, sizeof(buf), "r1", 42, record, rlen);
    ok(n == wlen && memcmp(buf, want, wlen) == 0 && buf[n] == '\0', "exact bytes: %.*s", (int)n,
       buf);

    json_t *o = json_loadb(buf, n, 0, NULL);
    json_t *w = json_pack("{s:s,s:s,s:i,s:{s:i}}", "op", "danmaku", "room", "r1", "offset", 42,
                          "data", "a", 1);
    ok(o != NULL && json_equal(o, w), "parses to the documented object");
    json_decref(o);
    json_decref(w);

    /* Every buffer size: 0 below the fit, and never a byte written past outlen. */
    bool small_ok = true, no_overrun = true;
    for (size_t outlen = 1; outlen <= wlen + 2; outlen++) {
        memset(buf, 'Z', sizeof(buf));
        n = dm_msg_danmaku(buf, outlen, "r1", 42, record, rlen);
        if (outlen <= wlen && n != 0) {
            printf("# outlen %zu returned %zu\n", outlen, n);
            small_ok = false;
        }
        if (outlen > wlen && n != wlen) {
            printf("# outlen %zu returned %zu, want %zu\n", outlen, n, wlen);
            small_ok = false;
        }
        for (size_t k = outlen; k < sizeof(buf); k++) {
            if (buf[k] != 'Z') {
                printf("# outlen %zu: byte %zu written\n", outlen, k);
                no_overrun = false;
                break;
            }
        }
    }
    ok(small_ok, "too small -> 0; exact fit (len + NUL) -> len");
    ok(no_overrun, "nothing written past outlen");
    ok(dm_msg_danmaku(buf, 0, "r1", 42, record, rlen) == 0, "outlen 0 -> 0");

    n = dm_msg_danmaku(buf, wlen + 1, "r1", 42, record, rlen);
    ok(n == wlen && memcmp(buf, want, wlen) == 0, "exact fit boundary holds the right bytes");
    ok(dm_msg_danmaku(buf, wlen, "r1", 42, record, rlen) == 0, "one byte short -> 0");

    n = dm_msg_danmaku(buf, sizeof(buf), "a:b.c_d-e", INT64_MAX, "{}", 2);
    ok(n > 0 && strcmp(buf, "{\"op\":\"danmaku\",\"room\":\"a:b.c_d-e\",\"offset\":"
                            "9223372036854775807,\"data\":{}}") == 0,
       "large offset, punctuation in the room: %s", buf);
}

/* ---- server messages ------------------------------------------------------ */

/* Compares the builder's output with the expected JSON text as objects, and
 * checks the reported length and compactness. Takes ownership of out. */
static void check_msg(const char *name, char *out, size_t len, const char *want)
{
    json_error_t jerr;
    json_t *o = json_loads(out, JSON_REJECT_DUPLICATES, &jerr);
    json_t *w = json_loads(want, 0, &jerr);

    ok(o != NULL && w != NULL && json_equal(o, w), "%s: %s", name, out);
    ok(len == strlen(out) && strstr(out, "\": ") == NULL && strstr(out, ", \"") == NULL,
       "%s: compact, length %zu", name, len);
    json_decref(o);
    json_decref(w);
    free(out);
}

static void test_server_msgs(void)
{
    size_t len = 0;
    char *s;

    s = dm_msg_hello("node-1", 15000, 8, &len);
    check_msg("hello", s, len,
              "{\"op\":\"hello\",\"node\":\"node-1\",\"heartbeat_ms\":15000,\"max_rooms\":8}");

    s = dm_msg_joined("r1", 7, 42, true, 3, &len);
    check_msg("joined recovered", s, len,
              "{\"op\":\"joined\",\"room\":\"r1\",\"epoch\":7,\"offset\":42,\"recovered\":true,"
              "\"online\":3}");
    s = dm_msg_joined("r1", INT64_MAX, -1, false, 0, &len);
    check_msg("joined not recovered", s, len,
              "{\"op\":\"joined\",\"room\":\"r1\",\"epoch\":9223372036854775807,\"offset\":-1,"
              "\"recovered\":false,\"online\":0}");

    s = dm_msg_pong(true, 5, &len);
    check_msg("pong with id", s, len, "{\"op\":\"pong\",\"id\":5}");
    s = dm_msg_pong(false, 5, &len);
    check_msg("pong without id", s, len, "{\"op\":\"pong\"}");
    s = dm_msg_pong(true, 0, &len);
    check_msg("pong with id 0", s, len, "{\"op\":\"pong\",\"id\":0}");

    s = dm_msg_error("bad_request", "say \"hi\"\n", &len);
    check_msg("error", s, len,
              "{\"op\":\"error\",\"code\":\"bad_request\",\"message\":\"say \\\"hi\\\"\\n\"}");

    s = dm_msg_accepted("01HF0000000000000000000000", "r1", 3, 99, INT64_C(1700000000123), &len);
    check_msg("accepted", s, len,
              "{\"id\":\"01HF0000000000000000000000\",\"room\":\"r1\",\"partition\":3,"
              "\"offset\":99,\"ts\":1700000000123}");

    s = dm_msg_http_error("rate_limited", "slow down", &len);
    check_msg("http error", s, len, "{\"error\":\"rate_limited\",\"message\":\"slow down\"}");

    s = dm_msg_room_info("r1", 12345, 31, &len);
    check_msg("room info", s, len, "{\"room\":\"r1\",\"online\":12345,\"partition\":31}");

    /* History: stored records are embedded as objects; anything else in
     * Redis (not JSON, not an object) is left out, not passed through. */
    static const char rec[] = "{\"id\":\"a\",\"text\":\"hi\"}";
    const struct dm_history_entry hist[] = {
        {7, rec, sizeof(rec) - 1}, {8, "not json", 8}, {9, "[1]", 3}, {10, "{\"x\":1}", 7}};
    s = dm_msg_history("r1", 3, hist, 4, &len);
    check_msg("history", s, len,
              "{\"room\":\"r1\",\"partition\":3,\"items\":[{\"offset\":7,\"data\":"
              "{\"id\":\"a\",\"text\":\"hi\"}},{\"offset\":10,\"data\":{\"x\":1}}]}");
    s = dm_retract_encode("r1", "01JD", "mod", 1700000000000, &len);
    check_msg("retract record", s, len,
              "{\"type\":\"retract\",\"room\":\"r1\",\"id\":\"01JD\",\"by\":\"mod\","
              "\"ts\":1700000000000}");
    struct dm_record_info info;
    s = dm_retract_encode("r1", "01JD", "mod", 1700000000000, &len);
    ok(dm_record_read(s, len, "r1", 2, &info) == DM_RECORD_RETRACT && strcmp(info.id, "01JD") == 0,
       "a retract record reads back as one, with its id");
    free(s);
    ok(dm_comment_id_valid("01JD0000000000000000000000", 26) && dm_comment_id_valid("a-_Z", 4),
       "ids: ULIDs and [0-9A-Za-z_-]");
    ok(!dm_comment_id_valid("", 0) && !dm_comment_id_valid("x", 0) &&
           !dm_comment_id_valid("123456789012345678901234567", 27) &&
           !dm_comment_id_valid("a.b", 3) && !dm_comment_id_valid("a\"b", 3),
       "ids: empty, too long, other characters refused");
    s = dm_msg_history("r1", 3, hist, 0, &len);
    check_msg("empty history", s, len, "{\"room\":\"r1\",\"partition\":3,\"items\":[]}");
}

/* ---- dm_client_msg_parse -------------------------------------------------- */

struct client_case {
    const char *data;
    int rc;
    enum dm_client_op op;
    const char *room;   /* join/leave */
    int has;            /* bit 0 offset, 1 epoch, 2 id */
    int64_t value;      /* offset, epoch and id all expected to equal this when present */
    const char *token;  /* auth */
    const char *reason; /* rc -1: substring of the reason */
};

#define R64 "0123456789012345678901234567890123456789012345678901234567890123"

static const struct client_case client_cases[] = {
    {"{\"op\":\"join\",\"room\":\"r1\"}", 0, DM_OP_JOIN, "r1", 0, 0, NULL, NULL},
    {"{\"op\":\"join\",\"room\":\"r1\",\"offset\":5,\"epoch\":5}", 0, DM_OP_JOIN, "r1", 3, 5, NULL,
     NULL},
    {"{\"room\":\"A-z_0.9:x\",\"op\":\"join\",\"offset\":0}", 0, DM_OP_JOIN, "A-z_0.9:x", 1, 0,
     NULL, NULL},
    {"{\"op\":\"join\",\"room\":\"" R64 "\"}", 0, DM_OP_JOIN, R64, 0, 0, NULL, NULL},
    {"{\"op\":\"join\",\"room\":\"" R64 "4\"}", -1, 0, NULL, 0, 0, NULL, "room"},
    {"{\"op\":\"join\"}", -1, 0, NULL, 0, 0, NULL, "room"},
    {"{\"op\":\"join\",\"room\":\"\"}", -1, 0, NULL, 0, 0, NULL, "room"},
    {"{\"op\":\"join\",\"room\":\"a b\"}", -1, 0, NULL, 0, 0, NULL, "room"},
    {"{\"op\":\"join\",\"room\":\"r/1\"}", -1, 0, NULL, 0, 0, NULL, "room"},
    {"{\"op\":\"join\",\"room\":\"\\u00e9\"}", -1, 0, NULL, 0, 0, NULL, "room"},
    {"{\"op\":\"join\",\"room\":5}", -1, 0, NULL, 0, 0, NULL, "room"},
    {"{\"op\":\"join\",\"room\":null}", -1, 0, NULL, 0, 0, NULL, "room"},
    {"{\"op\":\"join\",\"room\":\"r1\",\"offset\":\"5\"}", -1, 0, NULL, 0, 0, NULL, "offset"},
    {"{\"op\":\"join\",\"room\":\"r1\",\"offset\":1.5}", -1, 0, NULL, 0, 0, NULL, "offset"},
    {"{\"op\":\"join\",\"room\":\"r1\",\"epoch\":1.0}", -1, 0, NULL, 0, 0, NULL, "epoch"},
    {"{\"op\":\"join\",\"room\":\"r1\",\"epoch\":null}", -1, 0, NULL, 0, 0, NULL, "epoch"},
    {"{\"op\":\"leave\",\"room\":\"r1\"}", 0, DM_OP_LEAVE, "r1", 0, 0, NULL, NULL},
    {"{\"op\":\"leave\"}", -1, 0, NULL, 0, 0, NULL, "room"},
    {"{\"op\":\"leave\",\"room\":\"bad room\"}", -1, 0, NULL, 0, 0, NULL, "room"},
    {"{\"op\":\"auth\",\"token\":\"abc.def.ghi\"}", 0, DM_OP_AUTH, NULL, 0, 0, "abc.def.ghi", NULL},
    {"{\"op\":\"auth\",\"token\":\"\"}", 0, DM_OP_AUTH, NULL, 0, 0, "", NULL},
    {"{\"op\":\"auth\"}", -1, 0, NULL, 0, 0, NULL, "token"},
    {"{\"op\":\"auth\",\"token\":5}", -1, 0, NULL, 0, 0, NULL, "token"},
    {"{\"op\":\"ping\"}", 0, DM_OP_PING, NULL, 0, 0, NULL, NULL},
    {"{\"op\":\"ping\",\"id\":7}", 0, DM_OP_PING, NULL, 4, 7, NULL, NULL},
    {"{\"op\":\"ping\",\"id\":-3}", 0, DM_OP_PING, NULL, 4, -3, NULL, NULL},
    {"{\"op\":\"ping\",\"id\":\"7\"}", -1, 0, NULL, 0, 0, NULL, "id"},
    {"{\"op\":\"ping\",\"id\":1.5}", -1, 0, NULL, 0, 0, NULL, "id"},
    {"{\"op\":\"ping\",\"id\":true}", -1, 0, NULL, 0, 0, NULL, "id"},
    {"{\"op\":\"dance\"}", -1, 0, NULL, 0, 0, NULL, "unknown op"},
    {"{\"op\":\"JOIN\",\"room\":\"r1\"}", -1, 0, NULL, 0, 0, NULL, "unknown op"},
    {"{\"op\":\"\"}", -1, 0, NULL, 0, 0, NULL, "op"},
    {"{\"op\":5}", -1, 0, NULL, 0, 0, NULL, "op"},
    {"{\"op\":null}", -1, 0, NULL, 0, 0, NULL, "op"},
    {"{}", -1, 0, NULL, 0, 0, NULL, "op"},
    {"{\"room\":\"r1\"}", -1, 0, NULL, 0, 0, NULL, "op"},
    {"[]", -1, 0, NULL, 0, 0, NULL, "object"},
    {"[{\"op\":\"ping\"}]", -1, 0, NULL, 0, 0, NULL, "object"},
    {"\"ping\"", -1, 0, NULL, 0, 0, NULL, "object"},
    {"7", -1, 0, NULL, 0, 0, NULL, "object"},
    {"", -1, 0, NULL, 0, 0, NULL, "object"},
    {"{\"op\":\"ping\"", -1, 0, NULL, 0, 0, NULL, "object"},
    {"{\"op\":\"ping\",\"op\":\"join\"}", -1, 0, NULL, 0, 0, NULL, "object"},
    {"{\"op\":\"ping\"} x", -1, 0, NULL, 0, 0, NULL, "object"},
    {"{\"op\":\"p\xffng\"}", -1, 0, NULL, 0, 0, NULL, "object"},
};

static void test_client_msg(void)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(client_cases); i++) {
        const struct client_case *t = &client_cases[i];
        struct dm_client_msg m;
        const char *reason = NULL;
        int rc = dm_client_msg_parse(t->data, strlen(t->data), &m, &reason);

        if (t->rc == 0) {
            bool good = rc == 0 && m.op == t->op;
            if (good && t->room != NULL)
                good = strcmp(m.room, t->room) == 0;
            if (good)
                good = m.has_offset == !!(t->has & 1) && m.has_epoch == !!(t->has & 2) &&
                       m.has_id == !!(t->has & 4);
            if (good && m.has_offset)
                good = m.offset == t->value;
            if (good && m.has_epoch)
                good = m.epoch == t->value;
            if (good && m.has_id)
                good = m.id == t->value;
            if (good)
                good = t->token == NULL ? m.token == NULL
                                        : m.token != NULL && strcmp(m.token, t->token) == 0;
            ok(good, "client #%zu %s (rc %d, %s)", i, t->data, rc, rc == 0 ? "" : reason);
            dm_client_msg_fini(&m);
        } else {
            ok(rc == -1 && contains(reason, t->reason) && m.token == NULL,
               "client #%zu %s rejected: %s", i, t->data, reason ? reason : "(null)");
        }
    }
    struct dm_client_msg m;
    const char *reason = NULL;
    const char *d = "{\"op\":\"ping\"}{\"op\":";
    ok(dm_client_msg_parse(d, 13, &m, &reason) == 0 && m.op == DM_OP_PING,
       "only len bytes are parsed");
    dm_client_msg_fini(&m);
    ok(m.token == NULL, "fini clears the token");
}

/* A field name cut inside a multi-byte character must not break the error
 * message (found in review: jansson refused the message and we aborted). */
static void test_error_messages_from_peer_input(void)
{
    char body[512], err[DM_ERRLEN];
    struct dm_comment c;
    size_t n = (size_t)snprintf(body, sizeof(body), "{\"a");
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(body + n, sizeof(body) - n, "\xc3\xa9");
    snprintf(body + n, sizeof(body) - n, "\":1}");

    int rc = dm_comment_parse_request(body, strlen(body), 100, &c, err);
    ok(rc == -1, "unknown long field refused");
    size_t len;
    char *json = dm_msg_http_error("invalid_body", err, &len);
    json_t *parsed = json != NULL ? json_loads(json, 0, NULL) : NULL;
    ok(parsed != NULL && json_is_string(json_object_get(parsed, "message")),
       "the error body is still valid JSON: %s", json != NULL ? json : "(null)");
    json_decref(parsed);
    free(json);
    json = dm_msg_error("bad", "\xff\xfe broken", &len);
    ok(json != NULL && strstr(json, "?? broken") != NULL, "invalid bytes become '?': %s", json);
    free(json);
}

static void test_record_read_and_events(void)
{
    struct dm_record_info info;
    static const char paid[] = "{\"id\":\"01ABC\",\"room\":\"r\",\"prio\":3,\"text\":\"x\"}";
    static const char retract[] = "{\"type\":\"retract\",\"room\":\"r\",\"id\":\"01ABC\"}";
    static const char bad_id[] = "{\"type\":\"retract\",\"room\":\"r\",\"id\":\"a\\\"b\"}";
    static const char no_id[] = "{\"type\":\"retract\",\"room\":\"r\"}";
    static const char big_prio[] = "{\"room\":\"r\",\"prio\":99}";
    char out[256];
    size_t len;

    ok(dm_record_read(paid, strlen(paid), "r", 1, &info) == DM_RECORD_COMMENT && info.prio == 3 &&
           strcmp(info.id, "01ABC") == 0,
       "comment with its priority lane and id");
    ok(dm_record_read(retract, strlen(retract), "r", 1, &info) == DM_RECORD_RETRACT &&
           strcmp(info.id, "01ABC") == 0,
       "retract with the id it retracts");
    ok(dm_record_read(bad_id, strlen(bad_id), "r", 1, &info) == -1,
       "a retract id that would need escaping is refused");
    ok(dm_record_read(no_id, strlen(no_id), "r", 1, &info) == -1, "a retract without id refused");
    ok(dm_record_read(big_prio, strlen(big_prio), "r", 1, &info) == DM_RECORD_COMMENT &&
           info.prio == 0,
       "an out-of-range prio is the normal lane");
    len = dm_msg_retract(out, sizeof(out), "r", 42, "01ABC");
    ok(len > 0 &&
           strcmp(out, "{\"op\":\"retract\",\"room\":\"r\",\"offset\":42,\"id\":\"01ABC\"}") == 0,
       "retract frame: %s", out);
    ok(dm_msg_retract(out, 10, "r", 42, "01ABC") == 0, "retract frame: too small a buffer");
    char *json = dm_msg_skipped("r", 7, &len);
    ok(strcmp(json, "{\"op\":\"skipped\",\"room\":\"r\",\"count\":7}") == 0, "skipped: %s", json);
    free(json);
    json = dm_msg_online("r", 12, &len);
    ok(strcmp(json, "{\"op\":\"online\",\"room\":\"r\",\"count\":12}") == 0, "online: %s", json);
    free(json);
}

int main(void)
{
    subtest("records and viewer events", test_record_read_and_events);
    subtest("error messages quoting peer input", test_error_messages_from_peer_input);
    subtest("dm_comment_parse_request table", test_parse_request_table);
    subtest("dm_comment_parse_request fields", test_parse_request_fields);
    subtest("dm_comment_encode", test_encode);
    subtest("dm_comment_new_id", test_new_id);
    subtest("dm_record_inspect", test_record_inspect);
    subtest("dm_msg_danmaku", test_msg_danmaku);
    subtest("server messages", test_server_msgs);
    subtest("dm_client_msg_parse", test_client_msg);
    return done_testing();
}
