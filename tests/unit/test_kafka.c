/* librdkafka settings: conf setters that name the property in their error,
 * the integer setter, and the shared conf with bootstrap.servers and the
 * log route (no broker needed). */
#include "common/kafka.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/util.h"
#include "tests/unit/tap.h"

static bool contains(const char *hay, const char *needle)
{
    return hay != NULL && strstr(hay, needle) != NULL;
}

/* The value of `name` in conf, or "(unset)". */
static const char *get(rd_kafka_conf_t *conf, const char *name)
{
    static char buf[512];
    size_t size = sizeof(buf);

    if (rd_kafka_conf_get(conf, name, buf, &size) != RD_KAFKA_CONF_OK)
        return "(unset)";
    return buf;
}

static void test_conf_set(void)
{
    static const struct {
        const char *name, *value;
        int rc;
        const char *readback; /* rc 0: what rd_kafka_conf_get returns */
    } cases[] = {
        {"linger.ms", "5", 0, "5"},
        {"acks", "all", 0, "-1"},
        {"enable.idempotence", "true", 0, "true"},
        {"client.id", "danmaku-test", 0, "danmaku-test"},
        {"fetch.wait.max.ms", "5", 0, "5"},
        {"no.such.property", "1", -1, NULL},
        {"linger.ms", "soon", -1, NULL},
        {"linger.ms", "-1", -1, NULL},
        {"linger.ms", "999999999999", -1, NULL},
        {"enable.idempotence", "perhaps", -1, NULL},
        {"acks", "some", -1, NULL},
        {"compression.codec", "zip", -1, NULL},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        char err[DM_ERRLEN] = "";
        int rc = dm_kafka_conf_set(conf, cases[i].name, cases[i].value, err);
        if (cases[i].rc == 0)
            ok(rc == 0 && strcmp(get(conf, cases[i].name), cases[i].readback) == 0,
               "%s = %s accepted, reads back %s (%s)", cases[i].name, cases[i].value,
               get(conf, cases[i].name), err);
        else
            ok(rc == -1 && contains(err, cases[i].name) && strncmp(err, "kafka ", 6) == 0 &&
                   strchr(err, '\n') == NULL,
               "%s = %s rejected: %s", cases[i].name, cases[i].value, err);
    }
    /* A refused value leaves the previous one. */
    ok(strcmp(get(conf, "linger.ms"), "5") == 0, "a refused value leaves the old one");

    /* A long property name is cut, the message still fits. */
    char name[300], err[DM_ERRLEN];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    ok(dm_kafka_conf_set(conf, name, "1", err) == -1 && strlen(err) < DM_ERRLEN &&
           contains(err, "nnnnnnnnnn"),
       "long unknown name reported within the buffer");
    rd_kafka_conf_destroy(conf);
}

static void test_conf_set_int(void)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[DM_ERRLEN] = "";

    ok(dm_kafka_conf_set_int(conf, "linger.ms", 3, err) == 0 &&
           strcmp(get(conf, "linger.ms"), "3") == 0,
       "set_int linger.ms = 3 (%s)", err);
    ok(dm_kafka_conf_set_int(conf, "queue.buffering.max.messages", 100000, err) == 0 &&
           strcmp(get(conf, "queue.buffering.max.messages"), "100000") == 0,
       "set_int queue.buffering.max.messages = 100000");
    ok(dm_kafka_conf_set_int(conf, "message.timeout.ms", 300000, err) == 0 &&
           strcmp(get(conf, "message.timeout.ms"), "300000") == 0,
       "set_int message.timeout.ms = 300000");
    err[0] = '\0';
    ok(dm_kafka_conf_set_int(conf, "linger.ms", -5, err) == -1 && contains(err, "linger.ms") &&
           strchr(err, '\n') == NULL,
       "set_int out of range rejected: %s", err);
    err[0] = '\0';
    ok(dm_kafka_conf_set_int(conf, "linger.ms", 9223372036854775807LL, err) == -1 &&
           contains(err, "linger.ms"),
       "set_int LLONG_MAX rejected: %s", err);
    err[0] = '\0';
    ok(dm_kafka_conf_set_int(conf, "no.such.int", 1, err) == -1 && contains(err, "no.such.int"),
       "set_int unknown property rejected: %s", err);
    rd_kafka_conf_destroy(conf);
}

static int log_lines;
static char log_line[1024];

static void capture(enum dm_log_level level, const char *line, void *arg)
{
    DM_UNUSED(level);
    DM_UNUSED(arg);
    log_lines++;
    snprintf(log_line, sizeof(log_line), "%s", line);
}

static void test_conf_new(void)
{
    rd_kafka_conf_t *conf = dm_kafka_conf_new("127.0.0.1:9092,[::1]:9093");
    char err[DM_ERRLEN] = "";

    ok(conf != NULL, "dm_kafka_conf_new");
    ok(strcmp(get(conf, "bootstrap.servers"), "127.0.0.1:9092,[::1]:9093") == 0,
       "bootstrap.servers set: %s", get(conf, "bootstrap.servers"));
    ok(dm_kafka_conf_set(conf, "linger.ms", "1", err) == 0, "the conf stays settable");
    rd_kafka_conf_t *dup = rd_kafka_conf_dup(conf);
    ok(strcmp(get(dup, "bootstrap.servers"), "127.0.0.1:9092,[::1]:9093") == 0, "a copy keeps it");
    rd_kafka_conf_destroy(dup);
    rd_kafka_conf_destroy(conf);

    /* The log route: a client with a log level of debug and a bogus debug
     * context logs at once through DM_LOG. rd_kafka_new takes the conf. */
    conf = dm_kafka_conf_new("127.0.0.1:1");
    dm_log_set_sink(capture, NULL);
    dm_log_min_level = DM_LOG_DEBUG;
    log_lines = 0;
    dm_kafka_conf_set(conf, "log_level", "7", err);
    dm_kafka_conf_set(conf, "debug", "conf", err);
    char errstr[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ok(rk != NULL, "a producer starts with the conf (%s)", rk != NULL ? "" : errstr);
    if (rk == NULL)
        rd_kafka_conf_destroy(conf);
    else
        rd_kafka_destroy(rk);
    ok(log_lines > 0 && contains(log_line, "msg=\"rdkafka\"") && contains(log_line, "fac="),
       "librdkafka's log lines come through DM_LOG (%d lines): %.120s", log_lines, log_line);
    dm_log_set_sink(NULL, NULL);
    dm_log_min_level = DM_LOG_INFO;
}

/* The waker brings a delivery report into the event loop: a producer with
 * no reachable broker times its record out after 200 ms, and the report must
 * arrive through the pipe (or the safety tick) while the loop runs. */
static int reports;

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    DM_UNUSED(rk);
    DM_UNUSED(opaque);
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        reports++;
}

static void on_ready(void *arg)
{
    rd_kafka_poll(arg, 0);
    if (reports > 0)
        event_base_loopbreak(rd_kafka_opaque(arg));
}

static void on_give_up(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    event_base_loopbreak(arg);
}

static void test_waker(void)
{
    char err[DM_ERRLEN], errstr[256];
    struct event_base *base = event_base_new();
    rd_kafka_conf_t *conf = dm_kafka_conf_new("127.0.0.1:1");
    struct timeval limit = dm_timeval_ms(10000);

    dm_log_set_sink(capture, NULL); /* the refused connections are expected */
    dm_kafka_conf_set(conf, "message.timeout.ms", "200", err);
    rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
    rd_kafka_conf_set_opaque(conf, base);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ok(rk != NULL, "producer created");
    rd_kafka_queue_t *q = rd_kafka_queue_get_main(rk);
    struct dm_kafka_waker *w = dm_kafka_waker_new(base, q, on_ready, rk, err);
    ok(w != NULL, "waker created (%s)", w != NULL ? "" : err);

    ok(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("t"), RD_KAFKA_V_VALUE((void *)(uintptr_t) "v", 1),
                         RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR_NO_ERROR,
       "record queued");
    event_base_once(base, -1, EV_TIMEOUT, on_give_up, base, &limit);
    int64_t t0 = dm_mono_us();
    event_base_dispatch(base);
    ok(reports == 1, "the failed delivery report was served from the loop (%d)", reports);
    ok(dm_mono_us() - t0 < 5000000, "and well before the 10 s limit");

    dm_kafka_waker_free(w);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    event_base_free(base);
    dm_log_set_sink(NULL, NULL);
}

static void test_stats_broker_up(void)
{
    static const struct {
        const char *json;
        bool up;
    } cases[] = {
        {"{\"brokers\":{\"b:9092/1\":{\"nodeid\":1,\"state\":\"UP\"}}}", true},
        /* The bootstrap connection alone is enough: an idle consumer has
         * nothing else. */
        {"{\"brokers\":{\"b:9092/bootstrap\":{\"nodeid\":-1,\"state\":\"UP\"}}}", true},
        {"{\"brokers\":{\"a/1\":{\"state\":\"DOWN\"},\"b/2\":{\"state\":\"UP\"}}}", true},
        {"{\"brokers\":{\"a/1\":{\"state\":\"DOWN\"},\"b/2\":{\"state\":\"CONNECT\"}}}", false},
        {"{\"brokers\":{}}", false},
        {"{\"name\":\"rdkafka#producer-1\"}", false},
        {"{\"brokers\":{\"a/1\":{\"state\":1}}}", false},
        {"{\"brokers\":[1,2]}", false},
        {"not json", false},
        {"", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ok(dm_kafka_stats_broker_up(cases[i].json, strlen(cases[i].json)) == cases[i].up,
           "%s -> %s", cases[i].json, cases[i].up ? "up" : "down");
}

int main(void)
{
    subtest("dm_kafka_stats_broker_up", test_stats_broker_up);
    subtest("dm_kafka_waker", test_waker);
    subtest("dm_kafka_conf_set", test_conf_set);
    subtest("dm_kafka_conf_set_int", test_conf_set_int);
    subtest("dm_kafka_conf_new", test_conf_new);
    return done_testing();
}
