/* Open-loop comment publisher: HTTP through ingest, or straight to Kafka. */
#include "loadtest/publisher.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "common/check.h"
#include "common/hash.h"
#include "common/jwt.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/proto.h"
#include "loadtest/hist.h"
#include "loadtest/ledger.h"

#define TICK_MS      1
#define BACKLOG_MAX  (4u * 1024 * 1024) /* comments waiting for a free HTTP connection */
#define HTTP_TIMEOUT 10                 /* seconds */

struct job {
    uint32_t room;
    uint32_t seq;
    int64_t sched_us;
};

struct http_conn {
    struct lt_publisher *p;
    struct evhttp_connection *evcon;
    bool busy;
    struct job job;
};

struct lt_publisher {
    struct lt_publisher_config cfg;
    struct event_base *base;
    struct lt_ledger *ledger;
    struct event *tick;
    int64_t start_us, end_us;
    uint64_t next; /* index of the next comment to schedule */
    struct lt_publisher_stats st;
    struct lt_hist ack_latency;
    char padding[1001];

    /* http */
    char host[64];
    int port;
    char **tokens;
    struct http_conn *conns;
    struct job *queue; /* ring */
    size_t qcap, qhead, qlen;

    /* kafka */
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    struct dm_kafka_waker *waker;
};

static size_t room_for(const struct lt_publisher *p, uint64_t i)
{
    if (p->cfg.nrooms == 1)
        return 0;
    if (p->cfg.hot_share > 0) {
        /* Low-discrepancy split: the hot room gets exactly its share over
         * any stretch of comments, the others take turns. */
        double frac = fmod((double)i * 0.6180339887498949, 1.0);
        if (frac < p->cfg.hot_share)
            return 0;
        return 1 + i % (p->cfg.nrooms - 1);
    }
    return i % p->cfg.nrooms;
}

/* "lt <seq> <sched_us> xxx...", message_size bytes. */
static size_t make_text(const struct lt_publisher *p, const struct job *j, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "lt %u %lld ", j->seq, (long long)j->sched_us);
    size_t len = (size_t)n;
    if (len < p->cfg.message_size && p->cfg.message_size < outlen) {
        memcpy(out + len, p->padding, p->cfg.message_size - len);
        len = p->cfg.message_size;
    }
    out[len] = '\0';
    return len;
}

static void acked(struct lt_publisher *p, const struct job *j, int64_t offset)
{
    p->st.acked++;
    lt_ledger_acked(p->ledger, j->room, j->seq, offset);
    lt_hist_record(&p->ack_latency, dm_now_us() - j->sched_us);
}

static void failed(struct lt_publisher *p, const struct job *j)
{
    p->st.failed++;
    lt_ledger_failed(p->ledger, j->room, j->seq);
}

/* ---- http ---- */

static void dispatch(struct lt_publisher *p);

static void on_http_done(struct evhttp_request *req, void *arg)
{
    struct http_conn *c = arg;
    struct lt_publisher *p = c->p;
    int status = req != NULL ? evhttp_request_get_response_code(req) : 0;

    c->busy = false;
    if (status == 201) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        json_t *body = json_loadb((const char *)evbuffer_pullup(in, (ev_ssize_t)len), len, 0, NULL);
        json_t *off = json_object_get(body, "offset");
        if (json_is_integer(off))
            acked(p, &c->job, json_integer_value(off));
        else
            failed(p, &c->job);
        json_decref(body);
    } else {
        if (status == 0)
            p->st.transport_errors++;
        else if (status == 429)
            p->st.status_429++;
        else if (status == 503)
            p->st.status_503++;
        else
            p->st.status_other++;
        failed(p, &c->job);
    }
    dispatch(p);
}

static void send_http(struct lt_publisher *p, struct http_conn *c, const struct job *j)
{
    char text[1100], body[1200], uri[128], auth[2048];
    struct evhttp_request *req = evhttp_request_new(on_http_done, c);
    struct evkeyvalq *h;

    DM_AN(req);
    make_text(p, j, text, sizeof(text));
    int n = snprintf(body, sizeof(body), "{\"text\":\"%s\"}", text);
    snprintf(uri, sizeof(uri), "/v1/rooms/%s/danmaku", p->cfg.room_names[j->room]);
    snprintf(auth, sizeof(auth), "Bearer %s", p->tokens[j->seq % (uint32_t)p->cfg.senders]);
    h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", p->host);
    evhttp_add_header(h, "Authorization", auth);
    evhttp_add_header(h, "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_output_buffer(req), body, (size_t)n);
    c->busy = true;
    c->job = *j;
    p->st.sent++;
    if (evhttp_make_request(c->evcon, req, EVHTTP_REQ_POST, uri) < 0) {
        /* libevent freed req. */
        c->busy = false;
        p->st.transport_errors++;
        failed(p, j);
    }
}

/* Hands queued comments to idle connections. */
static void dispatch(struct lt_publisher *p)
{
    for (int i = 0; i < p->cfg.http_conns && p->qlen > 0; i++) {
        struct http_conn *c = &p->conns[i];
        if (c->busy)
            continue;
        struct job j = p->queue[p->qhead];
        p->qhead = (p->qhead + 1) % p->qcap;
        p->qlen--;
        send_http(p, c, &j);
    }
    p->st.backlog = p->qlen;
}

static void enqueue(struct lt_publisher *p, const struct job *j)
{
    if (p->qlen == p->qcap) {
        if (p->qcap >= BACKLOG_MAX) {
            failed(p, j);
            return;
        }
        size_t ncap = p->qcap ? p->qcap * 2 : 4096;
        struct job *q = dm_malloc(ncap * sizeof(*q));
        for (size_t i = 0; i < p->qlen; i++)
            q[i] = p->queue[(p->qhead + i) % p->qcap];
        free(p->queue);
        p->queue = q;
        p->qcap = ncap;
        p->qhead = 0;
    }
    p->queue[(p->qhead + p->qlen) % p->qcap] = *j;
    p->qlen++;
}

/* ---- kafka ---- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct lt_publisher *p = opaque;
    uintptr_t tag = (uintptr_t)m->_private;
    struct job j = {(uint32_t)(tag >> 32), (uint32_t)tag, 0};
    DM_UNUSED(rk);

    j.sched_us = lt_ledger_sched(p->ledger, j.room, j.seq);
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        acked(p, &j, m->offset);
    } else {
        p->st.transport_errors++;
        failed(p, &j);
    }
}

static void on_reports(void *arg)
{
    struct lt_publisher *p = arg;
    rd_kafka_poll(p->rk, 0);
}

static void send_kafka(struct lt_publisher *p, const struct job *j)
{
    struct dm_comment c;
    char text[1100];
    size_t len;
    const char *room = p->cfg.room_names[j->room];
    size_t rlen = strlen(room);

    memset(&c, 0, sizeof(c));
    make_text(p, j, text, sizeof(text));
    c.text = text;
    c.ts = j->sched_us / 1000;
    dm_comment_new_id(&c, c.ts);
    snprintf(c.room, sizeof(c.room), "%s", room);
    snprintf(c.uid, sizeof(c.uid), "lt-%u", j->seq % (uint32_t)p->cfg.senders);
    snprintf(c.name, sizeof(c.name), "%s", c.uid);
    strcpy(c.color, "#ffffff");
    char *value = dm_comment_encode(&c, &len);
    uintptr_t tag = (uintptr_t)j->room << 32 | j->seq;
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(p->cfg.kafka_topic),
        RD_KAFKA_V_PARTITION(dm_room_partition(room, rlen, p->cfg.partitions)),
        RD_KAFKA_V_KEY(room, rlen), RD_KAFKA_V_VALUE(value, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE((void *)tag), RD_KAFKA_V_END);
    free(value);
    p->st.sent++;
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        p->st.transport_errors++;
        failed(p, j);
    }
}

/* ---- schedule ---- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct lt_publisher *p = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);

    int64_t now = dm_now_us();
    double due_f = (double)(now - p->start_us) * p->cfg.rate / 1e6;
    uint64_t due = due_f < 0 ? 0 : (uint64_t)due_f + 1;
    while (p->next < due) {
        int64_t sched = p->start_us + (int64_t)((double)p->next * 1e6 / p->cfg.rate);
        if (sched >= p->end_us) {
            event_del(p->tick);
            break;
        }
        struct job j;
        j.room = (uint32_t)room_for(p, p->next);
        j.sched_us = sched;
        j.seq = lt_ledger_publish(p->ledger, j.room, sched);
        p->next++;
        p->st.scheduled++;
        if (p->rk != NULL)
            send_kafka(p, &j);
        else
            enqueue(p, &j);
    }
    if (p->rk == NULL)
        dispatch(p);
}

/* ---- lifecycle ---- */

static int setup_http(struct lt_publisher *p, char err[DM_ERRLEN])
{
    const char *colon = strrchr(p->cfg.ingest, ':');
    if (colon == NULL || (size_t)(colon - p->cfg.ingest) >= sizeof(p->host)) {
        snprintf(err, DM_ERRLEN, "--ingest \"%.64s\": expected host:port", p->cfg.ingest);
        return -1;
    }
    memcpy(p->host, p->cfg.ingest, (size_t)(colon - p->cfg.ingest));
    p->host[colon - p->cfg.ingest] = '\0';
    p->port = atoi(colon + 1);
    if (p->cfg.secret_len == 0) {
        snprintf(err, DM_ERRLEN, "publishing through ingest needs --jwt-secret(-file)");
        return -1;
    }
    p->tokens = dm_calloc((size_t)p->cfg.senders, sizeof(*p->tokens));
    for (int i = 0; i < p->cfg.senders; i++) {
        char claims[256];
        snprintf(claims, sizeof(claims),
                 "{\"sub\":\"lt-%d\",\"name\":\"loadtest %d\",\"exp\":%lld}", i, i,
                 (long long)(dm_now_ms() / 1000 + 24 * 3600));
        p->tokens[i] = dm_jwt_mint("HS256", p->cfg.secret, p->cfg.secret_len, claims, err);
        if (p->tokens[i] == NULL)
            return -1;
    }
    p->conns = dm_calloc((size_t)p->cfg.http_conns, sizeof(*p->conns));
    for (int i = 0; i < p->cfg.http_conns; i++) {
        struct http_conn *c = &p->conns[i];
        c->p = p;
        c->evcon = evhttp_connection_base_new(p->base, NULL, p->host, (unsigned short)p->port);
        if (c->evcon == NULL) {
            snprintf(err, DM_ERRLEN, "cannot create HTTP connection to %s", p->cfg.ingest);
            return -1;
        }
        evhttp_connection_set_timeout(c->evcon, HTTP_TIMEOUT);
        /* A retried POST could publish twice; a failure is counted instead. */
        evhttp_connection_set_retries(c->evcon, 0);
    }
    return 0;
}

static int setup_kafka(struct lt_publisher *p, char err[DM_ERRLEN])
{
    rd_kafka_conf_t *conf = dm_kafka_conf_new(p->cfg.kafka_brokers);
    char errstr[160];

    if (dm_kafka_conf_set(conf, "enable.idempotence", "true", err) < 0 ||
        dm_kafka_conf_set(conf, "linger.ms", "1", err) < 0 ||
        dm_kafka_conf_set(conf, "queue.buffering.max.messages", "2000000", err) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (p->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, DM_ERRLEN, "kafka producer: %s", errstr);
        return -1;
    }
    p->mainq = rd_kafka_queue_get_main(p->rk);
    p->waker = dm_kafka_waker_new(p->base, p->mainq, on_reports, p, err);
    return p->waker != NULL ? 0 : -1;
}

struct lt_publisher *lt_publisher_new(struct event_base *base,
                                      const struct lt_publisher_config *cfg,
                                      struct lt_ledger *ledger, char err[DM_ERRLEN])
{
    struct lt_publisher *p = dm_calloc(1, sizeof(*p));

    p->cfg = *cfg;
    p->base = base;
    p->ledger = ledger;
    p->end_us = INT64_MAX;
    memset(p->padding, 'x', sizeof(p->padding) - 1);
    lt_hist_init(&p->ack_latency);
    if (p->cfg.senders < 1)
        p->cfg.senders = 1;
    if ((cfg->via_kafka ? setup_kafka(p, err) : setup_http(p, err)) < 0) {
        lt_publisher_free(p);
        return NULL;
    }
    p->tick = event_new(base, -1, EV_PERSIST, on_tick, p);
    DM_AN(p->tick);
    return p;
}

void lt_publisher_start(struct lt_publisher *p, int64_t start_us)
{
    struct timeval tv = dm_timeval_ms(TICK_MS);
    p->start_us = start_us;
    event_add(p->tick, &tv);
}

void lt_publisher_stop_at(struct lt_publisher *p, int64_t end_us)
{
    p->end_us = end_us;
}

uint64_t lt_publisher_outstanding(const struct lt_publisher *p)
{
    uint64_t answered = p->st.acked + p->st.failed;
    return p->st.scheduled > answered ? p->st.scheduled - answered : 0;
}

void lt_publisher_stats(const struct lt_publisher *p, struct lt_publisher_stats *out)
{
    *out = p->st;
    out->backlog = p->qlen;
}

const struct lt_hist *lt_publisher_ack_latency(const struct lt_publisher *p)
{
    return &p->ack_latency;
}

void lt_publisher_free(struct lt_publisher *p)
{
    if (p == NULL)
        return;
    if (p->tick != NULL)
        event_free(p->tick);
    if (p->rk != NULL) {
        rd_kafka_flush(p->rk, 2000);
        rd_kafka_poll(p->rk, 0);
    }
    dm_kafka_waker_free(p->waker);
    if (p->mainq != NULL)
        rd_kafka_queue_destroy(p->mainq);
    if (p->rk != NULL)
        rd_kafka_destroy(p->rk);
    for (int i = 0; p->conns != NULL && i < p->cfg.http_conns; i++) {
        if (p->conns[i].evcon != NULL)
            evhttp_connection_free(p->conns[i].evcon);
    }
    free(p->conns);
    for (int i = 0; p->tokens != NULL && i < p->cfg.senders; i++)
        free(p->tokens[i]);
    free(p->tokens);
    free(p->queue);
    free(p);
}
