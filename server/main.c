/* danmaku-ingest: argv -> config -> node -> event loop -> teardown. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "common/config.h"
#include "common/log.h"
#include "common/util.h"
#include "server/ingest.h"

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct event_base *base = arg;
    DM_UNUSED(what);
    DM_LOG(DM_LOG_INFO, "msg=\"stopping\" signal=%d", (int)sig);
    event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
    struct dm_config cfg;
    char err[DM_ERRLEN], node[256];
    struct event_base *base = NULL;
    struct event *sigterm = NULL, *sigint = NULL;
    struct dm_ingest *in = NULL;
    int rc;

    rc = dm_config_load(&cfg, DM_CONF_I, "danmaku-ingest", argc, argv, stdout, err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "danmaku-ingest: %s\n", err);
        return rc < 0 ? 1 : 0;
    }
    dm_config_node_name(&cfg, node, sizeof(node));
    dm_log_set_node(node);
    dm_log_route_libevent();
    dm_config_log(&cfg, DM_CONF_I);
    signal(SIGPIPE, SIG_IGN);

    rc = 1;
    base = event_base_new();
    if (base == NULL) {
        DM_LOG(DM_LOG_ERROR, "msg=\"event_base_new failed\"");
        goto out;
    }
    sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    sigint = evsignal_new(base, SIGINT, on_signal, base);
    if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) < 0 ||
        evsignal_add(sigint, NULL) < 0) {
        DM_LOG(DM_LOG_ERROR, "msg=\"cannot install signal handlers\"");
        goto out;
    }
    in = dm_ingest_new(base, &cfg, node, err);
    if (in == NULL) {
        DM_LOG(DM_LOG_ERROR, "msg=\"startup failed\" detail=\"%s\"", err);
        goto out;
    }
    DM_LOG(DM_LOG_INFO, "msg=\"ready\" kafka=%s topic=%s partitions=%lld", cfg.kafka_brokers,
           cfg.kafka_topic, (long long)cfg.kafka_partitions);
    event_base_dispatch(base);
    dm_ingest_stop_accepting(in);
    rc = 0;
out:
    dm_ingest_free(in);
    if (sigterm != NULL)
        event_free(sigterm);
    if (sigint != NULL)
        event_free(sigint);
    if (base != NULL)
        event_base_free(base);
    dm_config_fini(&cfg);
    DM_LOG(DM_LOG_INFO, "msg=\"stopped\" status=%d", rc);
    return rc;
}
