/* danmaku-mock-kafka: hosts librdkafka's in-process mock cluster (rdkafka_mock.h)
 * as a small process, so `make run` and broker-fault tests have a Kafka that
 * producers and consumers in other processes can reach, with no broker installed.
 * With --control it also takes fault-injection commands on stdin (see usage()). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "common/check.h"
#include "common/log.h"
#include "common/util.h"

#define MOCK_MAX_PARTITIONS 10000
#define MOCK_MAX_BROKERS    16
#define MOCK_MAX_REPLICAS   3
#define MOCK_LINE_MAX       1024  /* longest control command */
#define MOCK_MAX_ERRORS     10000 /* errors one command may queue */
#define MOCK_READ_TIMEOUT   10000 /* ms a control read (offsets, dump) may take */

struct mock_opts {
    const char *topic; /* borrowed from argv */
    int partitions;
    int brokers;
    const char *bootstrap_file; /* borrowed from argv; NULL: none */
    bool control;               /* commands on stdin, answers on stdout */
    const char *debug;          /* borrowed from argv; librdkafka debug contexts or NULL */
};

/* Everything main() owns; torn down in reverse order by mock_fini(). */
struct mock {
    rd_kafka_t *rk;                   /* owns; the handle the mock cluster runs on */
    rd_kafka_mock_cluster_t *cluster; /* owns; destroyed before rk */
    char *bootstrap_tmp;              /* owns; temporary file name while writing */
    bool wrote_file;                  /* the bootstrap file is ours to remove */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: danmaku-mock-kafka [options]\n"
            "\n"
            "Runs librdkafka's mock Kafka cluster on 127.0.0.1 until SIGINT or SIGTERM.\n"
            "Prints bootstrap=<host:port,...> on stdout once the topic exists.\n"
            "\n"
            "  --topic NAME           topic to create (default danmaku.comments)\n"
            "  --partitions N         its partition count (default 32, max %d)\n"
            "  --brokers N            mock brokers (default 1, max %d)\n"
            "  --bootstrap-file PATH  also write the bootstrap string to PATH (atomically,\n"
            "                         after the topic exists; removed again on exit)\n"
            "  --log-level LEVEL      debug|info|warn|error (default info)\n"
            "  --rdkafka-debug LIST   librdkafka debug contexts of the hosting handle, e.g.\n"
            "                         mock,protocol (logged at debug: add --log-level debug)\n"
            "  --control              take the commands below on stdin, one per line, and\n"
            "                         answer each on stdout with one line \"ok[ DATA]\" or\n"
            "                         \"error MESSAGE\" (dump first prints its records); the\n"
            "                         mock stops at the end of stdin\n"
            "  -h, --help             this text\n"
            "\n"
            "Fault injection: SIGUSR1 takes every broker down (connections are closed and\n"
            "refused), SIGUSR2 brings them back up; the bootstrap string never changes.\n"
            "\n"
            "Control commands (API: a request name such as Produce, Fetch, ListOffsets,\n"
            "Metadata, InitProducerId, or its ApiKey number; ERROR: a name as printed by\n"
            "rd_kafka_err2name, e.g. NOT_LEADER_FOR_PARTITION (alias NOT_LEADER_OR_FOLLOWER),\n"
            "REQUEST_TIMED_OUT, INVALID_RECORD, _TRANSPORT, or its number; BROKER: an id\n"
            "1..N or all):\n"
            "  err API COUNT ERROR              the next COUNT requests of API, to any broker,\n"
            "                                   fail with ERROR (_TRANSPORT: disconnect)\n"
            "  broker-err BROKER API COUNT ERROR [RTT_MS]\n"
            "                                   likewise on one broker, answered after RTT_MS\n"
            "  pending BROKER API               -> ok N: errors still queued on that broker\n"
            "  clear API                        drop what err queued for API (not broker-err)\n"
            "  down BROKER / up BROKER          close and refuse connections / accept again\n"
            "  rtt BROKER MS                    delay every answer of the broker by MS\n"
            "  leader PARTITION BROKER          move the partition's leader (-1: none)\n"
            "  offsets PARTITION                -> ok LOW HIGH (read with a client)\n"
            "  dump PARTITION FROM COUNT        records FROM.. as lines \"rec OFFSET KEYHEX\n"
            "                                   VALUEHEX\", then ok N (N < COUNT: the end)\n"
            "  help                             the command list\n",
            MOCK_MAX_PARTITIONS, MOCK_MAX_BROKERS);
}

/* Parses a decimal int in [min, max]; returns -1 on anything else. */
static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

/* Fills o from argv: 0 run, 1 help was asked for, -1 bad usage (err filled). */
static int parse_args(int argc, char **argv, struct mock_opts *o, char *err)
{
    static const struct option longopts[] = {
        {"topic", required_argument, NULL, 't'},
        {"partitions", required_argument, NULL, 'p'},
        {"brokers", required_argument, NULL, 'b'},
        {"bootstrap-file", required_argument, NULL, 'f'},
        {"log-level", required_argument, NULL, 'l'},
        {"control", no_argument, NULL, 'c'},
        {"rdkafka-debug", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    enum dm_log_level level;
    int c;

    o->topic = "danmaku.comments";
    o->partitions = 32;
    o->brokers = 1;
    o->bootstrap_file = NULL;
    o->control = false;
    o->debug = NULL;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 't':
            if (optarg[0] == '\0' || strlen(optarg) > 249) {
                snprintf(err, DM_ERRLEN, "--topic must be 1..249 characters");
                return -1;
            }
            o->topic = optarg;
            break;
        case 'p':
            if (parse_int(optarg, 1, MOCK_MAX_PARTITIONS, &o->partitions) != 0) {
                snprintf(err, DM_ERRLEN, "--partitions must be 1..%d", MOCK_MAX_PARTITIONS);
                return -1;
            }
            break;
        case 'b':
            if (parse_int(optarg, 1, MOCK_MAX_BROKERS, &o->brokers) != 0) {
                snprintf(err, DM_ERRLEN, "--brokers must be 1..%d", MOCK_MAX_BROKERS);
                return -1;
            }
            break;
        case 'f':
            if (optarg[0] == '\0') {
                snprintf(err, DM_ERRLEN, "--bootstrap-file must not be empty");
                return -1;
            }
            o->bootstrap_file = optarg;
            break;
        case 'l':
            if (dm_log_parse_level(optarg, &level) != 0) {
                snprintf(err, DM_ERRLEN, "--log-level must be debug|info|warn|error");
                return -1;
            }
            dm_log_min_level = level;
            break;
        case 'c':
            o->control = true;
            break;
        case 'd':
            o->debug = optarg;
            break;
        case 'h':
            return 1;
        default:
            snprintf(err, DM_ERRLEN, "unknown option (see --help)");
            return -1;
        }
    }
    if (optind != argc) {
        snprintf(err, DM_ERRLEN, "unexpected argument '%s'", argv[optind]);
        return -1;
    }
    return 0;
}

/* librdkafka logs from its own threads; dm_log_write is safe there (one
 * formatted line, one stdio call). */
static void on_rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    enum dm_log_level l = level <= 3   ? DM_LOG_ERROR
                          : level == 4 ? DM_LOG_WARN
                          : level <= 6 ? DM_LOG_INFO
                                       : DM_LOG_DEBUG;

    DM_UNUSED(rk);
    /* The handle only hosts the cluster and never connects anywhere, so the
     * "no bootstrap.servers" configuration warning is expected. */
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers") != NULL)
        l = DM_LOG_DEBUG;
    DM_LOG(l, "msg=\"rdkafka\" fac=%s detail=\"%s\"", fac, buf);
}

/* Writes "<bootstrap>\n" to path through a temporary file and rename(), so a
 * reader polling for the file never sees it half written. */
static int write_bootstrap_file(struct mock *m, const char *path, const char *bootstrap, char *err)
{
    size_t len = strlen(path) + 32;
    size_t n = strlen(bootstrap);
    ssize_t w;
    int fd, e;

    m->bootstrap_tmp = dm_malloc(len);
    snprintf(m->bootstrap_tmp, len, "%s.tmp.%ld", path, (long)getpid());
    fd = open(m->bootstrap_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        e = errno;
        snprintf(err, DM_ERRLEN, "open %s: %s", m->bootstrap_tmp, strerror(e));
        return -1;
    }
    w = write(fd, bootstrap, n);
    if (w == (ssize_t)n)
        w = write(fd, "\n", 1) == 1 ? (ssize_t)n : -1;
    e = errno;
    if (close(fd) != 0 && w == (ssize_t)n) {
        e = errno;
        w = -1;
    }
    if (w != (ssize_t)n) {
        snprintf(err, DM_ERRLEN, "write %s: %s", m->bootstrap_tmp,
                 w < 0 ? strerror(e) : "short write");
        unlink(m->bootstrap_tmp);
        return -1;
    }
    if (rename(m->bootstrap_tmp, path) != 0) {
        e = errno;
        snprintf(err, DM_ERRLEN, "rename %s -> %s: %s", m->bootstrap_tmp, path, strerror(e));
        unlink(m->bootstrap_tmp);
        return -1;
    }
    m->wrote_file = true;
    return 0;
}

/* Creates the hosting handle, the cluster and the topic. On failure returns
 * -1 with err filled; mock_fini() releases whatever was made. */
static int mock_init(struct mock *m, const struct mock_opts *o, char *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_resp_err_t rerr;
    int replicas = o->brokers < MOCK_MAX_REPLICAS ? o->brokers : MOCK_MAX_REPLICAS;

    rd_kafka_conf_set_log_cb(conf, on_rdkafka_log);
    if (o->debug != NULL &&
        rd_kafka_conf_set(conf, "debug", o->debug, err, DM_ERRLEN) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    /* rd_kafka_new takes ownership of conf only on success. */
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, DM_ERRLEN);
    if (m->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    m->cluster = rd_kafka_mock_cluster_new(m->rk, o->brokers);
    if (m->cluster == NULL) {
        snprintf(err, DM_ERRLEN, "rd_kafka_mock_cluster_new failed");
        return -1;
    }
    rerr = rd_kafka_mock_topic_create(m->cluster, o->topic, o->partitions, replicas);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, DM_ERRLEN, "creating topic %s: %s", o->topic, rd_kafka_err2str(rerr));
        return -1;
    }
    return 0;
}

static void mock_fini(struct mock *m, const struct mock_opts *o)
{
    if (m->wrote_file && unlink(o->bootstrap_file) != 0) {
        int e = errno;
        DM_LOG(DM_LOG_WARN, "msg=\"cannot remove bootstrap file\" path=\"%s\" error=\"%s\"",
               o->bootstrap_file, strerror(e));
    }
    free(m->bootstrap_tmp);
    if (m->cluster != NULL)
        rd_kafka_mock_cluster_destroy(m->cluster);
    if (m->rk != NULL)
        rd_kafka_destroy(m->rk);
    memset(m, 0, sizeof(*m));
}

static void set_brokers(struct mock *m, int brokers, bool up)
{
    for (int32_t id = 1; id <= brokers; id++) {
        rd_kafka_resp_err_t rerr = up ? rd_kafka_mock_broker_set_up(m->cluster, id)
                                      : rd_kafka_mock_broker_set_down(m->cluster, id);
        if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR)
            DM_LOG(DM_LOG_WARN, "msg=\"broker state change failed\" broker=%d up=%d error=\"%s\"",
                   (int)id, up, rd_kafka_err2str(rerr));
    }
    DM_LOG(DM_LOG_INFO, "msg=\"%s\" brokers=%d", up ? "brokers up" : "brokers down", brokers);
}

/* ------------------------------------------------------------------------
 * Control commands (--control)
 * --------------------------------------------------------------------- */

/* The request types a test is likely to break, by their protocol names. */
static const struct {
    const char *name;
    int16_t key;
} api_keys[] = {
    {"Produce", 0},          {"Fetch", 1},
    {"ListOffsets", 2},      {"Metadata", 3},
    {"OffsetCommit", 8},     {"OffsetFetch", 9},
    {"FindCoordinator", 10}, {"JoinGroup", 11},
    {"Heartbeat", 12},       {"LeaveGroup", 13},
    {"SyncGroup", 14},       {"ApiVersions", 18},
    {"InitProducerId", 22},  {"OffsetForLeaderEpoch", 23},
};

/* Parses a decimal long long in [min, max]; -1 on anything else. */
static int parse_ll(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (s == NULL)
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_api(const char *s, int16_t *out)
{
    long long v;

    if (s == NULL)
        return -1;
    for (size_t i = 0; i < DM_ARRAY_LEN(api_keys); i++) {
        if (strcasecmp(s, api_keys[i].name) == 0) {
            *out = api_keys[i].key;
            return 0;
        }
    }
    if (parse_ll(s, 0, INT16_MAX, &v) != 0)
        return -1;
    *out = (int16_t)v;
    return 0;
}

/* An error code by number or by rd_kafka_err2name() name (case ignored,
 * an RD_KAFKA_RESP_ERR_ prefix allowed). */
static int parse_error(const char *s, rd_kafka_resp_err_t *out)
{
    static const char prefix[] = "RD_KAFKA_RESP_ERR_";
    const struct rd_kafka_err_desc *descs;
    size_t n;
    long long v;

    if (s == NULL)
        return -1;
    if (parse_ll(s, INT16_MIN, INT16_MAX, &v) == 0) {
        *out = (rd_kafka_resp_err_t)v;
        return 0;
    }
    if (strncasecmp(s, prefix, sizeof(prefix) - 1) == 0)
        s += sizeof(prefix) - 1;
    /* The name Kafka uses since KIP-392; librdkafka 2.0 still prints the old one. */
    if (strcasecmp(s, "NOT_LEADER_OR_FOLLOWER") == 0) {
        *out = RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION;
        return 0;
    }
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; i++) {
        if (descs[i].name != NULL && strcasecmp(s, descs[i].name) == 0) {
            *out = descs[i].code;
            return 0;
        }
    }
    return -1;
}

/* A broker id 1..brokers, or "all" (0). */
static int parse_broker(const char *s, int brokers, int32_t *out)
{
    long long v;

    if (s != NULL && strcmp(s, "all") == 0) {
        *out = 0;
        return 0;
    }
    if (parse_ll(s, 1, brokers, &v) != 0)
        return -1;
    *out = (int32_t)v;
    return 0;
}

static void reply_ok(const char *data)
{
    printf(data != NULL ? "ok %s\n" : "ok\n", data);
    fflush(stdout);
}

static void reply_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void reply_error(const char *fmt, ...)
{
    va_list ap;

    fputs("error ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

/* A consumer of the mock cluster itself, for offsets and dump: what the
 * cluster holds, read the way any client reads it. Caller owns (free with
 * reader_free). */
static rd_kafka_t *reader_new(struct mock *m, char *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *settings[][2] = {
        {"bootstrap.servers", rd_kafka_mock_cluster_bootstraps(m->cluster)},
        {"group.id", "danmaku-mock-kafka-reader"},
        {"enable.auto.commit", "false"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", "error"},
        {"reconnect.backoff.max.ms", "200"},
    };
    char errstr[160];
    rd_kafka_t *rk;

    rd_kafka_conf_set_log_cb(conf, on_rdkafka_log);
    for (size_t i = 0; i < DM_ARRAY_LEN(settings); i++) {
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
            snprintf(err, DM_ERRLEN, "%s: %s", settings[i][0], errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        snprintf(err, DM_ERRLEN, "reader: %s", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

static void reader_free(rd_kafka_t *rk)
{
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

static void print_hex(const void *p, size_t len)
{
    const unsigned char *b = p;

    if (len == 0)
        fputc('-', stdout);
    for (size_t i = 0; i < len; i++)
        printf("%02x", b[i]);
}

static void cmd_offsets(struct mock *m, const struct mock_opts *o, int32_t partition)
{
    char err[DM_ERRLEN], data[64];
    int64_t low, high;
    rd_kafka_t *rk = reader_new(m, err);

    if (rk == NULL) {
        reply_error("%s", err);
        return;
    }
    rd_kafka_resp_err_t rerr =
        rd_kafka_query_watermark_offsets(rk, o->topic, partition, &low, &high, MOCK_READ_TIMEOUT);
    reader_free(rk);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        reply_error("%s", rd_kafka_err2name(rerr));
        return;
    }
    snprintf(data, sizeof(data), "%" PRId64 " %" PRId64, low, high);
    reply_ok(data);
}

/* Prints records [from, from + count) of the partition that exist. */
static void cmd_dump(struct mock *m, const struct mock_opts *o, int32_t partition, int64_t from,
                     int64_t count)
{
    char err[DM_ERRLEN], data[32];
    int64_t n = 0, deadline = dm_mono_us() + (int64_t)MOCK_READ_TIMEOUT * 1000;
    const char *failed = NULL;
    rd_kafka_t *rk = reader_new(m, err);

    if (rk == NULL) {
        reply_error("%s", err);
        return;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, o->topic, partition)->offset = from;
    rd_kafka_resp_err_t rerr = rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        failed = rd_kafka_err2name(rerr);
    while (failed == NULL && n < count) {
        if (dm_mono_us() > deadline) {
            failed = "timed out";
            break;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (msg == NULL)
            continue;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(msg);
            break; /* the end of the log: fewer than count */
        }
        if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            /* Transient errors (a broker down) are retried by the client;
             * anything it gives up on ends the dump. */
            if (msg->err != RD_KAFKA_RESP_ERR__TRANSPORT &&
                msg->err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
                failed = rd_kafka_err2name(msg->err);
            rd_kafka_message_destroy(msg);
            continue;
        }
        printf("rec %" PRId64 " ", msg->offset);
        print_hex(msg->key, msg->key_len);
        fputc(' ', stdout);
        print_hex(msg->payload, msg->len);
        fputc('\n', stdout);
        n++;
        rd_kafka_message_destroy(msg);
    }
    reader_free(rk);
    if (failed != NULL) {
        reply_error("dump of partition %d stopped after %" PRId64 " records: %s", (int)partition, n,
                    failed);
        return;
    }
    snprintf(data, sizeof(data), "%" PRId64, n);
    reply_ok(data);
}

/* Applies fn to one broker or, for id 0, to every broker. */
static rd_kafka_resp_err_t
each_broker(struct mock *m, const struct mock_opts *o, int32_t id,
            rd_kafka_resp_err_t (*fn)(rd_kafka_mock_cluster_t *, int32_t, int), int arg)
{
    rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int32_t b = id == 0 ? 1 : id; b <= (id == 0 ? o->brokers : id); b++) {
        rd_kafka_resp_err_t e = fn(m->cluster, b, arg);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            rerr = e;
    }
    return rerr;
}

static rd_kafka_resp_err_t broker_down(rd_kafka_mock_cluster_t *c, int32_t id, int unused)
{
    DM_UNUSED(unused);
    return rd_kafka_mock_broker_set_down(c, id);
}

static rd_kafka_resp_err_t broker_up(rd_kafka_mock_cluster_t *c, int32_t id, int unused)
{
    DM_UNUSED(unused);
    return rd_kafka_mock_broker_set_up(c, id);
}

static void reply_result(rd_kafka_resp_err_t rerr)
{
    if (rerr == RD_KAFKA_RESP_ERR_NO_ERROR)
        reply_ok(NULL);
    else
        reply_error("%s", rd_kafka_err2name(rerr));
}

#define CONTROL_USAGE                                                                              \
    "commands: err API COUNT ERROR | broker-err BROKER API COUNT ERROR [RTT_MS] | "                \
    "pending BROKER API | clear API | down BROKER | up BROKER | rtt BROKER MS | "                  \
    "leader PARTITION BROKER | offsets PARTITION | dump PARTITION FROM COUNT | help"

/* Runs one command line (modified in place) and answers it. */
static void control_command(struct mock *m, const struct mock_opts *o, char *line)
{
    char *save = NULL, *argv[8];
    int argc = 0;
    int16_t api;
    int32_t broker;
    rd_kafka_resp_err_t code;
    long long count, ms, from, partition;

    for (char *t = strtok_r(line, " \t\r", &save); t != NULL; t = strtok_r(NULL, " \t\r", &save)) {
        if (argc == (int)DM_ARRAY_LEN(argv)) {
            reply_error("too many words");
            return;
        }
        argv[argc++] = t;
    }
    for (int i = argc; i < (int)DM_ARRAY_LEN(argv); i++)
        argv[i] = NULL;
    if (argc == 0)
        return; /* blank lines are not answered */
    const char *cmd = argv[0];
    DM_LOG(DM_LOG_INFO, "msg=\"control\" cmd=%s args=%d", cmd, argc - 1);

    if (strcmp(cmd, "err") == 0 && argc == 4) {
        if (parse_api(argv[1], &api) != 0 || parse_ll(argv[2], 1, MOCK_MAX_ERRORS, &count) != 0 ||
            parse_error(argv[3], &code) != 0) {
            reply_error("usage: err API COUNT ERROR");
            return;
        }
        rd_kafka_resp_err_t *errs = dm_malloc((size_t)count * sizeof(*errs));
        for (long long i = 0; i < count; i++)
            errs[i] = code;
        rd_kafka_mock_push_request_errors_array(m->cluster, api, (size_t)count, errs);
        free(errs);
        reply_ok(NULL);
    } else if (strcmp(cmd, "broker-err") == 0 && (argc == 5 || argc == 6)) {
        ms = 0;
        if (parse_broker(argv[1], o->brokers, &broker) != 0 || broker == 0 ||
            parse_api(argv[2], &api) != 0 || parse_ll(argv[3], 1, MOCK_MAX_ERRORS, &count) != 0 ||
            parse_error(argv[4], &code) != 0 ||
            (argc == 6 && parse_ll(argv[5], 0, 3600000, &ms) != 0)) {
            reply_error("usage: broker-err BROKER API COUNT ERROR [RTT_MS]");
            return;
        }
        rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        for (long long i = 0; i < count && rerr == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
            rerr = rd_kafka_mock_broker_push_request_error_rtts(m->cluster, broker, api, 1, code,
                                                                (int)ms);
        reply_result(rerr);
    } else if (strcmp(cmd, "pending") == 0 && argc == 3) {
        size_t n = 0;
        char data[32];
        if (parse_broker(argv[1], o->brokers, &broker) != 0 || broker == 0 ||
            parse_api(argv[2], &api) != 0) {
            reply_error("usage: pending BROKER API");
            return;
        }
        rd_kafka_resp_err_t rerr =
            rd_kafka_mock_broker_error_stack_cnt(m->cluster, broker, api, &n);
        if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
            reply_result(rerr);
            return;
        }
        snprintf(data, sizeof(data), "%zu", n);
        reply_ok(data);
    } else if (strcmp(cmd, "clear") == 0 && argc == 2) {
        if (parse_api(argv[1], &api) != 0) {
            reply_error("usage: clear API");
            return;
        }
        rd_kafka_mock_clear_request_errors(m->cluster, api);
        reply_ok(NULL);
    } else if ((strcmp(cmd, "down") == 0 || strcmp(cmd, "up") == 0) && argc == 2) {
        bool up = strcmp(cmd, "up") == 0;
        if (parse_broker(argv[1], o->brokers, &broker) != 0) {
            reply_error("usage: %s BROKER|all", cmd);
            return;
        }
        reply_result(each_broker(m, o, broker, up ? broker_up : broker_down, 0));
    } else if (strcmp(cmd, "rtt") == 0 && argc == 3) {
        if (parse_broker(argv[1], o->brokers, &broker) != 0 ||
            parse_ll(argv[2], 0, 3600000, &ms) != 0) {
            reply_error("usage: rtt BROKER|all MS");
            return;
        }
        reply_result(each_broker(m, o, broker, rd_kafka_mock_broker_set_rtt, (int)ms));
    } else if (strcmp(cmd, "leader") == 0 && argc == 3) {
        long long id;
        if (parse_ll(argv[1], 0, o->partitions - 1, &partition) != 0 ||
            parse_ll(argv[2], -1, o->brokers, &id) != 0 || id == 0) {
            reply_error("usage: leader PARTITION BROKER (-1: none)");
            return;
        }
        reply_result(rd_kafka_mock_partition_set_leader(m->cluster, o->topic, (int32_t)partition,
                                                        (int32_t)id));
    } else if (strcmp(cmd, "offsets") == 0 && argc == 2) {
        if (parse_ll(argv[1], 0, o->partitions - 1, &partition) != 0) {
            reply_error("usage: offsets PARTITION");
            return;
        }
        cmd_offsets(m, o, (int32_t)partition);
    } else if (strcmp(cmd, "dump") == 0 && argc == 4) {
        if (parse_ll(argv[1], 0, o->partitions - 1, &partition) != 0 ||
            parse_ll(argv[2], 0, INT64_MAX, &from) != 0 ||
            parse_ll(argv[3], 0, 1000000, &count) != 0) {
            reply_error("usage: dump PARTITION FROM COUNT");
            return;
        }
        cmd_dump(m, o, (int32_t)partition, from, count);
    } else if (strcmp(cmd, "help") == 0) {
        reply_ok(CONTROL_USAGE);
    } else {
        reply_error("unknown command or wrong arguments: %s (" CONTROL_USAGE ")", cmd);
    }
}

/* Serves commands from stdin and the signals of sigs until a stop signal
 * (returned) or the end of stdin (0). */
static int control_loop(struct mock *m, const struct mock_opts *o, const sigset_t *sigs)
{
    char buf[MOCK_LINE_MAX + 1];
    size_t len = 0;
    bool skipping = false; /* discarding the rest of an overlong line */
    int sfd = signalfd(-1, sigs, SFD_CLOEXEC);

    if (sfd < 0) {
        int e = errno;
        DM_LOG(DM_LOG_ERROR, "msg=\"signalfd failed\" error=\"%s\"", strerror(e));
        return SIGTERM;
    }
    for (;;) {
        struct pollfd fds[2] = {{sfd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            DM_ASSERT(errno == EINTR);
            continue;
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            ssize_t got = read(sfd, &si, sizeof(si));
            DM_ASSERT(got == (ssize_t)sizeof(si));
            if (si.ssi_signo == SIGUSR1 || si.ssi_signo == SIGUSR2) {
                set_brokers(m, o->brokers, si.ssi_signo == SIGUSR2);
            } else {
                close(sfd);
                return (int)si.ssi_signo;
            }
        }
        if (fds[1].revents == 0)
            continue;
        ssize_t n = read(STDIN_FILENO, buf + len, MOCK_LINE_MAX - len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', len - (size_t)(start - buf))) != NULL) {
            *nl = '\0';
            if (skipping)
                skipping = false;
            else
                control_command(m, o, start);
            start = nl + 1;
        }
        len -= (size_t)(start - buf);
        memmove(buf, start, len);
        if (len == MOCK_LINE_MAX) {
            if (!skipping)
                reply_error("line longer than %d bytes", MOCK_LINE_MAX);
            skipping = true;
            len = 0;
        }
    }
    close(sfd);
    DM_LOG(DM_LOG_INFO, "msg=\"end of control input\"");
    return 0;
}

int main(int argc, char **argv)
{
    struct mock_opts opts;
    struct mock m = {0};
    char err[DM_ERRLEN] = "";
    const char *bootstrap;
    sigset_t sigs;
    int sig = 0;

    dm_log_set_node("mock-kafka");
    switch (parse_args(argc, argv, &opts, err)) {
    case 0:
        break;
    case 1:
        usage(stdout);
        return 0;
    default:
        fprintf(stderr, "danmaku-mock-kafka: %s\n", err);
        return 2;
    }

    /* Block the signals before librdkafka starts its threads, so they inherit
     * the mask and only sigwait() below ever receives them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGUSR2);
    DM_AZ(pthread_sigmask(SIG_BLOCK, &sigs, NULL));
    signal(SIGPIPE, SIG_IGN);

    if (mock_init(&m, &opts, err) != 0)
        goto fail;
    bootstrap = rd_kafka_mock_cluster_bootstraps(m.cluster);
    DM_AN(bootstrap);
    if (opts.bootstrap_file != NULL &&
        write_bootstrap_file(&m, opts.bootstrap_file, bootstrap, err) != 0)
        goto fail;
    printf("bootstrap=%s\n", bootstrap);
    fflush(stdout);
    DM_LOG(DM_LOG_INFO, "msg=\"mock cluster ready\" bootstrap=%s topic=%s partitions=%d brokers=%d",
           bootstrap, opts.topic, opts.partitions, opts.brokers);

    if (opts.control) {
        sig = control_loop(&m, &opts, &sigs);
    } else {
        for (;;) {
            int rc = sigwait(&sigs, &sig);
            DM_AZ(rc);
            if (sig == SIGUSR1) {
                set_brokers(&m, opts.brokers, false);
            } else if (sig == SIGUSR2) {
                set_brokers(&m, opts.brokers, true);
            } else {
                break;
            }
        }
    }

    DM_LOG(DM_LOG_INFO, "msg=\"mock cluster stopping\" signal=%s",
           sig != 0 ? strsignal(sig) : "none (end of control input)");
    mock_fini(&m, &opts);
    return 0;

fail:
    DM_LOG(DM_LOG_ERROR, "msg=\"mock cluster failed\" error=\"%s\"", err);
    mock_fini(&m, &opts);
    return 1;
}
