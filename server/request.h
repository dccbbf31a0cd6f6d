/* One ingest HTTP request being answered: its start (for the latency
 * histogram), the node's wait count while it waits for Kafka or Redis,
 * authentication, and every kind of answer. Every answer goes out through
 * here, so every status is counted and timed, and every error is
 * {"error","message"} JSON. */
#ifndef DM_SERVER_REQUEST_H
#define DM_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evhttp_request;
struct dm_ingest;
struct dm_jwt_claims;

/* Which route a request took, for the metrics. */
enum dm_route {
    DM_ROUTE_OTHER, /* unknown paths, OPTIONS, refusals before routing */
    DM_ROUTE_POST,
    DM_ROUTE_RETRACT,
    DM_ROUTE_HISTORY,
    DM_ROUTE_ROOM,
    DM_ROUTE_MUTES,
    DM_ROUTE_MODES,
    DM_ROUTE_HEALTH,
    DM_ROUTE_METRICS,
};

/* Embedded in whatever waits for an answer (copied by value). */
struct dm_request {
    struct dm_ingest *in;       /* borrowed */
    struct evhttp_request *req; /* borrowed: evhttp frees it after the answer */
    int64_t start_us;           /* monotonic */
    enum dm_route route;        /* set by the router before the handler runs */
};

/* Marks r as waiting (Kafka or Redis): the node drains until none is. Every
 * dm_request_wait is ended by exactly one answer through dm_request_done. */
void dm_request_wait(const struct dm_request *r);
void dm_request_done(const struct dm_request *r);

/* Checks "Authorization: Bearer <jwt>" and fills claims (release with
 * dm_jwt_claims_fini); on failure answers 401 itself and returns -1. */
int dm_request_authenticate(const struct dm_request *r, struct dm_jwt_claims *claims);

/* The request's body when it is JSON within max_body: sets *body (borrowed,
 * valid until the answer; not NUL-terminated) and *len. Otherwise answers
 * 415 (Content-Type other than application/json) or 413 itself and returns
 * false. */
bool dm_request_json_body(const struct dm_request *r, const char **body, size_t *len);

/* A request header, or NULL. */
const char *dm_request_header(const struct dm_request *r, const char *name);

/* Adds an answer header (before the answer). */
void dm_request_add_header(const struct dm_request *r, const char *name, const char *value);

/* Answers status with body (a JSON text, copied). */
void dm_request_json(const struct dm_request *r, int status, const char *body, size_t len);

/* Answers status with {"error":code,"message":message}. */
void dm_request_error(const struct dm_request *r, int status, const char *code,
                      const char *message);

/* Answers 429 or 503 with Retry-After (whole seconds, at least 1, rounded
 * up from retry_ms). */
void dm_request_retry_later(const struct dm_request *r, int status, int64_t retry_ms,
                            const char *code, const char *message);

/* 503 with the configured Retry-After. */
void dm_request_unavailable(const struct dm_request *r, const char *message);

/* Answers status with body as it is (content type given), or without a body
 * when body is NULL. */
void dm_request_raw(const struct dm_request *r, int status, const char *content_type,
                    const char *body, size_t len);

#endif
