/* Viewer connections: handshake, frames, client messages, one close path. */
#include "broadcast/conn.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "broadcast/bcast.h"
#include "broadcast/demo.h"
#include "broadcast/room.h"
#include "common/check.h"
#include "common/config.h"
#include "common/hash.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/proto.h"
#include "common/ws.h"

#define DM_CONN_MAGIC  0x636f6e6eu
#define SUBPROTOCOL    "danmaku.v1"
#define WRITE_CHUNK    (1024 * 1024)
#define CLOSE_FLUSH_MS 2000 /* how long a closing peer gets to take our last bytes */

enum conn_state { CONN_HANDSHAKE, CONN_OPEN, CONN_CLOSING };

struct dm_conn {
    unsigned magic;
    enum conn_state state;
    uint64_t id;
    struct dm_bcast *b;
    struct bufferevent *bev;        /* owned, closes the socket */
    LIST_HEAD(, dm_member) members; /* rooms joined; members owned by the room table */
    unsigned nrooms;
    struct dm_ws_msg msg; /* fragmented message being received */
    unsigned char *frag;  /* its payload so far (only when fragmented) */
    size_t frag_len;
    uint16_t peer_close_code;     /* echoed in our close frame */
    struct dm_jwt_claims *claims; /* owned; NULL: anonymous */
    struct event *handshake;      /* deadline for the whole handshake; NULL once open */
    TAILQ_ENTRY(dm_conn) link;    /* b->conns or b->closing */
};

static const struct {
    const char *name;
    uint16_t ws_code;      /* 0: no close frame */
    bool flush;            /* send what is pending before closing the socket */
    enum dm_metric metric; /* danmaku_ws_closed_total{reason} */
} close_reasons[] = {
    [DM_CLOSE_EOF] = {"eof", 0, false, DM_M_WS_CLOSED_EOF},
    [DM_CLOSE_SOCKET_ERROR] = {"socket_error", 0, false, DM_M_WS_CLOSED_SOCKET_ERROR},
    [DM_CLOSE_HANDSHAKE_TIMEOUT] = {"handshake_timeout", 0, false,
                                    DM_M_WS_CLOSED_HANDSHAKE_TIMEOUT},
    [DM_CLOSE_HTTP_DONE] = {"http_done", 0, true, DM_M_WS_CLOSED_HTTP_DONE},
    [DM_CLOSE_IDLE] = {"idle_timeout", DM_WS_CLOSE_GOING_AWAY, true, DM_M_WS_CLOSED_IDLE_TIMEOUT},
    [DM_CLOSE_PEER_CLOSE] = {"peer_close", DM_WS_CLOSE_NORMAL, true, DM_M_WS_CLOSED_PEER_CLOSE},
    [DM_CLOSE_PROTOCOL] = {"protocol_error", DM_WS_CLOSE_PROTOCOL, true,
                           DM_M_WS_CLOSED_PROTOCOL_ERROR},
    [DM_CLOSE_UNSUPPORTED] = {"unsupported_data", 1003, true, DM_M_WS_CLOSED_UNSUPPORTED_DATA},
    [DM_CLOSE_BAD_DATA] = {"invalid_utf8", DM_WS_CLOSE_BAD_DATA, true, DM_M_WS_CLOSED_INVALID_UTF8},
    [DM_CLOSE_TOO_BIG] = {"too_big", DM_WS_CLOSE_TOO_BIG, true, DM_M_WS_CLOSED_TOO_BIG},
    [DM_CLOSE_SLOW_CONSUMER] = {"slow_consumer", DM_WS_CLOSE_SLOW_CONSUMER, true,
                                DM_M_WS_CLOSED_SLOW_CONSUMER},
    [DM_CLOSE_SHUTDOWN] = {"shutdown", DM_WS_CLOSE_RESTART, true, DM_M_WS_CLOSED_SHUTDOWN},
    [DM_CLOSE_POLICY] = {"policy", DM_WS_CLOSE_POLICY, true, DM_M_WS_CLOSED_POLICY},
};

static void on_client_read(struct bufferevent *bev, void *arg);
static void on_client_event(struct bufferevent *bev, short what, void *arg);

/* The handshake has a deadline, not just an idle timeout: a peer trickling
 * one header byte at a time must not hold a connection open. */
static void on_handshake_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct dm_conn *c = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    dm_conn_close(c, DM_CLOSE_HANDSHAKE_TIMEOUT);
}

static void stop_handshake_timer(struct dm_conn *c)
{
    if (c->handshake != NULL) {
        event_free(c->handshake);
        c->handshake = NULL;
    }
}

static void set_read_timeout(struct dm_conn *c, int64_t ms)
{
    struct timeval tv = dm_timeval_ms(ms);
    bufferevent_set_timeouts(c->bev, &tv, NULL);
}

void dm_conn_accept(struct dm_bcast *b, evutil_socket_t fd)
{
    struct dm_conn *c;
    struct bufferevent *bev = bufferevent_socket_new(b->base, fd, BEV_OPT_CLOSE_ON_FREE);

    if (bev == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c = dm_calloc(1, sizeof(*c));
    c->magic = DM_CONN_MAGIC;
    c->state = CONN_HANDSHAKE;
    c->id = ++b->next_conn_id;
    c->b = b;
    c->bev = bev;
    LIST_INIT(&c->members);
    dm_ws_msg_init(&c->msg);
    TAILQ_INSERT_TAIL(&b->conns, c, link);
    b->nconns++;

    /* Reading stops above this mark, which bounds the input buffer: a
     * frame over max_message is refused as soon as its header is in. */
    bufferevent_setwatermark(bev, EV_READ, 0,
                             (size_t)(b->cfg->max_message + b->cfg->max_header) * 2);
    /* libevent writes at most 16 KiB per call by default; fan-out wants
     * everything pending for a viewer in one writev. */
    bufferevent_set_max_single_write(bev, WRITE_CHUNK);
    bufferevent_setcb(bev, on_client_read, NULL, on_client_event, c);
    set_read_timeout(c, b->cfg->handshake_timeout_ms);
    c->handshake = evtimer_new(b->base, on_handshake_deadline, c);
    DM_AN(c->handshake);
    struct timeval deadline = dm_timeval_ms(b->cfg->handshake_timeout_ms);
    evtimer_add(c->handshake, &deadline);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void conn_free(struct dm_conn *c)
{
    DM_CHECK_OBJ(c, DM_CONN_MAGIC);
    DM_ASSERT(c->state == CONN_CLOSING);
    bufferevent_free(c->bev);
    free(c->frag);
    if (c->claims != NULL) {
        dm_jwt_claims_fini(c->claims);
        free(c->claims);
    }
    c->magic = 0;
    free(c);
}

/* Moves c to the node's closing list; on_close_drain frees it later, so a
 * callback of c never returns into freed memory. */
static void defer_free(struct dm_conn *c)
{
    struct dm_bcast *b = c->b;

    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    TAILQ_REMOVE(&b->conns, c, link);
    TAILQ_INSERT_TAIL(&b->closing, c, link);
    b->nconns--;
    event_active(b->close_drain, EV_TIMEOUT, 0);
}

void dm_conns_free_closing(struct dm_bcast *b)
{
    struct dm_conn *c;
    while ((c = TAILQ_FIRST(&b->closing)) != NULL) {
        TAILQ_REMOVE(&b->closing, c, link);
        conn_free(c);
    }
}

/* ---- output ---- */

static void on_frame_released(const void *data, size_t len, void *arg)
{
    DM_UNUSED(data);
    DM_UNUSED(len);
    dm_frame_unref(arg);
}

void dm_conn_send_frame(struct dm_conn *c, struct dm_frame *f)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);

    DM_CHECK_OBJ(c, DM_CONN_MAGIC);
    if (c->state != CONN_OPEN)
        return;
    if (evbuffer_get_length(out) + f->len > (size_t)c->b->cfg->max_client_outbuf) {
        dm_conn_close(c, DM_CLOSE_SLOW_CONSUMER);
        return;
    }
    dm_frame_ref(f);
    if (evbuffer_add_reference(out, f->data, f->len, on_frame_released, f) < 0)
        dm_frame_unref(f);
}

/* Queues one frame (copied). Every frame but the close frame counts
 * against max_client_outbuf: a peer that sends pings and never reads must
 * not grow our memory. */
static void send_raw_frame(struct dm_conn *c, uint8_t opcode, const void *payload, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    uint8_t hdr[DM_WS_MAX_HEADER];

    if (opcode != DM_WS_OP_CLOSE &&
        evbuffer_get_length(out) + len > (size_t)c->b->cfg->max_client_outbuf) {
        dm_conn_close(c, DM_CLOSE_SLOW_CONSUMER);
        return;
    }
    size_t h = dm_ws_frame_header(hdr, opcode, true, len, NULL);

    evbuffer_add(out, hdr, h);
    if (len > 0)
        evbuffer_add(out, payload, len);
}

void dm_conn_send_text(struct dm_conn *c, const char *json, size_t len)
{
    DM_CHECK_OBJ(c, DM_CONN_MAGIC);
    if (c->state == CONN_OPEN)
        send_raw_frame(c, DM_WS_OP_TEXT, json, len);
}

static void send_owned_json(struct dm_conn *c, char *json, size_t len)
{
    dm_conn_send_text(c, json, len);
    free(json);
}

static void send_error(struct dm_conn *c, const char *code, const char *message)
{
    size_t len;
    char *json = dm_msg_error(code, message, &len);
    send_owned_json(c, json, len);
}

void dm_conn_joined(struct dm_conn *c, struct dm_member *m, int64_t epoch, int64_t offset,
                    bool recovered)
{
    size_t len;
    struct dm_room *r = m->room;
    char *json = dm_msg_joined(r->name, epoch, offset, recovered, dm_bcast_online(c->b, r), &len);
    send_owned_json(c, json, len);
}

/* ---- close path ---- */

static void leave_all(struct dm_conn *c)
{
    struct dm_member *m;
    while ((m = LIST_FIRST(&c->members)) != NULL) {
        LIST_REMOVE(m, conn_link);
        dm_bcast_leave(c->b, m);
    }
    c->nrooms = 0;
}

static void on_closing_write(struct bufferevent *bev, void *arg)
{
    struct dm_conn *c = arg;
    DM_UNUSED(bev);
    defer_free(c);
}

static void on_closing_event(struct bufferevent *bev, short what, void *arg)
{
    struct dm_conn *c = arg;
    DM_UNUSED(bev);
    DM_UNUSED(what);
    defer_free(c);
}

void dm_conn_close(struct dm_conn *c, enum dm_close_reason reason)
{
    struct evbuffer *out;
    uint16_t code = close_reasons[reason].ws_code;

    DM_CHECK_OBJ(c, DM_CONN_MAGIC);
    if (c->state == CONN_CLOSING)
        return;
    DM_LOG(DM_LOG_DEBUG, "msg=\"close\" conn=%llu reason=%s", (unsigned long long)c->id,
           close_reasons[reason].name);
    dm_metrics_inc(c->b->m, close_reasons[reason].metric, 1);
    out = bufferevent_get_output(c->bev);
    /* A slow consumer's pending frames stay: dropping them could cut a
     * frame already half written. Its close frame goes after them, and the
     * flush timeout ends the wait if it never reads. */
    if (c->state == CONN_OPEN && code != 0) {
        uint8_t payload[DM_WS_MAX_CONTROL];
        if (reason == DM_CLOSE_PEER_CLOSE && c->peer_close_code != 0)
            code = c->peer_close_code;
        size_t n = dm_ws_close_payload(payload, code, close_reasons[reason].name);
        send_raw_frame(c, DM_WS_OP_CLOSE, payload, n);
    }
    leave_all(c);
    stop_handshake_timer(c);
    c->state = CONN_CLOSING;
    bufferevent_disable(c->bev, EV_READ);

    if (close_reasons[reason].flush && evbuffer_get_length(out) > 0) {
        struct timeval tv = dm_timeval_ms(CLOSE_FLUSH_MS);
        bufferevent_set_timeouts(c->bev, NULL, &tv);
        bufferevent_setcb(c->bev, NULL, on_closing_write, on_closing_event, c);
        bufferevent_enable(c->bev, EV_WRITE);
        return;
    }
    defer_free(c);
}

/* ---- client messages ---- */

static struct dm_member *find_member(struct dm_conn *c, const char *room)
{
    struct dm_member *m;
    LIST_FOREACH(m, &c->members, conn_link) {
        if (strcmp(m->room->name, room) == 0)
            return m;
    }
    return NULL;
}

/* Verifies token and makes its claims the connection's. Returns 0, or -1
 * with *reason (static) when the token is refused or cannot be checked. */
static int authenticate(struct dm_conn *c, const char *token, const char **reason)
{
    struct dm_jwt_claims *claims;

    if (c->b->verifier == NULL) {
        *reason = "this node does not check tokens";
        return -1;
    }
    claims = dm_calloc(1, sizeof(*claims));
    if (dm_jwt_verify(c->b->verifier, token, strlen(token), dm_now_ms() / 1000, claims, reason) <
        0) {
        free(claims);
        return -1;
    }
    if (c->claims != NULL) {
        dm_jwt_claims_fini(c->claims);
        free(c->claims);
    }
    c->claims = claims;
    return 0;
}

/* Whether this connection may watch room (anonymous viewing, or a token
 * whose rooms claim covers it); sends the error itself when not. */
static bool may_watch(struct dm_conn *c, const char *room)
{
    if (c->claims == NULL && !c->b->cfg->allow_anonymous) {
        send_error(c, "unauthorized", "send {\"op\":\"auth\"} with a token first");
        return false;
    }
    if (c->claims != NULL && !dm_jwt_claims_allow_room(c->claims, room)) {
        send_error(c, "forbidden", "the token does not allow this room");
        return false;
    }
    return true;
}

static void join_room(struct dm_conn *c, const char *room, bool resume, int64_t offset,
                      int64_t epoch)
{
    if (find_member(c, room) != NULL) {
        send_error(c, "already_joined", "this connection is in the room already");
        return;
    }
    if (c->nrooms >= (unsigned)c->b->cfg->max_rooms) {
        send_error(c, "too_many_rooms", "leave a room before joining another");
        return;
    }
    if (!may_watch(c, room))
        return;
    struct dm_member *m = dm_bcast_join(c->b, c, room, strlen(room), resume, offset, epoch);
    LIST_INSERT_HEAD(&c->members, m, conn_link);
    c->nrooms++;
    dm_bcast_start(c->b, m); /* may close c: nothing after this */
}

static void handle_message(struct dm_conn *c, const char *data, size_t len)
{
    struct dm_client_msg m;
    const char *reason;
    size_t n;

    if (dm_client_msg_parse(data, len, &m, &reason) < 0) {
        send_error(c, "bad_message", reason);
        return;
    }
    switch (m.op) {
    case DM_OP_JOIN:
        join_room(c, m.room, m.has_offset && m.has_epoch, m.offset, m.epoch);
        break;
    case DM_OP_LEAVE: {
        struct dm_member *mem = find_member(c, m.room);
        if (mem == NULL) {
            send_error(c, "not_joined", "this connection is not in the room");
            break;
        }
        LIST_REMOVE(mem, conn_link);
        c->nrooms--;
        dm_bcast_leave(c->b, mem);
        break;
    }
    case DM_OP_PING: {
        char *pong = dm_msg_pong(m.has_id, m.id, &n);
        send_owned_json(c, pong, n);
        break;
    }
    case DM_OP_AUTH:
        /* A refused token ends the session: the client must not go on
         * believing it is authenticated. */
        if (authenticate(c, m.token, &reason) < 0) {
            send_error(c, "unauthorized", reason);
            dm_conn_close(c, DM_CLOSE_POLICY);
        }
        break;
    }
    dm_client_msg_fini(&m);
}

/* ---- frames ---- */

static enum dm_close_reason reason_of_code(uint16_t code)
{
    switch (code) {
    case DM_WS_CLOSE_BAD_DATA:
        return DM_CLOSE_BAD_DATA;
    case DM_WS_CLOSE_TOO_BIG:
        return DM_CLOSE_TOO_BIG;
    default:
        return DM_CLOSE_PROTOCOL;
    }
}

static void handle_control(struct dm_conn *c, const struct dm_ws_frame *f, uint8_t *payload)
{
    uint16_t code;
    const char *reason;
    size_t reason_len;

    switch (f->opcode) {
    case DM_WS_OP_PING:
        send_raw_frame(c, DM_WS_OP_PONG, payload, (size_t)f->payload_len);
        break;
    case DM_WS_OP_PONG:
        break;
    case DM_WS_OP_CLOSE:
        if (f->payload_len == 0) {
            c->peer_close_code = DM_WS_CLOSE_NORMAL;
        } else if (dm_ws_close_parse(payload, (size_t)f->payload_len, &code, &reason, &reason_len) <
                   0) {
            dm_conn_close(c, code == DM_WS_CLOSE_BAD_DATA ? DM_CLOSE_BAD_DATA : DM_CLOSE_PROTOCOL);
            return;
        } else {
            c->peer_close_code = code;
        }
        dm_conn_close(c, DM_CLOSE_PEER_CLOSE);
        break;
    }
}

/* One complete frame; returns -1 when the connection was closed. */
static int handle_frame(struct dm_conn *c, const struct dm_ws_frame *f, uint8_t *payload)
{
    uint16_t code;
    size_t plen = (size_t)f->payload_len;
    int rc;

    if (f->opcode >= DM_WS_OP_CLOSE) {
        handle_control(c, f, payload);
        return c->state == CONN_OPEN ? 0 : -1;
    }
    rc = dm_ws_msg_frame(&c->msg, f, payload, (uint64_t)c->b->cfg->max_message, &code);
    if (rc == DM_EPROTO) {
        dm_conn_close(c, reason_of_code(code));
        return -1;
    }
    if (rc == 0 || c->frag != NULL) {
        /* Fragmented: keep the pieces (bounded by max_message via msg_frame). */
        c->frag = dm_realloc(c->frag, c->frag_len + plen + 1);
        memcpy(c->frag + c->frag_len, payload, plen);
        c->frag_len += plen;
        if (rc == 0)
            return 0;
        payload = c->frag;
        plen = c->frag_len;
    }
    if (rc == DM_WS_OP_BINARY) {
        dm_conn_close(c, DM_CLOSE_UNSUPPORTED);
        return -1;
    }
    handle_message(c, (const char *)payload, plen);
    free(c->frag);
    c->frag = NULL;
    c->frag_len = 0;
    return c->state == CONN_OPEN ? 0 : -1;
}

static void read_frames(struct dm_conn *c, struct evbuffer *in)
{
    struct dm_ws_frame f;
    uint16_t code = 0;

    while (c->state == CONN_OPEN) {
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return;
        /* The input is bounded by the read watermark, so a pullup is cheap. */
        uint8_t *data = evbuffer_pullup(in, -1);
        int rc = dm_ws_frame_parse(data, len, (uint64_t)c->b->cfg->max_message, true, &f, &code);
        if (rc == DM_AGAIN)
            return;
        if (rc == DM_EPROTO) {
            dm_conn_close(c, reason_of_code(code));
            return;
        }
        uint8_t *payload = data + f.header_len;
        dm_ws_unmask(payload, (size_t)f.payload_len, f.mask, 0);
        int hrc = handle_frame(c, &f, payload);
        if (c->state != CONN_CLOSING)
            evbuffer_drain(in, (size_t)rc);
        if (hrc < 0)
            return;
    }
}

/* ---- handshake ---- */

static void send_http(struct dm_conn *c, int status, const char *status_text, const char *ctype,
                      const char *body, size_t len)
{
    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                        status, status_text, ctype, len);
    evbuffer_add(bufferevent_get_output(c->bev), body, len);
    dm_conn_close(c, DM_CLOSE_HTTP_DONE);
}

static void serve_plain_get(struct dm_conn *c, const struct dm_ws_request *req)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    static const char not_found[] = "{\"error\":\"not_found\",\"message\":\"no such resource\"}";

    if (strcmp(req->path, "/healthz") == 0 || strcmp(req->path, "/readyz") == 0) {
        send_http(c, 200, "OK", "application/json", ok, sizeof(ok) - 1);
    } else if (strcmp(req->path, "/metrics") == 0) {
        size_t len;
        char *text = dm_bcast_metrics(c->b, &len);
        send_http(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
    } else if (strcmp(req->path, "/") == 0)
        send_http(c, 200, "OK", "text/html; charset=utf-8", dm_demo_page, dm_demo_page_len);
    else
        send_http(c, 404, "Not Found", "application/json", not_found, sizeof(not_found) - 1);
}

/* allowed: comma list of exact Origin values; empty allows any (and a
 * missing Origin, sent by non-browser clients, is always allowed). */
static bool origin_allowed(const char *allowed, const char *origin)
{
    size_t olen = strlen(origin);
    const char *p = allowed;

    if (*allowed == '\0' || olen == 0)
        return true;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        while (n > 0 && *p == ' ')
            p++, n--;
        if (n == olen && strncmp(p, origin, n) == 0)
            return true;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return false;
}

static void refuse(struct dm_conn *c, int status, const char *reason)
{
    dm_metrics_inc(c->b->m, DM_M_HANDSHAKE_FAILURES, 1);
    char buf[512];
    int n = dm_ws_reject_response(buf, sizeof(buf), status, reason);
    if (n > 0)
        evbuffer_add(bufferevent_get_output(c->bev), buf, (size_t)n);
    dm_conn_close(c, DM_CLOSE_HTTP_DONE);
}

static void read_handshake(struct dm_conn *c, struct evbuffer *in)
{
    const struct dm_config *cfg = c->b->cfg;
    size_t len = evbuffer_get_length(in);
    size_t n = len < (size_t)cfg->max_header ? len : (size_t)cfg->max_header;
    struct dm_ws_request req;
    char room[DM_ROOM_MAX + 2], accept[DM_WS_ACCEPT_LEN + 1], resp[512];
    bool has_room;
    size_t hlen;

    int rc = dm_ws_parse_request((const char *)evbuffer_pullup(in, (ev_ssize_t)n), n,
                                 (size_t)cfg->max_header, &req);
    if (rc == DM_AGAIN)
        return;
    if (rc == DM_EPROTO) {
        refuse(c, req.status, req.reason);
        return;
    }
    evbuffer_drain(in, (size_t)rc);
    if (!req.is_upgrade) {
        serve_plain_get(c, &req);
        return;
    }
    if (strcmp(req.path, "/v1/ws") != 0) {
        refuse(c, 404, "WebSocket endpoint is /v1/ws");
        return;
    }
    if (!origin_allowed(cfg->ws_allowed_origins, req.origin)) {
        refuse(c, 403, "this Origin may not connect");
        return;
    }
    has_room = dm_ws_query_param(req.query, "room", room, sizeof(room));
    if (has_room && !dm_room_id_valid(room, strlen(room))) {
        refuse(c, 400, "room must match [A-Za-z0-9_.:-]{1,64}");
        return;
    }
    char *token = dm_malloc(DM_WS_QUERY_MAX);
    if (dm_ws_query_param(req.query, "token", token, DM_WS_QUERY_MAX)) {
        const char *why;
        int arc = authenticate(c, token, &why);
        free(token);
        if (arc < 0) {
            refuse(c, 401, why);
            return;
        }
    } else {
        free(token);
    }

    dm_ws_accept_key(req.key, accept);
    int rlen =
        dm_ws_response(resp, sizeof(resp), accept,
                       dm_ws_protocol_offered(req.protocols, SUBPROTOCOL) ? SUBPROTOCOL : NULL);
    DM_ASSERT(rlen > 0);
    evbuffer_add(bufferevent_get_output(c->bev), resp, (size_t)rlen);
    c->state = CONN_OPEN;
    stop_handshake_timer(c);
    set_read_timeout(c, cfg->idle_timeout_ms);
    char *hello = dm_msg_hello(c->b->node, cfg->heartbeat_ms, (int)cfg->max_rooms, &hlen);
    send_owned_json(c, hello, hlen);
    if (has_room)
        join_room(c, room, false, 0, 0);
}

/* ---- events ---- */

static void on_client_read(struct bufferevent *bev, void *arg)
{
    struct dm_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    DM_CHECK_OBJ(c, DM_CONN_MAGIC);
    if (c->state == CONN_HANDSHAKE)
        read_handshake(c, in);
    if (c->state == CONN_OPEN)
        read_frames(c, in);
}

static void on_client_event(struct bufferevent *bev, short what, void *arg)
{
    struct dm_conn *c = arg;
    DM_UNUSED(bev);

    DM_CHECK_OBJ(c, DM_CONN_MAGIC);
    if (what & BEV_EVENT_TIMEOUT)
        dm_conn_close(c, c->state == CONN_HANDSHAKE ? DM_CLOSE_HANDSHAKE_TIMEOUT : DM_CLOSE_IDLE);
    else if (what & BEV_EVENT_EOF)
        dm_conn_close(c, DM_CLOSE_EOF);
    else
        dm_conn_close(c, DM_CLOSE_SOCKET_ERROR);
}

void dm_conns_ping_all(struct dm_bcast *b)
{
    struct dm_conn *c, *next;
    /* A ping can close a viewer over its output bound, which may move it
     * to the closing list: take the next one first. */
    for (c = TAILQ_FIRST(&b->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->state == CONN_OPEN)
            send_raw_frame(c, DM_WS_OP_PING, NULL, 0);
    }
}

void dm_conns_abort_all(struct dm_bcast *b)
{
    struct dm_conn *c;
    while ((c = TAILQ_FIRST(&b->conns)) != NULL) {
        if (c->state != CONN_CLOSING) {
            leave_all(c);
            stop_handshake_timer(c);
            c->state = CONN_CLOSING;
        }
        defer_free(c);
    }
    dm_conns_free_closing(b);
}

void dm_conns_expire_tokens(struct dm_bcast *b, int64_t now_s)
{
    struct dm_conn *c, *next;
    int64_t leeway = b->cfg->jwt_leeway_s;

    for (c = TAILQ_FIRST(&b->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->state == CONN_OPEN && c->claims != NULL && c->claims->exp + leeway < now_s) {
            send_error(c, "token_expired", "the token expired; reconnect with a fresh one");
            dm_conn_close(c, DM_CLOSE_POLICY);
        }
    }
}

void dm_conns_close_all(struct dm_bcast *b, enum dm_close_reason reason)
{
    static const char reconnect[] =
        "{\"op\":\"reconnect\",\"reason\":\"shutdown\",\"retry_ms\":1000}";
    struct dm_conn *c, *next;

    /* dm_conn_close never frees, but may move c to the closing list. */
    for (c = TAILQ_FIRST(&b->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (reason == DM_CLOSE_SHUTDOWN)
            dm_conn_send_text(c, reconnect, sizeof(reconnect) - 1);
        dm_conn_close(c, reason);
    }
}
