/* The viewers of a run, in this process (worker threads) or spread over
 * several child processes when one process' file descriptors are not
 * enough. The children share their figures through shared memory (the
 * histograms and counters are atomics, readable while they run), take
 * their orders (measure window, slow viewers, stop) from it, and after
 * the run receive the ledger through a pipe to do their own accounting. */
#ifndef DM_LOADTEST_GROUP_H
#define DM_LOADTEST_GROUP_H

#include "loadtest/viewers.h"

struct lt_group;

/* Starts the viewers: procs == 1 runs them here; procs > 1 forks the
 * children now, so call it before this process starts any thread. cfg is
 * copied (its strings must outlive the group). NULL with err. */
struct lt_group *lt_group_start(const struct lt_viewers_config *cfg, int procs,
                                char err[DM_ERRLEN]);

void lt_group_set_window(struct lt_group *g, int64_t from_us, int64_t to_us);
void lt_group_start_slow(struct lt_group *g);

/* Sums every worker's counters, and latency into lat when not NULL. */
void lt_group_stats(struct lt_group *g, struct lt_viewer_stats *out, struct lt_hist *lat);

/* Stops every viewer and adds their accounting against the ledger to acc.
 * 0, or -1 with err when a child process failed. */
int lt_group_finish(struct lt_group *g, const struct lt_ledger *ledger, struct lt_account *acc,
                    char err[DM_ERRLEN]);

void lt_group_free(struct lt_group *g);

#endif
