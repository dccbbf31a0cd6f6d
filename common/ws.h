/* I/O-free WebSocket codec (RFC 6455), shaped like wslay: bytes in, parsed
 * handshakes and frames out; frames and handshake text encoded into caller
 * buffers. No sockets, no heap, no globals. Used server side by the broadcast
 * node and client side by the load tester and the tests.
 *
 * Parsers follow the codec convention of common/util.h: >0 bytes consumed,
 * DM_AGAIN (every strict prefix of a valid input), DM_EPROTO (invalid). */
#ifndef DM_COMMON_WS_H
#define DM_COMMON_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <limits.h>

#include "common/utf8.h"

/* Frame opcodes (RFC 6455 §5.2). */
enum dm_ws_opcode {
    DM_WS_OP_CONT = 0x0,
    DM_WS_OP_TEXT = 0x1,
    DM_WS_OP_BINARY = 0x2,
    DM_WS_OP_CLOSE = 0x8,
    DM_WS_OP_PING = 0x9,
    DM_WS_OP_PONG = 0xA,
};

/* Close status codes (RFC 6455 §7.4, IANA registry, and ours in 4000-4999).
 * NO_STATUS and ABNORMAL are never sent: they describe a close frame with
 * no code and a connection that dropped without one. */
enum dm_ws_close_code {
    DM_WS_CLOSE_NORMAL = 1000,
    DM_WS_CLOSE_GOING_AWAY = 1001,
    DM_WS_CLOSE_PROTOCOL = 1002,
    DM_WS_CLOSE_UNSUPPORTED = 1003,
    DM_WS_CLOSE_NO_STATUS = 1005,
    DM_WS_CLOSE_ABNORMAL = 1006,
    DM_WS_CLOSE_BAD_DATA = 1007,
    DM_WS_CLOSE_POLICY = 1008,
    DM_WS_CLOSE_TOO_BIG = 1009,
    DM_WS_CLOSE_INTERNAL = 1011,
    DM_WS_CLOSE_RESTART = 1012,
    DM_WS_CLOSE_SLOW_CONSUMER = 4008,
};

#define DM_WS_MAX_HEADER       14  /* 2 + 8 (64-bit length) + 4 (mask) */
#define DM_WS_MAX_CONTROL      125 /* control frame payload limit */
#define DM_WS_MAX_CLOSE_REASON 123 /* close payload minus the 2-byte code */
/* Largest max_payload dm_ws_frame_parse accepts: a whole frame's length
 * must fit its int return value. */
#define DM_WS_PAYLOAD_LIMIT ((uint64_t)INT_MAX - DM_WS_MAX_HEADER)

#define DM_WS_KEY_LEN    24 /* base64 of a 16-byte nonce */
#define DM_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

/* Field buffer sizes of the parsed handshakes (each includes the NUL). */
#define DM_WS_PATH_MAX     256
#define DM_WS_QUERY_MAX    4096 /* room the ?token=<JWT> form needs */
#define DM_WS_HOST_MAX     256
#define DM_WS_ORIGIN_MAX   256
#define DM_WS_PROTOCOL_MAX 256

/* ------------------------------------------------------------------------
 * Handshake, server side
 */

/* A parsed request head. About 5 KB: keep it on the stack of the read
 * handler, never in per-connection state. All strings are NUL-terminated
 * copies (never pointers into the input buffer); absent headers are "". */
struct dm_ws_request {
    int status;                  /* 0 ok, else the HTTP status to answer with */
    const char *reason;          /* static text for logs and the error body */
    bool is_upgrade;             /* Upgrade lists "websocket": a WebSocket handshake */
    int http_minor;              /* 0 or 1 (HTTP/1.x) */
    char path[DM_WS_PATH_MAX];   /* request target before '?', not decoded */
    char query[DM_WS_QUERY_MAX]; /* after '?' (no '?'), not decoded */
    char host[DM_WS_HOST_MAX];
    char origin[DM_WS_ORIGIN_MAX];
    char protocols[DM_WS_PROTOCOL_MAX]; /* Sec-WebSocket-Protocol lines, joined by ", " */
    char key[DM_WS_KEY_LEN + 1];        /* Sec-WebSocket-Key, validated when is_upgrade */
    int version;                        /* Sec-WebSocket-Version, -1 if absent or not a number */
};

/* Parses an HTTP/1.x request head from buf[0..len) (borrowed; need not be
 * NUL-terminated) into *req (caller owns).
 *
 * Returns the head length (through the empty line) when complete and
 * acceptable; bytes after it belong to the next layer (WebSocket frames) and
 * are not looked at. Returns DM_AGAIN while the head is incomplete. Returns
 * DM_EPROTO with req->status set to the answer:
 *   400 malformed request line/header, missing Host on HTTP/1.1, a body on
 *       the GET, or a WebSocket upgrade without "Connection: Upgrade" or
 *       with a missing/invalid Sec-WebSocket-Key;
 *   405 method other than GET (answer with "Allow: GET");
 *   414 path or query longer than DM_WS_PATH_MAX/DM_WS_QUERY_MAX;
 *   426 upgrade whose Sec-WebSocket-Version is missing or not 13 (answer
 *       with "Sec-WebSocket-Version: 13"; dm_ws_reject_response does both);
 *   431 head longer than max_header_bytes, reported as soon as that many
 *       bytes arrived without an end (not waiting for one), or a Host,
 *       Origin or Sec-WebSocket-Protocol value too long for its field;
 *   505 HTTP major version other than 1.
 * Garbage (control bytes, a bad method token) is refused before the head
 * completes. On success req->status is 0 and req->is_upgrade tells a
 * WebSocket handshake from a plain GET (e.g. "/" or "/healthz"), which the
 * caller may serve or refuse. On DM_AGAIN only status (0), reason and
 * is_upgrade (false) are set. max_header_bytes: 1 to INT_MAX. */
int dm_ws_parse_request(const char *buf, size_t len, size_t max_header_bytes,
                        struct dm_ws_request *req);

/* Finds query parameter `name` in `query` ("a=1&b=x%20y"; borrowed, may be
 * NULL) and writes its value, percent-decoded ('+' as space, as browsers'
 * URLSearchParams encode), NUL-terminated into out[0..outlen). A parameter
 * without '=' has the empty value; the first occurrence wins. Returns false
 * when absent, when an escape is malformed or decodes to NUL, or when the
 * value does not fit (then out holds ""). */
bool dm_ws_query_param(const char *query, const char *name, char *out, size_t outlen);

/* Writes the Sec-WebSocket-Accept value for client_key (borrowed, the key as
 * received, at most 64 characters) to out: 28 characters and a NUL. */
void dm_ws_accept_key(const char *client_key, char out[DM_WS_ACCEPT_LEN + 1]);

/* True when the client's Sec-WebSocket-Protocol list (borrowed, comma
 * separated, e.g. req->protocols) offers `name`. Subprotocol names are case
 * sensitive (RFC 6455 §4.1). */
bool dm_ws_protocol_offered(const char *list, const char *name);

/* Writes the "101 Switching Protocols" response into out[0..outlen) with a
 * NUL. accept_key: from dm_ws_accept_key; subprotocol: the chosen one (a
 * token the client offered) or NULL for none. Both borrowed. Returns the
 * length without the NUL, or -1 when outlen is too small. */
int dm_ws_response(char *out, size_t outlen, const char *accept_key, const char *subprotocol);

/* The reason phrase of an HTTP status code, for the answers both nodes
 * write ("Error" for a code without one here). */
const char *dm_http_reason(int status);

/* Writes a complete refusal (status line, Connection: close, a text/plain
 * body of `reason`) into out[0..outlen) with a NUL. Adds
 * "Sec-WebSocket-Version: 13" for 426 and "Allow: GET" for 405, so
 * `dm_ws_reject_response(out, n, req.status, req.reason)` answers any
 * DM_EPROTO from dm_ws_parse_request. reason: borrowed, may be NULL.
 * Returns the length without the NUL, or -1 when outlen is too small. */
int dm_ws_reject_response(char *out, size_t outlen, int status, const char *reason);

/* ------------------------------------------------------------------------
 * Handshake, client side
 */

/* Writes the Sec-WebSocket-Key for a 16-byte nonce (borrowed; the caller
 * draws it from a random source) to out: 24 characters and a NUL. */
void dm_ws_client_key(const uint8_t nonce[16], char out[DM_WS_KEY_LEN + 1]);

/* Writes an upgrade request into out[0..outlen) with a NUL. host: the Host
 * value ("h:port"); path_and_query: origin-form target ("/v1/ws?room=a");
 * key: from dm_ws_client_key; subprotocol: offered list or NULL. All
 * borrowed. Returns the length without the NUL, or -1 when outlen is too
 * small. */
int dm_ws_client_request(char *out, size_t outlen, const char *host, const char *path_and_query,
                         const char *key, const char *subprotocol);

/* A parsed server response head. */
struct dm_ws_response {
    int status;                        /* HTTP status from the status line, 0 if unparsed */
    const char *reason;                /* static text: what was wrong, or "ok" */
    char protocol[DM_WS_PROTOCOL_MAX]; /* Sec-WebSocket-Protocol chosen, "" if none */
};

/* Parses the server's answer to dm_ws_client_request from buf[0..len)
 * (borrowed) into *res (caller owns). Returns the head length when it is a
 * 101 with "Upgrade: websocket", "Connection: Upgrade", no extensions and
 * Sec-WebSocket-Accept equal to expected_accept (borrowed, from
 * dm_ws_accept_key of our key); bytes after the head are already frames.
 * DM_AGAIN while incomplete (up to max_header_bytes), DM_EPROTO otherwise,
 * with res->status the server's status (e.g. 426, 503) when the status
 * line parsed and res->reason saying why. */
int dm_ws_parse_response(const char *buf, size_t len, size_t max_header_bytes,
                         const char *expected_accept, struct dm_ws_response *res);

/* ------------------------------------------------------------------------
 * Frames
 */

/* A parsed frame header. The payload is buf[header_len .. header_len +
 * payload_len) of the buffer given to dm_ws_frame_parse, still masked. */
struct dm_ws_frame {
    bool fin;
    uint8_t rsv; /* RSV1..3 as bits 2..0; always 0 when parsing succeeds */
    uint8_t opcode;
    bool masked;
    uint8_t mask[4];
    uint64_t payload_len;
    size_t header_len;
};

/* Parses one frame at buf[0..len) (borrowed) into *f (caller owns).
 * expect_masked: true on the server (client frames must be masked), false on
 * the client (server frames must not be). max_payload must be at most
 * DM_WS_PAYLOAD_LIMIT.
 *
 * Returns header_len + payload_len when the whole frame is in buf.
 * Returns DM_AGAIN when more bytes are needed; then f->header_len is 0 while
 * the header itself is incomplete, else *f is filled and the caller knows the
 * frame needs header_len + payload_len bytes (e.g. for a read watermark).
 * Returns DM_EPROTO as soon as the bytes present prove a violation, with
 * *close_code (caller owns) set:
 *   1002 RSV bits set (no extension is ever negotiated), reserved opcode,
 *        control frame fragmented or longer than 125, a mask missing when
 *        expect_masked or present when not, 64-bit length with the top bit;
 *   1009 payload_len > max_payload (control frames included), known from
 *        the header before the payload arrives; f->payload_len holds the
 *        announced length.
 * Non-minimal length encodings are accepted. Fragment sequencing is checked
 * by dm_ws_msg_frame, which keeps the per-connection state. */
int dm_ws_frame_parse(const uint8_t *buf, size_t len, uint64_t max_payload, bool expect_masked,
                      struct dm_ws_frame *f, uint16_t *close_code);

/* XORs payload[0..len) (caller owns, modified in place) with the mask, where
 * payload[0] is byte `offset` of the frame payload, so a payload can be
 * unmasked in pieces. Masking and unmasking are the same operation. */
void dm_ws_unmask(uint8_t *payload, size_t len, const uint8_t mask[4], size_t offset);

/* Writes a frame header to out and returns its length (2 to 14). mask:
 * borrowed 4 bytes for a client frame, NULL for an unmasked server frame;
 * the payload itself is not touched (mask it with dm_ws_unmask). A control
 * opcode requires fin and payload_len <= 125, and payload_len < 2^63: callers
 * that break this have a bug (assertion). */
size_t dm_ws_frame_header(uint8_t out[DM_WS_MAX_HEADER], uint8_t opcode, bool fin,
                          uint64_t payload_len, const uint8_t *mask);

/* Writes a whole final (FIN) frame: header and payload (borrowed, len bytes;
 * may be NULL when len is 0), masked in the copy when mask is not NULL.
 * out must not overlap payload. Returns the bytes written, or 0 when outlen
 * is too small (nothing useful is written then). */
size_t dm_ws_encode(uint8_t *out, size_t outlen, uint8_t opcode, const void *payload, size_t len,
                    const uint8_t *mask);

/* ------------------------------------------------------------------------
 * Close frames
 */

/* True for a code a peer may send in a close frame (RFC 6455 §7.4):
 * 1000-1003, 1007-1014 and 3000-4999. */
bool dm_ws_close_code_valid(uint16_t code);

/* Writes a close payload: the code in network order and `reason` (borrowed,
 * UTF-8, may be NULL), cut to 123 bytes at a character boundary. code 0 or
 * DM_WS_CLOSE_NO_STATUS writes the empty payload; any other code must be
 * valid to send (assertion). Returns the payload length (0 to 125). */
size_t dm_ws_close_payload(uint8_t out[DM_WS_MAX_CONTROL], uint16_t code, const char *reason);

/* Validates a received (unmasked) close payload (borrowed). Returns 0 with
 * *code the peer's code (DM_WS_CLOSE_NO_STATUS for an empty payload) and
 * *reason and *reason_len pointing into payload (not NUL-terminated; "" and 0
 * when absent). Returns DM_EPROTO with *code set to the close code to answer
 * with: 1002 for a 1-byte or over-long payload or an invalid code, 1007 for
 * a reason that is not valid UTF-8; *reason is then NULL. */
int dm_ws_close_parse(const uint8_t *payload, size_t len, uint16_t *code, const char **reason,
                      size_t *reason_len);

/* ------------------------------------------------------------------------
 * Messages: the per-connection state that spans frames
 */

/* Fragmentation and text validation state of one direction of a
 * connection (16 bytes). Embedded by callers; private fields. */
struct dm_ws_msg {
    uint64_t len;        /* payload bytes of the message so far */
    struct dm_utf8 utf8; /* text messages only */
    uint8_t opcode;      /* TEXT or BINARY while a message is open, else 0 */
};

/* Resets `m`: no message in progress. */
void dm_ws_msg_init(struct dm_ws_msg *m);

/* Accounts one complete data frame (CONT, TEXT or BINARY; control frames
 * never go through here and may arrive between fragments). payload: the
 * frame's unmasked payload (borrowed, f->payload_len bytes). Returns 0 when
 * the message continues in later frames, the message opcode (DM_WS_OP_TEXT
 * or DM_WS_OP_BINARY) when this frame completes it, or DM_EPROTO with
 * *close_code set: 1002 for CONT with no message open or TEXT/BINARY inside
 * one, 1009 when the message exceeds max_message bytes, 1007 for invalid
 * UTF-8 in a text message (found at the first bad fragment, and a
 * character cut off by the end of the message). Reassembly is the
 * caller's. */
int dm_ws_msg_frame(struct dm_ws_msg *m, const struct dm_ws_frame *f, const uint8_t *payload,
                    uint64_t max_message, uint16_t *close_code);

#endif
