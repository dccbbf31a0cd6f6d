/* danmaku-mock-kafka: hosts librdkafka's in-process mock cluster (rdkafka_mock.h)
 * as a small process, so `make run` and broker-fault tests have a Kafka that
 * producers and consumers in other processes can reach, with no broker installed. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "common/check.h"
#include "common/log.h"
#include "common/util.h"

#define MOCK_MAX_PARTITIONS 10000
#define MOCK_MAX_BROKERS    16
#define MOCK_MAX_REPLICAS   3

struct mock_opts {
    const char *topic; /* borrowed from argv */
    int partitions;
    int brokers;
    const char *bootstrap_file; /* borrowed from argv; NULL: none */
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
            "  -h, --help             this text\n"
            "\n"
            "Fault injection: SIGUSR1 takes every broker down (connections are closed and\n"
            "refused), SIGUSR2 brings them back up; the bootstrap string never changes.\n",
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
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    enum dm_log_level level;
    int c;

    o->topic = "danmaku.comments";
    o->partitions = 32;
    o->brokers = 1;
    o->bootstrap_file = NULL;

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

    DM_LOG(DM_LOG_INFO, "msg=\"mock cluster stopping\" signal=%s", strsignal(sig));
    mock_fini(&m, &opts);
    return 0;

fail:
    DM_LOG(DM_LOG_ERROR, "msg=\"mock cluster failed\" error=\"%s\"", err);
    mock_fini(&m, &opts);
    return 1;
}
