/* danmaku-ingest: argv -> config -> verifier and listeners -> worker
 * threads -> wait for a signal -> drain -> teardown. */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "common/auth.h"
#include "common/blocklist.h"
#include "common/connlimit.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/process.h"
#include "server/ingest.h"
#include "server/worker.h"

int main(int argc, char **argv)
{
    struct dm_process proc;
    struct dm_ingest_worker *workers[DM_MAX_WORKERS] = {0};
    struct dm_jwt_verifier *verifier = NULL;
    struct dm_blocklist *blocked = NULL;
    struct dm_ingest_shared shared = {0};
    char err[DM_ERRLEN];
    int n = 0, port = 0, status = 1;
    int64_t drain_ms;

    /* Workers are told to stop from the main thread. */
    evthread_use_pthreads();
    int rc = dm_process_init(&proc, DM_CONF_I, "danmaku-ingest", argc, argv);
    if (rc != 0)
        return rc < 0 ? 1 : 0;
    const struct dm_config *cfg = &proc.cfg;
    verifier = dm_auth_verifier_new(cfg, err);
    if (verifier == NULL)
        goto fail;
    if (strcmp(cfg->blocked_words_action, "reject") != 0 &&
        strcmp(cfg->blocked_words_action, "mask") != 0) {
        snprintf(err, DM_ERRLEN, "blocked_words_action must be reject or mask, not %.40s",
                 cfg->blocked_words_action);
        goto fail;
    }
    if (*cfg->blocked_words_file != '\0') {
        blocked = dm_blocklist_load(cfg->blocked_words_file, err);
        if (blocked == NULL)
            goto fail;
        DM_LOG(DM_LOG_INFO, "msg=\"blocked words loaded\" entries=%zu action=%s",
               dm_blocklist_count(blocked), cfg->blocked_words_action);
    }
    shared.verifier = verifier;
    shared.metrics = dm_metrics_new(DM_METRICS_I);
    shared.blocked = blocked;
    shared.mask_blocked = strcmp(cfg->blocked_words_action, "mask") == 0;
    shared.limits =
        dm_connlimit_new((size_t)cfg->max_connections, (size_t)cfg->max_connections_per_ip);
    n = dm_process_worker_count(cfg);
    port = (int)cfg->http_port;
    for (int k = 0; k < n; k++) {
        char node[300];
        int fd = dm_process_listen(&proc, k, n, &port, 1024, node, sizeof(node), err);
        if (fd < 0)
            goto fail;
        workers[k] = dm_ingest_worker_start(cfg, node, &shared, fd, err);
        if (workers[k] == NULL)
            goto fail;
    }
    if (dm_process_ready(&proc, port, n, err) < 0)
        goto fail;
    event_base_dispatch(proc.base); /* until SIGTERM or SIGINT */
    status = 0;
    goto out;

fail:
    DM_LOG(DM_LOG_ERROR, "msg=\"startup failed\" detail=\"%s\"", err);
out:
    /* No new connections; comments in flight get their answer once Kafka
     * has acknowledged them (or failed them), within the delivery timeout:
     * never wait less than that, or an accepted comment loses its answer. */
    drain_ms = cfg->kafka_delivery_timeout_ms + 1000;
    if (cfg->drain_timeout_ms > drain_ms)
        drain_ms = cfg->drain_timeout_ms;
    for (int k = 0; k < n; k++) {
        if (workers[k] != NULL)
            dm_ingest_worker_stop(workers[k], (int)drain_ms);
    }
    for (int k = 0; k < n; k++)
        dm_ingest_worker_join(workers[k]);
    dm_metrics_free(shared.metrics);
    dm_connlimit_free(shared.limits);
    dm_blocklist_free(blocked);
    dm_jwt_verifier_free(verifier);
    DM_LOG(DM_LOG_INFO, "msg=\"stopped\"");
    dm_process_fini(&proc);
    return status;
}
