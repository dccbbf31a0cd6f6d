/* Unit tests for common/ws.c: RFC 6455 vectors, every strict prefix of
 * every valid input, byte-at-a-time feeds, round trips, and one case per
 * protocol violation with its exact close code or HTTP status. */
#include "common/ws.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tests/unit/tap.h"

#define MAX_HEAD 8192

/* ------------------------------------------------------------------------
 * Helpers
 */

/* True when every strict prefix of buf[0..n) parses as DM_AGAIN. */
static bool frame_prefixes_again(const uint8_t *buf, size_t n, uint64_t max, bool masked)
{
    struct dm_ws_frame f;
    uint16_t code;

    for (size_t k = 0; k < n; k++) {
        if (dm_ws_frame_parse(buf, k, max, masked, &f, &code) != DM_AGAIN)
            return false;
    }
    return true;
}

/* Feeds buf into a receive buffer one byte at a time, parsing after each,
 * and returns the length at which the parser first stopped saying DM_AGAIN,
 * with its result. */
static size_t frame_bytewise(const uint8_t *buf, size_t n, uint64_t max, bool masked, int *rc)
{
    struct dm_ws_frame f;
    uint16_t code;
    uint8_t *rx = malloc(n);

    for (size_t k = 1; k <= n; k++) {
        rx[k - 1] = buf[k - 1];
        *rc = dm_ws_frame_parse(rx, k, max, masked, &f, &code);
        if (*rc != DM_AGAIN) {
            free(rx);
            return k;
        }
    }
    free(rx);
    *rc = DM_AGAIN;
    return n;
}

static int parse_req(const char *s, size_t max, struct dm_ws_request *req)
{
    return dm_ws_parse_request(s, strlen(s), max, req);
}

/* True when every strict prefix of the request parses as DM_AGAIN. */
static bool request_prefixes_again(const char *s, size_t n, size_t max)
{
    struct dm_ws_request req;

    for (size_t k = 0; k < n; k++) {
        char *copy = malloc(k ? k : 1);
        int rc;
        memcpy(copy, s, k);
        rc = dm_ws_parse_request(copy, k, max, &req);
        free(copy);
        if (rc != DM_AGAIN || req.status != 0)
            return false;
    }
    return true;
}

static bool response_prefixes_again(const char *s, size_t n, const char *accept)
{
    struct dm_ws_response res;

    for (size_t k = 0; k < n; k++) {
        char *copy = malloc(k ? k : 1);
        int rc;
        memcpy(copy, s, k);
        rc = dm_ws_parse_response(copy, k, MAX_HEAD, accept, &res);
        free(copy);
        if (rc != DM_AGAIN)
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------
 * Handshake keys
 */

static void test_keys(void)
{
    char accept[DM_WS_ACCEPT_LEN + 1];
    char key[DM_WS_KEY_LEN + 1];

    /* RFC 6455 §1.3 and §4.2.2 */
    dm_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", accept);
    ok(strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0, "RFC 6455 accept key: %s", accept);
    /* RFC 6455 §1.3: the key is base64 of the nonce "the sample nonce" */
    dm_ws_client_key((const uint8_t *)"the sample nonce", key);
    ok(strcmp(key, "dGhlIHNhbXBsZSBub25jZQ==") == 0, "client key from the RFC nonce: %s", key);
    /* RFC 6455 §1.2 example */
    dm_ws_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", accept);
    ok(strcmp(accept, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=") == 0, "RFC 6455 §1.2 accept key: %s", accept);
}

/* ------------------------------------------------------------------------
 * Frames: RFC 6455 §5.7 examples
 */

struct frame_vector {
    const char *name;
    const uint8_t *bytes;
    size_t len;
    bool masked;
    bool fin;
    uint8_t opcode;
    size_t header_len;
    const uint8_t *payload; /* unmasked */
    size_t payload_len;
};

static void check_frame_vector(const struct frame_vector *v)
{
    struct dm_ws_frame f;
    uint16_t code = 0;
    uint8_t *copy, *trail;
    int rc, brc;
    size_t stop;

    rc = dm_ws_frame_parse(v->bytes, v->len, 1 << 20, v->masked, &f, &code);
    ok(rc == (int)v->len, "%s: parse returns the frame length %zu (got %d)", v->name, v->len, rc);
    ok(f.fin == v->fin && f.opcode == v->opcode && f.masked == v->masked && f.rsv == 0 &&
           f.header_len == v->header_len && f.payload_len == v->payload_len,
       "%s: fin %d opcode %u header %zu payload %zu", v->name, v->fin, v->opcode, v->header_len,
       v->payload_len);
    copy = malloc(v->len);
    memcpy(copy, v->bytes, v->len);
    if (f.masked)
        dm_ws_unmask(copy + f.header_len, (size_t)f.payload_len, f.mask, 0);
    ok(memcmp(copy + f.header_len, v->payload, v->payload_len) == 0, "%s: payload", v->name);
    free(copy);

    ok(frame_prefixes_again(v->bytes, v->len, 1 << 20, v->masked),
       "%s: all %zu strict prefixes return DM_AGAIN", v->name, v->len);
    stop = frame_bytewise(v->bytes, v->len, 1 << 20, v->masked, &brc);
    ok(stop == v->len && brc == (int)v->len, "%s: byte-at-a-time completes at the last byte",
       v->name);

    /* The next frame's bytes after it do not change the answer. */
    trail = malloc(v->len + 3);
    memcpy(trail, v->bytes, v->len);
    memcpy(trail + v->len, "\x81\x85\x00", 3);
    rc = dm_ws_frame_parse(trail, v->len + 3, 1 << 20, v->masked, &f, &code);
    ok(rc == (int)v->len, "%s: trailing bytes of the next frame are left alone", v->name);
    free(trail);

    /* Wrong direction is a protocol error. */
    rc = dm_ws_frame_parse(v->bytes, v->len, 1 << 20, !v->masked, &f, &code);
    ok(rc == DM_EPROTO && code == DM_WS_CLOSE_PROTOCOL, "%s: wrong masking -> 1002", v->name);

    /* Our encoder produces the same bytes. */
    if (v->fin) {
        uint8_t *out = malloc(v->len);
        size_t n = dm_ws_encode(out, v->len, v->opcode, v->payload, v->payload_len,
                                v->masked ? v->bytes + v->header_len - 4 : NULL);
        ok(n == v->len && memcmp(out, v->bytes, v->len) == 0,
           "%s: dm_ws_encode gives the same bytes", v->name);
        free(out);
    } else {
        uint8_t hdr[DM_WS_MAX_HEADER];
        size_t n = dm_ws_frame_header(hdr, v->opcode, v->fin, v->payload_len, NULL);
        ok(n == v->header_len && memcmp(hdr, v->bytes, n) == 0,
           "%s: dm_ws_frame_header gives the same header", v->name);
    }
}

static void test_rfc_frames(void)
{
    static const uint8_t hello_unmasked[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    static const uint8_t hello_masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                           0x7f, 0x9f, 0x4d, 0x51, 0x58};
    static const uint8_t hel[] = {0x01, 0x03, 0x48, 0x65, 0x6c};
    static const uint8_t lo[] = {0x80, 0x02, 0x6c, 0x6f};
    static const uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    static const uint8_t pong_masked[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                          0x7f, 0x9f, 0x4d, 0x51, 0x58};
    uint8_t *bin256 = malloc(4 + 256);
    uint8_t *bin64k = malloc(10 + 65536);
    uint8_t *data = malloc(65536);

    for (size_t i = 0; i < 65536; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    memcpy(bin256, "\x82\x7E\x01\x00", 4);
    memcpy(bin256 + 4, data, 256);
    memcpy(bin64k, "\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    memcpy(bin64k + 10, data, 65536);

    {
        const struct frame_vector v[] = {
            {"single-frame unmasked Hello", hello_unmasked, sizeof(hello_unmasked), false, true,
             DM_WS_OP_TEXT, 2, (const uint8_t *)"Hello", 5},
            {"single-frame masked Hello", hello_masked, sizeof(hello_masked), true, true,
             DM_WS_OP_TEXT, 6, (const uint8_t *)"Hello", 5},
            {"fragment Hel", hel, sizeof(hel), false, false, DM_WS_OP_TEXT, 2,
             (const uint8_t *)"Hel", 3},
            {"fragment lo", lo, sizeof(lo), false, true, DM_WS_OP_CONT, 2, (const uint8_t *)"lo",
             2},
            {"unmasked ping", ping, sizeof(ping), false, true, DM_WS_OP_PING, 2,
             (const uint8_t *)"Hello", 5},
            {"masked pong", pong_masked, sizeof(pong_masked), true, true, DM_WS_OP_PONG, 6,
             (const uint8_t *)"Hello", 5},
            {"256-byte binary (16-bit length)", bin256, 4 + 256, false, true, DM_WS_OP_BINARY, 4,
             data, 256},
            {"64 KiB binary (64-bit length)", bin64k, 10 + 65536, false, true, DM_WS_OP_BINARY, 10,
             data, 65536},
        };
        for (size_t i = 0; i < DM_ARRAY_LEN(v); i++)
            check_frame_vector(&v[i]);
    }
    free(bin256);
    free(bin64k);
    free(data);
}

/* A reader that receives a stream one byte at a time and parses frames as
 * they complete; fragments are joined with dm_ws_msg_frame. */
static void test_stream_bytewise(void)
{
    static const uint8_t stream[] = {
        0x01, 0x03, 0x48, 0x65, 0x6c, /* TEXT "Hel", not FIN */
        0x89, 0x02, 0x68, 0x69,       /* PING "hi" between fragments */
        0x80, 0x02, 0x6c, 0x6f,       /* CONT "lo", FIN */
        0x82, 0x03, 0x01, 0x02, 0x03, /* BINARY */
        0x88, 0x02, 0x03, 0xe8,       /* CLOSE 1000 */
    };
    uint8_t buf[sizeof(stream)];
    uint8_t msg[16];
    size_t have = 0, msg_len = 0, frames = 0, messages = 0;
    uint8_t ops[8];
    struct dm_ws_msg m;
    bool good = true;
    bool text_ok = false;

    dm_ws_msg_init(&m);
    for (size_t i = 0; i < sizeof(stream); i++) {
        struct dm_ws_frame f;
        uint16_t code;
        int rc;
        buf[have++] = stream[i];
        rc = dm_ws_frame_parse(buf, have, 1024, false, &f, &code);
        if (rc == DM_AGAIN)
            continue;
        if (rc < 0) {
            good = false;
            break;
        }
        ops[frames++] = f.opcode;
        if (f.opcode < DM_WS_OP_CLOSE) {
            int mrc;
            memcpy(msg + msg_len, buf + f.header_len, (size_t)f.payload_len);
            msg_len += (size_t)f.payload_len;
            mrc = dm_ws_msg_frame(&m, &f, buf + f.header_len, 1024, &code);
            if (mrc > 0) {
                messages++;
                if (mrc == DM_WS_OP_TEXT)
                    text_ok = msg_len == 5 && memcmp(msg, "Hello", 5) == 0;
                msg_len = 0;
            } else if (mrc < 0) {
                good = false;
            }
        }
        memmove(buf, buf + rc, have - (size_t)rc);
        have -= (size_t)rc;
    }
    ok(good && frames == 5 && have == 0, "byte-at-a-time stream: 5 frames, nothing left over");
    ok(frames == 5 && ops[0] == DM_WS_OP_TEXT && ops[1] == DM_WS_OP_PING &&
           ops[2] == DM_WS_OP_CONT && ops[3] == DM_WS_OP_BINARY && ops[4] == DM_WS_OP_CLOSE,
       "frames arrive in order with the ping between fragments");
    ok(messages == 2 && text_ok, "two messages; the fragmented one reassembles to Hello");
}

/* ------------------------------------------------------------------------
 * Frames: encode/parse round trips
 */

static void test_round_trips(void)
{
    static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536};
    static const uint8_t mask[4] = {0xA1, 0xB2, 0xC3, 0xD4};
    uint8_t *payload = malloc(65536);
    uint8_t *out = malloc(65536 + DM_WS_MAX_HEADER);

    for (size_t i = 0; i < 65536; i++)
        payload[i] = (uint8_t)(i ^ (i >> 8));
    for (size_t i = 0; i < DM_ARRAY_LEN(lens); i++) {
        for (int masked = 0; masked <= 1; masked++) {
            size_t len = lens[i];
            size_t want_hdr = (len < 126 ? 2 : len <= 65535 ? 4 : 10) + (masked ? 4 : 0);
            uint8_t op = (i & 1) ? DM_WS_OP_TEXT : DM_WS_OP_BINARY;
            struct dm_ws_frame f;
            uint16_t code;
            size_t n =
                dm_ws_encode(out, 65536 + DM_WS_MAX_HEADER, op, payload, len, masked ? mask : NULL);
            int rc = dm_ws_frame_parse(out, n, 65536, masked, &f, &code);
            bool same;

            ok(n == want_hdr + len && rc == (int)n && f.header_len == want_hdr &&
                   f.payload_len == len && f.fin && f.opcode == op && f.masked == (bool)masked,
               "round trip len %zu %s: header %zu", len, masked ? "masked" : "unmasked", want_hdr);
            if (masked) {
                ok(len == 0 || memcmp(out + want_hdr, payload, len) != 0,
                   "len %zu masked: payload on the wire is masked", len);
                dm_ws_unmask(out + want_hdr, len, f.mask, 0);
            }
            same = len == 0 || memcmp(out + want_hdr, payload, len) == 0;
            ok(same, "len %zu %s: payload survives", len, masked ? "masked" : "unmasked");
            ok(frame_prefixes_again(out, n, 65536, masked),
               "len %zu %s: all strict prefixes return DM_AGAIN", len,
               masked ? "masked" : "unmasked");
            ok(dm_ws_encode(out, n - 1, op, payload, len, masked ? mask : NULL) == 0,
               "len %zu: one byte short of room encodes nothing", len);
        }
    }
    {
        /* Fragment headers and control frames. */
        uint8_t hdr[DM_WS_MAX_HEADER];
        struct dm_ws_frame f;
        uint16_t code;
        size_t n = dm_ws_frame_header(hdr, DM_WS_OP_TEXT, false, 3, mask);
        ok(n == 6 && dm_ws_frame_parse(hdr, n, 100, true, &f, &code) == DM_AGAIN &&
               f.header_len == 6 && !f.fin && f.payload_len == 3 && memcmp(f.mask, mask, 4) == 0,
           "non-FIN masked header; DM_AGAIN reports the header once complete");
        n = dm_ws_encode(out, 200, DM_WS_OP_CLOSE, payload, 125, NULL);
        ok(n == 127 && dm_ws_frame_parse(out, n, 125, false, &f, &code) == 127 &&
               f.opcode == DM_WS_OP_CLOSE,
           "125-byte close frame round trip");
    }
    free(payload);
    free(out);
}

/* ------------------------------------------------------------------------
 * Frames: violations, each with its close code and where it is detected
 */

struct violation {
    const char *name;
    const char *bytes;
    size_t len;
    bool expect_masked;
    uint64_t max;
    uint16_t code;
    size_t detect_at; /* prefix length at which the error is first reported */
};

#define V(s) s, sizeof(s) - 1

static void test_violations(void)
{
    static const struct violation v[] = {
        {"RSV1 set", V("\xC1\x85mask"), true, 1024, 1002, 1},
        {"RSV2 set", V("\xA1\x85mask"), true, 1024, 1002, 1},
        {"RSV3 set", V("\x91\x85mask"), true, 1024, 1002, 1},
        {"reserved opcode 3", V("\x83\x80mask"), true, 1024, 1002, 1},
        {"reserved opcode 7", V("\x87\x80mask"), true, 1024, 1002, 1},
        {"reserved opcode 0xB", V("\x8B\x80mask"), true, 1024, 1002, 1},
        {"reserved opcode 0xF", V("\x8F\x80mask"), true, 1024, 1002, 1},
        {"fragmented ping", V("\x09\x80mask"), true, 1024, 1002, 1},
        {"fragmented close", V("\x08\x80mask"), true, 1024, 1002, 1},
        {"ping with 126 bytes", V("\x89\xFE\x00\x7E"), true, 1024, 1002, 2},
        {"close with 64-bit length", V("\x88\xFF\x00\x00\x00\x00\x00\x00\x00\x02"), true, 1024,
         1002, 2},
        {"unmasked client frame on server", V("\x81\x05Hello"), true, 1024, 1002, 2},
        {"masked server frame on client", V("\x81\x85mask12345"), false, 1024, 1002, 2},
        {"64-bit length with top bit", V("\x82\x7F\x80\x00\x00\x00\x00\x00\x00\x00"), false,
         UINT64_C(1) << 30, 1002, 10},
        {"16-bit length over max", V("\x82\xFE\x01\x00mask"), true, 255, 1009, 4},
        {"7-bit length over max", V("\x81\x8Amask"), true, 9, 1009, 2},
        {"64-bit length over max", V("\x82\xFF\x00\x00\x00\x01\x00\x00\x00\x00mask"), true, 1 << 20,
         1009, 10},
        {"64-bit length over max, unmasked", V("\x82\x7F\x00\x00\x00\x00\x7F\xFF\xFF\xFF"), false,
         DM_WS_PAYLOAD_LIMIT, 1009, 10},
    };

    for (size_t i = 0; i < DM_ARRAY_LEN(v); i++) {
        const uint8_t *b = (const uint8_t *)v[i].bytes;
        struct dm_ws_frame f;
        uint16_t code = 0;
        int rc = dm_ws_frame_parse(b, v[i].len, v[i].max, v[i].expect_masked, &f, &code);
        int brc;
        size_t stop;

        ok(rc == DM_EPROTO && code == v[i].code, "%s: close code %u (got rc %d code %u)", v[i].name,
           v[i].code, rc, code);
        stop = frame_bytewise(b, v[i].len, v[i].max, v[i].expect_masked, &brc);
        ok(stop == v[i].detect_at && brc == DM_EPROTO, "%s: reported after %zu bytes (got %zu)",
           v[i].name, v[i].detect_at, stop);
    }

    {
        struct dm_ws_frame f;
        uint16_t code;
        /* Over-max is reported with the announced length, before the mask. */
        int rc = dm_ws_frame_parse((const uint8_t *)"\x82\xFE\x01\x00", 4, 255, true, &f, &code);
        ok(rc == DM_EPROTO && code == 1009 && f.payload_len == 256,
           "1009 carries the announced length 256");
        /* Exactly max is fine. */
        rc = dm_ws_frame_parse((const uint8_t *)"\x82\xFE\x00\xFFmask", 8, 255, true, &f, &code);
        ok(rc == DM_AGAIN && f.header_len == 8 && f.payload_len == 255,
           "payload_len == max_payload is allowed");
    }
}

static void test_nonminimal_lengths(void)
{
    struct dm_ws_frame f;
    uint16_t code;
    static const char len16[] = "\x82\x7E\x00\x05Hello";
    static const char len64[] = "\x82\x7F\x00\x00\x00\x00\x00\x00\x00\x05Hello";
    static const char empty64[] = "\x81\x7F\x00\x00\x00\x00\x00\x00\x00\x00";

    ok(dm_ws_frame_parse((const uint8_t *)len16, sizeof(len16) - 1, 100, false, &f, &code) == 9 &&
           f.payload_len == 5 && f.header_len == 4,
       "5 bytes in a 16-bit length is accepted");
    ok(dm_ws_frame_parse((const uint8_t *)len64, sizeof(len64) - 1, 100, false, &f, &code) == 15 &&
           f.payload_len == 5 && f.header_len == 10,
       "5 bytes in a 64-bit length is accepted");
    ok(dm_ws_frame_parse((const uint8_t *)empty64, sizeof(empty64) - 1, 100, false, &f, &code) ==
               10 &&
           f.payload_len == 0,
       "an empty frame with a 64-bit length is accepted");
    ok(frame_prefixes_again((const uint8_t *)len64, sizeof(len64) - 1, 100, false),
       "strict prefixes of the 64-bit-length frame return DM_AGAIN");
    ok(dm_ws_frame_parse(NULL, 0, 100, true, &f, &code) == DM_AGAIN && f.header_len == 0,
       "no bytes: DM_AGAIN");
}

/* ------------------------------------------------------------------------
 * Messages: fragmentation and UTF-8 across frames
 */

struct msg_step {
    uint8_t opcode;
    bool fin;
    const char *payload;
    size_t len;
    int want; /* 0, message opcode, or -(close code) */
};

struct msg_case {
    const char *name;
    uint64_t max_message;
    struct msg_step steps[4];
    size_t nsteps;
};

#define P(s) s, sizeof(s) - 1

static void test_messages(void)
{
    static const struct msg_case cases[] = {
        {"single text", 100, {{DM_WS_OP_TEXT, true, P("hi"), DM_WS_OP_TEXT}}, 1},
        {"single binary with bytes that are not UTF-8",
         100,
         {{DM_WS_OP_BINARY, true, P("\xFF\xC0"), DM_WS_OP_BINARY}},
         1},
        {"three fragments",
         100,
         {{DM_WS_OP_TEXT, false, P("a"), 0},
          {DM_WS_OP_CONT, false, P("b"), 0},
          {DM_WS_OP_CONT, true, P("c"), DM_WS_OP_TEXT}},
         3},
        {"euro sign split across fragments",
         100,
         {{DM_WS_OP_TEXT, false, P("\xE2"), 0},
          {DM_WS_OP_CONT, false, P("\x82"), 0},
          {DM_WS_OP_CONT, true, P("\xAC"), DM_WS_OP_TEXT}},
         3},
        {"empty fragments",
         100,
         {{DM_WS_OP_TEXT, false, P(""), 0}, {DM_WS_OP_CONT, true, P(""), DM_WS_OP_TEXT}},
         2},
        {"continuation without a message", 100, {{DM_WS_OP_CONT, true, P("x"), -1002}}, 1},
        {"text inside a fragmented message",
         100,
         {{DM_WS_OP_TEXT, false, P("a"), 0}, {DM_WS_OP_TEXT, true, P("b"), -1002}},
         2},
        {"binary inside a fragmented message",
         100,
         {{DM_WS_OP_BINARY, false, P("a"), 0}, {DM_WS_OP_BINARY, true, P("b"), -1002}},
         2},
        {"message over max across fragments",
         5,
         {{DM_WS_OP_BINARY, false, P("abc"), 0}, {DM_WS_OP_CONT, false, P("def"), -1009}},
         2},
        {"message exactly max",
         6,
         {{DM_WS_OP_TEXT, false, P("abc"), 0}, {DM_WS_OP_CONT, true, P("def"), DM_WS_OP_TEXT}},
         2},
        {"invalid UTF-8 fails at its fragment",
         100,
         {{DM_WS_OP_TEXT, false, P("ok"), 0}, {DM_WS_OP_CONT, false, P("\xC0\x80"), -1007}},
         2},
        {"surrogate split across fragments",
         100,
         {{DM_WS_OP_TEXT, false, P("\xED"), 0}, {DM_WS_OP_CONT, false, P("\xA0\x80"), -1007}},
         2},
        {"text ending mid-character", 100, {{DM_WS_OP_TEXT, true, P("\xE2\x82"), -1007}}, 1},
        {"fragmented text ending mid-character",
         100,
         {{DM_WS_OP_TEXT, false, P("a"), 0}, {DM_WS_OP_CONT, true, P("\xF0\x9D"), -1007}},
         2},
        {"next message after a complete one",
         100,
         {{DM_WS_OP_TEXT, true, P("\xE2\x82\xAC"), DM_WS_OP_TEXT},
          {DM_WS_OP_BINARY, true, P("x"), DM_WS_OP_BINARY}},
         2},
    };

    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        const struct msg_case *c = &cases[i];
        struct dm_ws_msg m;
        bool good = true;
        int last = 0;

        dm_ws_msg_init(&m);
        for (size_t s = 0; s < c->nsteps; s++) {
            const struct msg_step *st = &c->steps[s];
            struct dm_ws_frame f = {.fin = st->fin, .opcode = st->opcode, .payload_len = st->len};
            uint16_t code = 0;
            int rc = dm_ws_msg_frame(&m, &f, (const uint8_t *)st->payload, c->max_message, &code);
            int got = rc == DM_EPROTO ? -(int)code : rc;
            last = got;
            if (got != st->want)
                good = false;
        }
        ok(good, "message: %s (last result %d)", c->name, last);
    }
}

/* ------------------------------------------------------------------------
 * Unmasking in pieces
 */

static void test_unmask(void)
{
    static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t ref[100], buf[100];
    bool all_pieces = true, all_offsets = true;

    for (size_t i = 0; i < sizeof(ref); i++)
        ref[i] = (uint8_t)(i * 13) ^ mask[i & 3];
    /* Two pieces, split at every position. */
    for (size_t cut = 0; cut <= sizeof(buf); cut++) {
        for (size_t i = 0; i < sizeof(buf); i++)
            buf[i] = (uint8_t)(i * 13);
        dm_ws_unmask(buf, cut, mask, 0);
        dm_ws_unmask(buf + cut, sizeof(buf) - cut, mask, cut);
        if (memcmp(buf, ref, sizeof(buf)) != 0)
            all_pieces = false;
    }
    ok(all_pieces, "unmasking in two pieces at each of 101 cuts matches a byte-wise mask");
    /* Odd pieces: 1, 2, 3, ... bytes. */
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 13);
    for (size_t off = 0, step = 1; off < sizeof(buf); off += step, step++) {
        size_t n = off + step <= sizeof(buf) ? step : sizeof(buf) - off;
        dm_ws_unmask(buf + off, n, mask, off);
    }
    ok(memcmp(buf, ref, sizeof(buf)) == 0, "unmasking in growing pieces matches");
    /* Every (offset, length) against a direct computation. */
    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len <= 40; len++) {
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)(i + 1);
            dm_ws_unmask(buf, len, mask, off);
            for (size_t i = 0; i < len; i++) {
                if (buf[i] != (uint8_t)((i + 1) ^ mask[(off + i) & 3]))
                    all_offsets = false;
            }
        }
    }
    ok(all_offsets, "every offset 0-7 and length 0-40 matches");
    dm_ws_unmask(NULL, 0, mask, 0);
    ok(1, "zero length with a NULL payload is a no-op");
}

/* ------------------------------------------------------------------------
 * Close payloads
 */

static void test_close(void)
{
    static const uint16_t valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                     1012, 1013, 1014, 3000, 3999, 4000, 4008, 4999};
    static const uint16_t invalid[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                                       1016, 1100, 2000, 2999, 5000, 65535};
    uint8_t p[DM_WS_MAX_CONTROL];
    const char *reason;
    size_t rlen, n;
    uint16_t code;
    int rc;

    for (size_t i = 0; i < DM_ARRAY_LEN(valid); i++) {
        uint8_t b[2] = {(uint8_t)(valid[i] >> 8), (uint8_t)valid[i]};
        rc = dm_ws_close_parse(b, 2, &code, &reason, &rlen);
        ok(rc == 0 && code == valid[i] && rlen == 0 && dm_ws_close_code_valid(valid[i]),
           "close code %u is valid", valid[i]);
    }
    for (size_t i = 0; i < DM_ARRAY_LEN(invalid); i++) {
        uint8_t b[2] = {(uint8_t)(invalid[i] >> 8), (uint8_t)invalid[i]};
        rc = dm_ws_close_parse(b, 2, &code, &reason, &rlen);
        ok(rc == DM_EPROTO && code == 1002 && reason == NULL && !dm_ws_close_code_valid(invalid[i]),
           "close code %u is refused with 1002", invalid[i]);
    }

    rc = dm_ws_close_parse(NULL, 0, &code, &reason, &rlen);
    ok(rc == 0 && code == DM_WS_CLOSE_NO_STATUS && rlen == 0 && reason != NULL,
       "empty close payload means no status (1005)");
    rc = dm_ws_close_parse((const uint8_t *)"\x03", 1, &code, &reason, &rlen);
    ok(rc == DM_EPROTO && code == 1002, "1-byte close payload -> 1002");
    rc = dm_ws_close_parse((const uint8_t *)"\x03\xE8\xC0\x80", 4, &code, &reason, &rlen);
    ok(rc == DM_EPROTO && code == 1007, "overlong UTF-8 reason -> 1007");
    rc = dm_ws_close_parse((const uint8_t *)"\x03\xE8\xE2\x82", 4, &code, &reason, &rlen);
    ok(rc == DM_EPROTO && code == 1007, "truncated UTF-8 reason -> 1007");

    n = dm_ws_close_payload(p, DM_WS_CLOSE_SLOW_CONSUMER, "slow consumer");
    rc = dm_ws_close_parse(p, n, &code, &reason, &rlen);
    ok(n == 15 && p[0] == 0x0F && p[1] == 0xA8 && rc == 0 && code == 4008 && rlen == 13 &&
           memcmp(reason, "slow consumer", 13) == 0,
       "4008 \"slow consumer\" round trip");
    n = dm_ws_close_payload(p, DM_WS_CLOSE_NORMAL, NULL);
    ok(n == 2 && p[0] == 0x03 && p[1] == 0xE8, "1000 without reason is 2 bytes");
    ok(dm_ws_close_payload(p, 0, "ignored") == 0 &&
           dm_ws_close_payload(p, DM_WS_CLOSE_NO_STATUS, NULL) == 0,
       "code 0 and 1005 give the empty payload");

    {
        /* 61 two-byte characters (122 bytes) and a euro sign: the cut at 123
         * would split the euro sign, so it is dropped whole. */
        char longr[200];
        size_t o = 0;
        for (int i = 0; i < 61; i++) {
            longr[o++] = '\xC3';
            longr[o++] = '\xA9';
        }
        memcpy(longr + o, "\xE2\x82\xAC tail", 9);
        n = dm_ws_close_payload(p, DM_WS_CLOSE_GOING_AWAY, longr);
        rc = dm_ws_close_parse(p, n, &code, &reason, &rlen);
        ok(n == 2 + 122 && rc == 0 && code == 1001, "long reason cut at a character boundary (%zu)",
           n);
        memset(longr, 'x', 199);
        longr[199] = '\0';
        n = dm_ws_close_payload(p, DM_WS_CLOSE_GOING_AWAY, longr);
        ok(n == DM_WS_MAX_CONTROL && dm_ws_close_parse(p, n, &code, &reason, &rlen) == 0 &&
               rlen == 123,
           "long ASCII reason is cut to 123 bytes");
    }
}

/* ------------------------------------------------------------------------
 * Server handshake
 */

static const char chrome_req[] =
    "GET /v1/ws?room=abc&token=eyJ.x%2By HTTP/1.1\r\n"
    "Host: live.example.com:8081\r\n"
    "Connection: Upgrade\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    "Upgrade: websocket\r\n"
    "Origin: https://live.example.com\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: zh-CN,zh;q=0.9,en;q=0.8\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "Sec-WebSocket-Protocol: danmaku.v1, chat\r\n"
    "\r\n";

static void test_request_valid(void)
{
    struct dm_ws_request req;
    size_t n = sizeof(chrome_req) - 1;
    char *with_frame;
    int rc = dm_ws_parse_request(chrome_req, n, MAX_HEAD, &req);

    ok(rc == (int)n && req.status == 0 && req.is_upgrade, "browser request: consumed %d of %zu", rc,
       n);
    ok(strcmp(req.path, "/v1/ws") == 0 && strcmp(req.query, "room=abc&token=eyJ.x%2By") == 0,
       "path and query split: %s | %s", req.path, req.query);
    ok(strcmp(req.host, "live.example.com:8081") == 0 &&
           strcmp(req.origin, "https://live.example.com") == 0,
       "Host and Origin");
    ok(strcmp(req.key, "dGhlIHNhbXBsZSBub25jZQ==") == 0 && req.version == 13 && req.http_minor == 1,
       "key, version 13, HTTP/1.1");
    ok(strcmp(req.protocols, "danmaku.v1, chat") == 0 &&
           dm_ws_protocol_offered(req.protocols, "danmaku.v1") &&
           dm_ws_protocol_offered(req.protocols, "chat") &&
           !dm_ws_protocol_offered(req.protocols, "danmaku") &&
           !dm_ws_protocol_offered(req.protocols, "Danmaku.v1") &&
           !dm_ws_protocol_offered(NULL, "chat") && !dm_ws_protocol_offered("", "chat"),
       "subprotocol list and dm_ws_protocol_offered");
    ok(request_prefixes_again(chrome_req, n, MAX_HEAD),
       "all %zu strict prefixes of the browser request return DM_AGAIN", n);

    with_frame = malloc(n + 11);
    memcpy(with_frame, chrome_req, n);
    memcpy(with_frame + n, "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11);
    rc = dm_ws_parse_request(with_frame, n + 11, MAX_HEAD, &req);
    ok(rc == (int)n, "bytes after the head (a first frame) are not consumed");
    free(with_frame);

    rc = dm_ws_parse_request(chrome_req, n, n, &req);
    ok(rc == (int)n, "a head of exactly max_header_bytes is accepted");
    rc = dm_ws_parse_request(chrome_req, n, n - 1, &req);
    ok(rc == DM_EPROTO && req.status == 431, "one byte over max_header_bytes -> 431");
}

struct req_case {
    const char *name;
    const char *text;
    int status;     /* 0 when accepted */
    int is_upgrade; /* expected when accepted (or -1: don't care) */
    const char *path;
    const char *query;
};

#define UPG_TAIL                                                                                   \
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"                                                \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

static void test_request_table(void)
{
    static const struct req_case cases[] = {
        {"minimal upgrade",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\n" UPG_TAIL "Sec-WebSocket-Version: 13\r\n\r\n", 0, 1,
         "/v1/ws", ""},
        {"Firefox Connection: keep-alive, Upgrade",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
         "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n",
         0, 1, "/v1/ws", ""},
        {"header names and tokens in odd case",
         "GET /v1/ws HTTP/1.1\r\nhOST: h\r\nUPGRADE: WebSocket\r\nconnection: UPGRADE\r\n"
         "SEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version:13\r\n\r\n",
         0, 1, "/v1/ws", ""},
        {"whitespace around values and tabs",
         "GET /v1/ws HTTP/1.1\r\nHost:   h  \r\nUpgrade:\twebsocket\t\r\n"
         "Connection: foo ,  upgrade , bar\r\n"
         "Sec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ==  \r\nSec-WebSocket-Version: 13 \r\n\r\n",
         0, 1, "/v1/ws", ""},
        {"bare LF line endings",
         "GET /v1/ws?room=x HTTP/1.1\nHost: h\nUpgrade: websocket\nConnection: Upgrade\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n",
         0, 1, "/v1/ws", "room=x"},
        {"empty lines before the request line", "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 0,
         "/", ""},
        {"plain GET /", "GET / HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n\r\n", 0, 0, "/", ""},
        {"plain GET /healthz keep-alive",
         "GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", 0, 0, "/healthz",
         ""},
        {"Upgrade to something else is a plain GET",
         "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", 0, 0, "/", ""},
        {"HTTP/1.0 plain GET without Host", "GET /healthz HTTP/1.0\r\n\r\n", 0, 0, "/healthz", ""},
        {"empty query and fragment dropped", "GET /a?#frag HTTP/1.1\r\nHost: h\r\n\r\n", 0, 0, "/a",
         ""},
        {"Content-Length: 0 is fine", "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 0,
         0, "/", ""},
        {"obs-text in a header value",
         "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: \xE5\xBC\xB9\r\n\r\n", 0, 0, "/", ""},
        {"missing Sec-WebSocket-Key",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n",
         400, -1, NULL, NULL},
        {"Sec-WebSocket-Key of 8 bytes",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: AAAAAAAAAAA=\r\nSec-WebSocket-Version: 13\r\n\r\n",
         400, -1, NULL, NULL},
        {"Sec-WebSocket-Key of 24 chars that is 18 bytes",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA\r\nSec-WebSocket-Version: 13\r\n\r\n",
         400, -1, NULL, NULL},
        {"Sec-WebSocket-Key with a non-base64 character",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ*==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         400, -1, NULL, NULL},
        {"duplicate Sec-WebSocket-Key",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\n" UPG_TAIL
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         400, -1, NULL, NULL},
        {"version 12",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\n" UPG_TAIL "Sec-WebSocket-Version: 12\r\n\r\n", 426, -1,
         NULL, NULL},
        {"version 8",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\n" UPG_TAIL "Sec-WebSocket-Version: 8\r\n\r\n", 426, -1,
         NULL, NULL},
        {"version not a number",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\n" UPG_TAIL "Sec-WebSocket-Version: 13a\r\n\r\n", 426,
         -1, NULL, NULL},
        {"missing version", "GET /v1/ws HTTP/1.1\r\nHost: h\r\n" UPG_TAIL "\r\n", 426, -1, NULL,
         NULL},
        {"POST", "POST /v1/ws HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n", 405, -1, NULL,
         NULL},
        {"lowercase get", "get / HTTP/1.1\r\nHost: h\r\n\r\n", 405, -1, NULL, NULL},
        {"HEAD", "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", 405, -1, NULL, NULL},
        {"upgrade on HTTP/1.0",
         "GET /v1/ws HTTP/1.0\r\nHost: h\r\n" UPG_TAIL "Sec-WebSocket-Version: 13\r\n\r\n", 400, -1,
         NULL, NULL},
        {"HTTP/2.0 text", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, -1, NULL, NULL},
        {"not HTTP", "GET / FTP/1.1\r\nHost: h\r\n\r\n", 400, -1, NULL, NULL},
        {"missing Host on HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, -1, NULL, NULL},
        {"duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, -1, NULL, NULL},
        {"Connection without Upgrade",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         400, -1, NULL, NULL},
        {"Connection token Upgraded is not Upgrade",
         "GET /v1/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgraded\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         400, -1, NULL, NULL},
        {"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400, -1, NULL, NULL},
        {"obsolete line folding", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", 400, -1,
         NULL, NULL},
        {"header without colon", "GET / HTTP/1.1\r\nHost: h\r\nnonsense\r\n\r\n", 400, -1, NULL,
         NULL},
        {"empty header name", "GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", 400, -1, NULL, NULL},
        {"body on GET", "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", 400, -1, NULL,
         NULL},
        {"bad Content-Length", "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400, -1,
         NULL, NULL},
        {"Transfer-Encoding on GET",
         "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", 400, -1, NULL, NULL},
        {"absolute-form target", "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, -1, NULL, NULL},
        {"asterisk target", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400, -1, NULL, NULL},
        {"two spaces in request line", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400, -1, NULL, NULL},
        {"space in target", "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400, -1, NULL, NULL},
        {"raw UTF-8 in target", "GET /\xE5\xBC\xB9 HTTP/1.1\r\nHost: h\r\n\r\n", 400, -1, NULL,
         NULL},
        {"control byte in a value", "GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n", 400, -1, NULL, NULL},
        {"bare CR inside a line", "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400, -1, NULL, NULL},
        {"method with a bad character", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, -1, NULL, NULL},
    };

    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        const struct req_case *c = &cases[i];
        struct dm_ws_request req;
        size_t n = strlen(c->text);
        int rc = dm_ws_parse_request(c->text, n, MAX_HEAD, &req);
        if (c->status == 0) {
            ok(rc == (int)n && req.status == 0 && (int)req.is_upgrade == c->is_upgrade &&
                   strcmp(req.path, c->path) == 0 && strcmp(req.query, c->query) == 0,
               "%s: accepted (rc %d status %d \"%s\") upgrade %d path %s", c->name, rc, req.status,
               req.reason, req.is_upgrade, req.path);
            ok(request_prefixes_again(c->text, n, MAX_HEAD),
               "%s: every strict prefix returns DM_AGAIN", c->name);
        } else {
            ok(rc == DM_EPROTO && req.status == c->status && req.reason != NULL,
               "%s: %d (got rc %d status %d \"%s\")", c->name, c->status, rc, req.status,
               req.reason);
        }
    }
}

static void test_request_limits(void)
{
    struct dm_ws_request req;
    char *big = malloc(MAX_HEAD * 2);
    size_t o;
    int rc;

    /* Oversize head without an end: 431 as soon as max bytes are there. */
    o = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ");
    memset(big + o, 'a', 200);
    rc = dm_ws_parse_request(big, 63, 64, &req);
    ok(rc == DM_AGAIN, "63 bytes of a head with max 64: DM_AGAIN");
    rc = dm_ws_parse_request(big, 64, 64, &req);
    ok(rc == DM_EPROTO && req.status == 431, "64 bytes without an end with max 64: 431");
    rc = dm_ws_parse_request(big, o + 200, 64, &req);
    ok(rc == DM_EPROTO && req.status == 431, "more bytes, still no end: 431");
    memcpy(big + o + 200, "\r\n\r\n", 4);
    rc = dm_ws_parse_request(big, o + 204, 64, &req);
    ok(rc == DM_EPROTO && req.status == 431, "complete head larger than max: 431");

    /* Field overflows. */
    o = (size_t)sprintf(big, "GET /");
    memset(big + o, 'p', DM_WS_PATH_MAX);
    o += DM_WS_PATH_MAX;
    o += (size_t)sprintf(big + o, " HTTP/1.1\r\nHost: h\r\n\r\n");
    rc = dm_ws_parse_request(big, o, MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 414, "path of %d bytes: 414", DM_WS_PATH_MAX + 1);

    o = (size_t)sprintf(big, "GET /?");
    memset(big + o, 'q', DM_WS_QUERY_MAX);
    o += DM_WS_QUERY_MAX;
    o += (size_t)sprintf(big + o, " HTTP/1.1\r\nHost: h\r\n\r\n");
    rc = dm_ws_parse_request(big, o, MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 414, "query of %d bytes: 414", DM_WS_QUERY_MAX);
    o = (size_t)sprintf(big, "GET /?");
    memset(big + o, 'q', DM_WS_QUERY_MAX - 1);
    o += DM_WS_QUERY_MAX - 1;
    o += (size_t)sprintf(big + o, " HTTP/1.1\r\nHost: h\r\n\r\n");
    rc = dm_ws_parse_request(big, o, MAX_HEAD, &req);
    ok(rc == (int)o && strlen(req.query) == DM_WS_QUERY_MAX - 1, "query of %d bytes fits",
       DM_WS_QUERY_MAX - 1);

    o = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: ");
    memset(big + o, 'h', DM_WS_HOST_MAX);
    o += DM_WS_HOST_MAX;
    o += (size_t)sprintf(big + o, "\r\n\r\n");
    rc = dm_ws_parse_request(big, o, MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 431, "Host of %d bytes: 431", DM_WS_HOST_MAX);

    o = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 30; i++)
        o += (size_t)sprintf(big + o, "Sec-WebSocket-Protocol: proto-number-%02d\r\n", i);
    o += (size_t)sprintf(big + o, "\r\n");
    rc = dm_ws_parse_request(big, o, MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 431, "30 Sec-WebSocket-Protocol lines overflow: 431");
    o = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Protocol: a\r\n"
                             "Sec-WebSocket-Protocol: \r\nSec-WebSocket-Protocol: b, c\r\n\r\n");
    rc = dm_ws_parse_request(big, o, MAX_HEAD, &req);
    ok(rc == (int)o && strcmp(req.protocols, "a, b, c") == 0,
       "Sec-WebSocket-Protocol lines are joined: %s", req.protocols);
    free(big);
}

static void test_request_early_garbage(void)
{
    struct dm_ws_request req;
    static const char tls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    int rc;

    rc = dm_ws_parse_request(tls, sizeof(tls) - 1, MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 400, "a TLS ClientHello is refused at once");
    rc = dm_ws_parse_request(tls, 1, MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 400, "even from its first byte");
    rc = parse_req("{\"op\":\"join\"", MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 400, "JSON instead of HTTP is refused at once");
    rc = parse_req(" GET", MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 400, "leading space is refused at once");
    rc = parse_req("GET / HTTP/1.1\r\nHost: h\r\nX: \x7f", MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 400, "DEL in an incomplete head is refused at once");
    rc = parse_req("GET / HTTP/1.1\r\nHost: h\rX", MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 400, "bare CR in an incomplete head is refused at once");
    rc = parse_req("\r\n\r", MAX_HEAD, &req);
    ok(rc == DM_AGAIN, "leading empty lines then a CR: DM_AGAIN");
    rc = dm_ws_parse_request(NULL, 0, MAX_HEAD, &req);
    ok(rc == DM_AGAIN && req.status == 0, "no bytes: DM_AGAIN");
    {
        static const char nul[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
        rc = dm_ws_parse_request(nul, sizeof(nul) - 1, MAX_HEAD, &req);
        ok(rc == DM_EPROTO && req.status == 400, "NUL byte in a header value: 400");
    }
}

/* True when every prefix of s[0..n) that gets an answer (not DM_AGAIN)
 * gets the one the whole input gets, given to the parser as
 * broadcast/conn.c does (at most max bytes): the verdict on a request must
 * not depend on how its bytes were segmented. */
static bool request_verdict_unsplit(const char *s, size_t n, size_t max)
{
    struct dm_ws_request whole, part;
    int rc = dm_ws_parse_request(s, n < max ? n : max, max, &whole);

    for (size_t k = 1; k < n; k++) {
        char *copy = malloc(k);
        memcpy(copy, s, k);
        int r = dm_ws_parse_request(copy, k < max ? k : max, max, &part);
        free(copy);
        if (r != DM_AGAIN &&
            (r != rc || part.status != whole.status || strcmp(part.reason, whole.reason) != 0))
            return false;
    }
    return true;
}

static bool response_verdict_unsplit(const char *s, size_t n, const char *accept)
{
    struct dm_ws_response whole, part;
    int rc = dm_ws_parse_response(s, n, MAX_HEAD, accept, &whole);

    for (size_t k = 1; k < n; k++) {
        char *copy = malloc(k);
        memcpy(copy, s, k);
        int r = dm_ws_parse_response(copy, k, MAX_HEAD, accept, &part);
        free(copy);
        if (r != DM_AGAIN &&
            (r != rc || part.status != whole.status || strcmp(part.reason, whole.reason) != 0))
            return false;
    }
    return true;
}

/* Found by fuzz/fuzz_ws_handshake: garbage at the start of a head used to
 * be refused as "malformed request line" when a read ended right after it
 * but as a control character (400) or an over-long head (431) when the
 * same bytes came in one read with more after them. */
static void test_verdict_unsplit(void)
{
    static const char *acc = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    struct dm_ws_request req;
    struct dm_ws_response res;
    char big[300];
    int rc;

    rc = dm_ws_parse_request(",\x17", 2, MAX_HEAD, &req);
    ok(rc == DM_EPROTO && req.status == 400 && strcmp(req.reason, "malformed request line") == 0,
       "bad method byte then a control byte: malformed request line");
    ok(request_verdict_unsplit(",\x17", 2, MAX_HEAD), "... however segmented");
    memset(big, 'a', sizeof(big));
    memcpy(big, "G@T /", 5);
    rc = dm_ws_parse_request(big, 64, 64, &req);
    ok(rc == DM_EPROTO && req.status == 400, "bad method in a head over the limit: 400, not 431");
    ok(request_verdict_unsplit(big, sizeof(big), 64), "... however segmented");
    static const char ctl[] = "GE\x01T / HTTP/1.1\r\n\r\n";
    ok(request_verdict_unsplit(ctl, sizeof(ctl) - 1, MAX_HEAD),
       "control byte inside the method: one answer");
    static const char cr[] = "GET / HTTP/1.1\r\nHost: h\rX\r\n\r\n";
    ok(request_verdict_unsplit(cr, sizeof(cr) - 1, MAX_HEAD), "bare CR in a header: one answer");
    rc = dm_ws_parse_request(big + 5, 64, 64, &req);
    ok(rc == DM_EPROTO && req.status == 431, "a long token is still 431");

    rc = dm_ws_parse_response("HT\n\n", 4, MAX_HEAD, acc, &res);
    ok(rc == DM_EPROTO && strcmp(res.reason, "not an HTTP response") == 0,
       "response \"HT\" + empty line: not an HTTP response");
    ok(response_verdict_unsplit("HT\n\n", 4, acc), "... however segmented");
    ok(response_verdict_unsplit("HTX\x01", 4, acc), "bad prefix then a control byte: one answer");
    static const char good[] = "HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    ok(response_verdict_unsplit(good, sizeof(good) - 1, acc), "a good 101: one answer");
}

static void test_query_param(void)
{
    struct {
        const char *query, *name;
        size_t outlen;
        bool found;
        const char *value;
    } cases[] = {
        {"room=abc&token=x", "room", 64, true, "abc"},
        {"room=abc&token=x", "token", 64, true, "x"},
        {"room=abc&token=x", "offset", 64, false, ""},
        {"room=abc&token=x", "roo", 64, false, ""},
        {"xroom=1&room=2", "room", 64, true, "2"},
        {"room=1&room=2", "room", 64, true, "1"},
        {"a=%41%42%2f%2F", "a", 64, true, "AB//"},
        {"a=%e5%BC%b9%E5%B9%95", "a", 64, true, "\xE5\xBC\xB9\xE5\xB9\x95"},
        {"a=x+y%20z", "a", 64, true, "x y z"},
        {"a=b=c", "a", 64, true, "b=c"},
        {"a=%zz", "a", 64, false, ""},
        {"a=%4", "a", 64, false, ""},
        {"a=%", "a", 64, false, ""},
        {"a=%00", "a", 64, false, ""},
        {"flag&a=1", "flag", 64, true, ""},
        {"flag=&a=1", "flag", 64, true, ""},
        {"=x&room=r", "room", 64, true, "r"},
        {"&&room=r&&", "room", 64, true, "r"},
        {"", "room", 64, false, ""},
        {NULL, "room", 64, false, ""},
        {"room=abcd", "room", 5, true, "abcd"},
        {"room=abcde", "room", 5, false, ""},
        {"room=%41%42%43%44%45", "room", 5, false, ""},
    };

    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        char out[64];
        bool found;
        memset(out, 'Z', sizeof(out));
        found = dm_ws_query_param(cases[i].query, cases[i].name, out, cases[i].outlen);
        ok(found == cases[i].found && strcmp(out, cases[i].value) == 0,
           "query \"%s\" %s -> %s \"%s\"", cases[i].query ? cases[i].query : "(null)",
           cases[i].name, cases[i].found ? "found" : "absent", cases[i].value);
    }
}

/* ------------------------------------------------------------------------
 * Responses, both directions
 */

static void test_responses(void)
{
    char accept[DM_WS_ACCEPT_LEN + 1];
    char out[512];
    struct dm_ws_response res;
    int n, rc;
    static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                               "Sec-WebSocket-Protocol: danmaku.v1\r\n"
                               "\r\n";

    dm_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", accept);
    n = dm_ws_response(out, sizeof(out), accept, "danmaku.v1");
    ok(n == (int)sizeof(want) - 1 && strcmp(out, want) == 0, "101 response with subprotocol");
    ok(dm_ws_response(out, (size_t)n, accept, "danmaku.v1") == -1 &&
           dm_ws_response(out, (size_t)n + 1, accept, "danmaku.v1") == n,
       "101 response needs room for the NUL");
    rc = dm_ws_parse_response(want, sizeof(want) - 1, MAX_HEAD, accept, &res);
    ok(rc == n && res.status == 101 && strcmp(res.protocol, "danmaku.v1") == 0,
       "client parses our 101 and sees the subprotocol");
    ok(response_prefixes_again(want, sizeof(want) - 1, accept),
       "every strict prefix of the 101 returns DM_AGAIN");
    n = dm_ws_response(out, sizeof(out), accept, NULL);
    ok(n > 0 && strstr(out, "Sec-WebSocket-Protocol") == NULL &&
           dm_ws_parse_response(out, (size_t)n, MAX_HEAD, accept, &res) == n &&
           res.protocol[0] == '\0',
       "101 without subprotocol");

    n = dm_ws_reject_response(out, sizeof(out), 426, "unsupported Sec-WebSocket-Version");
    ok(n > 0 && strstr(out, "HTTP/1.1 426 Upgrade Required\r\n") == out &&
           strstr(out, "\r\nSec-WebSocket-Version: 13\r\n") != NULL &&
           strstr(out, "\r\nUpgrade: websocket\r\n") != NULL,
       "426 carries Sec-WebSocket-Version: 13 and Upgrade");
    {
        const char *body = strstr(out, "\r\n\r\n") + 4;
        const char *cl = strstr(out, "Content-Length: ");
        ok(cl != NULL && (size_t)atoi(cl + 16) == strlen(body) &&
               strcmp(body, "unsupported Sec-WebSocket-Version\n") == 0,
           "Content-Length matches the body");
    }
    n = dm_ws_reject_response(out, sizeof(out), 405, NULL);
    ok(n > 0 && strstr(out, "HTTP/1.1 405 Method Not Allowed\r\n") == out &&
           strstr(out, "\r\nAllow: GET\r\n") != NULL && strstr(out, "Connection: close") != NULL,
       "405 carries Allow: GET");
    n = dm_ws_reject_response(out, sizeof(out), 431, "request head too large");
    ok(n > 0 && strstr(out, "HTTP/1.1 431 Request Header Fields Too Large\r\n") == out,
       "431 status line");
    ok(dm_ws_reject_response(out, 20, 400, "x") == -1, "reject response that does not fit: -1");

    /* A 426 from the server, seen by the client. */
    n = dm_ws_reject_response(out, sizeof(out), 426, NULL);
    rc = dm_ws_parse_response(out, (size_t)n, MAX_HEAD, accept, &res);
    ok(rc == DM_EPROTO && res.status == 426, "client sees the 426");
}

static void test_client_handshake(void)
{
    char key[DM_WS_KEY_LEN + 1], accept[DM_WS_ACCEPT_LEN + 1], out[1024];
    static const uint8_t nonce[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    struct dm_ws_request req;
    int n, rc;

    dm_ws_client_key(nonce, key);
    n = dm_ws_client_request(out, sizeof(out), "127.0.0.1:8081", "/v1/ws?room=a%20b", key,
                             "danmaku.v1");
    ok(n > 0 && (size_t)n == strlen(out), "client request written (%d bytes)", n);
    rc = dm_ws_parse_request(out, (size_t)n, MAX_HEAD, &req);
    ok(rc == n && req.is_upgrade && strcmp(req.path, "/v1/ws") == 0 &&
           strcmp(req.query, "room=a%20b") == 0 && strcmp(req.key, key) == 0 &&
           strcmp(req.host, "127.0.0.1:8081") == 0 && strcmp(req.protocols, "danmaku.v1") == 0,
       "server parses the client request");
    ok(request_prefixes_again(out, (size_t)n, MAX_HEAD),
       "every strict prefix of the client request returns DM_AGAIN");
    ok(dm_ws_client_request(out, (size_t)n, "127.0.0.1:8081", "/v1/ws?room=a%20b", key,
                            "danmaku.v1") == -1,
       "client request that does not fit: -1");
    n = dm_ws_client_request(out, sizeof(out), "h", "/", key, NULL);
    ok(n > 0 && strstr(out, "Sec-WebSocket-Protocol") == NULL,
       "client request without subprotocol");

    /* Server answers, client checks. */
    dm_ws_accept_key(req.key, accept);
    {
        char resp[512];
        struct dm_ws_response res;
        char expected[DM_WS_ACCEPT_LEN + 1];
        int m = dm_ws_response(resp, sizeof(resp), accept, "danmaku.v1");
        dm_ws_accept_key(key, expected);
        ok(dm_ws_parse_response(resp, (size_t)m, MAX_HEAD, expected, &res) == m,
           "client accepts the server's answer to its key");
        ok(dm_ws_parse_response(resp, (size_t)m, MAX_HEAD, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &res) ==
                   DM_EPROTO &&
               res.status == 101,
           "client refuses an accept for another key");
    }
}

struct resp_case {
    const char *name;
    const char *text;
    int rc_ok; /* 1: accepted */
    int status;
};

static void test_response_table(void)
{
    static const char *acc = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    static const struct resp_case cases[] = {
        {"plain 101",
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
         1, 101},
        {"odd case, no reason phrase",
         "HTTP/1.1 101\r\nupgrade: WebSocket\r\nCONNECTION: upgrade\r\n"
         "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
         1, 101},
        {"wrong accept",
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOX\r\n\r\n",
         0, 101},
        {"missing accept",
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 0,
         101},
        {"missing Upgrade",
         "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
         0, 101},
        {"missing Connection",
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
         0, 101},
        {"extension we did not offer",
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
         "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
         0, 101},
        {"protocol list instead of one",
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
         "Sec-WebSocket-Protocol: a, b\r\n\r\n",
         0, 101},
        {"503", "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n", 0, 503},
        {"malformed status", "HTTP/1.1 1x1 Nope\r\n\r\n", 0, 0},
    };

    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        struct dm_ws_response res;
        size_t n = strlen(cases[i].text);
        int rc = dm_ws_parse_response(cases[i].text, n, MAX_HEAD, acc, &res);
        if (cases[i].rc_ok) {
            ok(rc == (int)n && res.status == cases[i].status, "response %s: accepted",
               cases[i].name);
            ok(response_prefixes_again(cases[i].text, n, acc),
               "response %s: every strict prefix returns DM_AGAIN", cases[i].name);
        } else {
            ok(rc == DM_EPROTO && res.status == cases[i].status,
               "response %s: refused, status %d (\"%s\")", cases[i].name, res.status, res.reason);
        }
    }
    {
        struct dm_ws_response res;
        int rc = dm_ws_parse_response("SSH-2.0-OpenSSH", 15, MAX_HEAD, acc, &res);
        ok(rc == DM_EPROTO, "non-HTTP answer refused before it completes");
        rc = dm_ws_parse_response("HTTP/1.1 101 Switching", 22, 16, acc, &res);
        ok(rc == DM_EPROTO, "response head over the limit refused");
        rc = dm_ws_parse_response(NULL, 0, MAX_HEAD, acc, &res);
        ok(rc == DM_AGAIN, "no bytes: DM_AGAIN");
    }
}

/* ------------------------------------------------------------------------
 * Mutations: random damage to valid inputs never crashes a parser and
 * always yields one of the three documented answers.
 */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void mutate(uint8_t *p, size_t n)
{
    size_t edits = 1 + next_random() % 3;
    static const uint8_t interesting[] = {0x00, '\r', '\n', ' ', ':', ',', 0x7F, 0x80, 0xFF, 0x7E};

    for (size_t e = 0; e < edits; e++) {
        size_t at = next_random() % n;
        switch (next_random() % 3) {
        case 0:
            p[at] = (uint8_t)next_random();
            break;
        case 1:
            p[at] ^= (uint8_t)(1u << (next_random() % 8));
            break;
        default:
            p[at] = interesting[next_random() % sizeof(interesting)];
            break;
        }
    }
}

static void test_mutations(void)
{
    const size_t n = sizeof(chrome_req) - 1;
    static const uint8_t frame[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                    0x7f, 0x9f, 0x4d, 0x51, 0x58};
    bool req_ok = true, frame_ok = true, resp_ok = true;
    int accepted = 0, refused = 0;

    for (int i = 0; i < 3000; i++) {
        uint8_t *buf = malloc(n);
        struct dm_ws_request req;
        size_t cut = (size_t)(next_random() % (n + 1));
        int rc;
        memcpy(buf, chrome_req, n);
        mutate(buf, n);
        rc = dm_ws_parse_request((const char *)buf, cut, MAX_HEAD, &req);
        if (!(rc == DM_AGAIN || (rc == DM_EPROTO && req.status >= 400) ||
              (rc > 0 && (size_t)rc <= cut && req.status == 0)))
            req_ok = false;
        accepted += rc > 0;
        refused += rc == DM_EPROTO;
        free(buf);
    }
    ok(req_ok,
       "3000 damaged requests: each DM_AGAIN, refused with a status, or accepted "
       "(%d accepted, %d refused)",
       accepted, refused);

    for (int i = 0; i < 20000; i++) {
        uint8_t buf[sizeof(frame)];
        struct dm_ws_frame f;
        uint16_t code = 0;
        int rc;
        memcpy(buf, frame, sizeof(frame));
        mutate(buf, sizeof(buf));
        rc = dm_ws_frame_parse(buf, sizeof(buf), 1024, true, &f, &code);
        if (!(rc == DM_AGAIN || (rc == DM_EPROTO && (code == 1002 || code == 1009)) ||
              (rc > 0 && (size_t)rc <= sizeof(buf) && (size_t)rc == f.header_len + f.payload_len)))
            frame_ok = false;
    }
    ok(frame_ok, "20000 damaged frames: each DM_AGAIN, 1002/1009, or a consistent length");

    for (int i = 0; i < 3000; i++) {
        static const char good[] =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        uint8_t *buf = malloc(sizeof(good) - 1);
        struct dm_ws_response res;
        int rc;
        memcpy(buf, good, sizeof(good) - 1);
        mutate(buf, sizeof(good) - 1);
        rc = dm_ws_parse_response((const char *)buf, sizeof(good) - 1, MAX_HEAD,
                                  "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &res);
        if (!(rc == DM_AGAIN || rc == DM_EPROTO || (rc > 0 && res.status == 101)))
            resp_ok = false;
        free(buf);
    }
    ok(resp_ok, "3000 damaged responses: each DM_AGAIN, DM_EPROTO or a checked 101");
}

int main(void)
{
    subtest("handshake keys", test_keys);
    subtest("RFC 6455 §5.7 frames", test_rfc_frames);
    subtest("byte-at-a-time stream", test_stream_bytewise);
    subtest("encode/parse round trips", test_round_trips);
    subtest("frame violations", test_violations);
    subtest("non-minimal lengths", test_nonminimal_lengths);
    subtest("messages", test_messages);
    subtest("unmask", test_unmask);
    subtest("close payloads", test_close);
    subtest("request: browser", test_request_valid);
    subtest("request: table", test_request_table);
    subtest("request: limits", test_request_limits);
    subtest("request: early garbage", test_request_early_garbage);
    subtest("heads: one verdict however segmented", test_verdict_unsplit);
    subtest("query parameters", test_query_param);
    subtest("responses", test_responses);
    subtest("client handshake", test_client_handshake);
    subtest("response table", test_response_table);
    subtest("mutations", test_mutations);
    return done_testing();
}
