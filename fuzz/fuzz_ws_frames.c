/* Fuzzes the RFC 6455 frame codec of common/ws.c as the broadcast node
 * drives it after the handshake (broadcast/conn.c: read_frames, handle_frame,
 * handle_control, text_prefix_valid): dm_ws_frame_parse over an accumulating
 * input buffer, dm_ws_unmask in place, dm_ws_msg_init/dm_ws_msg_frame for
 * fragments, sizes and UTF-8, the early UTF-8 check of a text frame still
 * arriving, dm_ws_close_parse, and dm_ws_close_payload for the answer.
 *
 * Input: byte 0 bits 0-2 pick the chunk sizes and bits 3-4 max_message
 * (128, 300, 4096 or 65536), bytes 1-4 seed the split, the rest is what a
 * client sends once the connection is open.
 *
 * Invariants checked beyond "no crash":
 *  - split invariance: fed in the chunks the seed picks, parsing every
 *    complete frame after each chunk as the server does, the connection sees
 *    the same events (text messages and their bytes, pings, pongs, binary,
 *    the close and its code) and keeps the same unparsed tail as when the
 *    whole input arrives in one read;
 *  - every parsed frame is what the header contract promises: length =
 *    header_len + payload_len, masked, no RSV bits, known opcode, control
 *    frames final and <= 125 bytes, payload <= max_message; its strict
 *    prefixes parse as DM_AGAIN; re-encoded with dm_ws_frame_header it parses
 *    back to the same frame; a refusal carries 1002 or 1009;
 *  - dm_ws_unmask applied in pieces at offsets equals one pass, and applying
 *    it twice gives the input back;
 *  - a completed text message is valid UTF-8 (dm_utf8_valid, and dm_utf8_feed
 *    in pieces agrees);
 *  - an accepted close payload has a valid code and a UTF-8 reason, and
 *    dm_ws_close_payload of it parses back the same; our own close payload
 *    always parses. */
#include "fuzz/fuzz.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/utf8.h"
#include "common/ws.h"

/* Close codes conn.c answers with (its close_reasons table). */
#define CLOSE_UNSUPPORTED 1003

enum ev_kind {
    EV_TEXT = 'T',
    EV_PING = 'P',
    EV_PONG = 'O',
    EV_CLOSE = 'C',
};

/* What the connection did, serialized so two runs compare with memcmp. */
struct events {
    uint8_t *p;
    size_t len, cap;
};

/* The per-connection state of conn.c that frame handling touches. */
struct conn {
    uint64_t max_message;
    uint8_t *in; /* bytes waiting to be parsed */
    size_t in_len, in_cap;
    struct dm_ws_msg msg;
    uint8_t *frag; /* the fragmented message so far */
    size_t frag_len;
    bool closed;
    uint16_t close_code; /* what our close frame carries */
    struct events ev;
    struct fuzz_split *aux; /* piece sizes for the unmask/UTF-8 checks */
};

static void ev_add(struct events *e, uint8_t kind, const uint8_t *p, size_t n)
{
    size_t need = e->len + 1 + sizeof(uint32_t) + n;

    if (need > e->cap) {
        e->cap = need * 2;
        e->p = dm_realloc(e->p, e->cap);
    }
    uint32_t n32 = (uint32_t)n;
    e->p[e->len++] = kind;
    memcpy(e->p + e->len, &n32, sizeof(n32));
    e->len += sizeof(n32);
    if (n > 0)
        memcpy(e->p + e->len, p, n);
    e->len += n;
}

/* ---- codec properties, checked on every frame ---- */

static void check_frame(const uint8_t *buf, size_t avail, int rc, const struct dm_ws_frame *f,
                        uint64_t max)
{
    struct dm_ws_frame g;
    uint16_t code;

    FUZZ_CHECK((size_t)rc == f->header_len + f->payload_len, "frame length = header + payload");
    FUZZ_CHECK(f->header_len == 6 || f->header_len == 8 || f->header_len == 14,
               "masked header is 6, 8 or 14 bytes");
    FUZZ_CHECK(f->masked && f->rsv == 0, "masked, no RSV");
    FUZZ_CHECK(f->opcode <= DM_WS_OP_BINARY ||
                   (f->opcode >= DM_WS_OP_CLOSE && f->opcode <= DM_WS_OP_PONG),
               "known opcode");
    FUZZ_CHECK(f->opcode < DM_WS_OP_CLOSE || (f->fin && f->payload_len <= DM_WS_MAX_CONTROL),
               "control frames final and short");
    FUZZ_CHECK(f->payload_len <= max, "payload within max_payload");
    FUZZ_CHECK((size_t)rc <= avail, "frame within the buffer");

    /* Every strict prefix needs more: the first byte, the header without
     * its last byte, and the frame without its last byte. */
    size_t probes[3] = {1, f->header_len - 1, (size_t)rc - 1};
    for (size_t i = 0; i < 3; i++) {
        int r = dm_ws_frame_parse(buf, probes[i], max, true, &g, &code);
        FUZZ_CHECK(r == DM_AGAIN, "strict prefix of a frame is DM_AGAIN");
    }

    /* Re-encoded (minimal length form) it is the same frame. */
    uint8_t *copy = dm_malloc(DM_WS_MAX_HEADER + (size_t)f->payload_len);
    size_t h = dm_ws_frame_header(copy, f->opcode, f->fin, f->payload_len, f->mask);
    FUZZ_CHECK(h <= f->header_len, "minimal header no longer than the received one");
    memcpy(copy + h, buf + f->header_len, (size_t)f->payload_len);
    int r = dm_ws_frame_parse(copy, h + (size_t)f->payload_len, max, true, &g, &code);
    FUZZ_CHECK(r == (int)(h + f->payload_len) && g.fin == f->fin && g.opcode == f->opcode &&
                   g.payload_len == f->payload_len && memcmp(g.mask, f->mask, 4) == 0,
               "re-encoded header parses to the same frame");
    free(copy);
}

/* Unmasks payload in place as conn.c does, and checks that pieces at
 * offsets give the same bytes and that masking again restores them. */
static void unmask_checked(struct conn *c, uint8_t *payload, size_t n, const uint8_t mask[4])
{
    uint8_t *orig = dm_malloc(n + 1), *pieces = dm_malloc(n + 1);

    memcpy(orig, payload, n);
    memcpy(pieces, payload, n);
    dm_ws_unmask(payload, n, mask, 0);
    for (size_t off = 0; off < n;) {
        size_t k = fuzz_split_next(c->aux, n - off);
        dm_ws_unmask(pieces + off, k, mask, off);
        off += k;
    }
    FUZZ_CHECK(n == 0 || memcmp(pieces, payload, n) == 0, "unmask in pieces = unmask at once");
    dm_ws_unmask(pieces, n, mask, 0);
    FUZZ_CHECK(n == 0 || memcmp(pieces, orig, n) == 0, "unmask twice = identity");
    free(orig);
    free(pieces);
}

static void check_text(struct conn *c, const uint8_t *p, size_t n)
{
    struct dm_utf8 u;
    bool ok = true;

    FUZZ_CHECK(dm_utf8_valid(p, n), "a completed text message is valid UTF-8");
    dm_utf8_init(&u);
    for (size_t off = 0; off < n && ok;) {
        size_t k = fuzz_split_next(c->aux, n - off);
        ok = dm_utf8_feed(&u, p + off, k) == 0;
        off += k;
    }
    FUZZ_CHECK(ok && dm_utf8_complete(&u), "UTF-8 fed in pieces agrees");
}

/* ---- the connection, as conn.c runs it ---- */

/* dm_conn_close: our close frame's payload must be one we can parse. */
static void conn_close(struct conn *c, uint16_t code)
{
    uint8_t payload[DM_WS_MAX_CONTROL];
    uint16_t back;
    const char *reason;
    size_t reason_len;

    if (c->closed)
        return;
    c->closed = true;
    c->close_code = code;
    size_t n = dm_ws_close_payload(payload, code, "protocol_error");
    FUZZ_CHECK(dm_ws_close_parse(payload, n, &back, &reason, &reason_len) == 0 && back == code,
               "our close payload parses");
    ev_add(&c->ev, EV_CLOSE, (const uint8_t *)&code, sizeof(code));
}

static uint16_t close_of_code(uint16_t code)
{
    FUZZ_CHECK(code == DM_WS_CLOSE_PROTOCOL || code == DM_WS_CLOSE_TOO_BIG ||
                   code == DM_WS_CLOSE_BAD_DATA,
               "codec refusals are 1002, 1007 or 1009");
    return code;
}

static void handle_control(struct conn *c, const struct dm_ws_frame *f, const uint8_t *payload)
{
    size_t n = (size_t)f->payload_len;
    uint16_t code;
    const char *reason;
    size_t reason_len;

    switch (f->opcode) {
    case DM_WS_OP_PING:
        ev_add(&c->ev, EV_PING, payload, n);
        break;
    case DM_WS_OP_PONG:
        ev_add(&c->ev, EV_PONG, payload, n);
        break;
    case DM_WS_OP_CLOSE:
        if (n == 0) {
            conn_close(c, DM_WS_CLOSE_NORMAL);
            break;
        }
        if (dm_ws_close_parse(payload, n, &code, &reason, &reason_len) < 0) {
            FUZZ_CHECK(reason == NULL, "no reason on a refused close payload");
            conn_close(c,
                       code == DM_WS_CLOSE_BAD_DATA ? DM_WS_CLOSE_BAD_DATA : DM_WS_CLOSE_PROTOCOL);
            break;
        }
        FUZZ_CHECK(dm_ws_close_code_valid(code), "accepted close code is valid");
        FUZZ_CHECK(reason_len == n - 2 && reason == (const char *)payload + 2 &&
                       dm_utf8_valid((const uint8_t *)reason, reason_len),
                   "accepted close reason is the rest, valid UTF-8");
        {
            /* The same code and reason, encoded by us, read back the same. */
            char text[DM_WS_MAX_CLOSE_REASON + 1];
            uint8_t again[DM_WS_MAX_CONTROL];
            uint16_t code2;
            const char *reason2;
            size_t reason2_len;
            memcpy(text, reason, reason_len);
            text[reason_len] = '\0';
            if (memchr(text, '\0', reason_len) == NULL) {
                size_t m = dm_ws_close_payload(again, code, text);
                FUZZ_CHECK(m == n && memcmp(again, payload, n) == 0,
                           "close payload re-encodes byte for byte");
                FUZZ_CHECK(dm_ws_close_parse(again, m, &code2, &reason2, &reason2_len) == 0 &&
                               code2 == code && reason2_len == reason_len,
                           "re-encoded close payload parses the same");
            }
        }
        conn_close(c, code); /* echoed, as conn.c does */
        break;
    default:
        FUZZ_CHECK(false, "control opcode");
    }
}

static void handle_frame(struct conn *c, const struct dm_ws_frame *f, const uint8_t *payload)
{
    size_t plen = (size_t)f->payload_len;
    uint16_t code = 0;
    int rc;

    if (f->opcode >= DM_WS_OP_CLOSE) {
        handle_control(c, f, payload);
        return;
    }
    rc = dm_ws_msg_frame(&c->msg, f, payload, c->max_message, &code);
    if (rc == DM_EPROTO) {
        conn_close(c, close_of_code(code));
        return;
    }
    FUZZ_CHECK(rc == 0 || rc == DM_WS_OP_TEXT || rc == DM_WS_OP_BINARY, "msg_frame result");
    FUZZ_CHECK((rc == 0) == !f->fin, "a message ends exactly at FIN");
    if (rc == 0 || c->frag != NULL) {
        c->frag = dm_realloc(c->frag, c->frag_len + plen + 1);
        if (plen > 0)
            memcpy(c->frag + c->frag_len, payload, plen);
        c->frag_len += plen;
        FUZZ_CHECK(c->frag_len <= c->max_message, "reassembled message within max_message");
        if (rc == 0)
            return;
        payload = c->frag;
        plen = c->frag_len;
    }
    if (rc == DM_WS_OP_BINARY) {
        conn_close(c, CLOSE_UNSUPPORTED);
    } else {
        check_text(c, payload, plen);
        ev_add(&c->ev, EV_TEXT, payload, plen);
    }
    free(c->frag);
    c->frag = NULL;
    c->frag_len = 0;
}

/* conn.c text_prefix_valid: the part of a text frame that has arrived must
 * already be valid UTF-8. With one difference (fuzz/README.md, "Findings"):
 * a frame whose header the message state already refuses (TEXT inside an
 * open message, a continuation beyond max_message) is left to
 * dm_ws_msg_frame, which answers 1002/1009 when it completes, as it does
 * when the frame arrives in one read. conn.c as it stands answers 1007
 * instead when the bytes that arrived are bad UTF-8, so its close code
 * depends on how the client's bytes were segmented. */
static bool text_prefix_valid(struct conn *c, const struct dm_ws_frame *f, const uint8_t *data,
                              size_t avail)
{
    bool text = (f->opcode == DM_WS_OP_TEXT && c->msg.opcode == 0) ||
                (f->opcode == DM_WS_OP_CONT && c->msg.opcode == DM_WS_OP_TEXT);
    size_t have = avail - f->header_len;
    struct dm_utf8 u;

    if (!text || have == 0 || f->payload_len > c->max_message - c->msg.len)
        return true;
    uint8_t *copy = dm_malloc(have);
    memcpy(copy, data + f->header_len, have);
    dm_ws_unmask(copy, have, f->mask, 0);
    if (f->opcode == DM_WS_OP_TEXT)
        dm_utf8_init(&u);
    else
        u = c->msg.utf8;
    bool ok = dm_utf8_feed(&u, copy, have) == 0;
    free(copy);
    return ok;
}

/* conn.c read_frames: every complete frame from the start of the input;
 * returns the bytes consumed. */
static size_t read_frames(struct conn *c)
{
    struct dm_ws_frame f;
    size_t off = 0;

    while (!c->closed && off < c->in_len) {
        uint8_t *data = c->in + off;
        size_t avail = c->in_len - off;
        uint16_t code = 0;
        int rc = dm_ws_frame_parse(data, avail, c->max_message, true, &f, &code);
        if (rc == DM_AGAIN) {
            FUZZ_CHECK(f.header_len == 0 || f.header_len + f.payload_len > avail,
                       "DM_AGAIN only while the frame is incomplete");
            if (f.header_len > 0 && !text_prefix_valid(c, &f, data, avail))
                conn_close(c, DM_WS_CLOSE_BAD_DATA);
            break;
        }
        if (rc == DM_EPROTO) {
            FUZZ_CHECK(code == DM_WS_CLOSE_PROTOCOL || code == DM_WS_CLOSE_TOO_BIG,
                       "frame refusals are 1002 or 1009");
            conn_close(c, code);
            break;
        }
        FUZZ_CHECK(rc > 0, "frame_parse result");
        check_frame(data, avail, rc, &f, c->max_message);
        uint8_t *payload = data + f.header_len;
        unmask_checked(c, payload, (size_t)f.payload_len, f.mask);
        off += (size_t)rc;
        handle_frame(c, &f, payload);
    }
    return off;
}

/* conn.c do_read for an open connection: append, parse, keep the tail. */
static void conn_read(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->closed)
        return; /* its input no longer matters */
    /* Exactly the bytes held, so ASan sees any read past them. */
    c->in_cap = c->in_len + n;
    c->in = dm_realloc(c->in, c->in_cap);
    memcpy(c->in + c->in_len, p, n);
    c->in_len += n;
    size_t used = read_frames(c);
    if (c->closed)
        return;
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
}

static void conn_init(struct conn *c, uint64_t max_message, struct fuzz_split *aux)
{
    memset(c, 0, sizeof(*c));
    c->max_message = max_message;
    c->aux = aux;
    dm_ws_msg_init(&c->msg);
}

static void conn_fini(struct conn *c)
{
    free(c->in);
    free(c->frag);
    free(c->ev.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t max_messages[4] = {128, 300, 4096, 65536};
    struct fuzz_split split, aux;
    struct conn whole, chunked;

    if (size < FUZZ_SPLIT_HDR)
        return 0;
    fuzz_split_init(&split, data[0], data + 1);
    fuzz_split_init(&aux, (uint8_t)(data[0] + 3), data + 1);
    uint64_t max = max_messages[(data[0] >> 3) & 3];
    const uint8_t *p = data + FUZZ_SPLIT_HDR;
    size_t n = size - FUZZ_SPLIT_HDR;

    conn_init(&whole, max, &aux);
    conn_init(&chunked, max, &aux);
    if (n > 0)
        conn_read(&whole, p, n);
    for (size_t off = 0; off < n;) {
        size_t k = fuzz_split_next(&split, n - off);
        conn_read(&chunked, p + off, k);
        off += k;
    }

    FUZZ_CHECK(whole.closed == chunked.closed, "closed in both or neither");
    FUZZ_CHECK(whole.close_code == chunked.close_code, "same close code");
    FUZZ_CHECK(whole.ev.len == chunked.ev.len &&
                   (whole.ev.len == 0 || memcmp(whole.ev.p, chunked.ev.p, whole.ev.len) == 0),
               "same events");
    if (!whole.closed) {
        FUZZ_CHECK(whole.in_len == chunked.in_len, "same unparsed tail");
        FUZZ_CHECK(whole.frag_len == chunked.frag_len, "same fragments held");
    }
    conn_fini(&whole);
    conn_fini(&chunked);
    return 0;
}
