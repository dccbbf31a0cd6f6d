/* Room table (chained hash on the room hash), members and shared frames. */
#include "broadcast/room.h"

#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/hash.h"
#include "common/util.h"
#include "common/ws.h"

struct dm_rooms {
    int32_t partitions;
    size_t count;
    size_t nbuckets; /* power of two */
    struct dm_room **buckets;
};

struct dm_rooms *dm_rooms_new(int32_t partitions)
{
    struct dm_rooms *t = dm_calloc(1, sizeof(*t));
    t->partitions = partitions;
    t->nbuckets = 64;
    t->buckets = dm_calloc(t->nbuckets, sizeof(*t->buckets));
    return t;
}

void dm_rooms_free(struct dm_rooms *t)
{
    if (t == NULL)
        return;
    dm_rooms_drop_empty(t, -1, INT64_MAX);
    DM_ASSERT(t->count == 0);
    free(t->buckets);
    free(t);
}

static size_t bucket_of(const struct dm_rooms *t, const char *name, size_t len)
{
    return dm_murmur2(name, len) & (t->nbuckets - 1);
}

struct dm_room *dm_rooms_find(struct dm_rooms *t, const char *name, size_t len)
{
    for (struct dm_room *r = t->buckets[bucket_of(t, name, len)]; r != NULL; r = r->next) {
        if (r->name_len == len && memcmp(r->name, name, len) == 0)
            return r;
    }
    return NULL;
}

static void grow(struct dm_rooms *t)
{
    size_t old_n = t->nbuckets;
    struct dm_room **old = t->buckets;

    t->nbuckets *= 2;
    t->buckets = dm_calloc(t->nbuckets, sizeof(*t->buckets));
    for (size_t i = 0; i < old_n; i++) {
        struct dm_room *r = old[i], *next;
        for (; r != NULL; r = next) {
            size_t b = bucket_of(t, r->name, r->name_len);
            next = r->next;
            r->next = t->buckets[b];
            t->buckets[b] = r;
        }
    }
    free(old);
}

struct dm_member *dm_rooms_join(struct dm_rooms *t, struct dm_conn *conn, const char *name,
                                size_t len, bool *was_empty)
{
    struct dm_room *r = dm_rooms_find(t, name, len);
    struct dm_member *m;

    DM_ASSERT(len > 0 && len <= DM_ROOM_MAX);
    *was_empty = r == NULL || r->count == 0;
    if (r == NULL) {
        if (t->count + 1 > t->nbuckets)
            grow(t);
        r = dm_calloc(1, sizeof(*r));
        memcpy(r->name, name, len);
        r->name_len = len;
        r->partition = dm_room_partition(name, len, t->partitions);
        r->online = -1;
        r->window_start = INT64_MAX;
        TAILQ_INIT(&r->members);
        size_t b = bucket_of(t, name, len);
        r->next = t->buckets[b];
        t->buckets[b] = r;
        t->count++;
    }
    m = dm_calloc(1, sizeof(*m));
    m->conn = conn;
    m->room = r;
    TAILQ_INSERT_TAIL(&r->members, m, room_link);
    r->count++;
    return m;
}

bool dm_rooms_leave(struct dm_rooms *t, struct dm_member *m, int64_t now_ms)
{
    struct dm_room *r = m->room;
    DM_UNUSED(t);

    TAILQ_REMOVE(&r->members, m, room_link);
    r->count--;
    free(m);
    if (r->count > 0)
        return false;
    r->emptied_ms = now_ms;
    return true;
}

static void window_drop_oldest(struct dm_room *r)
{
    struct dm_window_entry *e = &r->win[r->win_head];
    /* Everything up to this offset is forgotten: the window is complete
     * only after it. */
    r->window_start = e->offset + 1;
    dm_frame_unref(e->frame);
    r->win_head = (r->win_head + 1) % r->win_cap;
    r->win_len--;
}

static void free_room(struct dm_room *r)
{
    /* Rooms are dropped between rounds, never with a block pending. */
    DM_ASSERT(!r->dirty);
    while (r->win_len > 0)
        window_drop_oldest(r);
    free(r->win);
    free(r->blk);
    free(r);
}

size_t dm_rooms_drop_empty(struct dm_rooms *t, int32_t partition, int64_t older_than_ms)
{
    size_t dropped = 0;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct dm_room **pp = &t->buckets[i];
        while (*pp != NULL) {
            struct dm_room *r = *pp;
            if (r->count == 0 && (partition < 0 || r->partition == partition) &&
                r->emptied_ms < older_than_ms) {
                *pp = r->next;
                t->count--;
                free_room(r);
                dropped++;
            } else {
                pp = &r->next;
            }
        }
    }
    return dropped;
}

void dm_room_window_append(struct dm_room *r, int64_t offset, struct dm_frame *f, uint32_t cap,
                           int64_t now_ms, int64_t max_age_ms)
{
    if (cap == 0)
        return;
    if (r->win == NULL) {
        r->win = dm_calloc(cap, sizeof(*r->win));
        r->win_cap = cap;
    }
    while (r->win_len > 0 && r->win[r->win_head].at_ms < now_ms - max_age_ms)
        window_drop_oldest(r);
    if (r->win_len == r->win_cap)
        window_drop_oldest(r);
    struct dm_window_entry *e = &r->win[(r->win_head + r->win_len) % r->win_cap];
    e->offset = offset;
    e->at_ms = now_ms;
    e->frame = f;
    dm_frame_ref(f);
    r->win_len++;
}

void dm_room_window_reset(struct dm_room *r, int64_t start)
{
    while (r->win_len > 0)
        window_drop_oldest(r);
    r->window_start = start;
}

bool dm_room_window_covers(struct dm_room *r, int64_t after, int64_t now_ms, int64_t max_age_ms)
{
    while (r->win_len > 0 && r->win[r->win_head].at_ms < now_ms - max_age_ms)
        window_drop_oldest(r);
    return r->window_start != INT64_MAX && after + 1 >= r->window_start;
}

int64_t dm_room_window_tail(const struct dm_room *r, int64_t upto, uint32_t n, uint32_t *found)
{
    uint32_t upto_len = 0; /* entries at or before upto: a prefix of the ring */
    while (upto_len < r->win_len && r->win[(r->win_head + upto_len) % r->win_cap].offset <= upto)
        upto_len++;
    *found = n < upto_len ? n : upto_len;
    if (*found == 0)
        return upto;
    uint32_t first = upto_len - *found;
    return r->win[(r->win_head + first) % r->win_cap].offset - 1;
}

void dm_room_window_replay(const struct dm_room *r, int64_t after,
                           void (*fn)(struct dm_frame *f, void *arg), void *arg)
{
    for (uint32_t i = 0; i < r->win_len; i++) {
        const struct dm_window_entry *e = &r->win[(r->win_head + i) % r->win_cap];
        if (e->offset > after)
            fn(e->frame, arg);
    }
}

size_t dm_rooms_count(const struct dm_rooms *t)
{
    return t->count;
}

void dm_rooms_foreach(struct dm_rooms *t, void (*fn)(struct dm_room *r, void *arg), void *arg)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (struct dm_room *r = t->buckets[i]; r != NULL; r = r->next)
            fn(r, arg);
    }
}

void dm_rooms_foreach_in_partition(struct dm_rooms *t, int32_t partition,
                                   void (*fn)(struct dm_room *r, void *arg), void *arg)
{
    /* Partition changes are rare (a new partition's first viewers), so a scan
     * of the table is cheaper than keeping per-partition lists. */
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (struct dm_room *r = t->buckets[i]; r != NULL; r = r->next) {
            if (r->partition == partition)
                fn(r, arg);
        }
    }
}

struct dm_frame *dm_frame_new(uint8_t opcode, const void *payload, size_t len)
{
    struct dm_frame *f = dm_malloc(sizeof(*f) + DM_WS_MAX_HEADER + len);
    size_t h = dm_ws_frame_header(f->data, opcode, true, len, NULL);
    if (len > 0)
        memcpy(f->data + h, payload, len);
    f->len = h + len;
    f->refs = 1;
    f->records = 0;
    f->keep = true;
    return f;
}

struct dm_frame *dm_frame_new_text(const char *payload, size_t len)
{
    return dm_frame_new(DM_WS_OP_TEXT, payload, len);
}

struct dm_frame *dm_frame_new_raw(const void *bytes, size_t len)
{
    struct dm_frame *f = dm_malloc(sizeof(*f) + len);
    memcpy(f->data, bytes, len);
    f->len = len;
    f->refs = 1;
    f->records = 0;
    f->keep = true;
    return f;
}

void dm_room_block_add(struct dm_room *r, const struct dm_frame *f, bool keep)
{
    if (r->blk_len + f->len > r->blk_cap) {
        size_t cap = r->blk_cap ? r->blk_cap : 4096;
        while (cap < r->blk_len + f->len)
            cap *= 2;
        r->blk = dm_realloc(r->blk, cap);
        r->blk_cap = cap;
    }
    memcpy(r->blk + r->blk_len, f->data, f->len);
    r->blk_len += f->len;
    r->blk_records = (uint16_t)(r->blk_records + f->records);
    r->blk_keep = r->blk_keep || keep;
}

void dm_frame_ref(struct dm_frame *f)
{
    f->refs++;
}

void dm_frame_unref(struct dm_frame *f)
{
    DM_ASSERT(f->refs > 0);
    if (--f->refs == 0)
        free(f);
}
