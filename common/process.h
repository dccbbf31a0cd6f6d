/* Start-up and teardown the server binaries share: configuration, node
 * name, logging, the event loop and the stop signals (SIGTERM, SIGINT break
 * the loop; SIGPIPE is ignored). Each main() owns one dm_process; this is
 * the only place in common/ that creates an event_base. */
#ifndef DM_COMMON_PROCESS_H
#define DM_COMMON_PROCESS_H

#include "common/config.h"

struct event;
struct event_base;

struct dm_process {
    struct dm_config cfg;
    char node[256];
    struct event_base *base;
    struct event *sigterm, *sigint;
};

/* Loads the configuration of scope from argv and the environment, sets up
 * logging and the loop. Returns 0 when ready, 1 when --help was printed
 * (exit 0), -1 after reporting an error on stderr (exit 1). On 0 the caller
 * must call dm_process_fini; otherwise nothing is left to free. */
int dm_process_init(struct dm_process *p, unsigned scope, const char *prog, int argc, char **argv);

/* Most event-loop threads a node runs. */
#define DM_MAX_WORKERS 256

/* How many worker threads to run: cfg->workers, or with 0 one per CPU this
 * process may use (taskset, cgroup cpusets); 1..DM_MAX_WORKERS. */
int dm_process_worker_count(const struct dm_config *cfg);

/* Worker k of n's listener: the first (k == 0) binds cfg->listen_host:*port
 * (0: any free port) and stores the bound port in *port; the others bind
 * that same port, all with SO_REUSEPORT, so the kernel spreads connections
 * over the workers. name gets the worker's name in logs and Redis: the
 * node name, with "-w<k>" when n > 1. Returns the fd (the caller's) or -1
 * with err. */
int dm_process_listen(const struct dm_process *p, int k, int n, int *port, int backlog, char *name,
                      size_t name_size, char err[DM_ERRLEN]);

/* Every worker is listening on port: logs it, writes cfg->port_file when
 * set (-1 with err when that fails) and logs "ready". */
int dm_process_ready(const struct dm_process *p, int port, int n, char err[DM_ERRLEN]);

/* Frees the loop, the signal events and the configuration. */
void dm_process_fini(struct dm_process *p);

#endif
