/* RFC 6455 codec without I/O: HTTP upgrade heads in both directions, frame
 * headers, masking, close payloads and the fragmentation state machine.
 * Everything peer-controlled is bounded by the caller's limits. */
#include "common/ws.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/check.h"
#include "common/util.h"

/* ========================================================================
 * Small text helpers (ASCII only, locale independent)
 */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int to_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static bool mem_ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (to_lower((unsigned char)a[i]) != to_lower((unsigned char)b[i]))
            return false;
    }
    return true;
}

/* True when a[0..n) equals the lowercase literal `lit`, ignoring case. */
static bool name_is(const char *a, size_t n, const char *lit)
{
    return strlen(lit) == n && mem_ieq(a, lit, n);
}

/* RFC 7230 tchar: what header names, methods and list tokens consist of. */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (!is_tchar((unsigned char)*s))
            return false;
    }
    return true;
}

/* No control bytes: safe to print inside a header line. */
static bool is_field_text(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7F)
            return false;
    }
    return true;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* True when the comma-separated list v[0..n) holds `tok` as one element
 * (surrounding whitespace ignored, empty elements skipped). */
static bool list_has_token(const char *v, size_t n, const char *tok, bool nocase)
{
    size_t tlen = strlen(tok);
    size_t i = 0;

    if (tlen == 0)
        return false;
    while (i < n) {
        size_t s, e;
        while (i < n && is_ows(v[i]))
            i++;
        s = i;
        while (i < n && v[i] != ',')
            i++;
        e = i;
        while (e > s && is_ows(v[e - 1]))
            e--;
        if (e - s == tlen && (nocase ? mem_ieq(v + s, tok, tlen) : memcmp(v + s, tok, tlen) == 0))
            return true;
        i++; /* past the comma */
    }
    return false;
}

/* Bounded copy into a fixed field; false when it does not fit. */
static bool copy_field(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(dst, v, n);
    dst[n] = '\0';
    return true;
}

static bool is_base64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* A Sec-WebSocket-Key is base64 of 16 bytes: 22 characters and "==". */
static bool key_is_valid(const char *v, size_t n)
{
    if (n != DM_WS_KEY_LEN || v[22] != '=' || v[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++) {
        if (!is_base64_char((unsigned char)v[i]))
            return false;
    }
    return true;
}

/* snprintf result to our convention: length, or -1 when truncated. */
static int print_result(int n, size_t outlen)
{
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    return n;
}

/* ========================================================================
 * HTTP head scanning, shared by the request and response parsers
 *
 * Lines end in LF with an optional CR before it (RFC 7230 §3.5 lets a
 * recipient accept a bare LF); a CR anywhere else is refused, as is any
 * control byte but HT, so header values can never smuggle line breaks.
 */

enum head_scan {
    HEAD_PARTIAL,
    HEAD_DONE,
    HEAD_BAD,
    HEAD_TOO_BIG,
};

/* Looks at buf[0..len) without going past max bytes. Skips empty lines
 * before the start line (RFC 7230 §3.5). Sets *start to the start line and
 * *end just past its empty line when the head is complete, else just past
 * the bytes the verdict rests on (the bad byte, or all that was looked at),
 * so that the callers' start-line checks see the same bytes whichever way
 * the head was segmented. */
static enum head_scan scan_head(const char *buf, size_t len, size_t max, size_t *start, size_t *end)
{
    size_t lim = len < max ? len : max;
    size_t i = 0;
    bool line_empty = false;

    while (i < lim) {
        if (buf[i] == '\n') {
            i++;
        } else if (buf[i] == '\r') {
            if (i + 1 < lim && buf[i + 1] != '\n') {
                *start = *end = i + 2; /* no start line to check */
                return HEAD_BAD;
            }
            if (i + 1 == lim) {
                i = lim; /* a lone CR: wait for the LF that should follow */
                break;
            }
            i += 2;
        } else {
            break;
        }
    }
    *start = i;
    for (; i < lim; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\n') {
            if (line_empty) {
                *end = i + 1;
                return HEAD_DONE;
            }
            line_empty = true;
        } else if (c == '\r') {
            if (i + 1 < lim && buf[i + 1] != '\n') {
                *end = i + 1;
                return HEAD_BAD;
            }
        } else if ((c < 0x20 && c != '\t') || c == 0x7F) {
            *end = i + 1;
            return HEAD_BAD;
        } else {
            line_empty = false;
        }
    }
    *end = lim;
    return len >= max ? HEAD_TOO_BIG : HEAD_PARTIAL;
}

/* Returns the next line of a complete head (without CR LF) and advances
 * *pos. scan_head guaranteed every line up to `end` is LF-terminated. */
static void next_line(const char *buf, size_t end, size_t *pos, const char **line, size_t *n)
{
    const char *p = buf + *pos;
    const char *nl = memchr(p, '\n', end - *pos);

    DM_AN(nl);
    *line = p;
    *n = (size_t)(nl - p);
    if (*n > 0 && p[*n - 1] == '\r')
        (*n)--;
    *pos = (size_t)(nl - buf) + 1;
}

/* Splits "Name: value" into the name and the value without surrounding
 * whitespace. False when the name is empty or not a token (which also
 * refuses whitespace before the colon and obsolete line folding). */
static bool split_header(const char *line, size_t n, const char **name, size_t *name_len,
                         const char **value, size_t *value_len)
{
    size_t i = 0;
    size_t e;

    while (i < n && is_tchar((unsigned char)line[i]))
        i++;
    if (i == 0 || i == n || line[i] != ':')
        return false;
    *name = line;
    *name_len = i;
    i++;
    while (i < n && is_ows(line[i]))
        i++;
    e = n;
    while (e > i && is_ows(line[e - 1]))
        e--;
    *value = line + i;
    *value_len = e - i;
    return true;
}

/* Parses "HTTP/<major>.<minor>". Returns the minor version clamped to 1
 * (RFC 7230 §2.6: treat 1.x as the highest 1.x we speak), -2 for a major
 * version other than 1, -1 when it is not an HTTP version at all. */
static int parse_http_version(const char *v, size_t n)
{
    if (n != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
        v[7] < '0' || v[7] > '9')
        return -1;
    if (v[5] != '1')
        return -2;
    return v[7] == '0' ? 0 : 1;
}

/* ========================================================================
 * Handshake, server side
 */

struct req_seen {
    bool host;
    bool origin;
    bool key;
    bool key_ok;
    bool version;
    bool upgrade_ws;
    bool conn_upgrade;
};

static int reject_request(struct dm_ws_request *req, int status, const char *reason)
{
    req->status = status;
    req->reason = reason;
    return DM_EPROTO;
}

/* While the head is incomplete: the start line must begin with a method
 * token, so a TLS hello or binary junk is refused at its first bytes. */
static bool method_prefix_ok(const char *p, size_t n)
{
    size_t i = 0;

    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    return i == n || (i > 0 && p[i] == ' ');
}

/* Parses "GET /path?query HTTP/1.1" into req. Returns 0 or DM_EPROTO. */
static int parse_request_line(struct dm_ws_request *req, const char *line, size_t n)
{
    const char *sp1 = memchr(line, ' ', n);
    const char *target, *sp2, *qmark, *hash, *tend;
    size_t rest, tlen;
    int minor;

    if (sp1 == NULL || sp1 == line)
        return reject_request(req, 400, "malformed request line");
    for (const char *p = line; p < sp1; p++) {
        if (!is_tchar((unsigned char)*p))
            return reject_request(req, 400, "malformed request line");
    }
    target = sp1 + 1;
    rest = n - (size_t)(target - line);
    sp2 = memchr(target, ' ', rest);
    if (sp2 == NULL || sp2 == target)
        return reject_request(req, 400, "malformed request line");
    minor = parse_http_version(sp2 + 1, n - (size_t)(sp2 + 1 - line));
    if (minor == -2)
        return reject_request(req, 505, "HTTP version not supported");
    if (minor < 0)
        return reject_request(req, 400, "malformed HTTP version");
    req->http_minor = minor;
    if ((size_t)(sp1 - line) != 3 || memcmp(line, "GET", 3) != 0)
        return reject_request(req, 405, "method not allowed");

    tlen = (size_t)(sp2 - target);
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c <= 0x20 || c >= 0x7F)
            return reject_request(req, 400, "bad character in request target");
    }
    if (target[0] != '/')
        return reject_request(req, 400, "request target must be a path");
    /* A fragment is never sent by conforming clients; drop it if present. */
    hash = memchr(target, '#', tlen);
    tend = hash ? hash : sp2;
    qmark = memchr(target, '?', (size_t)(tend - target));
    if (!copy_field(req->path, sizeof(req->path), target,
                    (size_t)((qmark ? qmark : tend) - target)))
        return reject_request(req, 414, "request path too long");
    if (qmark && !copy_field(req->query, sizeof(req->query), qmark + 1, (size_t)(tend - qmark - 1)))
        return reject_request(req, 414, "query string too long");
    return 0;
}

/* Parses a Sec-WebSocket-Version value: 1 to 3 digits, else -1. */
static int parse_version_value(const char *v, size_t n)
{
    int x = 0;

    if (n == 0 || n > 3)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

/* Applies one request header. Returns 0 or DM_EPROTO. */
static int apply_request_header(struct dm_ws_request *req, struct req_seen *seen, const char *name,
                                size_t nlen, const char *v, size_t vlen)
{
    if (name_is(name, nlen, "host")) {
        if (seen->host)
            return reject_request(req, 400, "duplicate Host");
        seen->host = true;
        if (!copy_field(req->host, sizeof(req->host), v, vlen))
            return reject_request(req, 431, "Host too long");
    } else if (name_is(name, nlen, "upgrade")) {
        if (list_has_token(v, vlen, "websocket", true))
            seen->upgrade_ws = true;
    } else if (name_is(name, nlen, "connection")) {
        if (list_has_token(v, vlen, "upgrade", true))
            seen->conn_upgrade = true;
    } else if (name_is(name, nlen, "sec-websocket-key")) {
        if (seen->key)
            return reject_request(req, 400, "duplicate Sec-WebSocket-Key");
        seen->key = true;
        seen->key_ok = key_is_valid(v, vlen);
        if (seen->key_ok)
            copy_field(req->key, sizeof(req->key), v, vlen);
    } else if (name_is(name, nlen, "sec-websocket-version")) {
        if (seen->version)
            return reject_request(req, 400, "duplicate Sec-WebSocket-Version");
        seen->version = true;
        req->version = parse_version_value(v, vlen);
    } else if (name_is(name, nlen, "sec-websocket-protocol")) {
        size_t used = strlen(req->protocols);
        if (vlen == 0)
            return 0;
        if (used > 0) {
            if (!copy_field(req->protocols + used, sizeof(req->protocols) - used, ", ", 2))
                return reject_request(req, 431, "Sec-WebSocket-Protocol too long");
            used += 2;
        }
        if (!copy_field(req->protocols + used, sizeof(req->protocols) - used, v, vlen))
            return reject_request(req, 431, "Sec-WebSocket-Protocol too long");
    } else if (name_is(name, nlen, "origin")) {
        if (seen->origin)
            return reject_request(req, 400, "duplicate Origin");
        seen->origin = true;
        if (!copy_field(req->origin, sizeof(req->origin), v, vlen))
            return reject_request(req, 431, "Origin too long");
    } else if (name_is(name, nlen, "content-length")) {
        /* We never read request bodies: bytes after the head are frames
         * (or the next request), so a GET announcing a body is refused. */
        if (vlen == 0)
            return reject_request(req, 400, "bad Content-Length");
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return reject_request(req, 400, "bad Content-Length");
            if (v[i] != '0')
                return reject_request(req, 400, "request body not allowed");
        }
    } else if (name_is(name, nlen, "transfer-encoding")) {
        return reject_request(req, 400, "request body not allowed");
    }
    return 0;
}

int dm_ws_parse_request(const char *buf, size_t len, size_t max_header_bytes,
                        struct dm_ws_request *req)
{
    struct req_seen seen;
    enum head_scan scan;
    size_t start = 0, end = 0, pos;
    const char *line;
    size_t n;

    DM_AN(req);
    DM_ASSERT(buf != NULL || len == 0);
    DM_ASSERT(max_header_bytes > 0 && max_header_bytes <= INT_MAX);
    req->status = 0;
    req->reason = "incomplete";
    req->is_upgrade = false;

    scan = scan_head(buf, len, max_header_bytes, &start, &end);
    /* Garbage at the start is refused as such whatever follows it, so the
     * answer does not depend on how the head was segmented: a read that
     * stopped after "G@" and one that went on to a control byte or past
     * max_header_bytes both get this 400. */
    if (scan != HEAD_DONE && end > start && !method_prefix_ok(buf + start, end - start))
        return reject_request(req, 400, "malformed request line");
    switch (scan) {
    case HEAD_BAD:
        return reject_request(req, 400, "control character in request head");
    case HEAD_TOO_BIG:
        return reject_request(req, 431, "request head too large");
    case HEAD_PARTIAL:
        return DM_AGAIN;
    case HEAD_DONE:
        break;
    }

    memset(req, 0, sizeof(*req));
    memset(&seen, 0, sizeof(seen));
    req->reason = "ok";
    req->version = -1;
    pos = start;
    next_line(buf, end, &pos, &line, &n);
    if (parse_request_line(req, line, n) != 0)
        return DM_EPROTO;
    for (;;) {
        const char *name, *value;
        size_t nlen, vlen;
        next_line(buf, end, &pos, &line, &n);
        if (n == 0)
            break;
        if (!split_header(line, n, &name, &nlen, &value, &vlen))
            return reject_request(req, 400, "malformed header line");
        if (apply_request_header(req, &seen, name, nlen, value, vlen) != 0)
            return DM_EPROTO;
    }
    DM_ASSERT(pos == end);

    if (req->http_minor == 1 && !seen.host)
        return reject_request(req, 400, "missing Host");
    req->is_upgrade = seen.upgrade_ws;
    if (!req->is_upgrade) {
        req->reason = "plain request";
        return (int)end;
    }
    if (req->http_minor < 1)
        return reject_request(req, 400, "WebSocket needs HTTP/1.1");
    if (!seen.conn_upgrade)
        return reject_request(req, 400, "Connection does not list Upgrade");
    if (!seen.version)
        return reject_request(req, 426, "missing Sec-WebSocket-Version");
    if (req->version != 13)
        return reject_request(req, 426, "unsupported Sec-WebSocket-Version");
    if (!seen.key)
        return reject_request(req, 400, "missing Sec-WebSocket-Key");
    if (!seen.key_ok)
        return reject_request(req, 400, "bad Sec-WebSocket-Key");
    req->reason = "websocket upgrade";
    return (int)end;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)to_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decodes v[0..n) into out (NUL-terminated). */
static bool decode_param(const char *v, size_t n, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)v[i];
        if (c == '%') {
            int hi, lo;
            if (n - i < 3)
                goto fail;
            hi = hex_value((unsigned char)v[i + 1]);
            lo = hex_value((unsigned char)v[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                goto fail;
            c = hi * 16 + lo;
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (o + 1 >= outlen)
            goto fail;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return true;

fail:
    out[0] = '\0';
    return false;
}

bool dm_ws_query_param(const char *query, const char *name, char *out, size_t outlen)
{
    size_t nlen;
    const char *p;

    DM_AN(name);
    DM_AN(out);
    DM_ASSERT(outlen > 0);
    out[0] = '\0';
    if (query == NULL)
        return false;
    nlen = strlen(name);
    p = query;
    while (*p != '\0') {
        size_t seg = strcspn(p, "&");
        size_t klen = strcspn(p, "=&");
        if (klen == nlen && memcmp(p, name, nlen) == 0) {
            if (klen == seg)
                return decode_param("", 0, out, outlen);
            return decode_param(p + klen + 1, seg - klen - 1, out, outlen);
        }
        p += seg;
        if (*p == '&')
            p++;
    }
    return false;
}

void dm_ws_accept_key(const char *client_key, char out[DM_WS_ACCEPT_LEN + 1])
{
    char buf[64 + sizeof(ws_guid)];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t klen;
    int rc;

    DM_AN(client_key);
    DM_AN(out);
    klen = strlen(client_key);
    DM_ASSERT(klen <= 64);
    memcpy(buf, client_key, klen);
    memcpy(buf + klen, ws_guid, sizeof(ws_guid) - 1);
    rc = EVP_Digest(buf, klen + sizeof(ws_guid) - 1, md, &mdlen, EVP_sha1(), NULL);
    DM_ASSERT(rc == 1 && mdlen == 20);
    rc = EVP_EncodeBlock((unsigned char *)out, md, 20);
    DM_ASSERT(rc == DM_WS_ACCEPT_LEN);
}

bool dm_ws_protocol_offered(const char *list, const char *name)
{
    DM_AN(name);
    if (list == NULL)
        return false;
    return list_has_token(list, strlen(list), name, false);
}

int dm_ws_response(char *out, size_t outlen, const char *accept_key, const char *subprotocol)
{
    int n;

    DM_AN(out);
    DM_AN(accept_key);
    DM_ASSERT(strlen(accept_key) == DM_WS_ACCEPT_LEN && is_field_text(accept_key));
    DM_ASSERT(subprotocol == NULL || is_token(subprotocol));
    n = snprintf(out, outlen,
                 "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n"
                 "%s%s%s"
                 "\r\n",
                 accept_key, subprotocol ? "Sec-WebSocket-Protocol: " : "",
                 subprotocol ? subprotocol : "", subprotocol ? "\r\n" : "");
    return print_result(n, outlen);
}

const char *dm_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

int dm_ws_reject_response(char *out, size_t outlen, int status, const char *reason)
{
    const char *text = dm_http_reason(status);
    const char *extra = "Connection: close\r\n";
    int n;

    DM_AN(out);
    DM_ASSERT(status >= 400 && status <= 599);
    if (reason == NULL)
        reason = text;
    if (status == 426) /* RFC 6455 §4.4; RFC 7231 §6.5.15 wants Upgrade too */
        extra = "Connection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
    else if (status == 405)
        extra = "Connection: close\r\nAllow: GET\r\n";
    n = snprintf(out, outlen,
                 "HTTP/1.1 %d %s\r\n"
                 "%s"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: %zu\r\n"
                 "\r\n"
                 "%s\n",
                 status, text, extra, strlen(reason) + 1, reason);
    return print_result(n, outlen);
}

/* ========================================================================
 * Handshake, client side
 */

void dm_ws_client_key(const uint8_t nonce[16], char out[DM_WS_KEY_LEN + 1])
{
    int rc;

    DM_AN(nonce);
    DM_AN(out);
    rc = EVP_EncodeBlock((unsigned char *)out, nonce, 16);
    DM_ASSERT(rc == DM_WS_KEY_LEN);
}

int dm_ws_client_request(char *out, size_t outlen, const char *host, const char *path_and_query,
                         const char *key, const char *subprotocol)
{
    int n;

    DM_AN(out);
    DM_AN(host);
    DM_AN(path_and_query);
    DM_AN(key);
    DM_ASSERT(is_field_text(host) && is_field_text(key));
    DM_ASSERT(path_and_query[0] == '/' && is_field_text(path_and_query) &&
              strchr(path_and_query, ' ') == NULL);
    DM_ASSERT(subprotocol == NULL || is_field_text(subprotocol));
    n = snprintf(out, outlen,
                 "GET %s HTTP/1.1\r\n"
                 "Host: %s\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "%s%s%s"
                 "\r\n",
                 path_and_query, host, key, subprotocol ? "Sec-WebSocket-Protocol: " : "",
                 subprotocol ? subprotocol : "", subprotocol ? "\r\n" : "");
    return print_result(n, outlen);
}

static int reject_response(struct dm_ws_response *res, const char *reason)
{
    res->reason = reason;
    return DM_EPROTO;
}

/* Parses "HTTP/1.1 101 Switching Protocols" (the reason phrase may be
 * empty or absent). Returns the status code, or -1 when malformed. */
static int parse_status_line(const char *line, size_t n)
{
    int status = 0;

    if (n < 12 || parse_http_version(line, 8) < 0 || line[8] != ' ')
        return -1;
    for (size_t i = 9; i < 12; i++) {
        if (line[i] < '0' || line[i] > '9')
            return -1;
        status = status * 10 + (line[i] - '0');
    }
    if (n > 12 && line[12] != ' ')
        return -1;
    return status;
}

int dm_ws_parse_response(const char *buf, size_t len, size_t max_header_bytes,
                         const char *expected_accept, struct dm_ws_response *res)
{
    static const char prefix[] = "HTTP/";
    bool upgrade_ws = false, conn_upgrade = false, accept_seen = false, accept_ok = false;
    bool protocol_seen = false;
    enum head_scan scan;
    size_t start = 0, end = 0, pos, cmp;
    const char *line;
    size_t n;
    int status;

    DM_AN(res);
    DM_AN(expected_accept);
    DM_ASSERT(buf != NULL || len == 0);
    DM_ASSERT(max_header_bytes > 0 && max_header_bytes <= INT_MAX);
    res->status = 0;
    res->reason = "incomplete";
    res->protocol[0] = '\0';

    scan = scan_head(buf, len, max_header_bytes, &start, &end);
    /* As for requests: what does not start like "HTTP/" is refused as such
     * from the bytes that show it, whatever the scan found after them. */
    cmp = end - start < sizeof(prefix) - 1 ? end - start : sizeof(prefix) - 1;
    if (cmp > 0 && memcmp(buf + start, prefix, cmp) != 0)
        return reject_response(res, "not an HTTP response");
    switch (scan) {
    case HEAD_BAD:
        return reject_response(res, "control character in response head");
    case HEAD_TOO_BIG:
        return reject_response(res, "response head too large");
    case HEAD_PARTIAL:
        return DM_AGAIN;
    case HEAD_DONE:
        break;
    }

    pos = start;
    next_line(buf, end, &pos, &line, &n);
    status = parse_status_line(line, n);
    if (status < 0)
        return reject_response(res, "malformed status line");
    res->status = status;
    if (status != 101)
        return reject_response(res, "server refused the upgrade");
    for (;;) {
        const char *name, *v;
        size_t nlen, vlen;
        next_line(buf, end, &pos, &line, &n);
        if (n == 0)
            break;
        if (!split_header(line, n, &name, &nlen, &v, &vlen))
            return reject_response(res, "malformed header line");
        if (name_is(name, nlen, "upgrade")) {
            if (list_has_token(v, vlen, "websocket", true))
                upgrade_ws = true;
        } else if (name_is(name, nlen, "connection")) {
            if (list_has_token(v, vlen, "upgrade", true))
                conn_upgrade = true;
        } else if (name_is(name, nlen, "sec-websocket-accept")) {
            if (accept_seen)
                return reject_response(res, "duplicate Sec-WebSocket-Accept");
            accept_seen = true;
            accept_ok = vlen == strlen(expected_accept) && memcmp(v, expected_accept, vlen) == 0;
        } else if (name_is(name, nlen, "sec-websocket-protocol")) {
            if (protocol_seen)
                return reject_response(res, "duplicate Sec-WebSocket-Protocol");
            protocol_seen = true;
            if (!copy_field(res->protocol, sizeof(res->protocol), v, vlen) ||
                !is_token(res->protocol))
                return reject_response(res, "bad Sec-WebSocket-Protocol");
        } else if (name_is(name, nlen, "sec-websocket-extensions")) {
            return reject_response(res, "extension not offered");
        }
    }
    if (!upgrade_ws)
        return reject_response(res, "missing Upgrade: websocket");
    if (!conn_upgrade)
        return reject_response(res, "Connection does not list Upgrade");
    if (!accept_seen)
        return reject_response(res, "missing Sec-WebSocket-Accept");
    if (!accept_ok)
        return reject_response(res, "wrong Sec-WebSocket-Accept");
    res->reason = "ok";
    return (int)end;
}

/* ========================================================================
 * Frames
 */

static bool is_control(uint8_t opcode)
{
    return (opcode & 0x8) != 0;
}

static bool is_known_opcode(uint8_t opcode)
{
    switch (opcode) {
    case DM_WS_OP_CONT:
    case DM_WS_OP_TEXT:
    case DM_WS_OP_BINARY:
    case DM_WS_OP_CLOSE:
    case DM_WS_OP_PING:
    case DM_WS_OP_PONG:
        return true;
    default:
        return false;
    }
}

static int frame_error(uint16_t *close_code, uint16_t code)
{
    *close_code = code;
    return DM_EPROTO;
}

int dm_ws_frame_parse(const uint8_t *buf, size_t len, uint64_t max_payload, bool expect_masked,
                      struct dm_ws_frame *f, uint16_t *close_code)
{
    size_t need = 2;
    uint64_t plen;
    uint8_t len7;

    DM_AN(f);
    DM_AN(close_code);
    DM_ASSERT(buf != NULL || len == 0);
    DM_ASSERT(max_payload <= DM_WS_PAYLOAD_LIMIT);
    memset(f, 0, sizeof(*f));
    /* Each check runs as soon as its byte is present, so a violation is
     * reported without waiting for the rest; a valid prefix never fails. */
    if (len < 1)
        return DM_AGAIN;
    f->fin = (buf[0] & 0x80) != 0;
    f->rsv = (buf[0] >> 4) & 0x7;
    f->opcode = buf[0] & 0x0F;
    if (f->rsv != 0)
        return frame_error(close_code, DM_WS_CLOSE_PROTOCOL);
    if (!is_known_opcode(f->opcode))
        return frame_error(close_code, DM_WS_CLOSE_PROTOCOL);
    if (is_control(f->opcode) && !f->fin)
        return frame_error(close_code, DM_WS_CLOSE_PROTOCOL);
    if (len < 2)
        return DM_AGAIN;
    f->masked = (buf[1] & 0x80) != 0;
    len7 = buf[1] & 0x7F;
    if (f->masked != expect_masked)
        return frame_error(close_code, DM_WS_CLOSE_PROTOCOL);
    if (is_control(f->opcode) && len7 > DM_WS_MAX_CONTROL)
        return frame_error(close_code, DM_WS_CLOSE_PROTOCOL);
    if (len7 == 126) {
        need = 4;
        if (len < need)
            return DM_AGAIN;
        plen = (uint64_t)buf[2] << 8 | buf[3];
    } else if (len7 == 127) {
        need = 10;
        if (len < need)
            return DM_AGAIN;
        plen = 0;
        for (size_t i = 2; i < 10; i++)
            plen = plen << 8 | buf[i];
        if (plen >> 63)
            return frame_error(close_code, DM_WS_CLOSE_PROTOCOL);
    } else {
        plen = len7;
    }
    f->payload_len = plen;
    if (plen > max_payload)
        return frame_error(close_code, DM_WS_CLOSE_TOO_BIG);
    if (f->masked) {
        if (len < need + 4)
            return DM_AGAIN;
        memcpy(f->mask, buf + need, 4);
        need += 4;
    }
    f->header_len = need;
    if (len - need < plen)
        return DM_AGAIN;
    return (int)(need + plen);
}

void dm_ws_unmask(uint8_t *payload, size_t len, const uint8_t mask[4], size_t offset)
{
    uint8_t m8[8];
    uint64_t mw;
    size_t i = 0;

    if (len == 0)
        return;
    DM_AN(payload);
    DM_AN(mask);
    /* Eight mask bytes starting at the right phase; 8 is a multiple of 4, so
     * the phase is the same at every 8-byte step. */
    for (size_t k = 0; k < 8; k++)
        m8[k] = mask[(offset + k) & 3];
    memcpy(&mw, m8, sizeof(mw));
    for (; len - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, payload + i, sizeof(w));
        w ^= mw;
        memcpy(payload + i, &w, sizeof(w));
    }
    for (; i < len; i++)
        payload[i] ^= m8[i & 7];
}

size_t dm_ws_frame_header(uint8_t out[DM_WS_MAX_HEADER], uint8_t opcode, bool fin,
                          uint64_t payload_len, const uint8_t *mask)
{
    size_t n = 2;

    DM_AN(out);
    DM_ASSERT(is_known_opcode(opcode));
    DM_ASSERT((payload_len >> 63) == 0);
    if (is_control(opcode))
        DM_ASSERT(fin && payload_len <= DM_WS_MAX_CONTROL);
    out[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
    } else if (payload_len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        n = 4;
    } else {
        out[1] = 127;
        for (size_t i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
        n = 10;
    }
    if (mask != NULL) {
        out[1] |= 0x80;
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

size_t dm_ws_encode(uint8_t *out, size_t outlen, uint8_t opcode, const void *payload, size_t len,
                    const uint8_t *mask)
{
    uint8_t hdr[DM_WS_MAX_HEADER];
    size_t h;

    DM_AN(out);
    DM_ASSERT(payload != NULL || len == 0);
    h = dm_ws_frame_header(hdr, opcode, true, len, mask);
    if (outlen < h || outlen - h < len)
        return 0;
    memcpy(out, hdr, h);
    if (len > 0) {
        memcpy(out + h, payload, len);
        if (mask != NULL)
            dm_ws_unmask(out + h, len, mask, 0);
    }
    return h + len;
}

/* ========================================================================
 * Close frames
 */

bool dm_ws_close_code_valid(uint16_t code)
{
    if (code >= 3000 && code <= 4999)
        return true;
    if (code < 1000 || code > 1014)
        return false;
    return code != 1004 && code != DM_WS_CLOSE_NO_STATUS && code != DM_WS_CLOSE_ABNORMAL;
}

size_t dm_ws_close_payload(uint8_t out[DM_WS_MAX_CONTROL], uint16_t code, const char *reason)
{
    size_t n = 0;

    DM_AN(out);
    if (code == 0 || code == DM_WS_CLOSE_NO_STATUS)
        return 0;
    DM_ASSERT(dm_ws_close_code_valid(code));
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    if (reason != NULL) {
        n = strnlen(reason, DM_WS_MAX_CLOSE_REASON + 1);
        if (n > DM_WS_MAX_CLOSE_REASON) {
            /* Cut before the character that straddles the limit, so the
             * reason stays valid UTF-8 (the peer checks it, §8.1). */
            n = DM_WS_MAX_CLOSE_REASON;
            while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80)
                n--;
        }
        memcpy(out + 2, reason, n);
    }
    return 2 + n;
}

int dm_ws_close_parse(const uint8_t *payload, size_t len, uint16_t *code, const char **reason,
                      size_t *reason_len)
{
    uint16_t c;

    DM_AN(code);
    DM_AN(reason);
    DM_AN(reason_len);
    DM_ASSERT(payload != NULL || len == 0);
    *reason = NULL;
    *reason_len = 0;
    if (len == 0) {
        *code = DM_WS_CLOSE_NO_STATUS;
        *reason = "";
        return 0;
    }
    if (len == 1 || len > DM_WS_MAX_CONTROL) {
        *code = DM_WS_CLOSE_PROTOCOL;
        return DM_EPROTO;
    }
    c = (uint16_t)(payload[0] << 8 | payload[1]);
    if (!dm_ws_close_code_valid(c)) {
        *code = DM_WS_CLOSE_PROTOCOL;
        return DM_EPROTO;
    }
    if (!dm_utf8_valid(payload + 2, len - 2)) {
        *code = DM_WS_CLOSE_BAD_DATA;
        return DM_EPROTO;
    }
    *code = c;
    *reason = (const char *)payload + 2;
    *reason_len = len - 2;
    return 0;
}

/* ========================================================================
 * Messages
 */

void dm_ws_msg_init(struct dm_ws_msg *m)
{
    DM_AN(m);
    m->len = 0;
    m->opcode = 0;
    dm_utf8_init(&m->utf8);
}

int dm_ws_msg_frame(struct dm_ws_msg *m, const struct dm_ws_frame *f, const uint8_t *payload,
                    uint64_t max_message, uint16_t *close_code)
{
    uint8_t op;

    DM_AN(m);
    DM_AN(f);
    DM_AN(close_code);
    DM_ASSERT(payload != NULL || f->payload_len == 0);
    switch (f->opcode) {
    case DM_WS_OP_CONT:
        if (m->opcode == 0)
            return frame_error(close_code, DM_WS_CLOSE_PROTOCOL);
        break;
    case DM_WS_OP_TEXT:
    case DM_WS_OP_BINARY:
        if (m->opcode != 0)
            return frame_error(close_code, DM_WS_CLOSE_PROTOCOL);
        dm_ws_msg_init(m);
        m->opcode = f->opcode;
        break;
    default:
        DM_PANIC("control frame passed to dm_ws_msg_frame");
    }
    if (f->payload_len > max_message || m->len > max_message - f->payload_len)
        return frame_error(close_code, DM_WS_CLOSE_TOO_BIG);
    m->len += f->payload_len;
    if (m->opcode == DM_WS_OP_TEXT) {
        if (dm_utf8_feed(&m->utf8, payload, (size_t)f->payload_len) != 0)
            return frame_error(close_code, DM_WS_CLOSE_BAD_DATA);
        if (f->fin && !dm_utf8_complete(&m->utf8))
            return frame_error(close_code, DM_WS_CLOSE_BAD_DATA);
    }
    if (!f->fin)
        return 0;
    op = m->opcode;
    dm_ws_msg_init(m);
    return op;
}
