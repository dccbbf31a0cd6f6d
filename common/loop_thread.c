/* Event loops on their own threads. */
#include "common/loop_thread.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "common/check.h"

struct dm_loop_thread {
    struct event_base *base;
    struct event *stop; /* activated from another thread */
    pthread_t thread;
    bool started;
    dm_loop_finish_cb finish;
    void *arg;
};

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct dm_loop_thread *t = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    event_base_loopbreak(t->base);
}

static void *run(void *arg)
{
    struct dm_loop_thread *t = arg;
    event_base_dispatch(t->base);
    t->finish(t->base, t->arg);
    return NULL;
}

struct dm_loop_thread *dm_loop_thread_new(char err[DM_ERRLEN])
{
    struct dm_loop_thread *t = dm_calloc(1, sizeof(*t));

    t->base = event_base_new();
    t->stop = t->base != NULL ? event_new(t->base, -1, 0, on_stop, t) : NULL;
    if (t->stop == NULL) {
        snprintf(err, DM_ERRLEN, "cannot create an event loop for a worker");
        dm_loop_thread_free(t);
        return NULL;
    }
    return t;
}

struct event_base *dm_loop_thread_base(const struct dm_loop_thread *t)
{
    return t->base;
}

int dm_loop_thread_start(struct dm_loop_thread *t, dm_loop_finish_cb finish, void *arg,
                         char err[DM_ERRLEN])
{
    t->finish = finish;
    t->arg = arg;
    if (pthread_create(&t->thread, NULL, run, t) != 0) {
        snprintf(err, DM_ERRLEN, "cannot start a worker thread");
        return -1;
    }
    t->started = true;
    return 0;
}

void dm_loop_thread_stop(struct dm_loop_thread *t)
{
    event_active(t->stop, EV_TIMEOUT, 0);
}

void dm_loop_thread_join(struct dm_loop_thread *t)
{
    if (t->started)
        pthread_join(t->thread, NULL);
    t->started = false;
}

void dm_loop_thread_free(struct dm_loop_thread *t)
{
    if (t == NULL)
        return;
    DM_ASSERT(!t->started);
    if (t->stop != NULL)
        event_free(t->stop);
    if (t->base != NULL)
        event_base_free(t->base);
    free(t);
}
