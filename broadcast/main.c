/* danmaku-broadcast: argv -> config -> listeners -> worker threads -> wait
 * for a signal -> drain -> teardown. */
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "broadcast/worker.h"
#include "common/connlimit.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/process.h"

int main(int argc, char **argv)
{
    struct dm_process proc;
    struct dm_worker *workers[DM_MAX_WORKERS] = {0};
    struct dm_metrics *metrics = NULL;
    struct dm_connlimit *limits = NULL;
    char err[DM_ERRLEN];
    int n, port = 0, status = 1;

    /* Workers are told to drain from the main thread. */
    evthread_use_pthreads();
    int rc = dm_process_init(&proc, DM_CONF_B, "danmaku-broadcast", argc, argv);
    if (rc != 0)
        return rc < 0 ? 1 : 0;
    const struct dm_config *cfg = &proc.cfg;
    n = dm_process_worker_count(cfg);
    metrics = dm_metrics_new(DM_METRICS_B);
    /* One count for the whole process: the kernel's spread of connections
     * over the workers' listeners is uneven, so per-worker shares of the
     * limit would refuse some while another worker has room. */
    limits = dm_connlimit_new((size_t)cfg->max_connections, (size_t)cfg->max_connections_per_ip);

    port = (int)cfg->ws_port;
    for (int k = 0; k < n; k++) {
        char node[300];
        int fd = dm_process_listen(&proc, k, n, &port, 4096, node, sizeof(node), err);
        if (fd < 0)
            goto fail;
        workers[k] = dm_worker_start(cfg, node, metrics, fd, limits, err);
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
    /* Drain: viewers get `reconnect` and close 1012, then each worker
     * leaves Redis; every worker ends its loop when done or at
     * drain_timeout_ms. */
    for (int k = 0; k < n; k++) {
        if (workers[k] != NULL)
            dm_worker_drain(workers[k], (int)cfg->drain_timeout_ms);
    }
    for (int k = 0; k < n; k++)
        dm_worker_join(workers[k]);
    dm_metrics_free(metrics);
    dm_connlimit_free(limits);
    DM_LOG(DM_LOG_INFO, "msg=\"stopped\"");
    dm_process_fini(&proc);
    return status;
}
