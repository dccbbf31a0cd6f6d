/* danmaku-ingest: argv -> config -> node -> event loop -> teardown. */
#include <event2/event.h>

#include "common/log.h"
#include "common/process.h"
#include "server/ingest.h"

int main(int argc, char **argv)
{
    struct dm_process proc;
    struct dm_ingest *in;
    char err[DM_ERRLEN];
    int rc = dm_process_init(&proc, DM_CONF_I, "danmaku-ingest", argc, argv);

    if (rc != 0)
        return rc < 0 ? 1 : 0;
    in = dm_ingest_new(proc.base, &proc.cfg, proc.node, err);
    if (in == NULL) {
        DM_LOG(DM_LOG_ERROR, "msg=\"startup failed\" detail=\"%s\"", err);
        dm_process_fini(&proc);
        return 1;
    }
    DM_LOG(DM_LOG_INFO, "msg=\"ready\" kafka=%s topic=%s partitions=%lld", proc.cfg.kafka_brokers,
           proc.cfg.kafka_topic, (long long)proc.cfg.kafka_partitions);
    event_base_dispatch(proc.base);

    /* SIGTERM: no new connections; comments in flight get their answer
     * once Kafka has acknowledged them (or failed them), within the
     * delivery timeout. */
    dm_ingest_drain(in, (int)proc.cfg.kafka_delivery_timeout_ms + 1000);
    dm_ingest_free(in);
    DM_LOG(DM_LOG_INFO, "msg=\"stopped\"");
    dm_process_fini(&proc);
    return 0;
}
