/* Simulated viewers on worker threads. Plain events and recv() into one
 * scratch buffer per worker, not bufferevents: the receive path is the
 * generator's hot loop (see on_readable). */
#include "loadtest/viewers.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "common/check.h"
#include "common/log.h"
#include "common/ws.h"
#include "loadtest/hist.h"

#define MAX_FRAME       (1024 * 1024)
#define MAX_HEAD        16384 /* the server's handshake response */
#define CONNECT_TICK_MS 10
/* Bytes asked of one recv(): servers batch many frames per write, read them
 * in as few calls as possible. */
#define READ_CHUNK (256 * 1024)
/* An incomplete frame is shorter than its header plus MAX_FRAME (a longer
 * one is refused as soon as its header is in), an incomplete response head
 * shorter than MAX_HEAD: the most a viewer ever carries between reads. */
#define MAX_TAIL (MAX_FRAME + DM_WS_MAX_HEADER)
/* The scratch buffer: a carried tail, then at least READ_CHUNK fresh bytes. */
#define RBUF_SIZE (MAX_TAIL + READ_CHUNK)
/* A tail buffer grown past this is released once empty, so one large frame
 * does not pin memory in every viewer that saw it. */
#define TAIL_KEEP 4096
/* Bytes waiting to be sent: handshake, pongs and joins are small, so this
 * is only reached by a peer that stops reading while it keeps pinging. */
#define MAX_OUT (64 * 1024)

enum vstate { V_IDLE, V_CONNECTING, V_HANDSHAKE, V_OPEN, V_DONE };

struct worker;

struct viewer {
    struct worker *w;
    size_t index;
    size_t room;
    enum vstate state;
    bool slow;
    bool paused;       /* a slow viewer that stopped reading this connection */
    bool resuming;     /* reconnecting: join with (epoch, offset) after hello */
    unsigned connects; /* connections made so far: each goes to the next node */
    int64_t epoch;
    int fd;            /* -1 while not connected */
    struct event *rev; /* readable; persistent, added once connected */
    struct event *wev; /* writable: the connect completed, or output can go on */
    uint8_t *tail;     /* the start of an incomplete frame (or response head) */
    size_t ntail, tailcap;
    char *out; /* bytes send() did not take yet, out[0..nout) */
    size_t nout, outcap;
    bool out_full; /* MAX_OUT reached: on_writable closes */
    char accept[DM_WS_ACCEPT_LEN + 1];
    struct lt_track track;
    struct event *reconnect; /* reconnect-storm timer */
};

struct worker {
    struct lt_viewers *v;
    int id;
    pthread_t thread;
    struct event_base *base;
    struct event *stop_ev;
    struct event *slow_ev;
    struct event *connect_ev;
    struct viewer **viewers; /* this worker's viewers */
    size_t nviewers, next_connect;
    int64_t started_us;
    uint64_t rng;
    uint8_t *rbuf;             /* RBUF_SIZE: every read of this worker's viewers */
    struct lt_worker_shm *fig; /* written by this worker only, read by any thread */
};

struct lt_viewers {
    struct lt_viewers_config cfg;
    struct sockaddr_in *targets;
    struct viewer *all;
    size_t nall; /* viewers in this process */
    struct worker *workers;
    struct lt_worker_shm *own_fig;  /* when the caller gave no shared memory */
    int64_t window_from, window_to; /* atomics */
};

#define ADD(field, n) __atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED)
#define SUB(field, n) __atomic_fetch_sub(&(field), (n), __ATOMIC_RELAXED)
#define GET(field)    __atomic_load_n(&(field), __ATOMIC_RELAXED)

static uint64_t next_random(struct worker *w)
{
    /* xorshift64*: masks and jitter, not security. */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * UINT64_C(2685821657736338717);
}

static void count_close(struct worker *w, uint16_t code)
{
    switch (code) {
#define LT_CLOSE_CASE(c)                                                                           \
    case c:                                                                                        \
        ADD(w->fig->stats.closes_##c, 1);                                                          \
        return;
        LT_CLOSE_CODES(LT_CLOSE_CASE)
#undef LT_CLOSE_CASE
    default:
        ADD(w->fig->stats.closes_other, 1);
    }
}

/* ---- parsing ---- */

/* These run once per received comment, millions of times a second in the
 * hot-room run, so they scan the payload in place: no NUL-terminated copy
 * for strtoull, no memmem. */

/* Reads the decimal digits at *pp (before end) into *out and moves *pp past
 * them; false when there is no digit, more than 19 (so the sum cannot wrap)
 * or the value exceeds max. */
static inline bool scan_decimal(const char **pp, const char *end, uint64_t max, uint64_t *out)
{
    const char *p = *pp, *start = *pp;
    uint64_t v = 0;

    while (p < end && (unsigned char)(*p - '0') <= 9 && p - start < 19)
        v = v * 10 + (uint64_t)(*p++ - '0');
    if (p == start || (p < end && (unsigned char)(*p - '0') <= 9) || v > max)
        return false;
    *pp = p;
    *out = v;
    return true;
}

/* 16 bytes at a time, in GCC/Clang generic vectors: SSE2 on x86-64, NEON
 * on arm64, plain code elsewhere. */
typedef uint8_t v16u8 __attribute__((vector_size(16)));
typedef int8_t v16i8 __attribute__((vector_size(16)));

static inline v16u8 load16(const char *p)
{
    v16u8 v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline bool any16(v16i8 m)
{
    uint64_t half[2];
    memcpy(half, &m, sizeof(half));
    return (half[0] | half[1]) != 0;
}

/* The first occurrence of key (klen >= 2 bytes) in p[0..end), or NULL.
 * A danmaku payload has its text key ~100 bytes in, behind many quotes:
 * a search that stops at every quote or every `":"` (memmem) costs more
 * than the rest of the frame's handling. Here sixteen positions at a time
 * are filtered on the key's first, second and last bytes, and only the
 * rare survivors are compared in full. */
static const char *find_key(const char *p, const char *end, const char *key, size_t klen)
{
    for (; (size_t)(end - p) >= klen + 15; p += 16) {
        v16i8 m = (load16(p) == (uint8_t)key[0]) & (load16(p + 1) == (uint8_t)key[1]) &
                  (load16(p + klen - 1) == (uint8_t)key[klen - 1]);
        if (!any16(m))
            continue;
        for (int i = 0; i < 16; i++) {
            if (m[i] != 0 && memcmp(p + i, key, klen) == 0)
                return p + i;
        }
    }
    for (; (size_t)(end - p) >= klen; p++) {
        if (*p == key[0] && memcmp(p, key, klen) == 0)
            return p;
    }
    return NULL;
}

bool lt_parse_text(const char *text, size_t len, uint32_t *seq, int64_t *sched_us)
{
    const char *p = text + 3, *end = text + len;
    uint64_t s, t;
    bool negative = false;

    if (len < 4 || text[0] != 'l' || text[1] != 't' || text[2] != ' ')
        return false;
    if (!scan_decimal(&p, end, UINT32_MAX, &s) || p == end || *p++ != ' ')
        return false;
    if (p < end && *p == '-') {
        negative = true;
        p++;
    }
    if (!scan_decimal(&p, end, INT64_MAX, &t) || (p < end && *p != ' '))
        return false;
    *seq = (uint32_t)s;
    *sched_us = negative ? -(int64_t)t : (int64_t)t;
    return true;
}

bool lt_parse_danmaku(const char *json, size_t len, int64_t *offset, uint32_t *seq,
                      int64_t *sched_us)
{
    static const char head[] = "{\"op\":\"danmaku\",";
    static const char off_key[] = "\"offset\":";
    static const char text_key[] = "\"text\":\"";
    const char *end = json + len, *p, *q;
    uint64_t o;

    if (len < sizeof(head) - 1 || memcmp(json, head, sizeof(head) - 1) != 0)
        return false;
    p = find_key(json + sizeof(head) - 1, end, off_key, sizeof(off_key) - 1);
    if (p == NULL)
        return false;
    p += sizeof(off_key) - 1;
    if (!scan_decimal(&p, end, INT64_MAX, &o))
        return false;
    p = find_key(p, end, text_key, sizeof(text_key) - 1);
    if (p == NULL)
        return false;
    p += sizeof(text_key) - 1;
    q = memchr(p, '"', (size_t)(end - p));
    if (q == NULL || !lt_parse_text(p, (size_t)(q - p), seq, sched_us))
        return false;
    *offset = (int64_t)o;
    return true;
}

/* ---- connection ---- */

static void start_connect(struct viewer *vw);

/* Sends at once when nothing is queued, else queues behind what is, so
 * frames never reorder. Never closes the connection itself, as it runs
 * inside the frame loop: a send error leaves the bytes queued, and the
 * write event, which fires on a failed socket too, finds it in on_writable;
 * so does a peer that pings but never reads once MAX_OUT is queued. */
static void send_bytes(struct viewer *vw, const void *data, size_t len)
{
    size_t sent = 0;

    if (vw->nout == 0) {
        ssize_t n = send(vw->fd, data, len, MSG_NOSIGNAL);
        if (n == (ssize_t)len)
            return;
        sent = n > 0 ? (size_t)n : 0;
    }
    size_t rest = len - sent;
    if (vw->nout + rest > MAX_OUT) {
        vw->out_full = true;
        event_active(vw->wev, EV_WRITE, 0);
        return;
    }
    if (vw->nout + rest > vw->outcap) {
        vw->outcap = vw->nout + rest + 256;
        vw->out = dm_realloc(vw->out, vw->outcap);
    }
    memcpy(vw->out + vw->nout, (const char *)data + sent, rest);
    vw->nout += rest;
    event_add(vw->wev, NULL);
}

static void send_frame(struct viewer *vw, uint8_t opcode, const void *payload, size_t len)
{
    uint8_t frame[DM_WS_MAX_HEADER + DM_WS_MAX_CONTROL + 512];
    uint64_t r = next_random(vw->w);
    uint8_t mask[4];
    memcpy(mask, &r, 4);
    size_t n = dm_ws_encode(frame, sizeof(frame), opcode, payload, len, mask);
    DM_ASSERT(n > 0);
    send_bytes(vw, frame, n);
}

/* Releases the connection's fd, events and buffered bytes. */
static void close_conn(struct viewer *vw)
{
    if (vw->rev != NULL) {
        event_free(vw->rev);
        vw->rev = NULL;
    }
    if (vw->wev != NULL) {
        event_free(vw->wev);
        vw->wev = NULL;
    }
    if (vw->fd >= 0) {
        close(vw->fd);
        vw->fd = -1;
    }
    vw->ntail = 0;
    vw->nout = 0;
    vw->out_full = false;
    vw->paused = false;
}

/* Drops the connection; reconnects when the run goes on and the viewer is
 * meant to (reconnect storm, or the server asked with 1012). Safe from the
 * connection's own callbacks: events are freed, never run again, and the
 * caller returns without touching the connection. */
static void drop(struct viewer *vw, bool reconnect)
{
    struct worker *w = vw->w;

    close_conn(vw);
    if (vw->state == V_OPEN)
        SUB(w->fig->stats.open, 1);
    if (vw->reconnect != NULL)
        event_del(vw->reconnect);
    vw->state = V_IDLE;
    if (reconnect) {
        vw->resuming = vw->track.joined_offset != LT_NO_OFFSET;
        ADD(w->fig->stats.reconnects, 1);
        start_connect(vw);
    } else {
        vw->state = V_DONE;
    }
}

/* The connection failed or the peer closed it without a close frame. */
static void fail(struct viewer *vw)
{
    if (vw->state == V_CONNECTING)
        ADD(vw->w->fig->stats.connect_errors, 1);
    else if (vw->state == V_OPEN)
        count_close(vw->w, 1006); /* closed without a close frame */
    drop(vw, vw->state == V_OPEN && vw->w->v->cfg.reconnect_every > 0);
}

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    struct viewer *vw = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    if (vw->state == V_OPEN)
        drop(vw, true);
}

static void arm_reconnect(struct viewer *vw)
{
    const struct lt_viewers_config *cfg = &vw->w->v->cfg;
    if (cfg->reconnect_every <= 0 || vw->slow)
        return;
    if (vw->reconnect == NULL) {
        vw->reconnect = evtimer_new(vw->w->base, on_reconnect_timer, vw);
        DM_AN(vw->reconnect);
    }
    /* Uniform in [0.5, 1.5] x the period, so the storm does not pulse. */
    double f = 0.5 + (double)(next_random(vw->w) % 1000) / 1000.0;
    struct timeval tv = dm_timeval_ms((int64_t)(cfg->reconnect_every * 1000 * f));
    evtimer_add(vw->reconnect, &tv);
}

static void handle_control_json(struct viewer *vw, const char *data, size_t len)
{
    struct worker *w = vw->w;
    json_t *root = json_loadb(data, len, 0, NULL);
    const char *op = root != NULL ? json_string_value(json_object_get(root, "op")) : NULL;

    if (op == NULL) {
        ADD(w->fig->stats.server_errors, 1);
    } else if (strcmp(op, "hello") == 0) {
        if (vw->resuming) {
            json_t *join = json_pack(
                "{s:s,s:s,s:I,s:I}", "op", "join", "room", w->v->cfg.room_names[vw->room], "offset",
                (json_int_t)vw->track.last_offset, "epoch", (json_int_t)vw->epoch);
            char *s = json_dumps(join, JSON_COMPACT);
            send_frame(vw, DM_WS_OP_TEXT, s, strlen(s));
            free(s);
            json_decref(join);
        }
    } else if (strcmp(op, "joined") == 0) {
        json_t *off = json_object_get(root, "offset");
        bool recovered = json_is_true(json_object_get(root, "recovered"));
        if (vw->track.joined_offset == LT_NO_OFFSET)
            ADD(w->fig->stats.joined, 1);
        else if (recovered)
            ADD(w->fig->stats.recovered, 1);
        else
            ADD(w->fig->stats.not_recovered, 1);
        vw->epoch = json_integer_value(json_object_get(root, "epoch"));
        lt_track_joined(&vw->track, json_integer_value(off), recovered);
        vw->resuming = false;
        arm_reconnect(vw);
    } else if (strcmp(op, "skipped") == 0) {
        vw->track.skipped += (uint64_t)json_integer_value(json_object_get(root, "count"));
    } else if (strcmp(op, "error") == 0) {
        ADD(w->fig->stats.server_errors, 1);
    }
    json_decref(root);
}

/* What one read's frames add to the worker's shared counters: summed here
 * and added once per read, not with an atomic per frame. The clock and the
 * measurement window are also read once per read. */
struct batch {
    int64_t now_us;
    int64_t window_from, window_to;
    uint64_t frames, delivered;
};

static void flush_batch(struct worker *w, const struct batch *b)
{
    if (b->frames > 0)
        ADD(w->fig->stats.messages, b->frames);
    if (b->delivered > 0)
        ADD(w->fig->stats.delivered, b->delivered);
}

static void handle_text(struct viewer *vw, struct batch *b, const char *data, size_t len)
{
    int64_t offset, sched;
    uint32_t seq;

    if (lt_parse_danmaku(data, len, &offset, &seq, &sched)) {
        if (!lt_track_received(&vw->track, seq, offset))
            return;
        if (sched >= b->window_from && sched < b->window_to) {
            /* Only this worker records into its figures. */
            lt_hist_record_owned(&vw->w->fig->latency, b->now_us - sched);
            b->delivered++;
        }
        return;
    }
    handle_control_json(vw, data, len);
}

/* Handles every complete frame in p[off..len). Returns the offset of the
 * first byte not consumed (an incomplete frame), or -1 if the connection
 * was dropped. */
static ssize_t read_frames(struct viewer *vw, const uint8_t *p, size_t len, size_t off)
{
    struct worker *w = vw->w;
    struct batch b = {.now_us = dm_now_us(),
                      .window_from = GET(w->v->window_from),
                      .window_to = GET(w->v->window_to)};
    struct dm_ws_frame f;
    uint16_t code;

    while (len - off >= 2) {
        int rc = dm_ws_frame_parse(p + off, len - off, MAX_FRAME, false, &f, &code);
        if (rc == DM_EPROTO) {
            flush_batch(w, &b);
            ADD(w->fig->stats.handshake_errors, 1);
            drop(vw, false);
            return -1;
        }
        if (rc == DM_AGAIN)
            break; /* incomplete */
        const char *payload = (const char *)p + off + f.header_len;
        size_t plen = (size_t)f.payload_len;
        off += (size_t)rc;
        b.frames++;
        switch (f.opcode) {
        case DM_WS_OP_TEXT:
            handle_text(vw, &b, payload, plen);
            break;
        case DM_WS_OP_PING:
            send_frame(vw, DM_WS_OP_PONG, payload, plen);
            break;
        case DM_WS_OP_CLOSE: {
            uint16_t c =
                plen >= 2 ? (uint16_t)((uint8_t)payload[0] << 8 | (uint8_t)payload[1]) : 1005;
            flush_batch(w, &b);
            count_close(w, c);
            /* The node is draining: come back, as a real client would. */
            drop(vw, c == DM_WS_CLOSE_RESTART);
            return -1;
        }
        default:
            break;
        }
    }
    flush_batch(w, &b);
    return (ssize_t)off;
}

/* Handles p[0..len): the rest of the response head while handshaking, then
 * frames. Returns what read_frames does. */
static ssize_t consume(struct viewer *vw, const uint8_t *p, size_t len)
{
    size_t off = 0;

    if (vw->state == V_HANDSHAKE) {
        struct dm_ws_response res;
        int rc = dm_ws_parse_response((const char *)p, len, MAX_HEAD, vw->accept, &res);
        if (rc == DM_AGAIN)
            return 0;
        if (rc < 0) {
            ADD(vw->w->fig->stats.handshake_errors, 1);
            drop(vw, false);
            return -1;
        }
        off = (size_t)rc;
        vw->state = V_OPEN;
        ADD(vw->w->fig->stats.open, 1);
    }
    DM_ASSERT(vw->state == V_OPEN);
    return read_frames(vw, p, len, off);
}

/* Keeps p[0..n), an incomplete frame or head, for the next read. */
static void keep_tail(struct viewer *vw, const uint8_t *p, size_t n)
{
    DM_ASSERT(n < MAX_TAIL);
    if (n == 0 && vw->tailcap > TAIL_KEEP) {
        free(vw->tail);
        vw->tail = NULL;
        vw->tailcap = 0;
    }
    if (n > vw->tailcap) {
        vw->tailcap = n > 2 * vw->tailcap ? n : 2 * vw->tailcap;
        vw->tail = dm_realloc(vw->tail, vw->tailcap);
    }
    if (n > 0)
        memcpy(vw->tail, p, n);
    vw->ntail = n;
}

/* The generator's hot loop: millions of frames a second on one core in the
 * hot-room run. Every viewer of the worker reads into the worker's scratch
 * buffer, which stays in cache, and frames are parsed where they landed: no
 * FIONREAD ioctl, evbuffer chain allocation or pullup per read as with a
 * bufferevent. Only an incomplete frame is copied aside, to the viewer.
 * One recv() per readiness: when it does not fill the buffer the socket is
 * drained, and when it does, level-triggered epoll reports it again. */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct viewer *vw = arg;
    uint8_t *buf = vw->w->rbuf;
    size_t have = vw->ntail;
    DM_UNUSED(what);

    /* The carried tail goes first, so frames are parsed in place. */
    if (have > 0)
        memcpy(buf, vw->tail, have);
    ssize_t n = recv(fd, buf + have, RBUF_SIZE - have, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        fail(vw); /* EOF or reset */
        return;
    }
    ssize_t used = consume(vw, buf, have + (size_t)n);
    if (used >= 0)
        keep_tail(vw, buf + used, have + (size_t)n - (size_t)used);
}

static void send_request(struct viewer *vw)
{
    char req[1024], key[DM_WS_KEY_LEN + 1], path[256];
    uint8_t nonce[16];
    uint64_t a = next_random(vw->w), b = next_random(vw->w);
    memcpy(nonce, &a, 8);
    memcpy(nonce + 8, &b, 8);
    dm_ws_client_key(nonce, key);
    dm_ws_accept_key(key, vw->accept);
    if (vw->resuming)
        snprintf(path, sizeof(path), "/v1/ws");
    else
        snprintf(path, sizeof(path), "/v1/ws?room=%s", vw->w->v->cfg.room_names[vw->room]);
    int n = dm_ws_client_request(req, sizeof(req), "loadtest", path, key, "danmaku.v1");
    DM_ASSERT(n > 0);
    send_bytes(vw, req, (size_t)n);
}

/* The connect completed (or failed), or queued output may go on. */
static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct viewer *vw = arg;
    DM_UNUSED(what);

    if (vw->state == V_CONNECTING) {
        int e = 0;
        socklen_t elen = sizeof(e);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) < 0 || e != 0) {
            fail(vw);
            return;
        }
        vw->state = V_HANDSHAKE;
        if (!vw->paused)
            event_add(vw->rev, NULL);
        send_request(vw);
        return;
    }
    if (vw->out_full) {
        fail(vw); /* a peer that pings but never reads */
        return;
    }
    if (vw->nout == 0)
        return;
    ssize_t n = send(fd, vw->out, vw->nout, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        n = 0;
    if (n < 0) {
        fail(vw); /* reset */
        return;
    }
    memmove(vw->out, vw->out + n, vw->nout - (size_t)n);
    vw->nout -= (size_t)n;
    if (vw->nout > 0)
        event_add(vw->wev, NULL);
}

static void start_connect(struct viewer *vw)
{
    struct worker *w = vw->w;
    const struct lt_viewers_config *cfg = &w->v->cfg;
    /* Each reconnect goes to the next node, as behind a load balancer. */
    struct sockaddr_in *target = &w->v->targets[(vw->index + vw->connects++) % cfg->ntargets];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        ADD(w->fig->stats.connect_errors, 1);
        vw->state = V_DONE;
        return;
    }
    if (cfg->source_addrs > 1 && (ntohl(target->sin_addr.s_addr) >> 24) == 127) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr =
            htonl(0x7f000001u + (uint32_t)(vw->index % (size_t)cfg->source_addrs));
        int one = 1;
        setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            close(fd);
            ADD(w->fig->stats.connect_errors, 1);
            vw->state = V_DONE;
            return;
        }
    }
    if (connect(fd, (struct sockaddr *)target, sizeof(*target)) < 0 && errno != EINPROGRESS) {
        close(fd);
        ADD(w->fig->stats.connect_errors, 1);
        vw->state = V_DONE;
        return;
    }
    vw->fd = fd;
    vw->rev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_readable, vw);
    vw->wev = event_new(w->base, fd, EV_WRITE, on_writable, vw);
    DM_AN(vw->rev);
    DM_AN(vw->wev);
    /* Connected or not yet: either way writability reports the outcome. */
    vw->state = V_CONNECTING;
    event_add(vw->wev, NULL);
}

/* ---- worker ---- */

static void on_connect_tick(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    const struct lt_viewers_config *cfg = &w->v->cfg;
    DM_UNUSED(fd);
    DM_UNUSED(what);

    double elapsed = (double)(dm_mono_us() - w->started_us) / 1e6;
    size_t due = (size_t)(elapsed * cfg->connect_rate / cfg->threads) + 1;
    while (w->next_connect < w->nviewers && w->next_connect < due)
        start_connect(w->viewers[w->next_connect++]);
    if (w->next_connect == w->nviewers)
        event_del(w->connect_ev);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    for (size_t i = 0; i < w->nviewers; i++) {
        struct viewer *vw = w->viewers[i];
        if (vw->state != V_IDLE && vw->state != V_DONE)
            drop(vw, false);
        if (vw->reconnect != NULL) {
            event_free(vw->reconnect);
            vw->reconnect = NULL;
        }
    }
    event_base_loopbreak(w->base);
}

static void on_slow(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    for (size_t i = 0; i < w->nviewers; i++) {
        struct viewer *vw = w->viewers[i];
        if (vw->slow && vw->fd >= 0) {
            vw->paused = true;
            event_del(vw->rev);
        }
    }
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

/* host:port, host a name or an IPv4 address (resolved once, at start). */
static int parse_target(const char *s, struct sockaddr_in *out, char err[DM_ERRLEN])
{
    char host[256];
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    const char *colon = strrchr(s, ':');

    if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof(host))
        goto bad;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535)
        goto bad;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(err, DM_ERRLEN, "target %.64s: %s", s, gai_strerror(rc));
        return -1;
    }
    memcpy(out, res->ai_addr, sizeof(*out));
    out->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
bad:
    snprintf(err, DM_ERRLEN, "target \"%.64s\": expected host:port", s);
    return -1;
}

static size_t room_of(const struct lt_viewers_config *cfg, size_t i)
{
    size_t hot = (size_t)(cfg->hot_share * (double)cfg->viewers);
    if (cfg->nrooms == 1 || i < hot)
        return 0;
    if (hot > 0)
        return 1 + (i - hot) % (cfg->nrooms - 1);
    return i % cfg->nrooms;
}

struct lt_viewers *lt_viewers_start(const struct lt_viewers_config *cfg,
                                    const struct lt_ledger *ledger, char err[DM_ERRLEN])
{
    struct lt_viewers *v = dm_calloc(1, sizeof(*v));
    DM_UNUSED(ledger);

    v->cfg = *cfg;
    v->window_from = INT64_MAX;
    v->window_to = INT64_MAX;
    v->targets = dm_calloc(cfg->ntargets, sizeof(*v->targets));
    for (size_t i = 0; i < cfg->ntargets; i++) {
        if (parse_target(cfg->targets[i], &v->targets[i], err) < 0) {
            free(v->targets);
            free(v);
            return NULL;
        }
    }
    size_t first = cfg->stride > 1 ? cfg->first : 0, stride = cfg->stride > 1 ? cfg->stride : 1;
    v->nall = first < cfg->viewers ? (cfg->viewers - first + stride - 1) / stride : 0;
    v->all = dm_calloc(v->nall, sizeof(*v->all));
    v->workers = dm_calloc((size_t)cfg->threads, sizeof(*v->workers));
    if (cfg->shm == NULL) {
        v->own_fig = dm_calloc((size_t)cfg->threads, sizeof(*v->own_fig));
        for (int t = 0; t < cfg->threads; t++)
            lt_hist_init(&v->own_fig[t].latency);
    }
    size_t slow = (size_t)(cfg->slow_share * (double)cfg->viewers);
    for (int t = 0; t < cfg->threads; t++) {
        struct worker *w = &v->workers[t];
        w->v = v;
        w->id = t;
        w->rng = UINT64_C(0x9e3779b97f4a7c15) * (uint64_t)(t + 1) ^ (uint64_t)dm_mono_us();
        w->base = event_base_new();
        DM_AN(w->base);
        w->rbuf = dm_malloc(RBUF_SIZE);
        w->fig = cfg->shm != NULL ? &cfg->shm[t] : &v->own_fig[t];
        w->viewers = dm_calloc(v->nall / (size_t)cfg->threads + 1, sizeof(*w->viewers));
        w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
        w->slow_ev = event_new(w->base, -1, 0, on_slow, w);
        w->connect_ev = event_new(w->base, -1, EV_PERSIST, on_connect_tick, w);
        DM_AN(w->stop_ev);
        DM_AN(w->slow_ev);
        DM_AN(w->connect_ev);
    }
    for (size_t j = 0; j < v->nall; j++) {
        size_t i = first + j * stride; /* the global index */
        struct viewer *vw = &v->all[j];
        struct worker *w = &v->workers[j % (size_t)cfg->threads];
        vw->w = w;
        vw->index = i;
        vw->room = room_of(cfg, i);
        vw->fd = -1;
        /* Spread the slow ones evenly: every k-th viewer. */
        vw->slow = slow > 0 && i % (cfg->viewers / slow) == 0 && i / (cfg->viewers / slow) < slow;
        lt_track_init(&vw->track);
        vw->track.excluded = vw->slow;
        w->viewers[w->nviewers++] = vw;
    }
    for (int t = 0; t < cfg->threads; t++) {
        struct worker *w = &v->workers[t];
        struct timeval tick = dm_timeval_ms(CONNECT_TICK_MS);
        w->started_us = dm_mono_us();
        event_add(w->connect_ev, &tick);
        if (pthread_create(&w->thread, NULL, run_worker, w) != 0)
            DM_PANIC("pthread_create failed");
    }
    return v;
}

void lt_viewers_set_window(struct lt_viewers *v, int64_t from_us, int64_t to_us)
{
    __atomic_store_n(&v->window_from, from_us, __ATOMIC_RELAXED);
    __atomic_store_n(&v->window_to, to_us, __ATOMIC_RELAXED);
}

void lt_viewers_start_slow(struct lt_viewers *v)
{
    for (int t = 0; t < v->cfg.threads; t++)
        event_active(v->workers[t].slow_ev, EV_TIMEOUT, 0);
}

void lt_viewers_sum(const struct lt_worker_shm *w, size_t n, struct lt_viewer_stats *out,
                    struct lt_hist *lat)
{
    memset(out, 0, sizeof(*out));
    for (size_t t = 0; t < n; t++) {
        const struct lt_viewer_stats *s = &w[t].stats;
        out->open += GET(s->open);
        out->joined += GET(s->joined);
        out->connect_errors += GET(s->connect_errors);
        out->handshake_errors += GET(s->handshake_errors);
        out->delivered += GET(s->delivered);
        out->messages += GET(s->messages);
        out->reconnects += GET(s->reconnects);
        out->recovered += GET(s->recovered);
        out->not_recovered += GET(s->not_recovered);
        out->server_errors += GET(s->server_errors);
        out->closes_other += GET(s->closes_other);
#define LT_CLOSE_SUM(c) out->closes_##c += GET(s->closes_##c);
        LT_CLOSE_CODES(LT_CLOSE_SUM)
#undef LT_CLOSE_SUM
        if (lat != NULL)
            lt_hist_merge(lat, &w[t].latency);
    }
}

static struct lt_worker_shm *figures(struct lt_viewers *v)
{
    return v->cfg.shm != NULL ? v->cfg.shm : v->own_fig;
}

void lt_viewers_stats(struct lt_viewers *v, struct lt_viewer_stats *out)
{
    lt_viewers_sum(figures(v), (size_t)v->cfg.threads, out, NULL);
}

void lt_viewers_merge_latency(struct lt_viewers *v, struct lt_hist *dst)
{
    struct lt_viewer_stats ignored;
    lt_viewers_sum(figures(v), (size_t)v->cfg.threads, &ignored, dst);
}

void lt_viewers_stop(struct lt_viewers *v)
{
    for (int t = 0; t < v->cfg.threads; t++)
        event_active(v->workers[t].stop_ev, EV_TIMEOUT, 0);
    for (int t = 0; t < v->cfg.threads; t++)
        pthread_join(v->workers[t].thread, NULL);
}

void lt_viewers_account(struct lt_viewers *v, const struct lt_ledger *ledger,
                        struct lt_account *acc)
{
    for (size_t i = 0; i < v->nall; i++)
        lt_ledger_account(ledger, v->all[i].room, &v->all[i].track, acc);
}

void lt_viewers_free(struct lt_viewers *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->nall; i++) {
        close_conn(&v->all[i]); /* before the bases go: lt_viewers_stop already did */
        lt_track_fini(&v->all[i].track);
        free(v->all[i].tail);
        free(v->all[i].out);
    }
    for (int t = 0; t < v->cfg.threads; t++) {
        struct worker *w = &v->workers[t];
        event_free(w->stop_ev);
        event_free(w->slow_ev);
        event_free(w->connect_ev);
        event_base_free(w->base);
        free(w->viewers);
        free(w->rbuf);
    }
    free(v->workers);
    free(v->own_fig);
    free(v->all);
    free(v->targets);
    free(v);
}
