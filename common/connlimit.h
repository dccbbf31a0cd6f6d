/* Connection limits of one process: how many connections it holds in all
 * (max_connections) and per client address (max_connections_per_ip). One
 * table shared by every worker thread of a node, behind a mutex, touched
 * only when a connection is accepted or closed; its size is bounded by the
 * node limit (an address without connections has no entry). */
#ifndef DM_COMMON_CONNLIMIT_H
#define DM_COMMON_CONNLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct dm_connlimit;

/* What dm_connlimit_acquire decided. */
enum dm_connlimit_verdict {
    DM_CONNLIMIT_OK,     /* counted: release it when the connection closes */
    DM_CONNLIMIT_NODE,   /* refused: the process holds max_total connections */
    DM_CONNLIMIT_PER_IP, /* refused: this address holds max_per_ip */
};

/* What one admitted connection holds, to be given back on close. Embedded
 * in the connection (20 bytes). The address key: IPv4 as itself, IPv6 by
 * its /64 prefix (what one subscriber gets, so that a client cannot step
 * around the limit by rotating the low 64 bits); anything else (AF_UNIX)
 * is not limited per address. */
struct dm_connlimit_slot {
    uint8_t key[16];
    bool per_ip; /* counted in the per-address table */
    bool held;   /* acquired and not yet released */
};

/* A table for at most max_total connections (0: no node limit) and
 * max_per_ip per address (0: no per-address limit, and no table).
 * Caller owns: dm_connlimit_free. */
struct dm_connlimit *dm_connlimit_new(size_t max_total, size_t max_per_ip);

/* NULL is a no-op. No connection may be released afterwards. */
void dm_connlimit_free(struct dm_connlimit *cl);

/* Counts a new connection from peer (borrowed; NULL or a family other than
 * AF_INET/AF_INET6 is counted for the node only) unless a limit is reached.
 * On DM_CONNLIMIT_OK, slot is filled and must be given to
 * dm_connlimit_release exactly once; otherwise slot->held is false. Any
 * thread. */
enum dm_connlimit_verdict dm_connlimit_acquire(struct dm_connlimit *cl, const struct sockaddr *peer,
                                               struct dm_connlimit_slot *slot);

/* Gives back what slot holds; a slot not held is a no-op. Any thread. */
void dm_connlimit_release(struct dm_connlimit *cl, struct dm_connlimit_slot *slot);

/* Connections counted now. */
size_t dm_connlimit_total(struct dm_connlimit *cl);

/* Connections counted now for peer's address key (0 without a table). */
size_t dm_connlimit_of(struct dm_connlimit *cl, const struct sockaddr *peer);

/* Addresses with connections (entries of the table). */
size_t dm_connlimit_addresses(struct dm_connlimit *cl);

/* The name of a refusal for logs and metrics labels: "max_connections" or
 * "max_connections_per_ip". */
const char *dm_connlimit_reason(enum dm_connlimit_verdict v);

/* The answer sent to a client refused before it said anything: a complete
 * HTTP/1.1 response with status (503 refused, 408 too slow), a JSON error
 * body {"error":code,"message":message} and Connection: close. Any pending
 * input on fd is read and dropped first, so that the close that follows
 * sends FIN rather than RST and the client gets to read the answer. Best
 * effort and non-blocking (a new socket's send buffer is empty); never
 * closes fd. */
void dm_connlimit_answer(int fd, int status, const char *code, const char *message);

#endif
