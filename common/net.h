/* Socket helpers (anet-style): listening sockets and the port file tests
 * read to find a server started on port 0. */
#ifndef DM_COMMON_NET_H
#define DM_COMMON_NET_H

#include <stdbool.h>

#include "common/util.h"

/* Opens a non-blocking, close-on-exec TCP listening socket on host:port
 * (numeric address; port 0 picks a free one) with SO_REUSEADDR, and
 * SO_REUSEPORT when reuseport. Returns the fd, or -1 with err. */
int dm_net_listen(const char *host, int port, int backlog, bool reuseport, char err[DM_ERRLEN]);

/* The local port of a bound socket, or -1. */
int dm_net_bound_port(int fd);

/* Writes "PORT\n" to path atomically (temp file + rename). 0 or -1 with err. */
int dm_net_write_port_file(const char *path, int port, char err[DM_ERRLEN]);

#endif
