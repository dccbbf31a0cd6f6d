/* Ingest HTTP routes. Every error is {"error","message"} JSON; a comment is
 * answered 201 only from its Kafka delivery report. */
#include "server/http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
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
#include "server/ingest.h"
#include "server/producer.h"
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
    size_t pending;       /* requests waiting for Kafka or Redis */
    int64_t answering_us; /* start of the request being answered (for its latency) */
};

/* A request waiting for its delivery report. */
struct pending {
    struct dm_ingest *in;
    struct evhttp_request *req;
    int64_t start_us;
    char id[DM_ID_LEN + 1];
    char room[DM_ROOM_MAX + 1];
    int64_t ts;
    char *value; /* the record as published: into the history once acknowledged */
    size_t vlen;
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

/* Every answer goes out here (or through count_answer), so every status is
 * counted and timed. */
static void count_answer(struct dm_ingest *in, int status)
{
    dm_metrics_inc(in->m, dm_metrics_http_status(status), 1);
    dm_metrics_observe(in->m, DM_M_HTTP_REQUEST_LATENCY, dm_mono_us() - in->http->answering_us);
}

static void send_json(struct dm_ingest *in, struct evhttp_request *req, int status,
                      const char *status_text, const char *body, size_t len)
{
    count_answer(in, status);
    struct evbuffer *buf = evbuffer_new();
    DM_AN(buf);
    evbuffer_add(buf, body, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, status_text, buf);
    evbuffer_free(buf);
}

static void send_error(struct dm_ingest *in, struct evhttp_request *req, int status,
                       const char *status_text, const char *code, const char *message)
{
    size_t len;
    char *body = dm_msg_http_error(code, message, &len);
    send_json(in, req, status, status_text, body, len);
    free(body);
}

static void send_unavailable(struct dm_ingest *in, struct evhttp_request *req, const char *msg)
{
    char retry[16];
    snprintf(retry, sizeof(retry), "%lld", (long long)in->cfg->retry_after_s);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", retry);
    send_error(in, req, 503, "Service Unavailable", "unavailable", msg);
}

static void on_delivered(const char *err, int32_t partition, int64_t offset, void *arg)
{
    struct pending *p = arg;
    size_t len;

    p->in->http->pending--;
    p->in->http->answering_us = p->start_us;
    if (err != NULL) {
        send_unavailable(p->in, p->req, "Kafka did not acknowledge the comment; retry later");
    } else {
        char *body = dm_msg_accepted(p->id, p->room, partition, offset, p->ts, &len);
        send_json(p->in, p->req, 201, "Created", body, len);
        free(body);
        dm_store_history_append(p->in->store, p->room, offset, p->value, p->vlen);
    }
    free(p->value);
    free(p);
}

/* Checks "Authorization: Bearer <jwt>"; answers 401 itself on failure. */
static int authenticate(struct dm_ingest *in, struct evhttp_request *req,
                        struct dm_jwt_claims *claims)
{
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    const char *reason = "missing bearer token";

    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *tok = auth + 7;
        while (*tok == ' ')
            tok++;
        if (dm_jwt_verify(in->verifier, tok, strlen(tok), dm_now_ms() / 1000, claims, &reason) == 0)
            return 0;
    }
    DM_LOG(DM_LOG_DEBUG, "msg=\"token rejected\" reason=%s", reason);
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                      "Bearer error=\"invalid_token\"");
    send_error(in, req, 401, "Unauthorized", "unauthorized", reason);
    return -1;
}

static void post_danmaku(struct dm_http *h, struct evhttp_request *req, const char *room)
{
    struct dm_ingest *in = h->in;
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    const char *ctype = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    size_t blen = evbuffer_get_length(body), vlen;
    struct dm_jwt_claims claims;
    struct dm_comment c;
    char msg[DM_ERRLEN];

    if (authenticate(in, req, &claims) < 0)
        return;
    if (!dm_jwt_claims_allow_room(&claims, room)) {
        send_error(in, req, 403, "Forbidden", "forbidden", "the token does not allow this room");
        goto out_claims;
    }
    if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0 ||
        (ctype[16] != '\0' && ctype[16] != ';' && ctype[16] != ' ')) {
        send_error(in, req, 415, "Unsupported Media Type", "unsupported_media_type",
                   "Content-Type must be application/json");
        goto out_claims;
    }
    if (blen > (size_t)in->cfg->max_body) {
        send_error(in, req, 413, "Payload Too Large", "too_large", "request body is too large");
        goto out_claims;
    }
    if (dm_comment_parse_request((const char *)evbuffer_pullup(body, -1), blen,
                                 (size_t)in->cfg->max_text_chars, &c, msg) < 0) {
        send_error(in, req, 400, "Bad Request", "invalid_body", msg);
        goto out_claims;
    }

    c.ts = dm_now_ms();
    dm_comment_new_id(&c, c.ts);
    snprintf(c.room, sizeof(c.room), "%s", room);
    snprintf(c.uid, sizeof(c.uid), "%s", claims.sub);
    snprintf(c.name, sizeof(c.name), "%s", claims.name[0] != '\0' ? claims.name : claims.sub);
    c.prio = claims.prio;

    char *value = dm_comment_encode(&c, &vlen);
    size_t rlen = strlen(room);
    int32_t partition = dm_room_partition(room, rlen, (int32_t)in->cfg->kafka_partitions);
    struct pending *p = dm_calloc(1, sizeof(*p));
    p->in = in;
    p->req = req;
    p->start_us = h->answering_us;
    memcpy(p->id, c.id, sizeof(p->id));
    memcpy(p->room, c.room, sizeof(p->room));
    p->ts = c.ts;
    p->value = value;
    p->vlen = vlen;
    if (dm_producer_send(in->producer, partition, room, rlen, value, vlen, on_delivered, p) < 0) {
        free(p->value);
        free(p);
        send_unavailable(in, req, "the Kafka queue is full or unavailable; retry later");
    } else {
        h->pending++;
    }
    dm_comment_fini(&c);
out_claims:
    dm_jwt_claims_fini(&claims);
}

/* A GET /v1/rooms/{room} waiting for Redis. */
struct room_query {
    struct dm_ingest *in;
    struct evhttp_request *req;
    int64_t start_us;
    char room[DM_ROOM_MAX + 1];
};

static void on_room_online(int64_t online, void *arg)
{
    struct room_query *q = arg;
    size_t len;

    q->in->http->pending--;
    q->in->http->answering_us = q->start_us;
    if (online < 0) {
        send_unavailable(q->in, q->req, "Redis did not answer; retry later");
    } else {
        int32_t partition =
            dm_room_partition(q->room, strlen(q->room), (int32_t)q->in->cfg->kafka_partitions);
        char *body = dm_msg_room_info(q->room, online, partition, &len);
        send_json(q->in, q->req, 200, "OK", body, len);
        free(body);
    }
    free(q);
}

static void get_room(struct dm_http *h, struct evhttp_request *req, const char *room)
{
    struct room_query *q = dm_calloc(1, sizeof(*q));
    q->in = h->in;
    q->req = req;
    q->start_us = h->answering_us;
    snprintf(q->room, sizeof(q->room), "%s", room);
    h->pending++; /* before the call: the answer may come at once */
    dm_store_online(h->in->store, room, on_room_online, q);
}

#define HISTORY_DEFAULT_LIMIT 50

static void on_history(const struct dm_history_entry *e, size_t n, void *arg)
{
    struct room_query *q = arg;
    size_t len;

    q->in->http->pending--;
    q->in->http->answering_us = q->start_us;
    if (n == (size_t)-1) {
        send_unavailable(q->in, q->req, "Redis did not answer; retry later");
    } else {
        int32_t partition =
            dm_room_partition(q->room, strlen(q->room), (int32_t)q->in->cfg->kafka_partitions);
        char *body = dm_msg_history(q->room, partition, e, n, &len);
        send_json(q->in, q->req, 200, "OK", body, len);
        free(body);
    }
    free(q);
}

/* A query parameter as an integer in [min, max]; def when absent. */
static bool query_int(const struct evkeyvalq *params, const char *name, int64_t min, int64_t max,
                      int64_t def, int64_t *out)
{
    const char *v = evhttp_find_header(params, name);
    char *end;

    *out = def;
    if (v == NULL)
        return true;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno != 0 || x < min || x > max)
        return false;
    *out = x;
    return true;
}

/* GET /v1/rooms/{room}/danmaku?after=<offset>&limit=<n>: the comments after
 * offset, oldest first, or the latest `limit` without `after`. */
static void get_history(struct dm_http *h, struct evhttp_request *req, const char *room)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *query = evhttp_uri_get_query(uri);
    struct evkeyvalq params;
    int64_t after, limit;
    int64_t max = h->in->cfg->history_max > 0 ? h->in->cfg->history_max : 1;

    TAILQ_INIT(&params);
    if ((query != NULL && evhttp_parse_query_str(query, &params) < 0) ||
        !query_int(&params, "after", 0, INT64_MAX, -1, &after) ||
        !query_int(&params, "limit", 1, max,
                   HISTORY_DEFAULT_LIMIT < max ? HISTORY_DEFAULT_LIMIT : max, &limit)) {
        evhttp_clear_headers(&params);
        send_error(h->in, req, 400, "Bad Request", "invalid_query",
                   "after must be an offset >= 0 and limit 1..history_max");
        return;
    }
    evhttp_clear_headers(&params);
    struct room_query *q = dm_calloc(1, sizeof(*q));
    q->in = h->in;
    q->req = req;
    q->start_us = h->answering_us;
    snprintf(q->room, sizeof(q->room), "%s", room);
    h->pending++; /* before the call: the answer may come at once */
    dm_store_history(h->in->store, room, after, (size_t)limit, on_history, q);
}

static void get_health(struct dm_ingest *in, struct evhttp_request *req, bool liveness)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    bool kafka = dm_producer_ready(in->producer), redis = dm_store_ready(in->store);

    if (liveness || (kafka && redis))
        send_json(in, req, 200, "OK", ok, sizeof(ok) - 1);
    else
        send_error(in, req, 503, "Service Unavailable", "not_ready",
                   !kafka && !redis ? "Kafka and Redis are not reachable"
                   : !kafka         ? "Kafka is not reachable"
                                    : "Redis is not reachable");
}

/* Splits "/v1/rooms/{room}/danmaku" into the room; false when path differs. */
static bool match_room_route(const char *path, const char *suffix, char room[DM_ROOM_MAX + 1],
                             bool *room_ok)
{
    static const char prefix[] = "/v1/rooms/";
    size_t plen = sizeof(prefix) - 1, slen = strlen(suffix);

    if (strncmp(path, prefix, plen) != 0)
        return false;
    const char *r = path + plen;
    const char *end = strchr(r, '/');
    size_t rlen = end != NULL ? (size_t)(end - r) : strlen(r);
    if (end == NULL ? slen != 0 : strcmp(end, suffix) != 0)
        return false;
    *room_ok = dm_room_id_valid(r, rlen);
    if (*room_ok)
        memcpy(room, r, rlen), room[rlen] = '\0';
    return true;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct dm_http *h = arg;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    char room[DM_ROOM_MAX + 1];
    bool room_ok;

    DM_CHECK_OBJ(h, DM_HTTP_MAGIC);
    h->answering_us = dm_mono_us();
    if (h->draining) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        send_unavailable(h->in, req, "this node is shutting down; retry on another");
        return;
    }
    if (path == NULL) {
        send_error(h->in, req, 400, "Bad Request", "bad_request", "malformed request target");
        return;
    }
    add_cors(h, req);
    if (method == EVHTTP_REQ_OPTIONS) {
        struct evkeyvalq *out = evhttp_request_get_output_headers(req);
        evhttp_add_header(out, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
        evhttp_add_header(out, "Access-Control-Allow-Headers",
                          "Authorization, Content-Type, Idempotency-Key");
        evhttp_add_header(out, "Access-Control-Max-Age", "600");
        count_answer(h->in, 204);
        evhttp_send_reply(req, 204, "No Content", NULL);
        return;
    }
    if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
        if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD)
            goto not_allowed;
        get_health(h->in, req, path[1] == 'h');
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD)
            goto not_allowed;
        size_t len;
        char *text = dm_ingest_metrics(h->in, &len);
        struct evbuffer *buf = evbuffer_new();
        DM_AN(buf);
        evbuffer_add(buf, text, len);
        free(text);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/plain; version=0.0.4; charset=utf-8");
        count_answer(h->in, 200);
        evhttp_send_reply(req, 200, "OK", buf);
        evbuffer_free(buf);
        return;
    }
    if (match_room_route(path, "", room, &room_ok)) {
        if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD)
            goto not_allowed;
        if (!room_ok)
            goto invalid_room;
        get_room(h, req, room);
        return;
    }
    if (match_room_route(path, "/danmaku", room, &room_ok)) {
        if (method != EVHTTP_REQ_POST && method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD)
            goto not_allowed;
        if (!room_ok)
            goto invalid_room;
        if (method == EVHTTP_REQ_POST)
            post_danmaku(h, req, room);
        else
            get_history(h, req, room);
        return;
    }
    send_error(h->in, req, 404, "Not Found", "not_found", "no such resource");
    return;

invalid_room:
    send_error(h->in, req, 400, "Bad Request", "invalid_room",
               "room must match [A-Za-z0-9_.:-]{1,64}");
    return;

not_allowed:
    send_error(h->in, req, 405, "Method Not Allowed", "method_not_allowed",
               "method not allowed on this resource");
}

struct dm_http *dm_http_new(struct dm_ingest *in, char err[DM_ERRLEN])
{
    struct dm_http *h = dm_calloc(1, sizeof(*h));
    const struct dm_config *cfg = in->cfg;
    int fd;

    h->magic = DM_HTTP_MAGIC;
    h->in = in;
    h->http = evhttp_new(in->base);
    if (h->http == NULL) {
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

    fd = dm_net_listen(cfg->listen_host, (int)cfg->http_port, 1024, false, err);
    if (fd < 0)
        goto fail;
    h->bound = evhttp_accept_socket_with_handle(h->http, fd);
    if (h->bound == NULL) {
        close(fd);
        snprintf(err, DM_ERRLEN, "evhttp cannot accept on the listening socket");
        goto fail;
    }
    int port = dm_net_bound_port(fd);
    DM_LOG(DM_LOG_INFO, "msg=\"listening\" addr=%s port=%d", cfg->listen_host, port);
    if (*cfg->port_file != '\0' && dm_net_write_port_file(cfg->port_file, port, err) < 0)
        goto fail;
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

size_t dm_http_pending(const struct dm_http *h)
{
    return h->pending;
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
