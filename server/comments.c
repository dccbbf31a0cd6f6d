/* Publishing comments and retracts, and reading history. */
#include "server/comments.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/blocklist.h"
#include "common/check.h"
#include "common/config.h"
#include "common/hash.h"
#include "common/history.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/proto.h"
#include "server/idempotency.h"
#include "server/ingest.h"
#include "server/producer.h"
#include "server/ratelimit.h"
#include "server/recovery.h"
#include "server/request.h"
#include "server/store.h"

#define HISTORY_DEFAULT_LIMIT 50
/* Beyond the delivery timeout, for the broker to have handled the last
 * produce request of an attempt that timed out or whose node died. */
#define PUBLISH_MARGIN_MS 5000

/* A comment or retract on its way to Kafka: through the idempotency claim
 * when the request has a key (so a retry is answered before it could count
 * as a duplicate), then the rate limiter (comments), then the producer. */
struct publish {
    struct dm_request r;
    bool retract;
    bool exempt; /* moderator or admin: no rate limits */
    char *text;  /* the comment's text, for unique-chat; owned */
    char room[DM_ROOM_MAX + 1];
    char id[DM_ID_LEN + 1]; /* the comment's, or the one retracted */
    int64_t ts;
    char *value; /* the record, owned */
    size_t vlen;
    /* Idempotency-Key, when given */
    bool idem;
    char uid[DM_JWT_MAX_SUB + 1];
    char key[DM_IDEM_KEY_MAX + 1];
    uint64_t fp;
    char owner[DM_IDEM_OWNER_LEN + 1]; /* this request's token in the claim */
    struct dm_idem_attempt orphan;     /* DM_IDEM_ORPHANED: the dead attempt */
    char *answer;                      /* the 201 body, owned, once accepted */
    size_t answer_len;
    bool replayed; /* the answer is an earlier attempt's */
};

static void publish_free(struct publish *p)
{
    free(p->answer);
    free(p->value);
    free(p->text);
    free(p);
}

/* Where p's Idempotency-Key claim lives. */
static struct dm_idem_ref idem_ref(const struct publish *p)
{
    return (struct dm_idem_ref){dm_store_redis(p->r.in->store),
                                p->r.in->cfg->redis_prefix,
                                p->uid,
                                p->key,
                                p->fp,
                                p->owner};
}

/* The partition p's record goes to: its room's. */
static int32_t room_partition(const struct publish *p)
{
    return dm_room_partition(p->room, strlen(p->room), (int32_t)p->r.in->cfg->kafka_partitions);
}

/* The record p publishes, as its claim names it. */
static struct dm_idem_attempt my_attempt(const struct publish *p)
{
    struct dm_idem_attempt a;
    memcpy(a.id, p->id, sizeof(a.id));
    a.partition = room_partition(p);
    a.ts = p->ts;
    return a;
}

/* Answers that p's record is in Kafka, and frees p. */
static void give_answer(struct publish *p)
{
    if (p->replayed)
        dm_request_add_header(&p->r, "Idempotent-Replayed", "true");
    dm_request_json(&p->r, p->retract ? 200 : 201, p->answer, p->answer_len);
    publish_free(p);
}

static void on_answer_stored(bool ok, void *arg)
{
    struct publish *p = arg;

    DM_UNUSED(ok); /* not stored: a retry recovers it from Kafka */
    dm_request_done(&p->r);
    give_answer(p);
}

/* Answers that p's record is in Kafka at (partition, offset); takes p. A
 * keyed request's answer is stored first, so that a retry right after the
 * 201 finds it rather than the claim. */
static void answer_accepted(struct publish *p, const char *id, int32_t partition, int64_t offset,
                            int64_t ts)
{
    struct dm_ingest *in = p->r.in;

    p->answer = dm_msg_accepted(id, p->room, partition, offset, ts, &p->answer_len);
    if (!p->idem) {
        give_answer(p);
        return;
    }
    struct dm_idem_ref ref = idem_ref(p);
    dm_request_wait(&p->r);
    dm_idem_finish(&ref, p->answer, p->answer_len, in->cfg->idempotency_ttl_ms, on_answer_stored,
                   p);
}

static void on_delivered(const char *err, bool maybe_written, int32_t partition, int64_t offset,
                         void *arg)
{
    struct publish *p = arg;
    struct dm_ingest *in = p->r.in;

    dm_request_done(&p->r);
    if (err != NULL) {
        /* A retry may publish again at once only if this attempt wrote
         * nothing. One that may have been written keeps its claim: a retry
         * past the claim's deadline reads Kafka back to find out, like
         * after a node's death. */
        struct dm_idem_ref ref = idem_ref(p);
        if (p->idem && !maybe_written)
            dm_idem_abandon(&ref);
        dm_request_unavailable(&p->r, "Kafka did not acknowledge it; retry later");
        publish_free(p);
        return;
    }
    /* The history follows the acknowledged stream (fire and forget). */
    if (p->retract)
        dm_store_history_remove(in->store, p->room, p->id);
    else
        dm_store_history_append(in->store, p->room, offset, p->value, p->vlen);
    answer_accepted(p, p->id, partition, offset, p->ts);
}

/* Hands p to the producer; it answers when Kafka does. */
static void publish(struct publish *p)
{
    struct dm_ingest *in = p->r.in;

    if (dm_producer_send(in->producer, room_partition(p), p->room, strlen(p->room), p->value,
                         p->vlen, on_delivered, p) < 0) {
        struct dm_idem_ref ref = idem_ref(p);
        if (p->idem)
            dm_idem_abandon(&ref);
        dm_request_unavailable(&p->r, "the Kafka queue is full or unavailable; retry later");
        publish_free(p);
        return;
    }
    dm_request_wait(&p->r);
}

/* The answer to a refusal by the rate limiter. */
static void refuse(const struct publish *p, const struct dm_ratelimit_result *res)
{
    switch (res->verdict) {
    case DM_RATELIMIT_USER_RATE:
        dm_request_retry_later(&p->r, 429, res->retry_after_ms, "rate_limited",
                               "too many comments from this user; retry later");
        break;
    case DM_RATELIMIT_ROOM_RATE:
        dm_request_retry_later(&p->r, 429, res->retry_after_ms, "rate_limited",
                               "too many comments in this room; retry later");
        break;
    case DM_RATELIMIT_SLOW_MODE:
        dm_request_retry_later(&p->r, 429, res->retry_after_ms, "slow_mode",
                               "this room is in slow mode; retry later");
        break;
    case DM_RATELIMIT_DUPLICATE:
        dm_request_retry_later(&p->r, 429, res->retry_after_ms, "duplicate",
                               "the same comment was just sent to this room");
        break;
    case DM_RATELIMIT_MUTED:
        dm_request_error(&p->r, 403, "muted", "you are muted in this room");
        break;
    default:
        DM_PANIC("refusing an admitted comment");
    }
}

static void on_limited(const struct dm_ratelimit_result *res, void *arg)
{
    struct publish *p = arg;

    dm_request_done(&p->r);
    if (res->verdict == DM_RATELIMIT_ADMIT) {
        publish(p);
        return;
    }
    struct dm_idem_ref ref = idem_ref(p);
    if (p->idem)
        dm_idem_abandon(&ref);
    refuse(p, res);
    publish_free(p);
}

/* Comments go through the rate limiter; retracts (moderators only) do not. */
static void admit(struct publish *p)
{
    if (p->retract || p->exempt) {
        publish(p);
        return;
    }
    struct dm_ratelimit_req req = {p->room, p->uid, p->text, strlen(p->text), false};
    dm_request_wait(&p->r);
    dm_ratelimit_check(p->r.in->ratelimit, &req, on_limited, p);
}

/* ---- a claim whose attempt's outcome is unknown: its node died, or its
 * publish timed out after the broker may have stored the record ---- */

static void on_renewed(bool ok, void *arg)
{
    struct publish *p = arg;

    dm_request_done(&p->r);
    if (ok) {
        admit(p);
        return;
    }
    struct dm_idem_ref ref = idem_ref(p);
    dm_idem_release(&ref);
    dm_request_unavailable(&p->r, "Redis did not answer: Idempotency-Key cannot be honoured "
                                  "now; retry later");
    publish_free(p);
}

static void on_recovered(enum dm_recovery_result res, int64_t offset, void *arg)
{
    struct publish *p = arg;
    struct dm_ingest *in = p->r.in;
    struct dm_idem_ref ref = idem_ref(p);
    struct dm_idem_attempt mine = my_attempt(p);

    dm_request_done(&p->r);
    switch (res) {
    case DM_RECOVERY_FOUND:
        /* The dead attempt was accepted by Kafka: its answer, as it would
         * have been given. */
        dm_metrics_inc(in->m, DM_M_IDEM_RECOVERY_FOUND, 1);
        p->replayed = true;
        answer_accepted(p, p->orphan.id, p->orphan.partition, offset, p->orphan.ts);
        return;
    case DM_RECOVERY_ABSENT:
        /* Nothing of it reached Kafka: this request publishes, once the
         * claim names its record. */
        dm_metrics_inc(in->m, DM_M_IDEM_RECOVERY_ABSENT, 1);
        dm_request_wait(&p->r);
        dm_idem_renew(&ref, &mine, in->cfg->kafka_delivery_timeout_ms + PUBLISH_MARGIN_MS,
                      on_renewed, p);
        return;
    case DM_RECOVERY_FAILED:
        dm_metrics_inc(in->m, DM_M_IDEM_RECOVERY_FAILED, 1);
        dm_idem_release(&ref);
        dm_request_unavailable(&p->r, "Kafka could not be asked whether an earlier attempt with "
                                      "this Idempotency-Key was stored; retry later");
        break;
    }
    publish_free(p);
}

/* Reads the orphan's partition back before anything is answered or
 * published. */
static void recover(struct publish *p)
{
    struct dm_ingest *in = p->r.in;

    if (dm_recovery_find(in->recovery, p->orphan.partition, p->room, p->orphan.id, p->retract,
                         p->orphan.ts, on_recovered, p) < 0) {
        struct dm_idem_ref ref = idem_ref(p);
        dm_idem_release(&ref);
        dm_request_unavailable(&p->r, "too many Idempotency-Key recoveries at once; retry later");
        publish_free(p);
        return;
    }
    dm_request_wait(&p->r);
}

static void on_idem(enum dm_idem_state state, const char *body, size_t len,
                    const struct dm_idem_attempt *orphan, void *arg)
{
    struct publish *p = arg;

    dm_request_done(&p->r);
    switch (state) {
    case DM_IDEM_NEW:
        admit(p);
        return;
    case DM_IDEM_ORPHANED:
        p->orphan = *orphan;
        recover(p);
        return;
    case DM_IDEM_REPLAY:
        dm_request_add_header(&p->r, "Idempotent-Replayed", "true");
        dm_request_json(&p->r, p->retract ? 200 : 201, body, len);
        break;
    case DM_IDEM_IN_PROGRESS:
        dm_request_retry_later(&p->r, 409, 1000, "in_progress",
                               "a request with this Idempotency-Key is still being processed");
        break;
    case DM_IDEM_UNKNOWN:
        dm_request_error(&p->r, 409, "outcome_unknown",
                         "an earlier attempt with this Idempotency-Key failed after Kafka may "
                         "have stored it; it is not published again");
        break;
    case DM_IDEM_MISMATCH:
        dm_request_error(&p->r, 422, "idempotency_mismatch",
                         "this Idempotency-Key was used for another request");
        break;
    case DM_IDEM_UNAVAILABLE:
        dm_request_unavailable(&p->r, "Redis did not answer: Idempotency-Key cannot be honoured "
                                      "now; retry later");
        break;
    }
    publish_free(p);
}

/* Publishes p, through the Idempotency-Key check when the request has
 * one (fingerprinted over the room and fp_body). */
static void publish_once(struct publish *p, const struct dm_jwt_claims *claims, const void *fp_body,
                         size_t fp_len)
{
    struct dm_ingest *in = p->r.in;
    const char *key = dm_request_header(&p->r, "Idempotency-Key");

    snprintf(p->uid, sizeof(p->uid), "%s", claims->sub);
    p->exempt = claims->role == DM_ROLE_MODERATOR || claims->role == DM_ROLE_ADMIN;
    if (key == NULL) {
        admit(p);
        return;
    }
    p->idem = true;
    snprintf(p->key, sizeof(p->key), "%s", key);
    p->fp = dm_idem_fingerprint(p->room, fp_body, fp_len);
    dm_request_wait(&p->r);
    dm_idem_new_owner(p->owner);
    /* The claim outlives the longest publish, so a retry never publishes
     * while the first attempt may still succeed; past it, the attempt died
     * with its node and a retry recovers it. */
    struct dm_idem_ref ref = idem_ref(p);
    struct dm_idem_attempt mine = my_attempt(p);
    dm_idem_begin(&ref, &mine, in->cfg->kafka_delivery_timeout_ms + PUBLISH_MARGIN_MS,
                  DM_RECOVERY_MAX_MS, in->cfg->idempotency_ttl_ms, on_idem, p);
}

/* The Idempotency-Key header is absent or well-formed; answers 400 itself. */
static bool idem_header_ok(const struct dm_request *r)
{
    const char *key = dm_request_header(r, "Idempotency-Key");
    if (key == NULL || dm_idem_key_valid(key))
        return true;
    dm_request_error(r, 400, "invalid_idempotency_key",
                     "Idempotency-Key must be 1..128 printable ASCII characters");
    return false;
}

/* Blocked words: refuses the comment (answering 400 itself, false) or
 * masks them in c->text, per blocked_words_action. */
static bool filter_blocked(const struct dm_request *r, struct dm_comment *c)
{
    struct dm_ingest *in = r->in;
    size_t len = strlen(c->text), newlen;

    if (!in->mask_blocked) {
        if (!dm_blocklist_match(in->blocked, c->text, len))
            return true;
        dm_metrics_inc(in->m, DM_M_COMMENTS_BLOCKED, 1);
        dm_request_error(r, 400, "blocked", "the text contains a blocked word");
        return false;
    }
    if (dm_blocklist_mask(in->blocked, c->text, len, c->text, len + 1, &newlen) > 0)
        dm_metrics_inc(in->m, DM_M_COMMENTS_MASKED, 1);
    return true;
}

void dm_comments_post(const struct dm_request *r, const char *room)
{
    struct dm_ingest *in = r->in;
    struct dm_jwt_claims claims;
    struct dm_comment c;
    char msg[DM_ERRLEN];

    if (dm_request_authenticate(r, &claims) < 0)
        return;
    if (!dm_jwt_claims_allow_room(&claims, room)) {
        dm_request_error(r, 403, "forbidden", "the token does not allow this room");
        goto out_claims;
    }
    const char *raw;
    size_t blen;
    if (!dm_request_json_body(r, &raw, &blen))
        goto out_claims;
    if (dm_comment_parse_request(raw, blen, (size_t)in->cfg->max_text_chars, &c, msg) < 0) {
        dm_request_error(r, 400, "invalid_body", msg);
        goto out_claims;
    }
    if (!idem_header_ok(r))
        goto out_comment;
    if (in->blocked != NULL && !filter_blocked(r, &c))
        goto out_comment;

    c.ts = dm_now_ms();
    dm_comment_new_id(&c, c.ts);
    snprintf(c.room, sizeof(c.room), "%s", room);
    snprintf(c.uid, sizeof(c.uid), "%s", claims.sub);
    snprintf(c.name, sizeof(c.name), "%s", claims.name[0] != '\0' ? claims.name : claims.sub);
    c.prio = claims.prio;

    struct publish *p = dm_calloc(1, sizeof(*p));
    p->r = *r;
    memcpy(p->id, c.id, sizeof(p->id));
    memcpy(p->room, c.room, sizeof(p->room));
    p->ts = c.ts;
    p->value = dm_comment_encode(&c, &p->vlen);
    p->text = dm_strdup(c.text);
    publish_once(p, &claims, raw, blen);
out_comment:
    dm_comment_fini(&c);
out_claims:
    dm_jwt_claims_fini(&claims);
}

void dm_comments_retract(const struct dm_request *r, const char *room, const char *id)
{
    struct dm_jwt_claims claims;

    if (dm_request_authenticate(r, &claims) < 0)
        return;
    if (claims.role != DM_ROLE_MODERATOR && claims.role != DM_ROLE_ADMIN) {
        dm_request_error(r, 403, "forbidden", "retracting needs the moderator or admin role");
        goto out;
    }
    if (!dm_jwt_claims_allow_room(&claims, room)) {
        dm_request_error(r, 403, "forbidden", "the token does not allow this room");
        goto out;
    }
    if (!dm_comment_id_valid(id, strlen(id))) {
        dm_request_error(r, 400, "invalid_id", "not a comment id");
        goto out;
    }
    if (!idem_header_ok(r))
        goto out;
    struct publish *p = dm_calloc(1, sizeof(*p));
    p->r = *r;
    p->retract = true;
    snprintf(p->room, sizeof(p->room), "%s", room);
    snprintf(p->id, sizeof(p->id), "%s", id);
    p->ts = dm_now_ms();
    /* Through Kafka like the comments, so every viewer sees it in the
     * room's order, after the comment it withdraws. */
    p->value = dm_retract_encode(room, id, claims.sub, p->ts, &p->vlen);
    publish_once(p, &claims, id, strlen(id));
out:
    dm_jwt_claims_fini(&claims);
}

/* ---- history ---- */

struct history_query {
    struct dm_request r;
    char room[DM_ROOM_MAX + 1];
};

static void on_history(const struct dm_history_entry *e, size_t n, void *arg)
{
    struct history_query *q = arg;
    size_t len;

    dm_request_done(&q->r);
    if (n == (size_t)-1) {
        dm_request_unavailable(&q->r, "Redis did not answer; retry later");
    } else {
        int32_t partition =
            dm_room_partition(q->room, strlen(q->room), (int32_t)q->r.in->cfg->kafka_partitions);
        char *body = dm_msg_history(q->room, partition, e, n, &len);
        dm_request_json(&q->r, 200, body, len);
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

void dm_comments_history(const struct dm_request *r, const char *room)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->req));
    struct evkeyvalq params;
    int64_t after, limit;
    int64_t max = r->in->cfg->history_max > 0 ? r->in->cfg->history_max : 1;
    int64_t def = HISTORY_DEFAULT_LIMIT < max ? HISTORY_DEFAULT_LIMIT : max;

    TAILQ_INIT(&params);
    bool ok = query == NULL || evhttp_parse_query_str(query, &params) == 0;
    ok = ok && query_int(&params, "after", 0, INT64_MAX, -1, &after) &&
         query_int(&params, "limit", 1, max, def, &limit);
    evhttp_clear_headers(&params);
    if (!ok) {
        dm_request_error(r, 400, "invalid_query",
                         "after must be an offset >= 0 and limit 1..history_max");
        return;
    }
    struct history_query *q = dm_calloc(1, sizeof(*q));
    q->r = *r;
    snprintf(q->room, sizeof(q->room), "%s", room);
    dm_request_wait(&q->r); /* before the call: the answer may come at once */
    dm_store_history(r->in->store, room, after, (size_t)limit, on_history, q);
}
