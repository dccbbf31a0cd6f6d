/* The broadcast node context and its room/partition bookkeeping.
 *
 * The node accepts viewers (conn.c), keeps the rooms they are in (room.c),
 * reads exactly the Kafka partitions those rooms hash to (consumer.c) and
 * fans each record out to the room's viewers. One event loop owns all of it. */
#ifndef DM_BROADCAST_BCAST_H
#define DM_BROADCAST_BCAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "common/util.h"

struct event;
struct event_base;
struct evconnlistener;
struct dm_accept_pause;
struct dm_config;
struct dm_connlimit;
struct dm_consumer;
struct dm_membership;
struct dm_jwt_verifier;
struct dm_metrics;
struct dm_metrics_shard;
struct dm_rooms;
struct dm_conn;
struct dm_member;
struct dm_room;

TAILQ_HEAD(dm_conn_list, dm_conn);
TAILQ_HEAD(dm_waiting_list, dm_member);

/* Per partition of the topic: how many local rooms need it and where the
 * stream stands. */
struct dm_bpart {
    unsigned rooms;        /* local rooms hashing here */
    bool positioned;       /* assigned at next_offset: records flow into windows */
    bool ready;            /* positioned and its epoch known: members can go live */
    int64_t next_offset;   /* every record from here on will be delivered */
    int64_t epoch;         /* of the partition's stream (Redis); 0 when unknown */
    unsigned generation;   /* bumped when released or reset: stale answers are ignored */
    struct event *release; /* grace timer after the last room left; lazily made */
};

struct dm_bcast {
    struct event_base *base;     /* borrowed from main */
    const struct dm_config *cfg; /* borrowed from main */
    const char *node;            /* borrowed */
    struct evconnlistener *listener;
    struct dm_accept_pause *accept_pause; /* NULL once draining */
    struct dm_connlimit *limits;          /* borrowed: the process's, shared by the workers */
    struct dm_consumer *consumer;
    struct dm_membership *membership;
    struct dm_jwt_verifier *verifier; /* NULL when no key is configured */
    struct dm_metrics *metrics;
    struct dm_metrics_shard *m;      /* this loop's shard */
    unsigned long redis_errors_seen; /* last error totals already counted */
    unsigned long consumer_errors_seen;
    struct dm_room *dirty;          /* rooms with frames of this round to fan out */
    struct dm_waiting_list waiting; /* resumes ahead of this node's stream */
    struct dm_conn *flushq;         /* connections with output queued this pass */
    struct event *flush_ev;         /* writes them, after the callbacks that queued it */
    struct event *sweep;            /* timeouts of every connection */
    struct dm_rooms *rooms;
    struct dm_bpart *parts;    /* cfg->kafka_partitions entries */
    struct dm_conn_list conns; /* open and closing connections */
    size_t nconns;
    struct dm_conn_list closing; /* waiting for on_close_drain to free them */
    struct event *close_drain;
    struct event *heartbeat;
    struct event *tick;     /* every second: token expiry, online pushes */
    int64_t next_online_ms; /* when the next online pushes go out */
    uint64_t next_conn_id;
    bool draining;   /* SIGTERM: no new connections */
    char *demo_page; /* the page at /, built at start-up; NULL when turned off */
    size_t demo_page_len;
};

/* Builds one worker of the node: rooms, Kafka consumer, viewers accepted
 * from listen_fd (taken over; every worker has its own, SO_REUSEPORT, so
 * the kernel spreads connections) within the limits of the process. base,
 * cfg, node (this worker's name in Redis), metrics (shared by the workers,
 * each recording into its own shard) and limits (shared by the workers)
 * are borrowed. NULL with err. */
struct dm_bcast *dm_bcast_new(struct event_base *base, const struct dm_config *cfg,
                              const char *node, struct dm_metrics *metrics, int listen_fd,
                              struct dm_connlimit *limits, char err[DM_ERRLEN]);

/* The Prometheus text of /metrics; caller frees. */
char *dm_bcast_metrics(struct dm_bcast *b, size_t *len);

/* Readiness for /readyz: the JSON answer (caller frees) and whether this
 * worker can serve new viewers: not draining and its Kafka consumer has a
 * broker. Redis is reported but does not decide: without it delivery goes
 * on (only online counts and cross-node epochs wait), so taking every node
 * out of service over a Redis blip would turn a degradation into an
 * outage. */
char *dm_bcast_readiness(struct dm_bcast *b, bool *ready, size_t *len);

/* Graceful stop: stop accepting, tell every viewer to reconnect (close
 * 1012), then withdraw this node from Redis. Returns how much is still
 * outstanding (open connections, then unanswered Redis commands); the
 * caller runs the loop until it reaches zero or a deadline. */
size_t dm_bcast_drain(struct dm_bcast *b);

/* Frees the node; remaining connections are dropped. NULL is a no-op. */
void dm_bcast_free(struct dm_bcast *b);

/* Adds conn to room (the name is validated by the caller). The member goes
 * live, and conn is sent `joined`, as soon as the room's partition is
 * positioned: at once when it already is. With resume, the viewer asks for
 * everything after offset of stream epoch: when this node's window of the
 * room holds all of it, it is replayed (recovered:true), else the viewer
 * starts at the live position (recovered:false) — never a silent gap. */
struct dm_member *dm_bcast_join(struct dm_bcast *b, struct dm_conn *conn, const char *room,
                                size_t len, bool resume, int64_t offset, int64_t epoch);

/* Starts the member added by dm_bcast_join once the caller has linked it
 * into its connection: live at once when the partition is positioned
 * (sending `joined` may close the connection, freeing m: the caller must
 * not use m afterwards), or when it will be. */
void dm_bcast_start(struct dm_bcast *b, struct dm_member *m);

/* Removes the member (freed); the room's partition is released after the
 * grace period when it was the last local room there. */
void dm_bcast_leave(struct dm_bcast *b, struct dm_member *m);

/* The room's online count for viewers: the last count over all nodes from
 * Redis, or the local one when that is unknown or smaller. */
int64_t dm_bcast_online(struct dm_bcast *b, const struct dm_room *r);

#endif
