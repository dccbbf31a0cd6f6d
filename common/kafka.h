/* librdkafka settings shared by the producer, the consumer and the tools:
 * error-reporting conf setters and the route of its logs into ours. */
#ifndef DM_COMMON_KAFKA_H
#define DM_COMMON_KAFKA_H

#include <librdkafka/rdkafka.h>

#include "common/util.h"

/* A new conf with bootstrap.servers = brokers and librdkafka's log lines
 * routed into DM_LOG. Caller owns it (rd_kafka_new takes it over). */
rd_kafka_conf_t *dm_kafka_conf_new(const char *brokers);

/* Sets name = value; -1 with err naming both on failure. */
int dm_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                      char err[DM_ERRLEN]);

/* Same, for an integer value. */
int dm_kafka_conf_set_int(rd_kafka_conf_t *conf, const char *name, long long value,
                          char err[DM_ERRLEN]);

#endif
