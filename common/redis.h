/* An asynchronous Redis client on the event loop (hiredis + its libevent
 * adapter): reconnects by itself with backoff, and gives every command a
 * deadline, so a stalled Redis never holds a caller longer than that.
 * Binaries wrap it in their own modules (membership.c, ...). */
#ifndef DM_COMMON_REDIS_H
#define DM_COMMON_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

struct event_base;
struct redisReply;
struct dm_redis;

/* Fires exactly once per accepted command, from the event loop: with the
 * reply (borrowed, valid during the call only; may be an error reply), or
 * with NULL when Redis was unreachable, the connection dropped, or the
 * deadline passed first. */
typedef void (*dm_redis_reply_cb)(const struct redisReply *reply, void *arg);

/* Starts connecting to host:port (numeric address or name resolved by
 * hiredis; give an address to keep DNS off the loop). base is borrowed.
 * Never fails: an unreachable Redis is retried in the background. */
struct dm_redis *dm_redis_new(struct event_base *base, const char *host, int port, int timeout_ms);

/* Authenticates every connection from now on with AUTH [user] password,
 * the password read from password_file at each connect (a rotated secret is
 * picked up at the next reconnect). Call right after dm_redis_new, before
 * the loop runs. A refused AUTH drops the connection and retries with
 * backoff; the client stays unusable meanwhile. user "" or NULL: the
 * default user. Both strings are copied. */
void dm_redis_set_auth(struct dm_redis *r, const char *user, const char *password_file);

/* Whether password_file holds a usable password (1..1024 bytes before its
 * trailing newline): for start-up, so a missing secret stops the node
 * instead of leaving it unready. -1 with err otherwise. */
int dm_redis_check_password_file(const char *password_file, char err[DM_ERRLEN]);

/* Drops the connection; pending callbacks fire with NULL first. NULL: no-op. */
void dm_redis_free(struct dm_redis *r);

/* Sends one command built from argv (not copied beyond the call). cb may be
 * NULL (fire and forget). Returns 0 when sent — cb will fire — or -1 when
 * not connected; then cb does not fire. */
int dm_redis_command(struct dm_redis *r, dm_redis_reply_cb cb, void *arg, int argc,
                     const char **argv, const size_t *argvlen);

/* printf-style convenience over hiredis's format (%s, %b, %d ...). */
int dm_redis_commandf(struct dm_redis *r, dm_redis_reply_cb cb, void *arg, const char *fmt, ...);

/* True while connected. */
bool dm_redis_connected(const struct dm_redis *r);

/* Connected and answering: the last command (a PING at each connect) got
 * its reply before the deadline. What readiness reports: a frozen Redis
 * accepts connections but answers nothing. */
bool dm_redis_usable(const struct dm_redis *r);

/* Commands sent and not yet answered. */
size_t dm_redis_pending(const struct dm_redis *r);

/* Counters since start: commands failed (no connection, dropped, error
 * reply or deadline passed) and connections lost. */
unsigned long dm_redis_errors(const struct dm_redis *r);

#endif
