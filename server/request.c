/* Ingest request answers. */
#include "server/request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "common/check.h"
#include "common/config.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/proto.h"
#include "common/ws.h"
#include "server/ingest.h"

void dm_request_wait(const struct dm_request *r)
{
    r->in->waiting++;
}

void dm_request_done(const struct dm_request *r)
{
    DM_ASSERT(r->in->waiting > 0);
    r->in->waiting--;
}

const char *dm_request_header(const struct dm_request *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

void dm_request_add_header(const struct dm_request *r, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

void dm_request_raw(const struct dm_request *r, int status, const char *content_type,
                    const char *body, size_t len)
{
    static const enum dm_metric by_route[] = {
        [DM_ROUTE_OTHER] = DM_M_HTTP_ROUTE_OTHER,     [DM_ROUTE_POST] = DM_M_HTTP_ROUTE_POST,
        [DM_ROUTE_RETRACT] = DM_M_HTTP_ROUTE_RETRACT, [DM_ROUTE_HISTORY] = DM_M_HTTP_ROUTE_HISTORY,
        [DM_ROUTE_ROOM] = DM_M_HTTP_ROUTE_ROOM,       [DM_ROUTE_MUTES] = DM_M_HTTP_ROUTE_MUTES,
        [DM_ROUTE_MODES] = DM_M_HTTP_ROUTE_MODES,     [DM_ROUTE_HEALTH] = DM_M_HTTP_ROUTE_HEALTH,
        [DM_ROUTE_METRICS] = DM_M_HTTP_ROUTE_METRICS,
    };
    dm_metrics_inc(r->in->m, dm_metrics_http_status(status), 1);
    dm_metrics_inc(r->in->m, by_route[r->route], 1);
    dm_metrics_observe(r->in->m, DM_M_HTTP_REQUEST_LATENCY, dm_mono_us() - r->start_us);
    if (body == NULL) {
        evhttp_send_reply(r->req, status, dm_http_reason(status), NULL);
        return;
    }
    struct evbuffer *buf = evbuffer_new();
    DM_AN(buf);
    evbuffer_add(buf, body, len);
    dm_request_add_header(r, "Content-Type", content_type);
    evhttp_send_reply(r->req, status, dm_http_reason(status), buf);
    evbuffer_free(buf);
}

void dm_request_json(const struct dm_request *r, int status, const char *body, size_t len)
{
    dm_request_raw(r, status, "application/json", body, len);
}

void dm_request_error(const struct dm_request *r, int status, const char *code, const char *message)
{
    size_t len;
    char *body = dm_msg_http_error(code, message, &len);
    dm_request_json(r, status, body, len);
    free(body);
}

void dm_request_retry_later(const struct dm_request *r, int status, int64_t retry_ms,
                            const char *code, const char *message)
{
    char retry[24];
    int64_t s = (retry_ms + 999) / 1000;
    snprintf(retry, sizeof(retry), "%lld", (long long)(s >= 1 ? s : 1));
    dm_request_add_header(r, "Retry-After", retry);
    dm_request_error(r, status, code, message);
}

void dm_request_unavailable(const struct dm_request *r, const char *message)
{
    dm_request_retry_later(r, 503, r->in->cfg->retry_after_s * 1000, "unavailable", message);
}

bool dm_request_json_body(const struct dm_request *r, const char **body, size_t *len)
{
    const char *ctype = dm_request_header(r, "Content-Type");
    struct evbuffer *buf = evhttp_request_get_input_buffer(r->req);

    /* "application/json", alone or with parameters ("; charset=utf-8"). */
    if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0 ||
        (ctype[16] != '\0' && ctype[16] != ';' && ctype[16] != ' ')) {
        dm_request_error(r, 415, "unsupported_media_type", "Content-Type must be application/json");
        return false;
    }
    *len = evbuffer_get_length(buf);
    if (*len > (size_t)r->in->cfg->max_body) {
        dm_request_error(r, 413, "too_large", "request body is too large");
        return false;
    }
    *body = (const char *)evbuffer_pullup(buf, -1);
    return true;
}

int dm_request_authenticate(const struct dm_request *r, struct dm_jwt_claims *claims)
{
    const char *auth = dm_request_header(r, "Authorization");
    const char *reason = "missing bearer token";

    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *tok = auth + 7;
        while (*tok == ' ')
            tok++;
        if (dm_jwt_verify(r->in->verifier, tok, strlen(tok), dm_now_ms() / 1000, claims, &reason) ==
            0)
            return 0;
    }
    DM_LOG(DM_LOG_DEBUG, "msg=\"token rejected\" reason=%s", reason);
    dm_request_add_header(r, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
    dm_request_error(r, 401, "unauthorized", reason);
    return -1;
}
