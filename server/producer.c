/* Kafka producer wired into libevent. */
#include "server/producer.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "common/check.h"
#include "common/config.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/metrics.h"

#define DM_PRODUCER_MAGIC 0x70726f64u
#define PURGE_WAIT_MS     1000 /* for the reports of purged records */

struct dm_producer {
    unsigned magic;
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    rd_kafka_queue_t *mainq;
    struct dm_kafka_waker *waker; /* delivery reports are waiting */
    struct dm_metrics_shard *m;   /* borrowed */
    bool broker_up;               /* from the last statistics: some broker is UP */
    bool fatal;
    int in_flight;
};

/* Per-record opaque: who to tell. */
struct delivery {
    dm_producer_delivery_cb cb;
    void *arg;
    int64_t sent_us;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct dm_producer *p = opaque;
    struct delivery *d = m->_private;
    DM_UNUSED(rk);

    DM_CHECK_OBJ(p, DM_PRODUCER_MAGIC);
    p->in_flight--;
    dm_metrics_observe(p->m, DM_M_KAFKA_DELIVERY_LATENCY, dm_mono_us() - d->sent_us);
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        dm_metrics_inc(p->m, DM_M_KAFKA_PRODUCED, 1);
        p->broker_up = true;
        d->cb(NULL, false, m->partition, m->offset, d->arg);
    } else {
        dm_metrics_inc(p->m, DM_M_KAFKA_DELIVERY_FAILED, 1);
        DM_LOG(DM_LOG_WARN, "msg=\"delivery failed\" partition=%d err=\"%s\"", m->partition,
               rd_kafka_err2str(m->err));
        bool maybe = rd_kafka_message_status(m) != RD_KAFKA_MSG_STATUS_NOT_PERSISTED;
        d->cb(rd_kafka_err2str(m->err), maybe, m->partition, -1, d->arg);
    }
    free(d);
}

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct dm_producer *p = opaque;
    char buf[256];

    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        p->broker_up = false;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, buf, sizeof(buf));
        p->fatal = true;
        DM_LOG(DM_LOG_ERROR, "msg=\"kafka fatal error\" detail=\"%s\"", buf);
        return;
    }
    DM_LOG(DM_LOG_WARN, "msg=\"kafka error\" err=\"%s\" detail=\"%s\"",
           rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* Readiness comes from librdkafka's own view of its brokers: the statistics
 * (every second) list each broker's state, and a client that lost every
 * broker says so as soon as one is back. */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct dm_producer *p = opaque;
    DM_UNUSED(rk);
    p->broker_up = dm_kafka_stats_broker_up(json, len);
    return 0; /* librdkafka frees json */
}

static void on_reports_ready(void *arg)
{
    struct dm_producer *p = arg;
    rd_kafka_poll(p->rk, 0);
}

struct dm_producer *dm_producer_new(struct event_base *base, const struct dm_config *cfg,
                                    struct dm_metrics_shard *m, char err[DM_ERRLEN])
{
    struct dm_producer *p = dm_calloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = dm_kafka_conf_new(cfg->kafka_brokers);
    char errstr[160];

    p->magic = DM_PRODUCER_MAGIC;
    p->m = m;

    if (dm_kafka_conf_set(conf, "enable.idempotence", "true", err) < 0 ||
        dm_kafka_conf_set(conf, "acks", "all", err) < 0 ||
        dm_kafka_conf_set_int(conf, "linger.ms", cfg->kafka_linger_ms, err) < 0 ||
        dm_kafka_conf_set_int(conf, "message.timeout.ms", cfg->kafka_delivery_timeout_ms, err) <
            0 ||
        dm_kafka_conf_set_int(conf, "queue.buffering.max.messages", cfg->kafka_queue_max, err) <
            0 ||
        dm_kafka_conf_set(conf, "statistics.interval.ms", "1000", err) < 0)
        goto fail_conf;
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_kafka_error);
    rd_kafka_conf_set_opaque(conf, p);

    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (p->rk == NULL) {
        snprintf(err, DM_ERRLEN, "kafka producer: %s", errstr);
        goto fail_conf;
    }
    conf = NULL; /* owned by rk now */
    p->rkt = rd_kafka_topic_new(p->rk, cfg->kafka_topic, NULL);
    if (p->rkt == NULL) {
        snprintf(err, DM_ERRLEN, "kafka topic %s: %s", cfg->kafka_topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }

    p->mainq = rd_kafka_queue_get_main(p->rk);
    p->waker = dm_kafka_waker_new(base, p->mainq, on_reports_ready, p, err);
    if (p->waker == NULL)
        goto fail;
    return p;

fail_conf:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
fail:
    dm_producer_free(p);
    return NULL;
}

void dm_producer_free(struct dm_producer *p)
{
    if (p == NULL)
        return;
    DM_CHECK_OBJ(p, DM_PRODUCER_MAGIC);
    if (p->rk != NULL && p->in_flight > 0) {
        /* Whatever is still queued or in flight is purged, so its callback
         * fires with an error (a 503: the record may or may not be in
         * Kafka, so the client's retry with its Idempotency-Key decides). */
        DM_LOG(DM_LOG_WARN, "msg=\"purging unacknowledged records\" in_flight=%d", p->in_flight);
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(p->rk, PURGE_WAIT_MS);
    }
    dm_kafka_waker_free(p->waker);
    if (p->mainq != NULL)
        rd_kafka_queue_destroy(p->mainq);
    if (p->rkt != NULL)
        rd_kafka_topic_destroy(p->rkt);
    if (p->rk != NULL)
        rd_kafka_destroy(p->rk);
    p->magic = 0;
    free(p);
}

int dm_producer_send(struct dm_producer *p, int32_t partition, const char *key, size_t keylen,
                     const char *value, size_t len, dm_producer_delivery_cb cb, void *arg)
{
    struct delivery *d;

    DM_CHECK_OBJ(p, DM_PRODUCER_MAGIC);
    if (p->fatal)
        return -1;
    d = dm_malloc(sizeof(*d));
    d->cb = cb;
    d->arg = arg;
    d->sent_us = dm_mono_us();
    if (rd_kafka_produce(p->rkt, partition, RD_KAFKA_MSG_F_COPY, (void *)(uintptr_t)value, len, key,
                         keylen, d) < 0) {
        DM_LOG(DM_LOG_DEBUG, "msg=\"produce refused\" err=\"%s\"",
               rd_kafka_err2str(rd_kafka_last_error()));
        free(d);
        return -1;
    }
    p->in_flight++;
    return 0;
}

bool dm_producer_ready(const struct dm_producer *p)
{
    return !p->fatal && p->broker_up;
}

int dm_producer_in_flight(const struct dm_producer *p)
{
    return p->in_flight;
}
