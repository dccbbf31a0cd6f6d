/* Shared process start-up for danmaku-ingest and danmaku-broadcast. */
#include "common/process.h"

#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/kafka.h"
#include "common/log.h"
#include "common/net.h"
#include "common/redis.h"

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct event_base *base = arg;
    DM_UNUSED(what);
    DM_LOG(DM_LOG_INFO, "msg=\"stopping\" signal=%d", (int)sig);
    event_base_loopbreak(base);
}

int dm_process_worker_count(const struct dm_config *cfg)
{
    cpu_set_t set;
    long n = cfg->workers;
    if (n <= 0)
        n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                         : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > DM_MAX_WORKERS ? DM_MAX_WORKERS : (int)n;
}

int dm_process_listen(const struct dm_process *p, int k, int n, int *port, int backlog, char *name,
                      size_t name_size, char err[DM_ERRLEN])
{
    int fd = dm_net_listen(p->cfg.listen_host, *port, backlog, true, err);
    if (fd < 0)
        return -1;
    if (k == 0)
        *port = dm_net_bound_port(fd);
    if (n == 1)
        snprintf(name, name_size, "%s", p->node);
    else
        snprintf(name, name_size, "%s-w%d", p->node, k);
    return fd;
}

int dm_process_ready(const struct dm_process *p, int port, int n, char err[DM_ERRLEN])
{
    const struct dm_config *cfg = &p->cfg;

    DM_LOG(DM_LOG_INFO, "msg=\"listening\" addr=%s port=%d workers=%d", cfg->listen_host, port, n);
    if (*cfg->port_file != '\0' && dm_net_write_port_file(cfg->port_file, port, err) < 0)
        return -1;
    DM_LOG(DM_LOG_INFO, "msg=\"ready\" kafka=%s topic=%s partitions=%lld", cfg->kafka_brokers,
           cfg->kafka_topic, (long long)cfg->kafka_partitions);
    return 0;
}

int dm_process_init(struct dm_process *p, unsigned scope, const char *prog, int argc, char **argv)
{
    char err[DM_ERRLEN];
    int rc;

    memset(p, 0, sizeof(*p));
    rc = dm_config_load(&p->cfg, scope, prog, argc, argv, stdout, err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "%s: %s\n", prog, err);
        return rc;
    }
    if (*p->cfg.kafka_properties_file != '\0' &&
        dm_kafka_load_properties(p->cfg.kafka_properties_file, err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        dm_config_fini(&p->cfg);
        return -1;
    }
    if (*p->cfg.redis_password_file != '\0' &&
        dm_redis_check_password_file(p->cfg.redis_password_file, err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        dm_kafka_free_properties();
        dm_config_fini(&p->cfg);
        return -1;
    }
    dm_config_node_name(&p->cfg, p->node, sizeof(p->node));
    dm_log_set_node(p->node);
    dm_log_route_libevent();
    dm_config_log(&p->cfg, scope);
    signal(SIGPIPE, SIG_IGN);

    p->base = event_base_new();
    if (p->base == NULL)
        goto fail;
    p->sigterm = evsignal_new(p->base, SIGTERM, on_stop_signal, p->base);
    p->sigint = evsignal_new(p->base, SIGINT, on_stop_signal, p->base);
    if (p->sigterm == NULL || p->sigint == NULL || evsignal_add(p->sigterm, NULL) < 0 ||
        evsignal_add(p->sigint, NULL) < 0)
        goto fail;
    return 0;

fail:
    DM_LOG(DM_LOG_ERROR, "msg=\"cannot set up the event loop\"");
    dm_process_fini(p);
    return -1;
}

void dm_process_fini(struct dm_process *p)
{
    if (p->sigterm != NULL)
        event_free(p->sigterm);
    if (p->sigint != NULL)
        event_free(p->sigint);
    if (p->base != NULL)
        event_base_free(p->base);
    dm_kafka_free_properties();
    dm_config_fini(&p->cfg);
    dm_log_set_node("-"); /* the name lived in p */
    memset(p, 0, sizeof(*p));
}
