/* broadcast/room.c: membership bookkeeping, lingering empty rooms, the
 * recent-history window behind exact resumes, and per-pass blocks. */
#include "broadcast/room.c"

#include <string.h>

#include "tests/unit/tap.h"

static struct dm_frame *frame_of(int64_t offset)
{
    char text[32];
    int n = snprintf(text, sizeof(text), "{\"offset\":%lld}", (long long)offset);
    return dm_frame_new_text(text, (size_t)n);
}

static int64_t replayed[64];
static size_t nreplayed;

static void collect(struct dm_frame *f, void *arg)
{
    DM_UNUSED(arg);
    /* The payload starts after a 2-byte header: {"offset":N} */
    replayed[nreplayed++] = strtoll((const char *)f->data + 2 + 10, NULL, 10);
}

static void test_membership(void)
{
    struct dm_rooms *t = dm_rooms_new(32);
    bool was_empty;
    int conn_a, conn_b;

    struct dm_member *a = dm_rooms_join(t, (struct dm_conn *)&conn_a, "r1", 2, &was_empty);
    ok(was_empty && a->room->count == 1 && dm_rooms_count(t) == 1, "first member creates the room");
    ok(a->room->partition == dm_room_partition("r1", 2, 32), "room knows its partition");
    struct dm_member *b = dm_rooms_join(t, (struct dm_conn *)&conn_b, "r1", 2, &was_empty);
    ok(!was_empty && a->room == b->room && b->room->count == 2, "second member joins it");
    struct dm_room *r = a->room;
    ok(!dm_rooms_leave(t, a, 100), "leaving a room with others in it does not empty it");
    ok(dm_rooms_leave(t, b, 200) && r->count == 0 && r->emptied_ms == 200,
       "the last member leaving empties it");
    ok(dm_rooms_find(t, "r1", 2) == r, "an empty room lingers (its window kept)");
    struct dm_member *c = dm_rooms_join(t, (struct dm_conn *)&conn_a, "r1", 2, &was_empty);
    ok(was_empty && c->room == r,
       "rejoining a lingering room reuses it and counts as empty before");
    dm_rooms_leave(t, c, 300);
    ok(dm_rooms_drop_empty(t, -1, 300) == 0, "not dropped while younger than the cut");
    ok(dm_rooms_drop_empty(t, -1, 301) == 1 && dm_rooms_find(t, "r1", 2) == NULL,
       "dropped once older");
    dm_rooms_free(t);
}

static void test_window(void)
{
    struct dm_rooms *t = dm_rooms_new(4);
    bool was_empty;
    int conn;
    struct dm_member *m = dm_rooms_join(t, (struct dm_conn *)&conn, "w", 1, &was_empty);
    struct dm_room *r = m->room;

    ok(!dm_room_window_covers(r, 5, 0, 1000), "nothing is covered before the stream is known");
    dm_room_window_reset(r, 10);
    ok(dm_room_window_covers(r, 9, 0, 1000) && !dm_room_window_covers(r, 8, 0, 1000),
       "complete from the start offset on (resume after 9 ok, after 8 not)");
    for (int64_t o = 10; o < 16; o++) {
        struct dm_frame *f = frame_of(o);
        dm_room_window_append(r, o, f, 4, 1000 + o, 60000);
        dm_frame_unref(f); /* the window holds its own reference */
    }
    ok(r->win_len == 4 && r->window_start == 12, "count bound: 4 kept, complete from 12 (%lld)",
       (long long)r->window_start);
    nreplayed = 0;
    dm_room_window_replay(r, 13, collect, NULL);
    ok(nreplayed == 2 && replayed[0] == 14 && replayed[1] == 15, "replay after 13: 14, 15");
    ok(dm_room_window_covers(r, 11, 2000, 60000) && !dm_room_window_covers(r, 10, 2000, 60000),
       "covers after 11, not after 10");
    /* Backfill tails over entries 12..15. */
    uint32_t found;
    ok(dm_room_window_tail(r, 15, 2, &found) == 13 && found == 2, "last 2 up to 15: after 13");
    ok(dm_room_window_tail(r, 14, 2, &found) == 12 && found == 2, "last 2 up to 14: after 12");
    ok(dm_room_window_tail(r, 15, 9, &found) == 11 && found == 4, "more than held: all 4");
    ok(dm_room_window_tail(r, 15, 0, &found) == 15 && found == 0, "none wanted: after upto");
    ok(dm_room_window_tail(r, 11, 3, &found) == 11 && found == 0, "nothing at or before 11");
    /* Age: entries older than max_age go, and the window start moves. */
    /* At 1514 with a 500 ms bound, entries from before 1014 (offsets 12
     * and 13, arrived at 1012 and 1013) go. */
    ok(!dm_room_window_covers(r, 12, 1514, 500) && r->window_start == 14 &&
           dm_room_window_covers(r, 13, 1514, 500),
       "age bound: entries older than 500 ms dropped, complete from 14 (%lld)",
       (long long)r->window_start);
    dm_room_window_reset(r, INT64_MAX);
    ok(r->win_len == 0 && !dm_room_window_covers(r, 100, 0, 1000), "reset forgets everything");
    dm_rooms_leave(t, m, 0);
    dm_rooms_free(t);
}

static void test_blocks(void)
{
    struct dm_room r;
    memset(&r, 0, sizeof(r));
    size_t total = 0;
    for (int i = 0; i < 200; i++) {
        struct dm_frame *f = frame_of(i);
        f->records = 1;
        dm_room_block_add(&r, f, false);
        total += f->len;
        dm_frame_unref(f);
    }
    ok(r.blk_len == total && r.blk_cap >= total, "a block holds every frame of the pass (%zu)",
       total);
    ok(r.blk_records == 200 && !r.blk_keep, "it counts its records; none must be kept");
    struct dm_frame *prio = frame_of(200);
    prio->records = 1;
    dm_room_block_add(&r, prio, true);
    dm_frame_unref(prio);
    ok(r.blk_records == 201 && r.blk_keep, "one record never sampled keeps the whole block");
    struct dm_frame *f0 = frame_of(0);
    ok(memcmp(r.blk, f0->data, f0->len) == 0, "in order, as framed");
    dm_frame_unref(f0);
    free(r.blk);
}

int main(void)
{
    subtest("membership and lingering rooms", test_membership);
    subtest("recent-history window", test_window);
    subtest("per-pass blocks", test_blocks);
    return done_testing();
}
