/* The ingest HTTP API on evhttp (DESIGN §4): routes, authentication, JSON
 * errors, and the wait for the Kafka acknowledgement. */
#ifndef DM_SERVER_HTTP_H
#define DM_SERVER_HTTP_H

#include "common/util.h"

struct dm_ingest;
struct dm_http;

/* Binds cfg->listen_host:cfg->http_port (0 picks a free port, written to
 * cfg->port_file when set). in is borrowed and must outlive the server. */
struct dm_http *dm_http_new(struct dm_ingest *in, char err[DM_ERRLEN]);

/* Closes the listening socket; connections already open are served. */
void dm_http_stop_accepting(struct dm_http *h);

/* Frees the server and its connections. NULL is a no-op. */
void dm_http_free(struct dm_http *h);

#endif
