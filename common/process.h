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

/* Frees the loop, the signal events and the configuration. */
void dm_process_fini(struct dm_process *p);

#endif
