/* Fuzzes the HTTP/1.1 upgrade handshake of common/ws.c on both sides.
 * Server side as broadcast/conn.c read_handshake drives it: the request head
 * is re-parsed with dm_ws_parse_request over the accumulated input (at most
 * max_header bytes of it) after every read; a refusal is answered with
 * dm_ws_reject_response into a 512-byte buffer; an upgrade reads ?room= and
 * ?token= with dm_ws_query_param and answers with dm_ws_accept_key,
 * dm_ws_protocol_offered and dm_ws_response. Client side as the load tester
 * (loadtest/viewers.c) drives it: the same bytes as a server's answer to
 * dm_ws_parse_response, also re-parsed after every read.
 *
 * Input: byte 0 bits 0-2 pick the chunk sizes and bits 3-4 max_header
 * (1024, 8192, 200 or 65536), bytes 1-4 seed the split, the rest is the head.
 *
 * Invariants checked beyond "no crash":
 *  - split invariance, both parsers: fed in the chunks the seed picks, the
 *    first result other than DM_AGAIN (and for a request the status, reason
 *    and every parsed field; for a response the status, reason and
 *    subprotocol) equals parsing the whole input in one read;
 *  - a complete head is never longer than max_header or the input; a
 *    refusal has a 4xx/5xx status and a reason, and its answer fits conn.c's
 *    512-byte buffer and parses, client side, as a response with that status;
 *  - an accepted upgrade has version 13 and a 24-character key; our 101
 *    answer to it is accepted by dm_ws_parse_response with the same accept
 *    key and subprotocol; dm_ws_client_request with its host, target, key
 *    and protocols parses back to the same request;
 *  - dm_ws_query_param: values fit and are NUL-free, a refusal leaves "",
 *    and a value percent-encoded again decodes to itself;
 *  - an accepted response is a 101 with reason "ok" and a token (or no)
 *    subprotocol. */
#include "fuzz/fuzz.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/proto.h"
#include "common/util.h"
#include "common/ws.h"

#define SUBPROTOCOL "danmaku.v1" /* what conn.c offers */
#define ANSWER_MAX  512          /* conn.c's buffers for the 101 and refusals */
/* The RFC 6455 §1.3 example key and its accept value: the client side
 * expects this one. */
#define CLIENT_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define CLIENT_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* ---- server side ---- */

static int parse_request(const uint8_t *in, size_t len, size_t max, struct dm_ws_request *req)
{
    /* conn.c hands over at most max_header bytes of its input. */
    size_t n = len < max ? len : max;
    /* An exact copy, so ASan sees any read past the bytes given. */
    char *copy = dm_malloc(n > 0 ? n : 1);
    memcpy(copy, in, n);
    int rc = dm_ws_parse_request(n > 0 ? copy : NULL, n, max, req);
    free(copy);

    FUZZ_CHECK(rc == DM_AGAIN || rc == DM_EPROTO || (rc > 0 && (size_t)rc <= n),
               "request parse result");
    FUZZ_CHECK(rc != DM_AGAIN || req->status == 0, "no status while incomplete");
    FUZZ_CHECK(rc != DM_EPROTO || (req->status >= 400 && req->status <= 599 && req->reason),
               "a refusal has a 4xx/5xx status and a reason");
    FUZZ_CHECK(rc <= 0 || req->status == 0, "status 0 on success");
    return rc;
}

static bool same_request(const struct dm_ws_request *a, const struct dm_ws_request *b)
{
    return a->is_upgrade == b->is_upgrade && a->http_minor == b->http_minor &&
           a->version == b->version && strcmp(a->path, b->path) == 0 &&
           strcmp(a->query, b->query) == 0 && strcmp(a->host, b->host) == 0 &&
           strcmp(a->origin, b->origin) == 0 && strcmp(a->protocols, b->protocols) == 0 &&
           strcmp(a->key, b->key) == 0;
}

static bool has_tab(const char *s)
{
    return strchr(s, '\t') != NULL;
}

/* The refusal conn.c sends must fit its buffer and read, client side, as a
 * response with the same status. */
static void check_refusal(const struct dm_ws_request *req)
{
    char out[ANSWER_MAX];
    struct dm_ws_response res;
    int n = dm_ws_reject_response(out, sizeof(out), req->status, req->reason);

    FUZZ_CHECK(n > 0, "the refusal fits conn.c's 512-byte buffer");
    int rc = dm_ws_parse_response(out, (size_t)n, ANSWER_MAX, CLIENT_ACCEPT, &res);
    FUZZ_CHECK(rc == DM_EPROTO && res.status == req->status,
               "the refusal reads as a response with its status");
}

static void percent_encode(const char *v, char *out)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        *out++ = '%';
        *out++ = hex[c >> 4];
        *out++ = hex[c & 15];
    }
    *out = '\0';
}

/* dm_ws_query_param's contract, and its decoding inverted. */
static bool query_param(const char *query, const char *name, char *out, size_t outlen)
{
    bool found = dm_ws_query_param(query, name, out, outlen);
    size_t n = strnlen(out, outlen);

    FUZZ_CHECK(n < outlen, "query value NUL-terminated within outlen");
    FUZZ_CHECK(found || n == 0, "an absent or refused value is \"\"");
    if (found && n > 0) {
        char *enc = dm_malloc(3 * n + 8), *back = dm_malloc(outlen);
        memcpy(enc, "x=", 2);
        percent_encode(out, enc + 2);
        FUZZ_CHECK(dm_ws_query_param(enc, "x", back, outlen) && strcmp(back, out) == 0,
                   "a percent-encoded value decodes to itself");
        free(enc);
        free(back);
    }
    return found;
}

/* What conn.c does with an accepted upgrade, minus the JWT (fuzz_jwt). */
static void check_upgrade(const struct dm_ws_request *req, size_t max)
{
    char room[DM_ROOM_MAX + 2], accept[DM_WS_ACCEPT_LEN + 1], resp[ANSWER_MAX];
    char *token = dm_malloc(DM_WS_QUERY_MAX);
    struct dm_ws_response res;

    FUZZ_CHECK(req->version == 13 && strlen(req->key) == DM_WS_KEY_LEN && req->http_minor == 1,
               "an accepted upgrade is HTTP/1.1, version 13, with a key");
    if (query_param(req->query, "room", room, sizeof(room)))
        (void)dm_room_id_valid(room, strlen(room));
    query_param(req->query, "token", token, DM_WS_QUERY_MAX);
    free(token);

    dm_ws_accept_key(req->key, accept);
    bool offered = dm_ws_protocol_offered(req->protocols, SUBPROTOCOL);
    int n = dm_ws_response(resp, sizeof(resp), accept, offered ? SUBPROTOCOL : NULL);
    FUZZ_CHECK(n > 0, "the 101 fits conn.c's buffer");
    int rc = dm_ws_parse_response(resp, (size_t)n, ANSWER_MAX, accept, &res);
    FUZZ_CHECK(rc == n && res.status == 101 &&
                   strcmp(res.protocol, offered ? SUBPROTOCOL : "") == 0,
               "a client accepts our 101");

    /* A client sending this request again (dm_ws_client_request's inputs
     * must be field text: no tab inside) is parsed the same. */
    if (has_tab(req->host) || has_tab(req->protocols))
        return;
    size_t tlen = strlen(req->path) + 1 + strlen(req->query) + 1;
    size_t cap = tlen + strlen(req->host) + strlen(req->protocols) + 256;
    char *target = dm_malloc(tlen), *again = dm_malloc(cap);
    struct dm_ws_request req2;
    memcpy(target, req->path, strlen(req->path) + 1);
    if (req->query[0] != '\0') {
        strcat(target, "?");
        strcat(target, req->query);
    }
    n = dm_ws_client_request(again, cap, req->host, target, req->key,
                             req->protocols[0] ? req->protocols : NULL);
    FUZZ_CHECK(n > 0, "client request fits");
    if ((size_t)n <= max) {
        rc = dm_ws_parse_request(again, (size_t)n, max, &req2);
        FUZZ_CHECK(rc == n && req2.is_upgrade && strcmp(req2.path, req->path) == 0 &&
                       strcmp(req2.query, req->query) == 0 && strcmp(req2.host, req->host) == 0 &&
                       strcmp(req2.key, req->key) == 0 &&
                       strcmp(req2.protocols, req->protocols) == 0 && req2.version == 13,
                   "dm_ws_client_request of a parsed request parses the same");
    }
    free(target);
    free(again);
}

static void fuzz_request(const uint8_t *p, size_t n, size_t max, struct fuzz_split *split)
{
    struct dm_ws_request whole, part;
    int rc_whole = parse_request(p, n, max, &whole);
    int rc = DM_AGAIN;

    for (size_t len = 0; len < n && rc == DM_AGAIN;) {
        len += fuzz_split_next(split, n - len);
        rc = parse_request(p, len, max, &part);
    }
    FUZZ_CHECK(rc == rc_whole, "request: same result in chunks as at once");
    if (rc == DM_AGAIN)
        return;
    FUZZ_CHECK(part.status == whole.status, "request: same status in chunks as at once");
    FUZZ_CHECK(strcmp(part.reason, whole.reason) == 0, "request: same reason");
    if (rc == DM_EPROTO) {
        check_refusal(&whole);
        return;
    }
    FUZZ_CHECK(same_request(&part, &whole), "request: same fields in chunks as at once");
    if (whole.is_upgrade)
        check_upgrade(&whole, max);
}

/* ---- client side ---- */

static int parse_response(const uint8_t *in, size_t len, size_t max, struct dm_ws_response *res)
{
    char *copy = dm_malloc(len > 0 ? len : 1);
    memcpy(copy, in, len);
    int rc = dm_ws_parse_response(len > 0 ? copy : NULL, len, max, CLIENT_ACCEPT, res);
    free(copy);

    FUZZ_CHECK(rc == DM_AGAIN || rc == DM_EPROTO ||
                   (rc > 0 && (size_t)rc <= len && (size_t)rc <= max),
               "response parse result");
    FUZZ_CHECK(res->reason != NULL, "response reason set");
    if (rc > 0) {
        FUZZ_CHECK(res->status == 101 && strcmp(res->reason, "ok") == 0,
                   "an accepted response is a 101");
        for (const char *q = res->protocol; *q; q++)
            FUZZ_CHECK(*q > 0x20 && *q < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", *q),
                       "the chosen subprotocol is a token");
    }
    return rc;
}

static void fuzz_response(const uint8_t *p, size_t n, size_t max, struct fuzz_split *split)
{
    struct dm_ws_response whole, part;
    int rc_whole = parse_response(p, n, max, &whole);
    int rc = DM_AGAIN;

    for (size_t len = 0; len < n && rc == DM_AGAIN;) {
        len += fuzz_split_next(split, n - len);
        rc = parse_response(p, len, max, &part);
    }
    FUZZ_CHECK(rc == rc_whole, "response: same result in chunks as at once");
    if (rc == DM_AGAIN)
        return;
    FUZZ_CHECK(part.status == whole.status && strcmp(part.reason, whole.reason) == 0 &&
                   strcmp(part.protocol, whole.protocol) == 0,
               "response: same status, reason and subprotocol in chunks as at once");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t max_headers[4] = {1024, 8192, 200, 65536};
    struct fuzz_split split;

    if (size < FUZZ_SPLIT_HDR)
        return 0;
    size_t max = max_headers[(data[0] >> 3) & 3];
    const uint8_t *p = data + FUZZ_SPLIT_HDR;
    size_t n = size - FUZZ_SPLIT_HDR;

    fuzz_split_init(&split, data[0], data + 1);
    fuzz_request(p, n, max, &split);
    fuzz_split_init(&split, data[0], data + 1);
    fuzz_response(p, n, max, &split);
    return 0;
}
