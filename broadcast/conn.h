/* One viewer connection: handshake, WebSocket framing, the v1 client
 * messages, bounded output, and exactly one close path (dm_conn_close). */
#ifndef DM_BROADCAST_CONN_H
#define DM_BROADCAST_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

struct dm_bcast;
struct dm_conn;
struct dm_connlimit_slot;
struct dm_frame;
struct dm_member;

/* Why a connection ends. The table in conn.c gives each its WebSocket close
 * code (0: none sent) and whether pending output is flushed first. */
enum dm_close_reason {
    DM_CLOSE_EOF,               /* peer closed the TCP connection */
    DM_CLOSE_SOCKET_ERROR,      /* read/write error */
    DM_CLOSE_HANDSHAKE_TIMEOUT, /* no complete handshake in time */
    DM_CLOSE_HTTP_DONE,         /* plain HTTP answered, or handshake refused */
    DM_CLOSE_IDLE,              /* nothing received for idle_timeout_ms */
    DM_CLOSE_PEER_CLOSE,        /* close handshake started by the peer */
    DM_CLOSE_PROTOCOL,          /* 1002 */
    DM_CLOSE_UNSUPPORTED,       /* 1003: binary messages */
    DM_CLOSE_BAD_DATA,          /* 1007: invalid UTF-8 */
    DM_CLOSE_TOO_BIG,           /* 1009 */
    DM_CLOSE_SLOW_CONSUMER,     /* 4008: output over max_client_outbuf */
    DM_CLOSE_SHUTDOWN,          /* 1012: node draining, after `reconnect` */
    DM_CLOSE_POLICY,            /* 1008: token refused or expired */
};

/* Takes ownership of an accepted socket fd and of what slot holds in
 * b->limits (copied; given back when the socket is closed), and starts the
 * handshake. The connection links itself into b->conns. */
void dm_conn_accept(struct dm_bcast *b, evutil_socket_t fd, const struct dm_connlimit_slot *slot);

/* What became of a frame given to a viewer. */
enum dm_send_result {
    DM_SEND_QUEUED,  /* queued (or the connection is not open: nothing to do) */
    DM_SEND_SAMPLED, /* dropped for this slow viewer (slow_viewer_sample) */
    DM_SEND_CLOSED,  /* the viewer was closed (4008, or a socket error) */
};

/* Queues a shared frame (referenced, not copied). When the viewer's pending
 * output would exceed max_client_outbuf, it is closed with 4008; with
 * slow_viewer_sample, a frame that is not `keep` is dropped instead, and the
 * viewer is closed only past twice the bound. */
enum dm_send_result dm_conn_send_frame(struct dm_conn *c, struct dm_frame *f);

/* Encodes and queues one text message (copied). */
void dm_conn_send_text(struct dm_conn *c, const char *json, size_t len);

/* Tells c `joined` for m's room: it will receive every record after offset
 * of stream epoch (replayed first when recovered). */
void dm_conn_joined(struct dm_conn *c, struct dm_member *m, int64_t epoch, int64_t offset,
                    bool recovered);

/* Starts closing: sends the close frame of the reason, leaves every room,
 * and frees the connection later (never inside this call). Idempotent. */
void dm_conn_close(struct dm_conn *c, enum dm_close_reason reason);

/* Node-wide sweeps, called by bcast.c. */
void dm_conns_ping_all(struct dm_bcast *b);
/* Writes what the connections queued during this pass (the node's flush
 * event). */
void dm_conns_flush(struct dm_bcast *b);
/* Closes connections past their handshake deadline or idle timeout, and
 * gives up on closing ones that never took their last bytes. */
void dm_conns_sweep(struct dm_bcast *b, int64_t now_ms);
/* Closes (1008) the connections whose token expired before now_s. */
void dm_conns_expire_tokens(struct dm_bcast *b, int64_t now_s);
/* Frees every connection at once, flushing nothing (node teardown). */
void dm_conns_abort_all(struct dm_bcast *b);
/* Frees the connections whose close finished (b->closing). Run from the
 * node's close_drain event, never from a connection's own callback. */
void dm_conns_free_closing(struct dm_bcast *b);
void dm_conns_close_all(struct dm_bcast *b, enum dm_close_reason reason);

#endif
