/* Rooms and their members, the recent-history window of each room, and the
 * shared frames fanned out to them.
 *
 * A room exists while it has members, and lingers empty for a while after
 * the last one left, keeping its window, so a viewer that reconnects gets
 * exactly what it missed. A member links one connection into one room (a
 * connection may be in several). Frames are encoded once and referenced by
 * every viewer's output buffer (and the window) until written. */
#ifndef DM_BROADCAST_ROOM_H
#define DM_BROADCAST_ROOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "common/proto.h"

struct dm_conn;
struct dm_room;
struct dm_catchup_req;
struct dm_backfill_req;

/* A member is embedded nowhere else: created by dm_rooms_join, freed by
 * dm_rooms_leave. conn_link is owned by the connection's list. */
struct dm_member {
    struct dm_conn *conn;
    struct dm_room *room;
    bool live;        /* receives records; false until the partition is positioned */
    uint32_t sampled; /* records dropped for this slow viewer, not yet told in `skipped` */
    bool resume;      /* asked to resume after resume_offset of stream resume_epoch */
    int64_t resume_offset, resume_epoch;
    struct dm_catchup_req *catchup;   /* reading what it missed back from Kafka; owned by bcast.c */
    struct dm_backfill_req *backfill; /* reading recent history from Redis; owned by bcast.c */
    bool waiting; /* ahead of this node's stream, or its epoch unknown: node's waiting list */
    int64_t waiting_since_ms; /* when it first had to wait; 0: never */
    TAILQ_ENTRY(dm_member) wait_link;
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
    /* Recent history: the room's last records with their offsets, bounded
     * by count and age. Every record of the room with an offset at or after
     * window_start is in it (or delivered live after it), which is what
     * makes an exact resume possible. */
    struct dm_window_entry *win; /* ring, allocated on the first record */
    uint32_t win_cap, win_head, win_len;
    int64_t window_start; /* INT64_MAX: nothing known yet */
    int64_t emptied_ms;   /* when the last member left (lingering rooms) */
    /* Frames of this round not yet fanned out: concatenated so each viewer
     * gets one reference (one iovec) per round instead of one per record. */
    unsigned char *blk;
    size_t blk_len, blk_cap;
    uint16_t blk_records;       /* records in the block */
    bool blk_keep;              /* the block holds a record that is never sampled */
    bool sampled;               /* a member has sampled records to be told of */
    struct dm_room *next_dirty; /* in the node's list of rooms with a block */
    bool dirty;
    struct dm_member_list members;
    struct dm_room *next; /* hash chain */
};

struct dm_frame;

struct dm_window_entry {
    int64_t offset;
    int64_t at_ms; /* arrival, for the age bound */
    struct dm_frame *frame;
};

/* The room table of one event loop. */
struct dm_rooms;

struct dm_rooms *dm_rooms_new(int32_t partitions);
/* Frees the table and every (empty) room left in it; all members must have
 * left. NULL is a no-op. */
void dm_rooms_free(struct dm_rooms *t);

/* The room named name, or NULL. */
struct dm_room *dm_rooms_find(struct dm_rooms *t, const char *name, size_t len);

/* Adds conn (borrowed) to the room, creating the room when needed;
 * *was_empty tells whether the room had no member before (new or
 * lingering). The member starts not live. Never fails. */
struct dm_member *dm_rooms_join(struct dm_rooms *t, struct dm_conn *conn, const char *name,
                                size_t len, bool *was_empty);

/* Removes and frees the member. Returns true when that emptied its room,
 * which lingers (with its window) until dropped. */
bool dm_rooms_leave(struct dm_rooms *t, struct dm_member *m, int64_t now_ms);

/* Frees the empty rooms of partition (all of them when partition < 0)
 * that have been empty since before older_than_ms (INT64_MAX: all).
 * Returns how many. */
size_t dm_rooms_drop_empty(struct dm_rooms *t, int32_t partition, int64_t older_than_ms);

/* Appends a record's frame (referenced) to r's window, evicting by count
 * (cap) and age (max_age_ms). */
void dm_room_window_append(struct dm_room *r, int64_t offset, struct dm_frame *f, uint32_t cap,
                           int64_t now_ms, int64_t max_age_ms);

/* Forgets the window; from now on it is complete from offset start on. */
void dm_room_window_reset(struct dm_room *r, int64_t start);

/* Whether every record of r after offset `after` is in the window or still
 * to come (after ages out entries older than max_age_ms). */
bool dm_room_window_covers(struct dm_room *r, int64_t after, int64_t now_ms, int64_t max_age_ms);

/* For a backfill of the last n records at or before upto: the offset after
 * which they start in the window (replaying from it sends them, then what
 * came after upto), and in *found how many of them the window has (fewer
 * than n when it holds less). */
int64_t dm_room_window_tail(const struct dm_room *r, int64_t upto, uint32_t n, uint32_t *found);

/* Calls fn, in offset order, for each windowed frame with offset > after. */
void dm_room_window_replay(const struct dm_room *r, int64_t after,
                           void (*fn)(struct dm_frame *f, void *arg), void *arg);

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
    uint16_t records; /* comment or retract records it carries (a block: several) */
    bool keep;        /* never sampled for a slow viewer (slow_viewer_sample): it
                       * goes out whole, or the viewer is closed */
    size_t len;
    unsigned char data[];
};

/* Builds a server (unmasked) frame of opcode around payload (copied);
 * refs = 1, keep = true, records = 0 (the caller sets them otherwise). */
struct dm_frame *dm_frame_new(uint8_t opcode, const void *payload, size_t len);

/* dm_frame_new for a text frame. */
struct dm_frame *dm_frame_new_text(const char *payload, size_t len);

/* A frame holding bytes as they are (already framed, e.g. several frames
 * concatenated); refs = 1, keep = true, records = 0. */
struct dm_frame *dm_frame_new_raw(const void *bytes, size_t len);

/* Appends f's bytes and records to r's block of this round; keep: f must
 * not be sampled for a slow viewer (then neither is the block). */
void dm_room_block_add(struct dm_room *r, const struct dm_frame *f, bool keep);
void dm_frame_ref(struct dm_frame *f);
void dm_frame_unref(struct dm_frame *f);

#endif
