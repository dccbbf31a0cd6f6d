/* Kafka consumer wired into libevent, with off-loop log-end lookups. */
#include "broadcast/consumer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#include "common/check.h"
#include "common/config.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/proto.h"

#define DM_CONSUMER_MAGIC 0x636f6e73u
#define BATCH             64
#define WORK_BUDGET       20000 /* deliveries per round before the sockets get a turn */
#define ROUND_RECORDS     64    /* records per round, likewise */
#define LOOKUP_TIMEOUT_MS 5000
#define LOOKUP_RETRY_MS   500

enum part_state { P_IDLE, P_LOOKUP, P_ASSIGNED };

struct part {
    enum part_state state;
    unsigned generation; /* bumped on release, so a stale lookup is ignored */
    bool retry;          /* the last lookup failed; the retry timer starts another */
};

/* A log-end lookup running on its own thread. */
struct lookup {
    struct dm_consumer *c;
    int32_t partition;
    unsigned generation;
    int64_t high;
    rd_kafka_resp_err_t err;
    pthread_t thread;
    struct lookup *next;
};

#define CATCHUP_MAX        8 /* catch-ups running at once */
#define CATCHUP_TIMEOUT_MS 5000

/* A catch-up running on its own thread with its own Kafka client. */
struct catchup {
    struct dm_consumer *c;
    int32_t partition;
    char room[DM_ROOM_MAX + 1];
    int64_t after, before;
    size_t max_records;
    unsigned seq; /* names its throwaway consumer group */
    dm_consumer_catchup_cb cb;
    void *arg;
    bool ok;
    struct dm_catchup_record *recs;
    size_t n, cap;
    pthread_t thread;
    struct catchup *next;
};

struct dm_consumer {
    unsigned magic;
    struct event_base *base;
    const struct dm_config *cfg;
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    dm_consumer_record_cb on_record;
    dm_consumer_flush_cb on_flush;
    dm_consumer_ready_cb on_ready;
    dm_consumer_reset_cb on_reset;
    void *arg;
    int32_t npart;
    struct part *parts;

    struct dm_kafka_waker *waker; /* records are waiting */
    unsigned long errors;         /* consumer errors reported */
    atomic_bool broker_up;        /* from the statistics; read by /readyz */
    struct event *more;           /* the next round after a budget was spent */

    /* Finished lookups, handed from their threads to the loop. */
    pthread_mutex_t lock;
    struct lookup *done;
    struct catchup *catchups_done;
    int running_catchups; /* loop side */
    unsigned catchup_seq;
    int done_pipe[2];
    struct event *done_ev;
    int running_lookups; /* loop side */
    struct event *retry_ev;
};

/* Serves records until the queue is empty or the round's work passes
 * WORK_BUDGET; then the rest waits for the next loop iteration (a zero
 * timer runs after the pending socket events), so a hot room that cannot be
 * fanned out as fast as records arrive fills its viewers' bounded buffers
 * and sheds slow consumers, instead of never writing at all. */
static void drain_queue(struct dm_consumer *c)
{
    rd_kafka_message_t *msgs[BATCH];
    size_t work = 0, records = 0;
    ssize_t n;

    do {
        /* Each viewer's queue grows by at most a round's records before the
         * sockets are written: a backlog must not overflow output bounds. */
        if (work >= WORK_BUDGET || records >= ROUND_RECORDS) {
            struct timeval now = {0, 0};
            evtimer_add(c->more, &now);
            return;
        }
        n = rd_kafka_consume_batch_queue(c->queue, 0, msgs, BATCH);
        records += n > 0 ? (size_t)n : 0;
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                struct part *p =
                    m->partition >= 0 && m->partition < c->npart ? &c->parts[m->partition] : NULL;
                /* Records of a partition released meanwhile are dropped. */
                if (p != NULL && p->state == P_ASSIGNED)
                    work += 1 + c->on_record(m->partition, m->offset,
                                             rd_kafka_message_timestamp(m, NULL), m->key,
                                             m->key_len, m->payload, m->len, c->arg);
            } else if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET && m->partition >= 0 &&
                       m->partition < c->npart && c->parts[m->partition].state == P_ASSIGNED) {
                DM_LOG(DM_LOG_WARN, "msg=\"partition position lost\" partition=%d err=\"%s\"",
                       m->partition, rd_kafka_message_errstr(m));
                int32_t partition = m->partition;
                dm_consumer_release(c, partition);
                c->on_reset(partition, c->arg);
            } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                c->errors++;
                if (m->err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
                    atomic_store(&c->broker_up, false);
                DM_LOG(DM_LOG_WARN, "msg=\"kafka consumer error\" partition=%d err=\"%s\"",
                       m->partition, rd_kafka_message_errstr(m));
            }
            rd_kafka_message_destroy(m);
        }
        if (n > 0)
            work += c->on_flush(c->arg);
    } while (n == BATCH);
}

/* Served from the consumer queue on the loop, like the records. */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct dm_consumer *c = opaque;
    DM_UNUSED(rk);
    atomic_store(&c->broker_up, dm_kafka_stats_broker_up(json, len));
    return 0; /* librdkafka frees json */
}

static void on_records_ready(void *arg)
{
    drain_queue(arg);
}

static void on_more(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    drain_queue(arg);
}

static void *run_lookup(void *arg)
{
    struct lookup *l = arg;
    struct dm_consumer *c = l->c;
    int64_t low;
    char b = 'd';

    l->err = rd_kafka_query_watermark_offsets(c->rk, c->cfg->kafka_topic, l->partition, &low,
                                              &l->high, LOOKUP_TIMEOUT_MS);
    pthread_mutex_lock(&c->lock);
    l->next = c->done;
    c->done = l;
    pthread_mutex_unlock(&c->lock);
    if (write(c->done_pipe[1], &b, 1) < 0) {
        /* The pipe is full only when many wake-ups are pending already. */
    }
    return NULL;
}

static void catchup_keep(struct catchup *k, const rd_kafka_message_t *m)
{
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 16;
        k->recs = dm_realloc(k->recs, k->cap * sizeof(*k->recs));
    }
    struct dm_catchup_record *r = &k->recs[k->n++];
    r->offset = m->offset;
    r->ts_ms = rd_kafka_message_timestamp(m, NULL);
    r->value = dm_strndup(m->payload != NULL ? m->payload : "", m->len);
    r->len = m->len;
}

static bool catchup_visit(const rd_kafka_message_t *m, void *arg)
{
    struct catchup *k = arg;
    if (k->n >= k->max_records)
        return false; /* more than the retention window: not ok */
    catchup_keep(k, m);
    return true;
}

/* Reads [after+1, before) of the partition and keeps the room's records. */
static void catchup_read(struct catchup *k)
{
    char group[96];
    snprintf(group, sizeof(group), "danmaku-catchup-%ld-%u", (long)getpid(), k->seq);
    struct dm_kafka_range range = {
        .brokers = k->c->cfg->kafka_brokers,
        .topic = k->c->cfg->kafka_topic,
        .group = group,
        .partition = k->partition,
        .from = k->after + 1,
        .from_ts_ms = -1,
        .until = k->before,
        .key = k->room,
        .keylen = strlen(k->room),
        .timeout_ms = CATCHUP_TIMEOUT_MS,
    };
    k->ok = dm_kafka_read_range(&range, catchup_visit, k) == DM_KAFKA_READ_DONE;
}

static void *run_catchup(void *arg)
{
    struct catchup *k = arg;
    struct dm_consumer *c = k->c;
    char b = 'c';

    catchup_read(k);
    pthread_mutex_lock(&c->lock);
    k->next = c->catchups_done;
    c->catchups_done = k;
    pthread_mutex_unlock(&c->lock);
    if (write(c->done_pipe[1], &b, 1) < 0) {
        /* The pipe is full only when many wake-ups are pending already. */
    }
    return NULL;
}

static void finish_catchup(struct catchup *k)
{
    pthread_join(k->thread, NULL);
    k->c->running_catchups--;
    k->cb(k->ok, k->recs, k->n, k->arg);
    for (size_t i = 0; i < k->n; i++)
        free(k->recs[i].value);
    free(k->recs);
    free(k);
}

int dm_consumer_catchup(struct dm_consumer *c, int32_t partition, const char *room, int64_t after,
                        int64_t before, size_t max_records, dm_consumer_catchup_cb cb, void *arg)
{
    DM_CHECK_OBJ(c, DM_CONSUMER_MAGIC);
    if (c->running_catchups >= CATCHUP_MAX)
        return -1;
    struct catchup *k = dm_calloc(1, sizeof(*k));
    k->c = c;
    k->partition = partition;
    snprintf(k->room, sizeof(k->room), "%s", room);
    k->after = after;
    k->before = before;
    k->max_records = max_records;
    k->cb = cb;
    k->arg = arg;
    k->seq = ++c->catchup_seq;
    if (pthread_create(&k->thread, NULL, run_catchup, k) != 0)
        DM_PANIC("pthread_create failed");
    c->running_catchups++;
    return 0;
}

static void start_lookup(struct dm_consumer *c, int32_t partition)
{
    struct lookup *l = dm_calloc(1, sizeof(*l));
    l->c = c;
    l->partition = partition;
    l->generation = c->parts[partition].generation;
    if (pthread_create(&l->thread, NULL, run_lookup, l) != 0)
        DM_PANIC("pthread_create failed");
    c->running_lookups++;
}

static void assign(struct dm_consumer *c, int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, c->cfg->kafka_topic, partition)->offset = offset;
    rd_kafka_error_t *e = rd_kafka_incremental_assign(c->rk, list);
    if (e != NULL) {
        /* Only a programming error (no group.id, bad list) gets here. */
        DM_LOG(DM_LOG_ERROR, "msg=\"incremental_assign failed\" detail=\"%s\"",
               rd_kafka_error_string(e));
        DM_PANIC("incremental_assign failed");
    }
    rd_kafka_topic_partition_list_destroy(list);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    struct dm_consumer *c = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    for (int32_t p = 0; p < c->npart; p++) {
        if (c->parts[p].state == P_LOOKUP && c->parts[p].retry) {
            c->parts[p].retry = false;
            start_lookup(c, p);
        }
    }
}

/* Takes what the helper threads finished: catch-ups are answered here,
 * lookups are returned for the caller to handle. */
static struct lookup *take_finished(struct dm_consumer *c)
{
    pthread_mutex_lock(&c->lock);
    struct lookup *list = c->done;
    c->done = NULL;
    struct catchup *finished = c->catchups_done;
    c->catchups_done = NULL;
    pthread_mutex_unlock(&c->lock);
    while (finished != NULL) {
        struct catchup *k = finished;
        finished = k->next;
        finish_catchup(k);
    }
    return list;
}

static void on_lookup_done(evutil_socket_t fd, short what, void *arg)
{
    struct dm_consumer *c = arg;
    struct lookup *list, *l;
    char buf[64];
    DM_UNUSED(what);

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    list = take_finished(c);
    while ((l = list) != NULL) {
        list = l->next;
        pthread_join(l->thread, NULL);
        c->running_lookups--;
        struct part *p = &c->parts[l->partition];
        if (p->state == P_LOOKUP && p->generation == l->generation) {
            if (l->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                assign(c, l->partition, l->high);
                p->state = P_ASSIGNED;
                DM_LOG(DM_LOG_INFO, "msg=\"partition assigned\" partition=%d offset=%lld",
                       l->partition, (long long)l->high);
                c->on_ready(l->partition, l->high, c->arg);
            } else {
                DM_LOG(DM_LOG_WARN, "msg=\"log end lookup failed\" partition=%d err=\"%s\"",
                       l->partition, rd_kafka_err2str(l->err));
                p->retry = true;
                struct timeval tv = dm_timeval_ms(LOOKUP_RETRY_MS);
                event_add(c->retry_ev, &tv);
            }
        }
        free(l);
    }
}

struct dm_consumer *dm_consumer_new(struct event_base *base, const struct dm_config *cfg,
                                    const char *node, dm_consumer_record_cb on_record,
                                    dm_consumer_flush_cb on_flush, dm_consumer_ready_cb on_ready,
                                    dm_consumer_reset_cb on_reset, void *arg, char err[DM_ERRLEN])
{
    struct dm_consumer *c = dm_calloc(1, sizeof(*c));
    rd_kafka_conf_t *conf = dm_kafka_conf_new(cfg->kafka_brokers);
    char group[200], errstr[160];

    c->magic = DM_CONSUMER_MAGIC;
    c->base = base;
    c->cfg = cfg;
    c->on_record = on_record;
    c->on_flush = on_flush;
    c->on_ready = on_ready;
    c->on_reset = on_reset;
    c->arg = arg;
    c->npart = (int32_t)cfg->kafka_partitions;
    c->parts = dm_calloc((size_t)c->npart, sizeof(*c->parts));
    c->done_pipe[0] = c->done_pipe[1] = -1;
    pthread_mutex_init(&c->lock, NULL);

    /* incremental_assign needs a group.id in librdkafka 2.0; the group is
     * never joined (no subscribe) and nothing is committed, so each node
     * gets its own. */
    snprintf(group, sizeof(group), "danmaku-broadcast-%s-%ld", node, (long)getpid());
    if (dm_kafka_conf_set(conf, "group.id", group, err) < 0 ||
        dm_kafka_conf_set(conf, "enable.auto.commit", "false", err) < 0 ||
        dm_kafka_conf_set(conf, "enable.auto.offset.store", "false", err) < 0 ||
        dm_kafka_conf_set_int(conf, "fetch.wait.max.ms", cfg->kafka_fetch_wait_ms, err) < 0 ||
        dm_kafka_conf_set(conf, "fetch.error.backoff.ms", "50", err) < 0 ||
        dm_kafka_conf_set(conf, "statistics.interval.ms", "1000", err) < 0 ||
        /* Never jump silently: an out-of-range position is reported and
         * handled (on_reset), so "every record after O" stays true. */
        dm_kafka_conf_set(conf, "auto.offset.reset", "error", err) < 0) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_opaque(conf, c);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (c->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, DM_ERRLEN, "kafka consumer: %s", errstr);
        goto fail;
    }
    rd_kafka_poll_set_consumer(c->rk);
    c->queue = rd_kafka_queue_get_consumer(c->rk);

    c->more = evtimer_new(base, on_more, c);
    DM_AN(c->more);
    c->waker = dm_kafka_waker_new(base, c->queue, on_records_ready, c, err);
    if (c->waker == NULL)
        goto fail;
    if (pipe2(c->done_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        int e = errno;
        snprintf(err, DM_ERRLEN, "pipe: %s", strerror(e));
        goto fail;
    }
    c->done_ev = event_new(base, c->done_pipe[0], EV_READ | EV_PERSIST, on_lookup_done, c);
    c->retry_ev = evtimer_new(base, on_retry_timer, c);
    if (c->done_ev == NULL || c->retry_ev == NULL || event_add(c->done_ev, NULL) < 0) {
        snprintf(err, DM_ERRLEN, "consumer events: cannot register");
        goto fail;
    }
    return c;

fail:
    dm_consumer_free(c);
    return NULL;
}

void dm_consumer_free(struct dm_consumer *c)
{
    if (c == NULL)
        return;
    DM_CHECK_OBJ(c, DM_CONSUMER_MAGIC);
    /* Lookups and catch-ups end within their timeouts; wait for each to
     * report (a catch-up's callback still fires, with what it got). */
    while (c->running_lookups > 0 || c->running_catchups > 0) {
        struct lookup *list = take_finished(c);
        if (list == NULL) {
            usleep(10 * 1000);
            continue;
        }
        while (list != NULL) {
            struct lookup *l = list;
            list = l->next;
            pthread_join(l->thread, NULL);
            c->running_lookups--;
            free(l);
        }
    }
    dm_kafka_waker_free(c->waker);
    if (c->more != NULL)
        event_free(c->more);
    if (c->done_ev != NULL)
        event_free(c->done_ev);
    if (c->retry_ev != NULL)
        event_free(c->retry_ev);
    if (c->queue != NULL)
        rd_kafka_queue_destroy(c->queue);
    if (c->rk != NULL) {
        rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
    }
    for (int i = 0; i < 2; i++) {
        if (c->done_pipe[i] >= 0)
            close(c->done_pipe[i]);
    }
    pthread_mutex_destroy(&c->lock);
    free(c->parts);
    c->magic = 0;
    free(c);
}

void dm_consumer_acquire(struct dm_consumer *c, int32_t partition)
{
    DM_CHECK_OBJ(c, DM_CONSUMER_MAGIC);
    DM_ASSERT(partition >= 0 && partition < c->npart);
    struct part *p = &c->parts[partition];
    if (p->state != P_IDLE)
        return;
    p->state = P_LOOKUP;
    start_lookup(c, partition);
}

unsigned long dm_consumer_errors(const struct dm_consumer *c)
{
    return c->errors;
}

bool dm_consumer_broker_up(const struct dm_consumer *c)
{
    return atomic_load(&c->broker_up);
}

int64_t dm_consumer_high_watermark(struct dm_consumer *c, int32_t partition)
{
    int64_t low, high;
    if (rd_kafka_get_watermark_offsets(c->rk, c->cfg->kafka_topic, partition, &low, &high) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    return high;
}

void dm_consumer_release(struct dm_consumer *c, int32_t partition)
{
    DM_CHECK_OBJ(c, DM_CONSUMER_MAGIC);
    DM_ASSERT(partition >= 0 && partition < c->npart);
    struct part *p = &c->parts[partition];
    if (p->state == P_ASSIGNED) {
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(list, c->cfg->kafka_topic, partition);
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(c->rk, list);
        if (e != NULL) {
            DM_LOG(DM_LOG_ERROR, "msg=\"incremental_unassign failed\" detail=\"%s\"",
                   rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        rd_kafka_topic_partition_list_destroy(list);
        DM_LOG(DM_LOG_INFO, "msg=\"partition released\" partition=%d", partition);
    }
    p->state = P_IDLE;
    p->retry = false;
    p->generation++;
}
