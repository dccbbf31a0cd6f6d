/* danmaku-broadcast: argv -> config -> node -> event loop -> drain -> teardown. */
#include <stdbool.h>

#include <event2/event.h>

#include "broadcast/bcast.h"
#include "common/log.h"
#include "common/process.h"

/* How long SIGTERM waits for viewers to take their `reconnect` and for Redis
 * to forget this node. */
#define DRAIN_DEADLINE_MS 5000

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    *(bool *)arg = true;
}

int main(int argc, char **argv)
{
    struct dm_process proc;
    struct dm_bcast *b;
    char err[DM_ERRLEN];
    int rc = dm_process_init(&proc, DM_CONF_B, "danmaku-broadcast", argc, argv);

    if (rc != 0)
        return rc < 0 ? 1 : 0;
    b = dm_bcast_new(proc.base, &proc.cfg, proc.node, err);
    if (b == NULL) {
        DM_LOG(DM_LOG_ERROR, "msg=\"startup failed\" detail=\"%s\"", err);
        dm_process_fini(&proc);
        return 1;
    }
    DM_LOG(DM_LOG_INFO, "msg=\"ready\" kafka=%s topic=%s partitions=%lld", proc.cfg.kafka_brokers,
           proc.cfg.kafka_topic, (long long)proc.cfg.kafka_partitions);
    event_base_dispatch(proc.base);

    /* Drain: viewers get `reconnect` and close 1012, then this node leaves
     * Redis; the loop runs until that is done or the deadline passes. */
    bool deadline_passed = false;
    struct timeval deadline = dm_timeval_ms(DRAIN_DEADLINE_MS);
    event_base_once(proc.base, -1, EV_TIMEOUT, on_drain_deadline, &deadline_passed, &deadline);
    while (dm_bcast_drain(b) > 0 && !deadline_passed)
        event_base_loop(proc.base, EVLOOP_ONCE);

    dm_bcast_free(b);
    DM_LOG(DM_LOG_INFO, "msg=\"stopped\"");
    dm_process_fini(&proc);
    return 0;
}
