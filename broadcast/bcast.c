/* Broadcast node: listener, rooms to partitions, records to viewers. */
#include "broadcast/bcast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "broadcast/conn.h"
#include "broadcast/consumer.h"
#include "broadcast/demo.h"
#include "broadcast/membership.h"
#include "broadcast/room.h"
#include "common/accept_pause.h"
#include "common/auth.h"
#include "common/check.h"
#include "common/connlimit.h"
#include "common/jwt.h"
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/net.h"
#include "common/proto.h"

/* Largest block of gathered frames fanned out as one (bytes). */
#define BLOCK_MAX (16 * 1024)

/* How long a resume waits for this node to learn its stream's epoch. */
#define EPOCH_WAIT_MS 5000

/* Room for the viewer frame around a record: the record plus the envelope. */
#define ENVELOPE_MAX 160

/* ---- fan-out ---- */

static void replay_frame(struct dm_frame *f, void *arg)
{
    dm_conn_send_frame(arg, f);
}

/* The member's partition is positioned: decide between an exact resume and
 * the live position, tell the viewer, and let it receive. */
static bool start_catchup(struct dm_bcast *b, struct dm_member *m);

/* Whether m's resume has to wait before this worker can answer it: the
 * viewer saw more of the stream (on another node or worker) than this one
 * has read yet, or this one does not know the stream's epoch yet (Redis slow
 * or away; that wait is bounded). Waiting then going live gives neither a
 * gap nor a comment twice. */
static bool must_wait(const struct dm_bcast *b, const struct dm_member *m, int64_t now)
{
    const struct dm_bpart *p = &b->parts[m->room->partition];
    int64_t since = m->waiting_since_ms != 0 ? m->waiting_since_ms : now;

    if (!m->resume)
        return false;
    if (!p->ready)
        return true;
    if (p->epoch == 0)
        return now - since < EPOCH_WAIT_MS;
    return m->resume_epoch == p->epoch && m->resume_offset >= p->next_offset;
}

static bool start_backfill(struct dm_bcast *b, struct dm_member *m, int64_t live_from);

static void go_live(struct dm_bcast *b, struct dm_member *m)
{
    struct dm_room *r = m->room;
    struct dm_conn *conn = m->conn;
    struct dm_bpart *p = &b->parts[r->partition];
    int64_t now = dm_now_ms(), after = m->resume_offset;
    bool fresh = !m->resume;

    if (must_wait(b, m, now)) {
        if (!m->waiting) {
            m->waiting = true;
            if (m->waiting_since_ms == 0)
                m->waiting_since_ms = now; /* kept: the epoch wait is bounded once */
            TAILQ_INSERT_TAIL(&b->waiting, m, wait_link);
        }
        return;
    }
    bool resumable = m->resume && m->resume_epoch == p->epoch;
    bool recovered = resumable && dm_room_window_covers(r, after, now, b->cfg->recovery_age_ms);

    /* Not all of it here: read the rest back from Kafka first. */
    if (resumable && !recovered && start_catchup(b, m))
        return;
    if (m->resume && !recovered)
        DM_LOG(DM_LOG_DEBUG,
               "msg=\"resume not recovered\" room=%s after=%lld epoch=%lld stream_epoch=%lld "
               "next_offset=%lld window_start=%lld",
               r->name, (long long)after, (long long)m->resume_epoch, (long long)p->epoch,
               (long long)p->next_offset, (long long)r->window_start);
    int64_t live_from = p->next_offset - 1;
    uint32_t backfill = fresh ? (uint32_t)b->cfg->join_backfill : 0;
    if (backfill > 0 && start_backfill(b, m, live_from))
        return;
    m->live = true;
    m->resume = false;
    /* Sending may close a viewer over its output bound, which frees m:
     * from here on only conn (freed later) and r (rooms linger) are used. */
    if (recovered) {
        dm_conn_joined(conn, m, p->epoch, after, true);
        dm_room_window_replay(r, after, replay_frame, conn);
    } else {
        uint32_t found;
        dm_conn_joined(conn, m, p->epoch, live_from, false);
        if (backfill > 0)
            dm_room_window_replay(r, dm_room_window_tail(r, live_from, backfill, &found),
                                  replay_frame, conn);
    }
}

static void activate_room(struct dm_room *r, void *arg)
{
    struct dm_bcast *b = arg;
    struct dm_member *m, *next;

    /* The windows started when the partition was positioned (start_window). */
    for (m = TAILQ_FIRST(&r->members); m != NULL; m = next) {
        next = TAILQ_NEXT(m, room_link);
        if (!m->live)
            go_live(b, m);
    }
}

struct epoch_query {
    struct dm_bcast *b;
    int32_t partition;
    int64_t next_offset;
    unsigned generation;
};

static void on_epoch(int64_t epoch, void *arg)
{
    struct epoch_query *q = arg;
    struct dm_bcast *b = q->b;
    struct dm_bpart *p = &b->parts[q->partition];

    /* Released (or reset) while Redis answered: a later acquire goes on. */
    if (q->generation == p->generation) {
        p->epoch = epoch > 0 ? epoch : 0;
        p->ready = true;
        /* next_offset moved on with the records read meanwhile. */
        dm_rooms_foreach_in_partition(b->rooms, q->partition, activate_room, b);
    }
    free(q);
}

static void start_window(struct dm_room *r, void *arg)
{
    if (r->window_start == INT64_MAX)
        dm_room_window_reset(r, *(const int64_t *)arg);
}

/* Positioned at next_offset: learn the stream's epoch, then go live. */
static void on_partition_ready(int32_t partition, int64_t next_offset, void *arg)
{
    struct dm_bcast *b = arg;
    struct epoch_query *q = dm_malloc(sizeof(*q));

    q->b = b;
    q->partition = partition;
    q->next_offset = next_offset;
    q->generation = b->parts[partition].generation;
    /* Records arrive from now on, before the epoch is known: the rooms'
     * windows are complete from this position, so nothing read while Redis
     * answers is lost to a viewer. */
    b->parts[partition].next_offset = next_offset;
    b->parts[partition].positioned = true;
    dm_rooms_foreach_in_partition(b->rooms, partition, start_window, &next_offset);
    dm_membership_epoch(b->membership, partition, on_epoch, q);
}

static void go_offline(struct dm_room *r, void *arg)
{
    struct dm_member *m;
    DM_UNUSED(arg);
    /* The stream broke: what the window held cannot be continued. */
    dm_room_window_reset(r, INT64_MAX);
    TAILQ_FOREACH(m, &r->members, room_link)
        m->live = false;
}

/* The partition's stream broke: its viewers stop receiving until it is
 * positioned again, then get a new `joined` (recovered:false) that tells
 * them where they stand. Never a silent gap. */
static void on_partition_reset(int32_t partition, void *arg)
{
    struct dm_bcast *b = arg;
    dm_metrics_inc(b->m, DM_M_KAFKA_PARTITION_RESETS, 1);
    b->parts[partition].ready = false;
    b->parts[partition].positioned = false;
    b->parts[partition].generation++;
    dm_rooms_foreach_in_partition(b->rooms, partition, go_offline, NULL);
    if (b->parts[partition].rooms > 0)
        dm_consumer_acquire(b->consumer, partition);
}

/* Queues f (taking the caller's reference) to every live member of r;
 * returns how many. The records a slow viewer is spared are kept on its
 * member for the next `skipped` notice. */
static size_t fan_out(struct dm_room *r, struct dm_frame *f)
{
    struct dm_member *m, *next;
    size_t sent = 0;

    /* A send may close a slow viewer, which unlinks it from this room. */
    for (m = TAILQ_FIRST(&r->members); m != NULL; m = next) {
        next = TAILQ_NEXT(m, room_link);
        if (m->live) {
            if (dm_conn_send_frame(m->conn, f) == DM_SEND_SAMPLED && f->records > 0) {
                m->sampled += f->records;
                r->sampled = true;
            }
            sent++;
        }
    }
    dm_frame_unref(f);
    return sent;
}

/* Fans r's block out (one shared frame) and empties it. */
static size_t flush_block(struct dm_room *r)
{
    if (r->blk_len == 0)
        return 0;
    struct dm_frame *f = dm_frame_new_raw(r->blk, r->blk_len);
    f->records = r->blk_records;
    f->keep = r->blk_keep;
    r->blk_len = 0;
    r->blk_records = 0;
    r->blk_keep = false;
    return fan_out(r, f);
}

/* Density control: whether a normal comment goes out to room r now. The
 * bucket holds half a second of comments, so a burst passes and a
 * sustained flood is thinned evenly instead of in whole seconds. */
static bool admit(struct dm_bcast *b, struct dm_room *r)
{
    int64_t cap = b->cfg->density_cap;
    if (cap <= 0)
        return true;
    int64_t now = dm_mono_us();
    double burst = cap / 2.0 > 1.0 ? cap / 2.0 : 1.0;
    if (r->refilled_us == 0)
        r->tokens = burst;
    else
        r->tokens += (double)(now - r->refilled_us) * (double)cap / 1e6;
    if (r->tokens > burst)
        r->tokens = burst;
    r->refilled_us = now;
    if (r->tokens >= 1.0) {
        r->tokens -= 1.0;
        return true;
    }
    r->skipped++;
    return false;
}

/* A `skipped` notice of count for room r; it may itself be dropped for a
 * slow viewer, and is then told later. */
static struct dm_frame *skipped_frame(const struct dm_room *r, uint64_t count)
{
    size_t len;
    char *json = dm_msg_skipped(r->name, count, &len);
    struct dm_frame *f = dm_frame_new_text(json, len);
    free(json);
    f->keep = false;
    return f;
}

/* Once a second: tells r's viewers how many comments they did not get, by
 * density control (the same for all) plus, for a slow viewer, what was
 * dropped for it alone. */
static void notify_skipped(struct dm_room *r, void *arg)
{
    struct dm_member *m, *next;
    DM_UNUSED(arg);

    if (!r->sampled) {
        if (r->skipped > 0)
            fan_out(r, skipped_frame(r, r->skipped));
        r->skipped = 0;
        return;
    }
    struct dm_frame *shared = r->skipped > 0 ? skipped_frame(r, r->skipped) : NULL;
    r->sampled = false;
    for (m = TAILQ_FIRST(&r->members); m != NULL; m = next) {
        next = TAILQ_NEXT(m, room_link);
        if (!m->live || (m->sampled == 0 && shared == NULL))
            continue;
        uint64_t count = r->skipped + m->sampled;
        struct dm_frame *own = m->sampled > 0 ? skipped_frame(r, count) : NULL;
        enum dm_send_result sent = dm_conn_send_frame(m->conn, own != NULL ? own : shared);
        if (own != NULL)
            dm_frame_unref(own);
        if (sent == DM_SEND_SAMPLED) {
            /* Still too far behind to be told: tell it later, all of it. */
            m->sampled = (uint32_t)(count < UINT32_MAX ? count : UINT32_MAX);
            r->sampled = true;
        } else if (sent == DM_SEND_QUEUED) {
            m->sampled = 0;
        }
    }
    if (shared != NULL)
        dm_frame_unref(shared);
    r->skipped = 0;
}

/* The viewer frame of a record of room r, or NULL for a record viewers
 * must not see (not JSON, another room's, an unknown type). */
static struct dm_frame *record_frame(const struct dm_room *r, int64_t offset, const char *value,
                                     size_t len, struct dm_record_info *info)
{
    int type = dm_record_read(value, len, r->name, r->name_len, info);
    if (type == DM_RECORD_RETRACT) {
        char retract[96 + DM_ROOM_MAX + DM_ID_LEN];
        size_t rn = dm_msg_retract(retract, sizeof(retract), r->name, offset, info->id);
        DM_ASSERT(rn > 0);
        struct dm_frame *f = dm_frame_new_text(retract, rn);
        f->records = 1;
        return f;
    }
    if (type != DM_RECORD_COMMENT)
        return NULL;
    /* Encoded once; every viewer's output references the same bytes. */
    size_t cap = len + ENVELOPE_MAX;
    char *payload = dm_malloc(cap);
    size_t n = dm_msg_danmaku(payload, cap, r->name, offset, value, len);
    DM_ASSERT(n > 0);
    struct dm_frame *f = dm_frame_new_text(payload, n);
    free(payload);
    f->records = 1;
    return f;
}

static size_t on_record(int32_t partition, int64_t offset, int64_t ts_ms, const char *key,
                        size_t keylen, const char *value, size_t len, void *arg)
{
    struct dm_bcast *b = arg;
    struct dm_room *r;

    dm_metrics_inc(b->m, DM_M_KAFKA_RECORDS, 1);
    b->parts[partition].next_offset = offset + 1;
    if (key == NULL || keylen == 0 || keylen > DM_ROOM_MAX)
        return 0;
    r = dm_rooms_find(b->rooms, key, keylen);
    if (r == NULL)
        return 0;
    struct dm_record_info info;
    struct dm_frame *f = record_frame(r, offset, value, len, &info);
    if (f == NULL) {
        DM_LOG(DM_LOG_DEBUG, "msg=\"record skipped\" partition=%d offset=%lld", partition,
               (long long)offset);
        dm_metrics_inc(b->m, DM_M_KAFKA_RECORDS_SKIPPED, 1);
        return 0;
    }
    int type = (int)info.type;
    size_t f_len = f->len;
    /* The window keeps every record, sampled or not: a resuming viewer
     * gets what it missed, and density control applies to the live flow. */
    dm_room_window_append(r, offset, f, (uint32_t)b->cfg->recovery_window, dm_now_ms(),
                          b->cfg->recovery_age_ms);
    /* Moderation and priority lanes are never sampled. */
    if (type == DM_RECORD_COMMENT && info.prio == 0 && !admit(b, r)) {
        dm_metrics_inc(b->m, DM_M_DENSITY_SKIPPED, 1);
        dm_frame_unref(f);
        return 0;
    }
    /* Gathered for the end of the batch (on_flush), in offset order; a
     * block that would grow past BLOCK_MAX goes out first, so a backlog
     * read in one fetch never becomes one frame larger than a viewer's
     * output bound. */
    if (r->blk_len > 0 && r->blk_len + f->len > BLOCK_MAX)
        flush_block(r);
    dm_room_block_add(r, f, type == DM_RECORD_RETRACT || info.prio > 0);
    dm_frame_unref(f);
    if (!r->dirty) {
        r->dirty = true;
        r->next_dirty = b->dirty;
        b->dirty = r;
    }
    size_t viewers = r->count;
    dm_metrics_inc(b->m, DM_M_DELIVERIES, viewers);
    dm_metrics_inc(b->m, DM_M_DELIVERY_BYTES, viewers * f_len);
    /* From the record's Kafka timestamp (the producer's clock) to queued
     * for every viewer. */
    if (ts_ms > 0 && viewers > 0)
        dm_metrics_observe(b->m, DM_M_FANOUT_LATENCY, (dm_now_ms() - ts_ms) * 1000);
    return 0;
}

/* Resumes that were ahead of this node's stream go live once it caught up. */
static void check_waiting(struct dm_bcast *b)
{
    struct dm_member *m;
    bool again = true;

    /* go_live may close a connection, which removes its other waiting
     * members from the list: start over after each one. The list is short. */
    while (again) {
        again = false;
        TAILQ_FOREACH(m, &b->waiting, wait_link) {
            if (must_wait(b, m, dm_now_ms()))
                continue;
            TAILQ_REMOVE(&b->waiting, m, wait_link);
            m->waiting = false;
            go_live(b, m); /* may free m */
            again = true;
            break;
        }
    }
}

/* End of a consumer batch: one shared block per room, one reference per
 * viewer. */
static size_t on_flush(void *arg)
{
    struct dm_bcast *b = arg;
    size_t work = 0;

    while (b->dirty != NULL) {
        struct dm_room *r = b->dirty;
        b->dirty = r->next_dirty;
        r->dirty = false;
        work += flush_block(r);
        /* A burst's big buffer is not kept for a room's quiet hours. */
        if (r->blk_cap > BLOCK_MAX * 2) {
            free(r->blk);
            r->blk = NULL;
            r->blk_cap = 0;
        }
    }
    if (!TAILQ_EMPTY(&b->waiting))
        check_waiting(b);
    return work;
}

/* ---- catch-up: resuming from further back than this node's window ---- */

/* A member reading back (after, before) of its room from Kafka; the window
 * holds everything from `before` on, so the two together are exact. */
struct dm_catchup_req {
    struct dm_bcast *b;
    struct dm_member *m; /* NULL once the member left */
    int64_t after, before, epoch;
};

struct catchup_send {
    struct dm_conn *conn;
    const struct dm_room *r;
};

static void on_catchup(bool ok, const struct dm_catchup_record *recs, size_t n, void *arg)
{
    struct dm_catchup_req *q = arg;
    struct dm_bcast *b = q->b;
    struct dm_member *m = q->m;

    if (m == NULL) {
        free(q);
        return;
    }
    m->catchup = NULL;
    struct dm_room *r = m->room;
    struct dm_bpart *p = &b->parts[r->partition];
    int64_t now = dm_now_ms();

    if (!p->ready) {
        /* The stream broke meanwhile: activation decides afresh. */
        m->resume = false;
        free(q);
        return;
    }
    /* Still exact only if the window did not move past `before`, the
     * stream is the same, and the viewer missed no more than the retention
     * window promises (count and age), wherever it reconnects. */
    bool exact = ok && p->epoch == q->epoch && r->window_start != INT64_MAX &&
                 r->window_start <= q->before &&
                 (n == 0 || recs[0].ts_ms >= now - b->cfg->recovery_age_ms) &&
                 n + r->win_len <= (size_t)b->cfg->recovery_window;
    if (!exact) {
        DM_LOG(DM_LOG_DEBUG,
               "msg=\"catch-up not exact\" room=%s ok=%d n=%zu after=%lld before=%lld "
               "window_start=%lld win_len=%u",
               r->name, ok, n, (long long)q->after, (long long)q->before,
               (long long)r->window_start, r->win_len);
        m->resume = false;
        go_live(b, m);
        free(q);
        return;
    }
    struct dm_conn *conn = m->conn;
    m->live = true;
    m->resume = false;
    dm_metrics_inc(b->m, DM_M_CATCHUP_RECOVERED, 1);
    /* m may be freed by any send below (output bound): use conn and r. */
    dm_conn_joined(conn, m, p->epoch, q->after, true);
    for (size_t i = 0; i < n; i++) {
        struct dm_record_info info;
        struct dm_frame *f = record_frame(r, recs[i].offset, recs[i].value, recs[i].len, &info);
        if (f != NULL) {
            dm_conn_send_frame(conn, f);
            dm_frame_unref(f);
        }
    }
    dm_room_window_replay(r, q->before - 1, replay_frame, conn);
    free(q);
}

/* ---- fresh-join backfill ---- */

/* A fresh viewer's backfill waiting for Redis. The member is not live
 * meanwhile; what arrives is kept by the room's window and sent after the
 * backfill, so the viewer gets the recent comments, then every comment
 * after live_from, in offset order. */
struct dm_backfill_req {
    struct dm_bcast *b;
    struct dm_member *m; /* NULL once it left */
    unsigned generation; /* of the partition's stream when asked */
    int64_t live_from;   /* the `joined` offset: the backfill is at or before it */
};

/* The window's part of a backfill of want comments at or before live_from:
 * *after and *found as dm_room_window_tail gives them. Returns the offset
 * below which Redis fills in the rest: the window's first record or the
 * first one the backfill takes from it, whichever is older. */
static int64_t backfill_tail(const struct dm_room *r, int64_t live_from, uint32_t want,
                             int64_t *after, uint32_t *found)
{
    *after = dm_room_window_tail(r, live_from, want, found);
    return *after + 1 < r->window_start ? *after + 1 : r->window_start;
}

static void send_history_entry(struct dm_room *r, struct dm_conn *conn,
                               const struct dm_history_entry *e)
{
    struct dm_record_info info;
    struct dm_frame *f = record_frame(r, e->offset, e->record, e->len, &info);
    if (f != NULL) {
        dm_conn_send_frame(conn, f);
        dm_frame_unref(f);
    }
}

static void on_backfill(const struct dm_history_entry *e, size_t n, void *arg)
{
    struct dm_backfill_req *q = arg;
    struct dm_bcast *b = q->b;
    struct dm_member *m = q->m;

    if (m == NULL) {
        free(q);
        return;
    }
    m->backfill = NULL;
    struct dm_room *r = m->room;
    struct dm_bpart *p = &b->parts[r->partition];
    if (!p->ready || p->generation != q->generation) {
        /* The stream broke meanwhile: activation starts it afresh. */
        free(q);
        return;
    }
    uint32_t want = (uint32_t)b->cfg->join_backfill, found;
    int64_t after;
    /* The window may have moved on while Redis answered. */
    int64_t below = backfill_tail(r, q->live_from, want, &after, &found);
    if (n == (size_t)-1) {
        dm_metrics_inc(b->m, DM_M_BACKFILL_FAILED, 1);
        n = 0;
    }
    size_t usable = 0;
    while (usable < n && e[usable].offset < below)
        usable++;
    size_t from_redis = want - found < usable ? want - found : usable;

    struct dm_conn *conn = m->conn;
    m->live = true;
    /* m may be freed by any send below (output bound): use conn and r. */
    dm_conn_joined(conn, m, p->epoch, q->live_from, false);
    for (size_t i = usable - from_redis; i < usable; i++)
        send_history_entry(r, conn, &e[i]);
    dm_room_window_replay(r, after, replay_frame, conn);
    free(q);
}

/* Asks Redis for the part of a fresh join's backfill the window does not
 * hold. Returns false when the window has all of it (go live at once). */
static bool start_backfill(struct dm_bcast *b, struct dm_member *m, int64_t live_from)
{
    struct dm_room *r = m->room;
    uint32_t want = (uint32_t)b->cfg->join_backfill, found;
    int64_t after;
    int64_t before = backfill_tail(r, live_from, want, &after, &found);

    if (found >= want)
        return false;
    struct dm_backfill_req *q = dm_calloc(1, sizeof(*q));
    q->b = b;
    q->m = m;
    q->generation = b->parts[r->partition].generation;
    q->live_from = live_from;
    m->backfill = q;
    /* The answer may come at once (Redis not connected): on_backfill then
     * finishes the join before this returns. */
    dm_membership_history(b->membership, r->name, before, want - found, on_backfill, q);
    return true;
}

static bool start_catchup(struct dm_bcast *b, struct dm_member *m)
{
    struct dm_room *r = m->room;
    struct dm_bpart *p = &b->parts[r->partition];

    if (r->window_start == INT64_MAX || b->cfg->recovery_window == 0)
        return false;
    struct dm_catchup_req *q = dm_calloc(1, sizeof(*q));
    q->b = b;
    q->m = m;
    q->after = m->resume_offset;
    q->before = r->window_start;
    q->epoch = p->epoch;
    if (dm_consumer_catchup(b->consumer, r->partition, r->name, q->after, q->before,
                            (size_t)b->cfg->recovery_window, on_catchup, q) < 0) {
        free(q);
        return false;
    }
    m->catchup = q;
    return true;
}

/* ---- membership ---- */

struct dm_member *dm_bcast_join(struct dm_bcast *b, struct dm_conn *conn, const char *room,
                                size_t len, bool resume, int64_t offset, int64_t epoch)
{
    bool was_empty;
    struct dm_member *m = dm_rooms_join(b->rooms, conn, room, len, &was_empty);
    struct dm_bpart *p = &b->parts[m->room->partition];

    dm_metrics_inc(b->m, DM_M_JOINS, 1);
    m->resume = resume;
    m->resume_offset = offset;
    m->resume_epoch = epoch;
    dm_membership_changed(b->membership, m->room);
    if (was_empty) {
        p->rooms++;
        if (p->release != NULL)
            event_del(p->release);
    }
    return m;
}

void dm_bcast_start(struct dm_bcast *b, struct dm_member *m)
{
    struct dm_bpart *p = &b->parts[m->room->partition];
    if (p->positioned && m->room->window_start == INT64_MAX)
        dm_room_window_reset(m->room, p->next_offset);
    if (p->ready) {
        go_live(b, m);
    } else {
        dm_consumer_acquire(b->consumer, m->room->partition);
    }
}

struct release_arg {
    struct dm_bcast *b;
    int32_t partition;
};

static void on_release_timer(evutil_socket_t fd, short what, void *arg)
{
    struct release_arg *ra = arg;
    struct dm_bpart *p = &ra->b->parts[ra->partition];
    DM_UNUSED(fd);
    DM_UNUSED(what);

    if (p->rooms == 0) {
        dm_consumer_release(ra->b->consumer, ra->partition);
        p->ready = false;
        p->positioned = false;
        p->generation++;
        /* Without the stream the lingering rooms' windows cannot stay
         * complete. */
        dm_rooms_drop_empty(ra->b->rooms, ra->partition, INT64_MAX);
    }
}

void dm_bcast_leave(struct dm_bcast *b, struct dm_member *m)
{
    int32_t partition = m->room->partition;

    dm_metrics_inc(b->m, DM_M_LEAVES, 1);
    if (m->catchup != NULL)
        m->catchup->m = NULL; /* its answer finds nobody to give it to */
    if (m->backfill != NULL)
        m->backfill->m = NULL;
    if (m->waiting)
        TAILQ_REMOVE(&b->waiting, m, wait_link);
    dm_membership_changed(b->membership, m->room);
    if (!dm_rooms_leave(b->rooms, m, dm_now_ms()))
        return;
    struct dm_bpart *p = &b->parts[partition];
    DM_ASSERT(p->rooms > 0);
    if (--p->rooms > 0)
        return;
    if (p->release == NULL) {
        struct release_arg *ra = dm_malloc(sizeof(*ra));
        ra->b = b;
        ra->partition = partition;
        p->release = evtimer_new(b->base, on_release_timer, ra);
        DM_AN(p->release);
    }
    int64_t ms = b->cfg->partition_grace_ms;
    struct timeval tv = dm_timeval_ms(ms);
    evtimer_add(p->release, &tv);
}

int64_t dm_bcast_online(struct dm_bcast *b, const struct dm_room *r)
{
    DM_UNUSED(b);
    return r->online > (int64_t)r->count ? r->online : (int64_t)r->count;
}

/* ---- online pushes ---- */

struct online_query {
    struct dm_bcast *b;
    char room[DM_ROOM_MAX + 1];
};

static void on_online(int64_t online, void *arg)
{
    struct online_query *q = arg;
    struct dm_bcast *b = q->b;
    struct dm_room *r = dm_rooms_find(b->rooms, q->room, strlen(q->room));
    size_t len;

    /* The room may have emptied while Redis answered. */
    if (r != NULL) {
        if (online >= 0)
            r->online = online;
        char *json = dm_msg_online(r->name, dm_bcast_online(b, r), &len);
        struct dm_frame *f = dm_frame_new_text(json, len);
        free(json);
        f->keep = false; /* the next one will do for a slow viewer */
        fan_out(r, f);
    }
    free(q);
}

static void query_room_online(struct dm_room *r, void *arg)
{
    struct online_query *q = dm_malloc(sizeof(*q));
    q->b = arg;
    memcpy(q->room, r->name, r->name_len + 1);
    dm_membership_query_online(q->b->membership, q->room, on_online, q);
}

/* ---- node events ---- */

/* A connection over a limit: a 503 the client can read, then the close. */
static void refuse(struct dm_bcast *b, evutil_socket_t fd, enum dm_metric metric, const char *why)
{
    dm_metrics_inc(b->m, metric, 1);
    DM_LOG(DM_LOG_DEBUG, "msg=\"connection refused\" reason=%s", why);
    dm_connlimit_answer(fd, 503, "too_many_connections",
                        b->draining ? "this node is shutting down; connect to another"
                                    : "too many connections; retry later");
    evutil_closesocket(fd);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr,
                      int socklen, void *arg)
{
    struct dm_bcast *b = arg;
    struct dm_connlimit_slot slot;
    DM_UNUSED(l);
    DM_UNUSED(socklen);

    if (b->draining) {
        refuse(b, fd, DM_M_CONNECTIONS_REFUSED_DRAINING, "draining");
        return;
    }
    enum dm_connlimit_verdict v = dm_connlimit_acquire(b->limits, addr, &slot);
    if (v != DM_CONNLIMIT_OK) {
        refuse(b, fd,
               v == DM_CONNLIMIT_PER_IP ? DM_M_CONNECTIONS_REFUSED_PER_IP
                                        : DM_M_CONNECTIONS_REFUSED_MAX,
               dm_connlimit_reason(v));
        return;
    }
    dm_metrics_inc(b->m, DM_M_CONNECTIONS_ACCEPTED, 1);
    dm_conn_accept(b, fd, &slot);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct dm_bcast *b = arg;
    int e = EVUTIL_SOCKET_ERROR();
    DM_UNUSED(l);

    /* Out of descriptors: pause rather than spin on the readable listener. */
    if (b->accept_pause != NULL && dm_accept_pause_on_error(b->accept_pause, e)) {
        dm_metrics_inc(b->m, DM_M_ACCEPT_PAUSES, 1);
        return;
    }
    DM_LOG(DM_LOG_WARN, "msg=\"accept failed\" err=\"%s\"", evutil_socket_error_to_string(e));
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    dm_conns_ping_all(arg);
}

/* Gauges that are cheaper to read once a second than to track. */
static void update_gauges(struct dm_bcast *b)
{
    int64_t assigned = 0, lag = 0;
    for (int64_t i = 0; i < b->cfg->kafka_partitions; i++) {
        if (!b->parts[i].ready)
            continue;
        assigned++;
        int64_t high = dm_consumer_high_watermark(b->consumer, (int32_t)i);
        if (high > b->parts[i].next_offset)
            lag += high - b->parts[i].next_offset;
    }
    dm_metrics_gauge_set(b->m, DM_M_KAFKA_PARTITIONS_ASSIGNED, assigned);
    dm_metrics_gauge_set(b->m, DM_M_KAFKA_CONSUMER_LAG, lag);
    dm_metrics_gauge_set(b->m, DM_M_CONNECTIONS, (int64_t)b->nconns);
    dm_metrics_gauge_set(b->m, DM_M_ROOMS, (int64_t)dm_rooms_count(b->rooms));
    unsigned long redis_errors = dm_membership_redis_errors(b->membership);
    dm_metrics_inc(b->m, DM_M_REDIS_ERRORS, redis_errors - b->redis_errors_seen);
    b->redis_errors_seen = redis_errors;
    unsigned long consumer_errors = dm_consumer_errors(b->consumer);
    dm_metrics_inc(b->m, DM_M_KAFKA_CONSUMER_ERRORS, consumer_errors - b->consumer_errors_seen);
    b->consumer_errors_seen = consumer_errors;
}

char *dm_bcast_metrics(struct dm_bcast *b, size_t *len)
{
    update_gauges(b);
    return dm_metrics_render(b->metrics, len);
}

struct epoch_retry {
    struct dm_bcast *b;
    int32_t partition;
    unsigned generation;
};

char *dm_bcast_readiness(struct dm_bcast *b, bool *ready, size_t *len)
{
    bool kafka = dm_consumer_broker_up(b->consumer);
    bool redis = dm_membership_redis_usable(b->membership);
    char buf[96];

    *ready = kafka && !b->draining;
    int n = snprintf(buf, sizeof(buf), "{\"status\":\"%s\",\"kafka\":\"%s\",\"redis\":\"%s\"}",
                     b->draining ? "draining"
                     : *ready    ? "ready"
                                 : "not_ready",
                     kafka ? "up" : "down", redis ? "up" : "down");
    DM_ASSERT(n > 0 && (size_t)n < sizeof(buf));
    *len = (size_t)n;
    return dm_strndup(buf, (size_t)n);
}

static void on_epoch_retry(int64_t epoch, void *arg)
{
    struct epoch_retry *q = arg;
    struct dm_bpart *p = &q->b->parts[q->partition];
    if (epoch > 0 && q->generation == p->generation && p->epoch == 0)
        p->epoch = epoch;
    free(q);
}

/* Partitions that went live without their epoch (Redis did not answer)
 * ask again; resumes waiting for it are decided once it is known. */
static void retry_epochs(struct dm_bcast *b)
{
    for (int64_t i = 0; i < b->cfg->kafka_partitions; i++) {
        struct dm_bpart *p = &b->parts[i];
        if (!p->ready || p->epoch != 0)
            continue;
        struct epoch_retry *q = dm_malloc(sizeof(*q));
        q->b = b;
        q->partition = (int32_t)i;
        q->generation = p->generation;
        dm_membership_epoch(b->membership, (int32_t)i, on_epoch_retry, q);
    }
    if (!TAILQ_EMPTY(&b->waiting))
        check_waiting(b);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct dm_bcast *b = arg;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    int64_t now = dm_now_ms();
    update_gauges(b);
    retry_epochs(b);
    /* At most one `skipped` notice per room and second. */
    dm_rooms_foreach(b->rooms, notify_skipped, NULL);
    /* Empty rooms linger for resumes, not forever. */
    dm_rooms_drop_empty(b->rooms, -1, now - b->cfg->recovery_age_ms);
    if (b->verifier != NULL)
        dm_conns_expire_tokens(b, now / 1000);
    if (b->cfg->online_interval_ms > 0 && now >= b->next_online_ms && !b->draining) {
        b->next_online_ms = now + b->cfg->online_interval_ms;
        /* A query may answer at once (Redis down), which only reads the
         * table: collecting first keeps the walk safe anyway. */
        dm_rooms_foreach(b->rooms, query_room_online, b);
    }
}

static void on_flush_conns(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    dm_conns_flush(arg);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    dm_conns_sweep(arg, dm_now_ms());
}

static void on_close_drain(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    dm_conns_free_closing(arg);
}

struct dm_bcast *dm_bcast_new(struct event_base *base, const struct dm_config *cfg,
                              const char *node, struct dm_metrics *metrics, int listen_fd,
                              struct dm_connlimit *limits, char err[DM_ERRLEN])
{
    struct dm_bcast *b = dm_calloc(1, sizeof(*b));
    int64_t hb = cfg->heartbeat_ms;
    struct timeval tv = dm_timeval_ms(hb);
    int fd = listen_fd;

    b->base = base;
    b->cfg = cfg;
    b->node = node;
    TAILQ_INIT(&b->conns);
    TAILQ_INIT(&b->closing);
    TAILQ_INIT(&b->waiting);
    b->rooms = dm_rooms_new((int32_t)cfg->kafka_partitions);
    b->metrics = metrics;
    b->m = dm_metrics_shard_new(metrics);
    b->limits = limits;
    b->parts = dm_calloc((size_t)cfg->kafka_partitions, sizeof(*b->parts));
    b->close_drain = event_new(base, -1, 0, on_close_drain, b);
    b->heartbeat = event_new(base, -1, EV_PERSIST, on_heartbeat, b);
    b->tick = event_new(base, -1, EV_PERSIST, on_tick, b);
    b->flush_ev = event_new(base, -1, 0, on_flush_conns, b);
    b->sweep = event_new(base, -1, EV_PERSIST, on_sweep, b);
    /* Timeouts are checked this often: a quarter of the shortest, within
     * 50 ms .. 1 s. */
    int64_t shortest = cfg->handshake_timeout_ms < cfg->idle_timeout_ms ? cfg->handshake_timeout_ms
                                                                        : cfg->idle_timeout_ms;
    int64_t every = shortest / 4 < 50 ? 50 : shortest / 4 > 1000 ? 1000 : shortest / 4;
    struct timeval sweep_tv = dm_timeval_ms(every);
    if (b->flush_ev == NULL || b->sweep == NULL || event_add(b->sweep, &sweep_tv) < 0) {
        snprintf(err, DM_ERRLEN, "cannot register node events");
        goto fail;
    }
    struct timeval second = dm_timeval_ms(1000);
    if (b->close_drain == NULL || b->heartbeat == NULL || b->tick == NULL ||
        event_add(b->heartbeat, &tv) < 0 || event_add(b->tick, &second) < 0) {
        snprintf(err, DM_ERRLEN, "cannot register node events");
        goto fail;
    }
    if (dm_demo_page_build(cfg, &b->demo_page, &b->demo_page_len, err) < 0)
        goto fail;
    if (dm_auth_configured(cfg)) {
        b->verifier = dm_auth_verifier_new(cfg, err);
        if (b->verifier == NULL)
            goto fail;
    } else if (!cfg->allow_anonymous) {
        snprintf(err, DM_ERRLEN, "allow_anonymous is off but no jwt_key_file or jwt_secret is set");
        goto fail;
    }
    b->membership = dm_membership_new(base, cfg, node, b->rooms);
    b->consumer = dm_consumer_new(base, cfg, node, on_record, on_flush, on_partition_ready,
                                  on_partition_reset, b, err);
    if (b->consumer == NULL)
        goto fail;

    b->listener = evconnlistener_new(base, on_accept, b, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    fd = -1; /* the listener owns it, or it is closed below */
    if (b->listener == NULL) {
        evutil_closesocket(listen_fd);
        snprintf(err, DM_ERRLEN, "cannot listen for viewers");
        goto fail;
    }
    evconnlistener_set_error_cb(b->listener, on_accept_error);
    b->accept_pause = dm_accept_pause_new(base, b->listener, err);
    if (b->accept_pause == NULL)
        goto fail;
    return b;

fail:
    if (fd >= 0)
        evutil_closesocket(fd);
    dm_bcast_free(b);
    return NULL;
}

size_t dm_bcast_drain(struct dm_bcast *b)
{
    if (!b->draining) {
        b->draining = true;
        /* A pending resume must not enable the listener again. */
        dm_accept_pause_free(b->accept_pause);
        b->accept_pause = NULL;
        if (b->listener != NULL)
            evconnlistener_disable(b->listener);
        dm_conns_close_all(b, DM_CLOSE_SHUTDOWN);
    }
    if (b->nconns > 0)
        return b->nconns;
    return dm_membership_withdraw(b->membership);
}

void dm_bcast_free(struct dm_bcast *b)
{
    if (b == NULL)
        return;
    dm_accept_pause_free(b->accept_pause);
    if (b->listener != NULL)
        evconnlistener_free(b->listener);
    /* Remaining connections, closing or not, go without waiting for peers. */
    dm_conns_abort_all(b);
    dm_consumer_free(b->consumer);
    dm_membership_free(b->membership);
    dm_jwt_verifier_free(b->verifier);
    for (int64_t i = 0; b->parts != NULL && i < b->cfg->kafka_partitions; i++) {
        if (b->parts[i].release != NULL) {
            free(event_get_callback_arg(b->parts[i].release));
            event_free(b->parts[i].release);
        }
    }
    free(b->parts);
    dm_rooms_free(b->rooms);
    free(b->demo_page);
    if (b->heartbeat != NULL)
        event_free(b->heartbeat);
    if (b->tick != NULL)
        event_free(b->tick);
    if (b->flush_ev != NULL)
        event_free(b->flush_ev);
    if (b->sweep != NULL)
        event_free(b->sweep);
    if (b->close_drain != NULL)
        event_free(b->close_drain);
    free(b);
}
