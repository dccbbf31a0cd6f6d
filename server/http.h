/* The ingest HTTP API on evhttp (DESIGN §4): routes, authentication, JSON
 * errors, and the wait for the Kafka acknowledgement. */
#ifndef DM_SERVER_HTTP_H
#define DM_SERVER_HTTP_H

#include <stddef.h>

#include "common/util.h"

struct dm_ingest;
struct dm_http;

/* Serves HTTP on listen_fd (taken over, closed on failure too). in is
 * borrowed and must outlive the server. */
struct dm_http *dm_http_new(struct dm_ingest *in, int listen_fd, char err[DM_ERRLEN]);

/* Graceful stop: closes the listening socket; from now on new requests on
 * open connections are answered 503 with Connection: close, while the
 * requests already waiting for Kafka or Redis get their real answer. */
void dm_http_start_draining(struct dm_http *h);

/* Frees the server and its connections. NULL is a no-op. */
void dm_http_free(struct dm_http *h);

#endif
