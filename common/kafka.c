/* Shared librdkafka configuration helpers. */
#include "common/kafka.h"

#include <stdio.h>
#include <string.h>

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

rd_kafka_conf_t *dm_kafka_conf_new(const char *brokers)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[DM_ERRLEN];

    DM_AN(conf);
    if (dm_kafka_conf_set(conf, "bootstrap.servers", brokers, err) < 0)
        DM_PANIC("bootstrap.servers refused");
    rd_kafka_conf_set_log_cb(conf, on_kafka_log);
    return conf;
}
