/* Ingest HTTP server: listener, connection limits and deadlines, routes,
 * CORS, health, metrics and room info. The comment routes live in
 * comments.c; every answer goes through request.c. */
#include "server/http.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "common/accept_pause.h"
#include "common/check.h"
#include "common/config.h"
#include "common/connlimit.h"
#include "common/hash.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/net.h"
#include "common/process.h"
#include "common/proto.h"
#include "server/comments.h"
#include "server/ingest.h"
#include "server/moderation.h"
#include "server/producer.h"
#include "server/request.h"
#include "server/store.h"

#define DM_HTTP_MAGIC 0x68747470u

/* evhttp buffers a whole body before on_request sees it, so its own cap is
 * what bounds a request's memory: twice max_body, so that a body somewhat
 * over the limit still gets our 413 in JSON, and a larger one evhttp's 413
 * (and the connection closed) without being read. */
#define HTTP_HARD_BODY_FACTOR 2

struct hconn;
TAILQ_HEAD(hconn_list, hconn);

struct dm_http {
    unsigned magic;
    struct dm_ingest *in;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct dm_accept_pause *accept_pause; /* NULL once draining */
    struct hconn_list pending;            /* accepted, not adopted yet (on_adopt) */
    struct hconn_list conns;              /* adopted: open connections */
    struct hconn **byfd;                  /* conns by socket, to find one from a request */
    size_t nbyfd;
    struct event *adopt;
    const struct timeval *request_tv; /* http_request_timeout_ms, a common timeout */
    bool draining;
};

/* ---- connections ----
 *
 * evhttp (libevent 2.1) accepts by itself and tells nobody about a new
 * connection until a whole request has arrived, so limits and the request
 * deadline hook in where it lets us: it asks our bufferevent callback
 * (evhttp_set_bevcb) for each accepted connection's bufferevent, and
 * evhttp_connection_set_closecb tells us when a connection goes. In detail,
 * as libevent 2.1.12's http.c does it:
 *
 * - accept_socket_cb -> evhttp_get_request -> evhttp_get_request_connection
 *   calls the bevcb, builds the evhttp_connection around that bufferevent
 *   (bufferevent_setcb(bev, ..., evcon): the callback argument is the
 *   connection), sets the socket and the peer address, all within the
 *   listener's callback. on_new_bev only notes the bufferevent (with a
 *   reference, so that it stays valid whatever evhttp does) and activates
 *   on_adopt, which runs in the same pass of the loop, before anything can
 *   be read from the socket.
 * - on_adopt finds the connection as the bufferevent's callback argument
 *   (checked with evhttp_connection_get_bufferevent), counts it in the
 *   process's limits or refuses it (503, evhttp_connection_free: nothing of
 *   ours is attached yet), and attaches the close callback.
 * - evhttp calls the close callback exactly once for a server connection,
 *   from evhttp_connection_free or evhttp_connection_reset_ while it is
 *   still connected (every path that frees one), before the socket is
 *   closed: that gives the count back.
 * - The request deadline: a request must arrive in full (head and body)
 *   within http_request_timeout_ms of the connection opening, or for later
 *   requests on a kept-alive connection of their first byte (an evbuffer
 *   callback on the input sees every read). evhttp's own timeout is one of
 *   idleness between reads, which a client sending a byte a second never
 *   meets (slowloris). The gencb (on_request) marks the request complete;
 *   its on_complete callback, once the answer is written, waits for the
 *   next one. */

struct hconn {
    struct dm_http *h;
    struct bufferevent *bev;         /* evhttp's (made by on_new_bev) */
    struct evhttp_connection *evcon; /* NULL until adopted */
    struct evbuffer_cb_entry *input_cb;
    struct event deadline; /* embedded timer */
    evutil_socket_t fd;
    bool busy;  /* a complete request is being answered: no deadline */
    bool armed; /* the deadline runs */
    struct dm_connlimit_slot slot;
    TAILQ_ENTRY(hconn) link; /* h->pending or h->conns */
};

/* evhttp calls its listener's error callback with the struct evhttp as the
 * argument (libevent 2.1 lets nobody pass their own, and evhttp sets none),
 * so on_accept_error finds the server of a listener here. Touched when a
 * server is made or freed, and on accept errors. */
static struct {
    pthread_mutex_t lock;
    struct dm_http *servers[DM_MAX_WORKERS];
} registry = {PTHREAD_MUTEX_INITIALIZER, {NULL}};

static void registry_set(struct dm_http *h, bool add)
{
    bool done = false;
    pthread_mutex_lock(&registry.lock);
    for (size_t i = 0; i < DM_ARRAY_LEN(registry.servers) && !done; i++) {
        if (registry.servers[i] == (add ? NULL : h)) {
            registry.servers[i] = add ? h : NULL;
            done = true;
        }
    }
    pthread_mutex_unlock(&registry.lock);
    DM_ASSERT(done || !add); /* one server per worker, DM_MAX_WORKERS at most */
}

/* Starts the deadline of a request. The first one's starts at adoption,
 * in the same pass of the loop as the accept. */
static void arm(struct hconn *c)
{
    /* A common timeout: one queue for every connection instead of the
     * heap, so arming is O(1). */
    c->armed = true;
    evtimer_add(&c->deadline, c->h->request_tv);
}

static void disarm(struct hconn *c)
{
    if (c->armed)
        evtimer_del(&c->deadline);
    c->armed = false;
}

/* Every read of the connection: the first byte of a request starts its
 * deadline. */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct hconn *c = arg;
    DM_UNUSED(buf);
    if (info->n_added > 0 && !c->busy && !c->armed)
        arm(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct hconn *c = arg;
    struct dm_http *h = c->h;
    DM_UNUSED(fd);
    DM_UNUSED(what);

    c->armed = false;
    dm_metrics_inc(h->in->m, DM_M_HTTP_REQUEST_TIMEOUTS, 1);
    DM_LOG(DM_LOG_DEBUG, "msg=\"request timeout\" fd=%d", (int)c->fd);
    /* Nothing is being written (no request is being answered): the 408 is
     * the only thing on the wire. */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        dm_connlimit_answer(c->fd, 408, "request_timeout",
                            "the request did not arrive in time (http_request_timeout_ms)");
    /* Runs on_conn_close, which frees c (and this event: libevent does not
     * touch a non-persistent event after calling it). */
    evhttp_connection_free(c->evcon);
}

static void index_conn(struct dm_http *h, struct hconn *c, bool add)
{
    size_t fd = (size_t)c->fd;
    if (add && fd >= h->nbyfd) {
        size_t n = h->nbyfd > 0 ? h->nbyfd : 64;
        while (n <= fd)
            n *= 2;
        h->byfd = dm_realloc(h->byfd, n * sizeof(*h->byfd));
        memset(h->byfd + h->nbyfd, 0, (n - h->nbyfd) * sizeof(*h->byfd));
        h->nbyfd = n;
    }
    DM_ASSERT(fd < h->nbyfd && h->byfd[fd] == (add ? NULL : c));
    h->byfd[fd] = add ? c : NULL;
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct hconn *c = arg;
    struct dm_http *h = c->h;

    DM_ASSERT(c->evcon == evcon);
    /* evhttp_connection_reset_ drains the input after this: the callback
     * must be gone by then. */
    evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
    disarm(c);
    dm_connlimit_release(h->in->limits, &c->slot);
    index_conn(h, c, false);
    TAILQ_REMOVE(&h->conns, c, link);
    dm_metrics_gauge_add(h->in->m, DM_M_HTTP_CONNECTIONS, -1);
    free(c);
}

/* The request's connection, when it is one of ours (NULL for one evhttp
 * could not give us, in out-of-memory paths). */
static struct hconn *conn_of(struct dm_http *h, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon == NULL)
        return NULL;
    evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
    if (fd < 0 || (size_t)fd >= h->nbyfd || h->byfd[fd] == NULL || h->byfd[fd]->evcon != evcon)
        return NULL;
    return h->byfd[fd];
}

/* The answer is written; a next request on the connection has its
 * deadline from its first byte (already here when it was pipelined). */
static void on_answered(struct evhttp_request *req, void *arg)
{
    struct hconn *c = arg;
    DM_UNUSED(req);
    c->busy = false;
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        arm(c);
}

static void adopt(struct dm_http *h, struct hconn *c)
{
    struct bufferevent *bev = c->bev;
    bufferevent_data_cb readcb = NULL;
    void *cbarg = NULL;

    bufferevent_getcb(bev, &readcb, NULL, NULL, &cbarg);
    /* bufferevent_free clears the callbacks: evhttp gave the connection up
     * already (its own out-of-memory paths). Our reference kept bev. */
    if (readcb == NULL || cbarg == NULL) {
        bufferevent_decref(bev);
        free(c);
        return;
    }
    struct evhttp_connection *evcon = cbarg;
    DM_ASSERT(evhttp_connection_get_bufferevent(evcon) == bev &&
              evhttp_connection_get_server(evcon) == h->http);
    bufferevent_decref(bev); /* the connection holds it from here on */
    c->evcon = evcon;
    c->fd = bufferevent_getfd(bev);
    DM_ASSERT(c->fd >= 0);

    enum dm_connlimit_verdict v =
        dm_connlimit_acquire(h->in->limits, evhttp_connection_get_addr(evcon), &c->slot);
    if (v != DM_CONNLIMIT_OK) {
        dm_metrics_inc(h->in->m,
                       v == DM_CONNLIMIT_PER_IP ? DM_M_CONNECTIONS_REFUSED_PER_IP
                                                : DM_M_CONNECTIONS_REFUSED_MAX,
                       1);
        DM_LOG(DM_LOG_DEBUG, "msg=\"connection refused\" reason=%s", dm_connlimit_reason(v));
        dm_connlimit_answer(c->fd, 503, "too_many_connections",
                            "too many connections; retry later");
        free(c);
        evhttp_connection_free(evcon); /* no close callback of ours yet */
        return;
    }
    c->input_cb = evbuffer_add_cb(bufferevent_get_input(bev), on_input, c);
    DM_AN(c->input_cb);
    evtimer_assign(&c->deadline, h->in->base, on_deadline, c);
    arm(c);
    index_conn(h, c, true);
    TAILQ_INSERT_TAIL(&h->conns, c, link);
    evhttp_connection_set_closecb(evcon, on_conn_close, c);
    dm_metrics_gauge_add(h->in->m, DM_M_HTTP_CONNECTIONS, 1);
}

static void on_adopt(evutil_socket_t fd, short what, void *arg)
{
    struct dm_http *h = arg;
    struct hconn *c;
    DM_UNUSED(fd);
    DM_UNUSED(what);

    while ((c = TAILQ_FIRST(&h->pending)) != NULL) {
        TAILQ_REMOVE(&h->pending, c, link);
        adopt(h, c);
    }
}

/* evhttp's bevcb: the bufferevent of a connection it just accepted. The
 * same as evhttp makes without a bevcb (a socket bufferevent without
 * BEV_OPT_CLOSE_ON_FREE: evhttp closes the socket itself). */
static struct bufferevent *on_new_bev(struct event_base *base, void *arg)
{
    struct dm_http *h = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);

    if (bev == NULL)
        return NULL; /* evhttp tries to make one itself */
    struct hconn *c = dm_calloc(1, sizeof(*c));
    c->h = h;
    c->bev = bev;
    c->fd = -1;
    bufferevent_incref(bev);
    TAILQ_INSERT_TAIL(&h->pending, c, link);
    event_active(h->adopt, EV_TIMEOUT, 0);
    return bev;
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct dm_http *h = NULL;
    int e = EVUTIL_SOCKET_ERROR();

    pthread_mutex_lock(&registry.lock);
    for (size_t i = 0; i < DM_ARRAY_LEN(registry.servers) && h == NULL; i++) {
        if (registry.servers[i] != NULL && registry.servers[i]->http == arg)
            h = registry.servers[i];
    }
    pthread_mutex_unlock(&registry.lock);
    /* Out of descriptors: pause rather than spin on the readable listener. */
    if (h != NULL && h->accept_pause != NULL && dm_accept_pause_on_error(h->accept_pause, e)) {
        dm_metrics_inc(h->in->m, DM_M_ACCEPT_PAUSES, 1);
        return;
    }
    DM_UNUSED(l);
    DM_LOG(DM_LOG_WARN, "msg=\"accept failed\" err=\"%s\"", evutil_socket_error_to_string(e));
}

/* ---- routes ---- */

static void add_cors(struct dm_http *h, struct evhttp_request *req)
{
    const char *allowed = h->in->cfg->cors_origins;
    const char *origin = evhttp_find_header(evhttp_request_get_input_headers(req), "Origin");
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);

    if (origin == NULL || *allowed == '\0')
        return;
    if (strcmp(allowed, "*") != 0) {
        size_t olen = strlen(origin);
        const char *p = allowed;
        bool found = false;
        while (*p != '\0' && !found) {
            const char *end = strchr(p, ',');
            size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
            found = n == olen && strncmp(p, origin, n) == 0;
            p += n + (end != NULL);
        }
        if (!found)
            return;
    }
    evhttp_add_header(out, "Access-Control-Allow-Origin", origin);
    evhttp_add_header(out, "Vary", "Origin");
}

/* A GET /v1/rooms/{room} waiting for Redis. */
struct room_query {
    struct dm_request r;
    char room[DM_ROOM_MAX + 1];
};

static void on_room_online(int64_t online, void *arg)
{
    struct room_query *q = arg;
    size_t len;

    dm_request_done(&q->r);
    if (online < 0) {
        dm_request_unavailable(&q->r, "Redis did not answer; retry later");
    } else {
        int32_t partition =
            dm_room_partition(q->room, strlen(q->room), (int32_t)q->r.in->cfg->kafka_partitions);
        char *body = dm_msg_room_info(q->room, online, partition, &len);
        dm_request_json(&q->r, 200, body, len);
        free(body);
    }
    free(q);
}

static void get_room(const struct dm_request *r, const char *room)
{
    struct room_query *q = dm_calloc(1, sizeof(*q));
    q->r = *r;
    snprintf(q->room, sizeof(q->room), "%s", room);
    dm_request_wait(&q->r); /* before the call: the answer may come at once */
    dm_store_online(r->in->store, room, on_room_online, q);
}

static void get_health(const struct dm_request *r, bool liveness)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    bool kafka = dm_producer_ready(r->in->producer), redis = dm_store_ready(r->in->store);

    if (liveness || (kafka && redis))
        dm_request_json(r, 200, ok, sizeof(ok) - 1);
    else
        dm_request_error(r, 503, "not_ready",
                         !kafka && !redis ? "Kafka and Redis are not reachable"
                         : !kafka         ? "Kafka is not reachable"
                                          : "Redis is not reachable");
}

static void get_metrics(const struct dm_request *r)
{
    size_t len;
    char *text = dm_ingest_metrics(r->in, &len);
    dm_request_raw(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

/* A path under /v1/rooms/: "{room}[/{resource}[/{arg}]]". */
struct room_path {
    char room[DM_ROOM_MAX + 1];
    bool room_ok;         /* the room id is valid */
    const char *resource; /* "" when absent; points into the path */
    size_t resource_len;
    const char *arg; /* NULL when absent; NUL-terminated (the rest of the path) */
};

static bool parse_room_path(const char *path, struct room_path *rp)
{
    static const char prefix[] = "/v1/rooms/";
    size_t plen = sizeof(prefix) - 1;

    if (strncmp(path, prefix, plen) != 0)
        return false;
    const char *room = path + plen, *slash = strchr(room, '/');
    size_t rlen = slash != NULL ? (size_t)(slash - room) : strlen(room);
    rp->room_ok = dm_room_id_valid(room, rlen);
    if (rp->room_ok)
        memcpy(rp->room, room, rlen), rp->room[rlen] = '\0';
    rp->resource = "";
    rp->resource_len = 0;
    rp->arg = NULL;
    if (slash == NULL)
        return true;
    rp->resource = slash + 1;
    slash = strchr(rp->resource, '/');
    rp->resource_len = slash != NULL ? (size_t)(slash - rp->resource) : strlen(rp->resource);
    if (slash != NULL)
        rp->arg = slash + 1;
    return true;
}

static void not_allowed(const struct dm_request *r)
{
    dm_request_error(r, 405, "method_not_allowed", "method not allowed on this resource");
}

/* Handlers under /v1/rooms/{room}, one signature: arg is the path segment
 * after the resource (NULL when the route has none). */
typedef void (*room_handler)(const struct dm_request *r, const char *room, const char *arg);

static void room_info(const struct dm_request *r, const char *room, const char *arg)
{
    DM_UNUSED(arg);
    get_room(r, room);
}

static void history(const struct dm_request *r, const char *room, const char *arg)
{
    DM_UNUSED(arg);
    dm_comments_history(r, room);
}

static void post(const struct dm_request *r, const char *room, const char *arg)
{
    DM_UNUSED(arg);
    dm_comments_post(r, room);
}

static void mute(const struct dm_request *r, const char *room, const char *arg)
{
    DM_UNUSED(arg);
    dm_moderation_mute(r, room);
}

static void set_modes(const struct dm_request *r, const char *room, const char *arg)
{
    DM_UNUSED(arg);
    dm_moderation_set_modes(r, room);
}

#define M_GET (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)

/* The routes under /v1/rooms/{room}: resource, whether a further segment
 * follows it, the methods (HEAD with GET) and handler of each. */
static const struct room_route {
    const char *resource;
    bool with_arg;
    unsigned methods;
    enum dm_route route;
    room_handler fn;
} room_routes[] = {
    {"", false, M_GET, DM_ROUTE_ROOM, room_info},
    {"danmaku", false, M_GET, DM_ROUTE_HISTORY, history},
    {"danmaku", false, EVHTTP_REQ_POST, DM_ROUTE_POST, post},
    {"danmaku", true, EVHTTP_REQ_DELETE, DM_ROUTE_RETRACT, dm_comments_retract},
    {"mutes", false, EVHTTP_REQ_POST, DM_ROUTE_MUTES, mute},
    {"mutes", true, EVHTTP_REQ_DELETE, DM_ROUTE_MUTES, dm_moderation_unmute},
    {"modes", false, EVHTTP_REQ_PUT, DM_ROUTE_MODES, set_modes},
};

static bool is(const struct room_path *rp, const struct room_route *route)
{
    return rp->resource_len == strlen(route->resource) &&
           strncmp(rp->resource, route->resource, rp->resource_len) == 0 &&
           (route->with_arg ? rp->arg != NULL && *rp->arg != '\0' && strchr(rp->arg, '/') == NULL
                            : rp->arg == NULL);
}

/* Answers a request under /v1/rooms/{room}: 404 for an unknown resource,
 * 405 for a known one with another method, 400 for an invalid room. */
static void route_room(struct dm_request *r, enum evhttp_cmd_type method,
                       const struct room_path *rp)
{
    bool known = false;

    for (size_t i = 0; i < DM_ARRAY_LEN(room_routes); i++) {
        const struct room_route *route = &room_routes[i];
        if (!is(rp, route))
            continue;
        known = true;
        if ((route->methods & (unsigned)method) == 0)
            continue;
        r->route = route->route;
        if (!rp->room_ok)
            dm_request_error(r, 400, "invalid_room", "room must match [A-Za-z0-9_.:-]{1,64}");
        else
            route->fn(r, rp->room, rp->arg);
        return;
    }
    if (known)
        not_allowed(r);
    else
        dm_request_error(r, 404, "not_found", "no such resource");
}

/* A header name is a token (RFC 9110 §5.1): evhttp keeps whatever stood
 * before the colon, "Content-Length " included, which it then does not
 * take for Content-Length while a proxy in front may. */
static bool is_token(const char *s)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
              (ch != '\0' && strchr(tchar, ch) != NULL)))
            return false;
    }
    return true;
}

/* Headers a request may carry once at most: two of them are ambiguous
 * (which one a proxy in front used is anybody's guess). */
static const char *const singletons[] = {
    "Content-Length", "Transfer-Encoding", "Host",
    "Authorization",  "Content-Type",      "Idempotency-Key",
};

/* What evhttp lets through but this server must not serve: ambiguous
 * message framing (RFC 9112 §6) is how requests are smuggled past a proxy
 * that reads them otherwise. NULL, or why, with the status in *status (the
 * connection is closed after the answer, since where the next request
 * starts is unknown). evhttp itself already answers 400 for Content-Length
 * with Transfer-Encoding, a Content-Length that is no number, and
 * Transfer-Encoding other than chunked with a Content-Length. */
static const char *framing_error(struct evhttp_request *req, int *status)
{
    struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    unsigned seen[DM_ARRAY_LEN(singletons)] = {0};
    const char *length = NULL, *coding = NULL;
    struct evkeyval *h;

    *status = 400;
    TAILQ_FOREACH(h, headers, next) {
        if (!is_token(h->key))
            return "malformed header name";
        for (size_t i = 0; i < DM_ARRAY_LEN(singletons); i++) {
            if (strcasecmp(h->key, singletons[i]) == 0 && seen[i]++ > 0)
                return "a header that may appear once appears twice";
        }
        if (strcasecmp(h->key, "Content-Length") == 0)
            length = h->value;
        else if (strcasecmp(h->key, "Transfer-Encoding") == 0)
            coding = h->value;
    }
    if (length != NULL && (*length == '\0' || strspn(length, "0123456789") != strlen(length)))
        return "Content-Length must be digits only";
    if (coding != NULL && strcasecmp(coding, "chunked") != 0) {
        *status = 501;
        return "the only transfer coding understood is chunked";
    }
    if (length == NULL && coding == NULL &&
        (method == EVHTTP_REQ_POST || method == EVHTTP_REQ_PUT || method == EVHTTP_REQ_PATCH)) {
        *status = 411;
        return "a request body needs a Content-Length (or chunked coding)";
    }
    return NULL;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct dm_http *h = arg;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    struct dm_request r = {h->in, req, dm_mono_us(), DM_ROUTE_OTHER};
    bool get = method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD;
    struct room_path rp;

    DM_CHECK_OBJ(h, DM_HTTP_MAGIC);
    struct hconn *c = conn_of(h, req);
    if (c != NULL) {
        /* In full: no deadline while it is answered. */
        c->busy = true;
        disarm(c);
        evhttp_request_set_on_complete_cb(req, on_answered, c);
    }
    int status;
    const char *framing = framing_error(req, &status);
    if (framing != NULL) {
        dm_request_add_header(&r, "Connection", "close");
        dm_request_error(&r, status,
                         status == 411   ? "length_required"
                         : status == 501 ? "not_implemented"
                                         : "bad_request",
                         framing);
        return;
    }
    if (h->draining) {
        dm_request_add_header(&r, "Connection", "close");
        dm_request_unavailable(&r, "this node is shutting down; retry on another");
        return;
    }
    if (path == NULL) {
        dm_request_error(&r, 400, "bad_request", "malformed request target");
        return;
    }
    add_cors(h, req);
    if (method == EVHTTP_REQ_OPTIONS) {
        dm_request_add_header(&r, "Access-Control-Allow-Methods",
                              "GET, POST, PUT, DELETE, OPTIONS");
        dm_request_add_header(&r, "Access-Control-Allow-Headers",
                              "Authorization, Content-Type, Idempotency-Key");
        dm_request_add_header(&r, "Access-Control-Max-Age", "600");
        dm_request_raw(&r, 204, NULL, NULL, 0);
    } else if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
        r.route = DM_ROUTE_HEALTH;
        if (get)
            get_health(&r, path[1] == 'h');
        else
            not_allowed(&r);
    } else if (strcmp(path, "/metrics") == 0) {
        r.route = DM_ROUTE_METRICS;
        if (get)
            get_metrics(&r);
        else
            not_allowed(&r);
    } else if (parse_room_path(path, &rp)) {
        route_room(&r, method, &rp);
    } else {
        dm_request_error(&r, 404, "not_found", "no such resource");
    }
}

struct dm_http *dm_http_new(struct dm_ingest *in, int listen_fd, char err[DM_ERRLEN])
{
    struct dm_http *h = dm_calloc(1, sizeof(*h));
    const struct dm_config *cfg = in->cfg;

    h->magic = DM_HTTP_MAGIC;
    h->in = in;
    TAILQ_INIT(&h->pending);
    TAILQ_INIT(&h->conns);
    struct timeval request_tv = dm_timeval_ms(cfg->http_request_timeout_ms);
    h->request_tv = event_base_init_common_timeout(in->base, &request_tv);
    h->adopt = event_new(in->base, -1, 0, on_adopt, h);
    h->http = evhttp_new(in->base);
    if (h->http == NULL || h->adopt == NULL || h->request_tv == NULL) {
        close(listen_fd);
        snprintf(err, DM_ERRLEN, "evhttp_new failed");
        goto fail;
    }
    registry_set(h, true);
    evhttp_set_gencb(h->http, on_request, h);
    evhttp_set_bevcb(h->http, on_new_bev, h);
    evhttp_set_max_body_size(h->http, (ev_ssize_t)cfg->max_body * HTTP_HARD_BODY_FACTOR);
    evhttp_set_max_headers_size(h->http, 16 * 1024);
    evhttp_set_timeout(h->http, (int)((cfg->http_timeout_ms + 999) / 1000));
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_PATCH);

    h->bound = evhttp_accept_socket_with_handle(h->http, listen_fd);
    if (h->bound == NULL) {
        close(listen_fd);
        snprintf(err, DM_ERRLEN, "evhttp cannot accept on the listening socket");
        goto fail;
    }
    struct evconnlistener *l = evhttp_bound_socket_get_listener(h->bound);
    evconnlistener_set_error_cb(l, on_accept_error);
    h->accept_pause = dm_accept_pause_new(in->base, l, err);
    if (h->accept_pause == NULL)
        goto fail;
    return h;

fail:
    dm_http_free(h);
    return NULL;
}

void dm_http_start_draining(struct dm_http *h)
{
    h->draining = true;
    /* A pending resume must not touch the listener freed below. */
    dm_accept_pause_free(h->accept_pause);
    h->accept_pause = NULL;
    if (h->bound != NULL) {
        evhttp_del_accept_socket(h->http, h->bound);
        h->bound = NULL;
    }
}

void dm_http_free(struct dm_http *h)
{
    if (h == NULL)
        return;
    DM_CHECK_OBJ(h, DM_HTTP_MAGIC);
    registry_set(h, false);
    dm_accept_pause_free(h->accept_pause);
    /* Frees every connection; their close callbacks free ours. */
    if (h->http != NULL)
        evhttp_free(h->http);
    DM_ASSERT(TAILQ_EMPTY(&h->conns));
    /* Accepted but never adopted: evhttp freed them, our reference kept
     * their bufferevents. */
    struct hconn *c;
    while ((c = TAILQ_FIRST(&h->pending)) != NULL) {
        TAILQ_REMOVE(&h->pending, c, link);
        bufferevent_decref(c->bev);
        free(c);
    }
    if (h->adopt != NULL)
        event_free(h->adopt);
    free(h->byfd);
    h->magic = 0;
    free(h);
}
