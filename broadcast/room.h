/* Rooms and their members, and the shared frames fanned out to them.
 *
 * A room exists while it has members. A member links one connection into
 * one room (a connection may be in several). Frames are encoded once and
 * referenced by every viewer's output buffer until written. */
#ifndef DM_BROADCAST_ROOM_H
#define DM_BROADCAST_ROOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "common/proto.h"

struct dm_conn;
struct dm_room;

/* A member is embedded nowhere else: created by dm_rooms_join, freed by
 * dm_rooms_leave. conn_link is owned by the connection's list. */
struct dm_member {
    struct dm_conn *conn;
    struct dm_room *room;
    bool live; /* receives records; false until the partition is positioned */
    TAILQ_ENTRY(dm_member) room_link;
    LIST_ENTRY(dm_member) conn_link;
};

TAILQ_HEAD(dm_member_list, dm_member);

struct dm_room {
    char name[DM_ROOM_MAX + 1];
    size_t name_len;
    int32_t partition;
    size_t count;          /* members, live or not */
    bool membership_dirty; /* count not yet written to Redis */
    int64_t online;        /* last count over all nodes, from Redis; -1 unknown */
    /* Density control: every viewer of a room gets the same stream, so
     * sampling is decided once per room, with a token bucket refilled at
     * density_cap per second. */
    double tokens;
    int64_t refilled_us;
    uint64_t skipped; /* sampled out since the last `skipped` notice */
    struct dm_member_list members;
    struct dm_room *next; /* hash chain */
};

/* The room table of one event loop. */
struct dm_rooms;

struct dm_rooms *dm_rooms_new(int32_t partitions);
/* Frees the table; all rooms must have been left. NULL is a no-op. */
void dm_rooms_free(struct dm_rooms *t);

/* The room named name, or NULL. */
struct dm_room *dm_rooms_find(struct dm_rooms *t, const char *name, size_t len);

/* Adds conn (borrowed) to the room, creating the room when needed; *created
 * tells whether it was. The member starts not live. Never fails. */
struct dm_member *dm_rooms_join(struct dm_rooms *t, struct dm_conn *conn, const char *name,
                                size_t len, bool *created);

/* Removes and frees the member. Returns true when that emptied (and freed)
 * its room; *partition then holds the room's partition. */
bool dm_rooms_leave(struct dm_rooms *t, struct dm_member *m, int32_t *partition);

/* Rooms currently held. */
size_t dm_rooms_count(const struct dm_rooms *t);

/* Calls fn for each room (rooms may not be added or removed from fn). */
void dm_rooms_foreach(struct dm_rooms *t, void (*fn)(struct dm_room *r, void *arg), void *arg);

/* Calls fn for each room of the partition (rooms may not be added or removed
 * from fn). */
void dm_rooms_foreach_in_partition(struct dm_rooms *t, int32_t partition,
                                   void (*fn)(struct dm_room *r, void *arg), void *arg);

/* A refcounted, immutable, pre-encoded WebSocket frame. */
struct dm_frame {
    unsigned refs;
    size_t len;
    unsigned char data[];
};

/* Builds a server (unmasked) text frame around payload; refs = 1. */
struct dm_frame *dm_frame_new_text(const char *payload, size_t len);
void dm_frame_ref(struct dm_frame *f);
void dm_frame_unref(struct dm_frame *f);

#endif
