/* Viewer connections: handshake, frames, client messages, one close path.
 *
 * I/O is done here directly on the socket rather than through bufferevents:
 * a connection holds one embedded event, no input buffer while idle, and an
 * output queue of references to shared frames. Everything queued during one
 * pass of the event loop goes out in one writev per viewer (the node's flush
 * event runs after the callbacks that queued it); EV_WRITE is armed only
 * when the socket would block. Timeouts are checked by a node-wide sweep,
 * so an idle viewer costs no timer. */
#include "broadcast/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "broadcast/bcast.h"
#include "broadcast/room.h"
#include "common/check.h"
#include "common/config.h"
#include "common/connlimit.h"
#include "common/hash.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/proto.h"
#include "common/utf8.h"
#include "common/ws.h"

#define DM_CONN_MAGIC  0x636f6e6eu
#define SUBPROTOCOL    "danmaku.v1"
#define CLOSE_FLUSH_MS 2000 /* how long a closing peer gets to take our last bytes */
#define IOV_BATCH      64   /* frames per writev */
#define READ_MIN       4096 /* free input space asked of each read */

enum conn_state { CONN_HANDSHAKE, CONN_OPEN, CONN_CLOSING };

/* A queued frame; off counts the bytes of the head entry already written. */
struct out_entry {
    struct dm_frame *f;
    uint32_t off;
};

struct dm_conn {
    unsigned magic;
    enum conn_state state;
    bool want_write;   /* the event waits for writability too */
    bool flush_queued; /* in b->flushq */
    bool deferred;     /* handed to the close drain */
    uint64_t id;
    struct dm_bcast *b;
    evutil_socket_t fd; /* owned */
    struct event ev;    /* owned, embedded */
    /* Input: only while bytes wait to be parsed. */
    unsigned char *in;
    uint32_t in_len, in_cap;
    /* Output: a ring of frame references. */
    struct out_entry *out;
    uint32_t out_head, out_len, out_cap;
    size_t out_bytes;
    int64_t last_read_ms;           /* idle timeout */
    int64_t state_since_ms;         /* handshake deadline, close flush deadline */
    LIST_HEAD(, dm_member) members; /* rooms joined; members owned by the room table */
    unsigned nrooms;
    struct dm_ws_msg msg; /* fragmented message being received */
    unsigned char *frag;  /* its payload so far (only when fragmented) */
    size_t frag_len;
    uint16_t peer_close_code;      /* echoed in our close frame */
    struct dm_jwt_claims *claims;  /* owned; NULL: anonymous */
    struct dm_connlimit_slot slot; /* its count in b->limits, until the socket closes */
    TAILQ_ENTRY(dm_conn) link;     /* b->conns or b->closing */
    struct dm_conn *next_flush;    /* b->flushq */
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

static void on_conn_io(evutil_socket_t fd, short what, void *arg);

/* ---- the socket event ---- */

/* (Re)registers the connection's one event: reading unless closing,
 * writing only while the socket would block. */
static void watch(struct dm_conn *c, bool want_write)
{
    short what =
        EV_PERSIST | (c->state != CONN_CLOSING ? EV_READ : 0) | (want_write ? EV_WRITE : 0);

    if (event_initialized(&c->ev))
        event_del(&c->ev);
    c->want_write = want_write;
    if (!(what & (EV_READ | EV_WRITE)))
        return;
    event_assign(&c->ev, c->b->base, c->fd, what, on_conn_io, c);
    event_add(&c->ev, NULL);
}

void dm_conn_accept(struct dm_bcast *b, evutil_socket_t fd, const struct dm_connlimit_slot *slot)
{
    struct dm_conn *c = dm_calloc(1, sizeof(*c));
    int one = 1;

    /* Frames are already gathered per pass: Nagle would only add delay. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    evutil_make_socket_nonblocking(fd);
    c->magic = DM_CONN_MAGIC;
    c->state = CONN_HANDSHAKE;
    c->id = ++b->next_conn_id;
    c->b = b;
    c->fd = fd;
    c->slot = *slot;
    c->last_read_ms = c->state_since_ms = dm_now_ms();
    LIST_INIT(&c->members);
    dm_ws_msg_init(&c->msg);
    TAILQ_INSERT_TAIL(&b->conns, c, link);
    b->nconns++;
    watch(c, false);
}

static void conn_free(struct dm_conn *c)
{
    DM_CHECK_OBJ(c, DM_CONN_MAGIC);
    DM_ASSERT(c->state == CONN_CLOSING && !c->flush_queued);
    if (event_initialized(&c->ev))
        event_del(&c->ev);
    evutil_closesocket(c->fd);
    dm_connlimit_release(c->b->limits, &c->slot);
    for (uint32_t i = 0; i < c->out_len; i++)
        dm_frame_unref(c->out[(c->out_head + i) % c->out_cap].f);
    free(c->out);
    free(c->in);
    free(c->frag);
    if (c->claims != NULL) {
        dm_jwt_claims_fini(c->claims);
        free(c->claims);
    }
    c->magic = 0;
    free(c);
}

/* Moves c to the node's closing list; the close drain frees it later, so a
 * callback of c never returns into freed memory. */
static void defer_free(struct dm_conn *c)
{
    struct dm_bcast *b = c->b;

    if (event_initialized(&c->ev))
        event_del(&c->ev);
    c->deferred = true;
    TAILQ_REMOVE(&b->conns, c, link);
    TAILQ_INSERT_TAIL(&b->closing, c, link);
    b->nconns--;
    event_active(b->close_drain, EV_TIMEOUT, 0);
}

void dm_conns_free_closing(struct dm_bcast *b)
{
    struct dm_conn *c, *next;
    for (c = TAILQ_FIRST(&b->closing); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        /* Still on the flush list: the flush pass lets it go, then we come back. */
        if (c->flush_queued)
            continue;
        TAILQ_REMOVE(&b->closing, c, link);
        conn_free(c);
    }
}

/* ---- output ---- */

static void mark_dirty(struct dm_conn *c)
{
    struct dm_bcast *b = c->b;
    /* A connection waiting for writability is flushed by its own event. */
    if (c->flush_queued || c->want_write || c->deferred)
        return;
    c->flush_queued = true;
    c->next_flush = b->flushq;
    if (b->flushq == NULL)
        event_active(b->flush_ev, EV_TIMEOUT, 0);
    b->flushq = c;
}

/* Appends a reference to f (the caller keeps its own). */
static void enqueue(struct dm_conn *c, struct dm_frame *f)
{
    if (c->out_len == c->out_cap) {
        uint32_t cap = c->out_cap ? c->out_cap * 2 : 8;
        struct out_entry *q = dm_malloc(cap * sizeof(*q));
        for (uint32_t i = 0; i < c->out_len; i++)
            q[i] = c->out[(c->out_head + i) % c->out_cap];
        free(c->out);
        c->out = q;
        c->out_cap = cap;
        c->out_head = 0;
    }
    c->out[(c->out_head + c->out_len) % c->out_cap] = (struct out_entry){f, 0};
    c->out_len++;
    c->out_bytes += f->len;
    dm_frame_ref(f);
    mark_dirty(c);
}

/* Writes what is queued: one writev of up to IOV_BATCH frames at a time,
 * until the queue is empty or the socket would block. Returns -1 when the
 * connection was closed for a socket error. */
static int flush_conn(struct dm_conn *c)
{
    struct iovec iov[IOV_BATCH];

    while (c->out_len > 0) {
        uint32_t n = c->out_len < IOV_BATCH ? c->out_len : IOV_BATCH;
        size_t want = 0;
        for (uint32_t i = 0; i < n; i++) {
            struct out_entry *e = &c->out[(c->out_head + i) % c->out_cap];
            iov[i].iov_base = e->f->data + e->off;
            iov[i].iov_len = e->f->len - e->off;
            want += iov[i].iov_len;
        }
        ssize_t w = writev(c->fd, iov, (int)n);
        if (w < 0) {
            int e = errno;
            if (e == EINTR)
                continue;
            if (e == EAGAIN || e == EWOULDBLOCK) {
                if (!c->want_write)
                    watch(c, true);
                return 0;
            }
            DM_LOG(DM_LOG_DEBUG, "msg=\"write failed\" conn=%llu err=\"%s\"",
                   (unsigned long long)c->id, strerror(e));
            c->out_bytes = 0; /* nothing more will be written */
            dm_conn_close(c, DM_CLOSE_SOCKET_ERROR);
            return -1;
        }
        dm_metrics_inc(c->b->m, DM_M_WS_WRITES, 1);
        size_t left = (size_t)w;
        uint64_t done = 0;
        c->out_bytes -= left;
        while (left > 0) {
            struct out_entry *e = &c->out[c->out_head];
            size_t rest = e->f->len - e->off;
            if (left < rest) {
                e->off += (uint32_t)left;
                break;
            }
            left -= rest;
            dm_frame_unref(e->f);
            c->out_head = (c->out_head + 1) % c->out_cap;
            c->out_len--;
            done++;
        }
        dm_metrics_inc(c->b->m, DM_M_WS_FRAMES_WRITTEN, done);
        if ((size_t)w < want) {
            if (!c->want_write)
                watch(c, true);
            return 0;
        }
    }
    /* An idle viewer keeps no queue memory. */
    free(c->out);
    c->out = NULL;
    c->out_cap = c->out_head = 0;
    if (c->want_write)
        watch(c, false);
    if (c->state == CONN_CLOSING && !c->deferred)
        defer_free(c);
    return 0;
}

void dm_conns_flush(struct dm_bcast *b)
{
    struct dm_conn *c;
    while ((c = b->flushq) != NULL) {
        b->flushq = c->next_flush;
        c->flush_queued = false;
        if (c->deferred) {
            event_active(b->close_drain, EV_TIMEOUT, 0);
            continue;
        }
        flush_conn(c);
    }
}

/* Over `bound` with more queued; one frame into an empty queue is always
 * let through, so no frame size alone closes a reading viewer. */
static bool over(const struct dm_conn *c, size_t more, size_t bound)
{
    return c->out_bytes > 0 && c->out_bytes + more > bound;
}

static bool over_bound(const struct dm_conn *c, size_t more)
{
    return over(c, more, (size_t)c->b->cfg->max_client_outbuf);
}

/* The bound past which a viewer is closed even when it is sampled: what is
 * never sampled (priority, retracts, answers to it) still has to fit. */
static bool over_hard_bound(const struct dm_conn *c, size_t more)
{
    size_t bound = (size_t)c->b->cfg->max_client_outbuf;
    return over(c, more, c->b->cfg->slow_viewer_sample ? 2 * bound : bound);
}

enum dm_send_result dm_conn_send_frame(struct dm_conn *c, struct dm_frame *f)
{
    DM_CHECK_OBJ(c, DM_CONN_MAGIC);
    if (c->state != CONN_OPEN)
        return DM_SEND_QUEUED;
    /* Near the bound, write now rather than at the end of the pass: the
     * bound is about what the viewer does not take, not about how much one
     * pass gathers. */
    if (over_bound(c, f->len) && !c->want_write && (flush_conn(c) < 0 || c->state != CONN_OPEN))
        return DM_SEND_CLOSED;
    if (over_bound(c, f->len) && c->b->cfg->slow_viewer_sample && !f->keep) {
        dm_metrics_inc(c->b->m, DM_M_SLOW_SAMPLED, f->records);
        return DM_SEND_SAMPLED;
    }
    if (over_hard_bound(c, f->len)) {
        dm_conn_close(c, DM_CLOSE_SLOW_CONSUMER);
        return DM_SEND_CLOSED;
    }
    enqueue(c, f);
    return DM_SEND_QUEUED;
}

/* Queues bytes (copied) as they are: HTTP answers and the handshake. */
static void send_bytes(struct dm_conn *c, const void *bytes, size_t len)
{
    struct dm_frame *f = dm_frame_new_raw(bytes, len);
    enqueue(c, f);
    dm_frame_unref(f);
}

/* Queues one frame (copied). Every frame but the close frame counts
 * against max_client_outbuf: a peer that sends pings and never reads must
 * not grow our memory. */
static void send_raw_frame(struct dm_conn *c, uint8_t opcode, const void *payload, size_t len)
{
    if (opcode != DM_WS_OP_CLOSE && over_hard_bound(c, len + DM_WS_MAX_HEADER)) {
        dm_conn_close(c, DM_CLOSE_SLOW_CONSUMER);
        return;
    }
    struct dm_frame *f = dm_frame_new(opcode, payload, len);
    enqueue(c, f);
    dm_frame_unref(f);
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

void dm_conn_close(struct dm_conn *c, enum dm_close_reason reason)
{
    uint16_t code = close_reasons[reason].ws_code;

    DM_CHECK_OBJ(c, DM_CONN_MAGIC);
    if (c->state == CONN_CLOSING)
        return;
    DM_LOG(DM_LOG_DEBUG, "msg=\"close\" conn=%llu reason=%s", (unsigned long long)c->id,
           close_reasons[reason].name);
    dm_metrics_inc(c->b->m, close_reasons[reason].metric, 1);
    /* A slow consumer's pending frames stay: dropping them could cut a
     * frame already half written. Its close frame goes after them, and the
     * flush deadline ends the wait if it never reads. */
    if (c->state == CONN_OPEN && code != 0) {
        uint8_t payload[DM_WS_MAX_CONTROL];
        if (reason == DM_CLOSE_PEER_CLOSE && c->peer_close_code != 0)
            code = c->peer_close_code;
        size_t n = dm_ws_close_payload(payload, code, close_reasons[reason].name);
        send_raw_frame(c, DM_WS_OP_CLOSE, payload, n);
    }
    leave_all(c);
    c->state = CONN_CLOSING;
    c->state_since_ms = dm_now_ms();
    if (close_reasons[reason].flush && c->out_len > 0) {
        watch(c, c->want_write); /* stop reading; the flush frees it when done */
        mark_dirty(c);
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
    /* A new token takes over the connection: it must allow every room
     * the old one let it join, or the rooms claim could be outlived. */
    struct dm_member *m;
    LIST_FOREACH(m, &c->members, conn_link) {
        if (!dm_jwt_claims_allow_room(claims, m->room->name)) {
            dm_jwt_claims_fini(claims);
            free(claims);
            *reason = "the token does not allow a room this connection is in";
            return -1;
        }
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

/* Fail fast: the part of a text frame that has arrived must already be
 * valid UTF-8, without waiting for the rest (which may never come). The
 * bytes stay masked in the input; a copy is checked. */
static bool text_prefix_valid(struct dm_conn *c, const struct dm_ws_frame *f, const uint8_t *data,
                              size_t avail)
{
    /* Only a frame the message state will take: one it refuses from its
     * header alone (a TEXT inside an open message, a continuation past
     * max_message) gets that refusal, 1002 or 1009, whether it arrived in
     * one read or in pieces, never a 1007 for its first bytes. */
    bool text = (f->opcode == DM_WS_OP_TEXT && c->msg.opcode == 0) ||
                (f->opcode == DM_WS_OP_CONT && c->msg.opcode == DM_WS_OP_TEXT);
    size_t have = avail - f->header_len;

    if (!text || have == 0 || f->payload_len > (uint64_t)c->b->cfg->max_message - c->msg.len)
        return true;
    uint8_t *copy = dm_malloc(have);
    memcpy(copy, data + f->header_len, have);
    dm_ws_unmask(copy, have, f->mask, 0);
    struct dm_utf8 u;
    if (f->opcode == DM_WS_OP_TEXT)
        dm_utf8_init(&u);
    else
        u = c->msg.utf8; /* a continuation goes on from the message so far */
    bool ok = dm_utf8_feed(&u, copy, have) == 0;
    free(copy);
    return ok;
}

/* Parses every complete frame in the input from off on; returns where the
 * next one starts. */
static size_t read_frames(struct dm_conn *c, size_t off)
{
    struct dm_ws_frame f;
    uint16_t code = 0;

    while (c->state == CONN_OPEN && off < c->in_len) {
        uint8_t *data = c->in + off;
        int rc = dm_ws_frame_parse(data, c->in_len - off, (uint64_t)c->b->cfg->max_message, true,
                                   &f, &code);
        if (rc == DM_AGAIN) {
            if (f.header_len > 0 && !text_prefix_valid(c, &f, data, c->in_len - off))
                dm_conn_close(c, DM_CLOSE_BAD_DATA);
            break;
        }
        if (rc == DM_EPROTO) {
            dm_conn_close(c, reason_of_code(code));
            break;
        }
        uint8_t *payload = data + f.header_len;
        dm_ws_unmask(payload, (size_t)f.payload_len, f.mask, 0);
        off += (size_t)rc;
        if (handle_frame(c, &f, payload) < 0)
            break;
    }
    return off;
}

/* ---- handshake ---- */

/* extra: more header lines, each ending in CRLF ("" for none). */
static void send_http_with(struct dm_conn *c, int status, const char *ctype, const char *extra,
                           const char *body, size_t len)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                     status, dm_http_reason(status), ctype, len, extra);
    DM_ASSERT(n > 0 && (size_t)n < sizeof(head));
    send_bytes(c, head, (size_t)n);
    send_bytes(c, body, len);
    dm_conn_close(c, DM_CLOSE_HTTP_DONE);
}

static void send_http(struct dm_conn *c, int status, const char *ctype, const char *body,
                      size_t len)
{
    send_http_with(c, status, ctype, "", body, len);
}

/* The demo page holds a sender's token: other sites may not frame it
 * (clickjacking), and only its own inline code runs, talking to any
 * http(s)/ws(s) endpoint (the ingest API is configurable). */
#define DEMO_HEADERS                                                                               \
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "                    \
    "style-src 'unsafe-inline'; img-src data:; connect-src 'self' http: https: ws: wss:; "         \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"                              \
    "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"

static void serve_plain_get(struct dm_conn *c, const struct dm_ws_request *req)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    static const char not_found[] = "{\"error\":\"not_found\",\"message\":\"no such resource\"}";

    if (strcmp(req->path, "/healthz") == 0) {
        send_http(c, 200, "application/json", ok, sizeof(ok) - 1);
    } else if (strcmp(req->path, "/readyz") == 0) {
        bool ready;
        size_t len;
        char *json = dm_bcast_readiness(c->b, &ready, &len);
        if (ready)
            send_http(c, 200, "application/json", json, len);
        else
            send_http(c, 503, "application/json", json, len);
        free(json);
    } else if (strcmp(req->path, "/metrics") == 0) {
        size_t len;
        char *text = dm_bcast_metrics(c->b, &len);
        send_http(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
    } else if (strcmp(req->path, "/") == 0 && c->b->demo_page != NULL)
        send_http_with(c, 200, "text/html; charset=utf-8", DEMO_HEADERS, c->b->demo_page,
                       c->b->demo_page_len);
    else
        send_http(c, 404, "application/json", not_found, sizeof(not_found) - 1);
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
        send_bytes(c, buf, (size_t)n);
    dm_conn_close(c, DM_CLOSE_HTTP_DONE);
}

/* Returns the bytes of the request head consumed (0 while incomplete). */
static size_t read_handshake(struct dm_conn *c)
{
    const struct dm_config *cfg = c->b->cfg;
    size_t n = c->in_len < (size_t)cfg->max_header ? c->in_len : (size_t)cfg->max_header;
    struct dm_ws_request req;
    char room[DM_ROOM_MAX + 2], accept[DM_WS_ACCEPT_LEN + 1], resp[512];
    bool has_room;
    size_t hlen;

    int rc = dm_ws_parse_request((const char *)c->in, n, (size_t)cfg->max_header, &req);
    if (rc == DM_AGAIN)
        return 0;
    if (rc == DM_EPROTO) {
        refuse(c, req.status, req.reason);
        return c->in_len;
    }
    size_t used = (size_t)rc;
    if (!req.is_upgrade) {
        serve_plain_get(c, &req);
        return used;
    }
    if (strcmp(req.path, "/v1/ws") != 0) {
        refuse(c, 404, "WebSocket endpoint is /v1/ws");
        return used;
    }
    if (!origin_allowed(cfg->ws_allowed_origins, req.origin)) {
        refuse(c, 403, "this Origin may not connect");
        return used;
    }
    has_room = dm_ws_query_param(req.query, "room", room, sizeof(room));
    if (has_room && !dm_room_id_valid(room, strlen(room))) {
        refuse(c, 400, "room must match [A-Za-z0-9_.:-]{1,64}");
        return used;
    }
    char *token = dm_malloc(DM_WS_QUERY_MAX);
    if (dm_ws_query_param(req.query, "token", token, DM_WS_QUERY_MAX)) {
        const char *why;
        int arc = authenticate(c, token, &why);
        free(token);
        if (arc < 0) {
            refuse(c, 401, why);
            return used;
        }
    } else {
        free(token);
    }

    dm_ws_accept_key(req.key, accept);
    int rlen =
        dm_ws_response(resp, sizeof(resp), accept,
                       dm_ws_protocol_offered(req.protocols, SUBPROTOCOL) ? SUBPROTOCOL : NULL);
    DM_ASSERT(rlen > 0);
    send_bytes(c, resp, (size_t)rlen);
    c->state = CONN_OPEN;
    c->state_since_ms = dm_now_ms();
    char *hello = dm_msg_hello(c->b->node, cfg->heartbeat_ms, (int)cfg->max_rooms, &hlen);
    send_owned_json(c, hello, hlen);
    if (has_room)
        join_room(c, room, false, 0, 0);
    return used;
}

/* ---- events ---- */

/* Reads what the socket has, then handles it. The input buffer exists only
 * while bytes wait, and is bounded: a head over max_header or a frame over
 * max_message is refused before it fits. */
static void do_read(struct dm_conn *c)
{
    const struct dm_config *cfg = c->b->cfg;
    size_t limit = (size_t)((cfg->max_message + DM_WS_MAX_HEADER > cfg->max_header
                                 ? cfg->max_message + DM_WS_MAX_HEADER
                                 : cfg->max_header) *
                            2);

    if (c->in_cap - c->in_len < READ_MIN && c->in_cap < limit) {
        size_t cap = c->in_cap ? c->in_cap * 2 : READ_MIN;
        cap = cap < limit ? cap : limit;
        c->in = dm_realloc(c->in, cap);
        c->in_cap = (uint32_t)cap;
    }
    if (c->in_len == c->in_cap) {
        /* Cannot happen with the parser's own limits (431, 1009 come first);
         * if it did, waiting would never end. */
        dm_conn_close(c, c->state == CONN_HANDSHAKE ? DM_CLOSE_HTTP_DONE : DM_CLOSE_TOO_BIG);
        return;
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n == 0) {
        dm_conn_close(c, DM_CLOSE_EOF);
        return;
    }
    if (n < 0) {
        int e = errno;
        if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR)
            dm_conn_close(c, DM_CLOSE_SOCKET_ERROR);
        return;
    }
    c->in_len += (uint32_t)n;
    c->last_read_ms = dm_now_ms();

    size_t used = 0;
    if (c->state == CONN_HANDSHAKE)
        used = read_handshake(c);
    if (c->state == CONN_OPEN)
        used = read_frames(c, used);
    if (c->state == CONN_CLOSING)
        return; /* its input no longer matters */
    if (used > 0) {
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= (uint32_t)used;
    }
    if (c->in_len == 0) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

static void on_conn_io(evutil_socket_t fd, short what, void *arg)
{
    struct dm_conn *c = arg;
    DM_UNUSED(fd);

    DM_CHECK_OBJ(c, DM_CONN_MAGIC);
    if ((what & EV_WRITE) && flush_conn(c) < 0)
        return;
    if ((what & EV_READ) && c->state != CONN_CLOSING)
        do_read(c);
}

void dm_conns_sweep(struct dm_bcast *b, int64_t now_ms)
{
    const struct dm_config *cfg = b->cfg;
    struct dm_conn *c, *next;

    for (c = TAILQ_FIRST(&b->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->state == CONN_HANDSHAKE && now_ms - c->state_since_ms > cfg->handshake_timeout_ms)
            dm_conn_close(c, DM_CLOSE_HANDSHAKE_TIMEOUT);
        else if (c->state == CONN_OPEN && now_ms - c->last_read_ms > cfg->idle_timeout_ms)
            dm_conn_close(c, DM_CLOSE_IDLE);
        else if (c->state == CONN_CLOSING && !c->deferred &&
                 now_ms - c->state_since_ms > CLOSE_FLUSH_MS)
            defer_free(c); /* it never took its last bytes */
    }
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
    /* Nothing is flushed any more. */
    while ((c = b->flushq) != NULL) {
        b->flushq = c->next_flush;
        c->flush_queued = false;
    }
    while ((c = TAILQ_FIRST(&b->conns)) != NULL) {
        if (c->state != CONN_CLOSING) {
            leave_all(c);
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
        if (c->state == CONN_OPEN && c->claims != NULL && c->claims->exp < now_s - leeway) {
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
