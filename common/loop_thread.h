/* One event loop on a thread of its own: what the nodes' workers run on.
 * The caller builds whatever runs on the loop on its own thread (so
 * start-up errors come back there), starts the thread, and may ask it from
 * any thread to stop: the loop breaks, and `finish` runs on the worker's
 * thread with the loop still there (for a drain that runs it a while
 * longer). libevent's thread support must be on (evthread_use_pthreads). */
#ifndef DM_COMMON_LOOP_THREAD_H
#define DM_COMMON_LOOP_THREAD_H

#include "common/util.h"

struct event_base;
struct dm_loop_thread;

typedef void (*dm_loop_finish_cb)(struct event_base *base, void *arg);

/* A new loop, not running yet. NULL with err. */
struct dm_loop_thread *dm_loop_thread_new(char err[DM_ERRLEN]);

/* The loop (borrowed): register events on it before the start. */
struct event_base *dm_loop_thread_base(const struct dm_loop_thread *t);

/* Runs the loop on a new thread until dm_loop_thread_stop, then
 * finish(base, arg). -1 with err when the thread cannot start. */
int dm_loop_thread_start(struct dm_loop_thread *t, dm_loop_finish_cb finish, void *arg,
                         char err[DM_ERRLEN]);

/* Breaks the loop (any thread); finish runs next, on the loop's thread. */
void dm_loop_thread_stop(struct dm_loop_thread *t);

/* Waits for the thread to end (no-op if it never started). */
void dm_loop_thread_join(struct dm_loop_thread *t);

/* Frees the loop: after the join, and after what used the loop was freed.
 * NULL is a no-op. */
void dm_loop_thread_free(struct dm_loop_thread *t);

#endif
