/* Accepting when the process runs out of file descriptors (or memory for
 * sockets). A listener's socket stays readable while connections wait in
 * its backlog, so with accept() failing on EMFILE the loop would spin on it
 * at full CPU. Instead the listener is disabled for a short pause and a
 * timer enables it again (nginx does the same), so accepting resumes by
 * itself once descriptors are freed and the waiting clients are served. */
#ifndef DM_COMMON_ACCEPT_PAUSE_H
#define DM_COMMON_ACCEPT_PAUSE_H

#include <stdbool.h>

#include "common/util.h"

struct event_base;
struct evconnlistener;
struct dm_accept_pause;

/* How long accepting stops each time. */
#define DM_ACCEPT_PAUSE_MS 250

/* Pauses of listener l (borrowed; must outlive the object or be detached
 * with dm_accept_pause_free first), on base. NULL with err. Caller owns:
 * dm_accept_pause_free. */
struct dm_accept_pause *dm_accept_pause_new(struct event_base *base, struct evconnlistener *l,
                                            char err[DM_ERRLEN]);

/* For the listener's error callback, with the accept() error err: when it
 * means the process is out of descriptors or socket memory (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM), disables the listener for DM_ACCEPT_PAUSE_MS
 * and returns true (the caller counts the pause); a warning is logged at
 * most once per 10 s, with the pauses since the last one. Other errors
 * return false and change nothing. */
bool dm_accept_pause_on_error(struct dm_accept_pause *p, int err);

/* Whether accepting is paused now. */
bool dm_accept_pause_active(const struct dm_accept_pause *p);

/* Cancels a pending resume (the listener stays as it is) and frees p;
 * call it before disabling the listener for good or freeing it. NULL is a
 * no-op. */
void dm_accept_pause_free(struct dm_accept_pause *p);

#endif
