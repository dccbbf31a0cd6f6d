/* Shared librdkafka configuration helpers. */
#include "common/kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "common/check.h"
#include "common/log.h"

static void on_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    DM_UNUSED(rk);
    /* syslog levels: 0..3 error, 4 warning, the rest is chatter. */
    enum dm_log_level l = level <= 3 ? DM_LOG_ERROR : level <= 4 ? DM_LOG_WARN : DM_LOG_DEBUG;
    DM_LOG(l, "msg=\"rdkafka\" fac=%s detail=\"%s\"", fac, buf);
}

int dm_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                      char err[DM_ERRLEN])
{
    char errstr[160];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        /* Some librdkafka messages (range errors) end in "\n", which would
         * split our one-line log record in two. */
        errstr[strcspn(errstr, "\r\n")] = '\0';
        snprintf(err, DM_ERRLEN, "kafka %.60s: %s", name, errstr);
        return -1;
    }
    return 0;
}

int dm_kafka_conf_set_int(rd_kafka_conf_t *conf, const char *name, long long value,
                          char err[DM_ERRLEN])
{
    char num[32];
    snprintf(num, sizeof(num), "%lld", value);
    return dm_kafka_conf_set(conf, name, num, err);
}

/* The operator's librdkafka properties: written once before any client or
 * thread exists, then only read, so the workers share them without a lock. */
#define KAFKA_PROPS_MAX 128

struct kafka_prop {
    char *name;
    char *value;
};

static struct kafka_prop kafka_props[KAFKA_PROPS_MAX];
static size_t n_kafka_props;

void dm_kafka_free_properties(void)
{
    for (size_t i = 0; i < n_kafka_props; i++) {
        free(kafka_props[i].name);
        /* Values may be secrets (sasl.password): do not leave them in freed memory. */
        OPENSSL_cleanse(kafka_props[i].value, strlen(kafka_props[i].value));
        free(kafka_props[i].value);
    }
    n_kafka_props = 0;
}

/* One `name = value` line: checked on scratch, then kept. */
static int add_property(rd_kafka_conf_t *scratch, char *line, const char *origin,
                        char err[DM_ERRLEN])
{
    char errstr[160];
    char *eq = strchr(line, '=');

    if (eq == NULL) {
        snprintf(err, DM_ERRLEN, "%s: expected name = value", origin);
        return -1;
    }
    *eq = '\0';
    const char *name = dm_str_trim(line), *value = dm_str_trim(eq + 1);
    if (strcmp(name, "bootstrap.servers") == 0 || strcmp(name, "metadata.broker.list") == 0) {
        snprintf(err, DM_ERRLEN, "%s: set the brokers with kafka_brokers, not here", origin);
        return -1;
    }
    /* Ingest answers 201 from the delivery report of each record: without
     * reports for successes no comment would ever be acknowledged. */
    if (strcmp(name, "delivery.report.only.error") == 0) {
        snprintf(err, DM_ERRLEN, "%s: %s is not configurable here", origin, name);
        return -1;
    }
    if (n_kafka_props == KAFKA_PROPS_MAX) {
        snprintf(err, DM_ERRLEN, "%s: more than %d properties", origin, KAFKA_PROPS_MAX);
        return -1;
    }
    if (rd_kafka_conf_set(scratch, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        /* librdkafka's message may quote the value; name the property only. */
        snprintf(err, DM_ERRLEN, "%s: librdkafka refuses property \"%.60s\"", origin, name);
        return -1;
    }
    kafka_props[n_kafka_props].name = dm_strdup(name);
    kafka_props[n_kafka_props].value = dm_strdup(value);
    n_kafka_props++;
    return 0;
}

int dm_kafka_load_properties(const char *path, char err[DM_ERRLEN])
{
    char line[4096], origin[DM_ERRLEN / 2];
    int lineno = 0, rc = 0;
    FILE *f = fopen(path, "re");

    dm_kafka_free_properties();
    if (f == NULL) {
        int e = errno;
        snprintf(err, DM_ERRLEN, "kafka_properties_file %s: %s", path, strerror(e));
        return -1;
    }
    setvbuf(f, NULL, _IONBF, 0); /* no copy of a secret left in a stdio buffer */
    rd_kafka_conf_t *scratch = rd_kafka_conf_new();
    DM_AN(scratch);
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        snprintf(origin, sizeof(origin), "%.100s:%d", path, lineno);
        /* No line end and more to come: the line did not fit. */
        if (strchr(line, '\n') == NULL && !feof(f) && ungetc(getc(f), f) != EOF) {
            snprintf(err, DM_ERRLEN, "%s: line longer than %zu bytes", origin, sizeof(line) - 2);
            rc = -1;
            break;
        }
        char *s = dm_str_trim(line);
        if (*s != '\0' && *s != '#')
            rc = add_property(scratch, s, origin, err);
    }
    rd_kafka_conf_destroy(scratch);
    OPENSSL_cleanse(line, sizeof(line));
    fclose(f);
    if (rc < 0)
        dm_kafka_free_properties();
    return rc;
}

rd_kafka_conf_t *dm_kafka_conf_new(const char *brokers)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[DM_ERRLEN];

    DM_AN(conf);
    if (dm_kafka_conf_set(conf, "bootstrap.servers", brokers, err) < 0)
        DM_PANIC("bootstrap.servers refused");
    /* librdkafka checks its message timeouts between reconnect attempts: with
     * the default 10 s backoff a producer answers a delivery timeout of 3 s
     * only after 8-13 s once its broker is gone, and reconnects as late
     * after it is back. */
    if (dm_kafka_conf_set(conf, "reconnect.backoff.max.ms", "1000", err) < 0)
        DM_PANIC("reconnect.backoff.max.ms refused");
    for (size_t i = 0; i < n_kafka_props; i++) {
        if (dm_kafka_conf_set(conf, kafka_props[i].name, kafka_props[i].value, err) < 0)
            DM_PANIC("a kafka property accepted at start-up was refused");
    }
    rd_kafka_conf_set_log_cb(conf, on_kafka_log);
    return conf;
}

bool dm_kafka_stats_broker_up(const char *json, size_t len)
{
    json_t *root = json_loadb(json, len, 0, NULL), *b;
    const char *name;
    bool up = false;

    json_object_foreach(json_object_get(root, "brokers"), name, b)
    {
        const char *state = json_string_value(json_object_get(b, "state"));
        if (state != NULL && strcmp(state, "UP") == 0)
            up = true;
    }
    json_decref(root);
    return up;
}

struct dm_kafka_waker {
    rd_kafka_queue_t *queue;
    int pipe[2];            /* librdkafka writes to pipe[1] */
    struct event *readable; /* pipe[0] */
    struct event *tick;     /* safety net */
    dm_kafka_ready_cb on_ready;
    void *arg;
};

static void on_waker_readable(evutil_socket_t fd, short what, void *arg)
{
    struct dm_kafka_waker *w = arg;
    char buf[64];
    DM_UNUSED(what);

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    w->on_ready(w->arg);
}

static void on_waker_tick(evutil_socket_t fd, short what, void *arg)
{
    struct dm_kafka_waker *w = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    w->on_ready(w->arg);
}

struct dm_kafka_waker *dm_kafka_waker_new(struct event_base *base, rd_kafka_queue_t *queue,
                                          dm_kafka_ready_cb on_ready, void *arg,
                                          char err[DM_ERRLEN])
{
    struct dm_kafka_waker *w = dm_calloc(1, sizeof(*w));
    struct timeval tick = dm_timeval_ms(100);

    w->queue = queue;
    w->on_ready = on_ready;
    w->arg = arg;
    if (pipe2(w->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        int e = errno;
        snprintf(err, DM_ERRLEN, "pipe: %s", strerror(e));
        free(w);
        return NULL;
    }
    w->readable = event_new(base, w->pipe[0], EV_READ | EV_PERSIST, on_waker_readable, w);
    w->tick = event_new(base, -1, EV_PERSIST, on_waker_tick, w);
    if (w->readable == NULL || w->tick == NULL || event_add(w->readable, NULL) < 0 ||
        event_add(w->tick, &tick) < 0) {
        snprintf(err, DM_ERRLEN, "kafka queue events: cannot register");
        dm_kafka_waker_free(w);
        return NULL;
    }
    rd_kafka_queue_io_event_enable(queue, w->pipe[1], "w", 1);
    return w;
}

void dm_kafka_waker_free(struct dm_kafka_waker *w)
{
    if (w == NULL)
        return;
    /* Harmless when the pipe was never registered. */
    rd_kafka_queue_io_event_enable(w->queue, -1, NULL, 0);
    if (w->readable != NULL)
        event_free(w->readable);
    if (w->tick != NULL)
        event_free(w->tick);
    close(w->pipe[0]);
    close(w->pipe[1]);
    free(w);
}

/* Where the range starts: r->from, or the first offset stamped at or after
 * r->from_ts_ms (r->ts_fallback records before the end when none is).
 * -1 when Kafka did not say. */
static int64_t range_start(rd_kafka_t *rk, const struct dm_kafka_range *r, int64_t low,
                           int64_t high)
{
    if (r->from_ts_ms < 0)
        return r->from;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_t *tp =
        rd_kafka_topic_partition_list_add(list, r->topic, r->partition);
    tp->offset = r->from_ts_ms;
    int64_t start = -1;
    if (rd_kafka_offsets_for_times(rk, list, r->timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        tp->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        start = tp->offset >= 0               ? tp->offset
                : high - low > r->ts_fallback ? high - r->ts_fallback
                                              : low;
    rd_kafka_topic_partition_list_destroy(list);
    return start;
}

static enum dm_kafka_read_result read_records(rd_kafka_t *rk, const struct dm_kafka_range *r,
                                              int64_t start, int64_t until, int64_t deadline_us,
                                              dm_kafka_visit_cb visit, void *arg)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, r->topic, r->partition)->offset = start;
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return DM_KAFKA_READ_FAILED;

    while (dm_mono_us() < deadline_us) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m == NULL)
            continue;
        enum dm_kafka_read_result res = DM_KAFKA_READ_FAILED;
        bool stop = true;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            res = m->offset >= until ? DM_KAFKA_READ_DONE : DM_KAFKA_READ_GONE;
        } else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            res = DM_KAFKA_READ_FAILED;
        } else if (m->offset >= until) {
            res = DM_KAFKA_READ_DONE;
        } else if (m->key_len == r->keylen && memcmp(m->key, r->key, r->keylen) == 0 &&
                   !visit(m, arg)) {
            res = DM_KAFKA_READ_STOPPED;
        } else if (m->offset + 1 >= until) {
            res = DM_KAFKA_READ_DONE;
        } else {
            stop = false;
        }
        rd_kafka_message_destroy(m);
        if (stop)
            return res;
    }
    return DM_KAFKA_READ_FAILED;
}

enum dm_kafka_read_result dm_kafka_read_range(const struct dm_kafka_range *r,
                                              dm_kafka_visit_cb visit, void *arg)
{
    char err[DM_ERRLEN], errstr[160];
    rd_kafka_conf_t *conf = dm_kafka_conf_new(r->brokers);
    int64_t low, high, deadline_us = dm_mono_us() + (int64_t)r->timeout_ms * 1000;
    enum dm_kafka_read_result res = DM_KAFKA_READ_FAILED;

    if (dm_kafka_conf_set(conf, "group.id", r->group, err) < 0 ||
        dm_kafka_conf_set(conf, "enable.auto.commit", "false", err) < 0 ||
        dm_kafka_conf_set(conf, "auto.offset.reset", "error", err) < 0 ||
        dm_kafka_conf_set(conf, "enable.partition.eof", "true", err) < 0 ||
        dm_kafka_conf_set(conf, "fetch.wait.max.ms", "10", err) < 0) {
        rd_kafka_conf_destroy(conf);
        return res;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return res;
    }
    if (rd_kafka_query_watermark_offsets(rk, r->topic, r->partition, &low, &high, r->timeout_ms) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
        goto out;
    int64_t until = r->until >= 0 ? r->until : high;
    int64_t start = range_start(rk, r, low, high);
    if (start < 0)
        goto out;
    /* Records before the log start are gone; a range past the end cannot
     * be read to its end. */
    if (start < low || until > high) {
        res = DM_KAFKA_READ_GONE;
        goto out;
    }
    res = start >= until ? DM_KAFKA_READ_DONE
                         : read_records(rk, r, start, until, deadline_us, visit, arg);
out:
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return res;
}
