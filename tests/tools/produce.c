/* danmaku-test-produce: writes one record into the comment topic the way
 * ingest does (key = room, partition from the room hash, idempotent, acks
 * all) and prints "partition offset". For tests that need records ingest
 * does not make yet, or makes only after checks a test wants to bypass.
 *
 *   danmaku-test-produce BROKERS TOPIC PARTITIONS ROOM VALUE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "common/hash.h"
#include "common/kafka.h"
#include "common/util.h"

static int64_t delivered_offset = -1;
static int32_t delivered_partition = -1;
static int delivery_error;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    DM_UNUSED(rk);
    DM_UNUSED(opaque);
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(m->err));
        delivery_error = 1;
        return;
    }
    delivered_offset = m->offset;
    delivered_partition = m->partition;
}

int main(int argc, char **argv)
{
    char err[DM_ERRLEN], errstr[160];

    if (argc != 6) {
        fprintf(stderr, "usage: %s BROKERS TOPIC PARTITIONS ROOM VALUE\n", argv[0]);
        return 2;
    }
    const char *room = argv[4], *value = argv[5];
    int32_t partitions = atoi(argv[3]);
    if (partitions < 1 || !dm_room_id_valid(room, strlen(room))) {
        fprintf(stderr, "bad partition count or room id\n");
        return 2;
    }
    rd_kafka_conf_t *conf = dm_kafka_conf_new(argv[1]);
    if (dm_kafka_conf_set(conf, "enable.idempotence", "true", err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "%s\n", errstr);
        return 1;
    }
    rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(argv[2]),
                          RD_KAFKA_V_PARTITION(dm_room_partition(room, strlen(room), partitions)),
                          RD_KAFKA_V_KEY(room, strlen(room)),
                          RD_KAFKA_V_VALUE((void *)(uintptr_t)value, strlen(value)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return 1;
    }
    rd_kafka_flush(rk, 10000);
    rd_kafka_destroy(rk);
    if (delivery_error || delivered_offset < 0)
        return 1;
    printf("%d %lld\n", delivered_partition, (long long)delivered_offset);
    return 0;
}
