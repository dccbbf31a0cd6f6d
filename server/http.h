/* The ingest HTTP API on evhttp (DESIGN §4): routes, authentication, JSON
 * errors, and the wait for the Kafka acknowledgement. */
#ifndef DM_SERVER_HTTP_H
#define DM_SERVER_HTTP_H

#include <stddef.h>

#include "common/util.h"

struct dm_ingest;
struct dm_http;

/* Binds cfg->listen_host:cfg->http_port (0 picks a free port, written to
 * cfg->port_file when set). in is borrowed and must outlive the server. */
struct dm_http *dm_http_new(struct dm_ingest *in, char err[DM_ERRLEN]);

/* Graceful stop: closes the listening socket; from now on new requests on
 * open connections are answered 503 with Connection: close, while the
 * requests already waiting for Kafka or Redis get their real answer. */
void dm_http_start_draining(struct dm_http *h);

/* Frees the server and its connections. NULL is a no-op. */
void dm_http_free(struct dm_http *h);

#endif
