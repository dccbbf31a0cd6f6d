/* Ingest HTTP server: listener, routes, CORS, health, metrics and room info.
 * The comment routes live in comments.c; every answer goes through
 * request.c. */
#include "server/http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/check.h"
#include "common/config.h"
#include "common/hash.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/net.h"
#include "common/proto.h"
#include "server/comments.h"
#include "server/ingest.h"
#include "server/moderation.h"
#include "server/producer.h"
#include "server/request.h"
#include "server/store.h"

#define DM_HTTP_MAGIC 0x68747470u

/* evhttp's own cap, far above max_body so that we answer 413 in JSON. */
#define HTTP_HARD_BODY_LIMIT (1024 * 1024 + 1)

struct dm_http {
    unsigned magic;
    struct dm_ingest *in;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    bool draining;
};

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
    h->http = evhttp_new(in->base);
    if (h->http == NULL) {
        close(listen_fd);
        snprintf(err, DM_ERRLEN, "evhttp_new failed");
        goto fail;
    }
    evhttp_set_gencb(h->http, on_request, h);
    evhttp_set_max_body_size(h->http, HTTP_HARD_BODY_LIMIT);
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
    return h;

fail:
    dm_http_free(h);
    return NULL;
}

void dm_http_start_draining(struct dm_http *h)
{
    h->draining = true;
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
    if (h->http != NULL)
        evhttp_free(h->http);
    h->magic = 0;
    free(h);
}
