/* What was published and what each viewer received: the exact accounting
 * behind "delivered, lost, duplicated, out of order".
 *
 * The publisher appends one entry per comment (its sequence number in the
 * room is its index) and fills in the Kafka offset when acknowledged. Each
 * viewer keeps one lt_track per room: a bitmap of the sequence numbers it
 * received, the offset after which it is owed everything (from `joined`),
 * and the offset ranges it was told it could not recover. After the run,
 * lt_ledger_account compares the two.
 *
 * Threads: the ledger is written by the publisher's thread only; tracks by
 * their viewer's thread only; lt_ledger_account runs after both stopped. */
#ifndef DM_LOADTEST_LEDGER_H
#define DM_LOADTEST_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lt_ledger;

#define LT_NO_OFFSET INT64_MIN

struct lt_ledger *lt_ledger_new(size_t nrooms);
void lt_ledger_free(struct lt_ledger *l);

/* Appends a comment scheduled at sched_us to room; returns its sequence. */
uint32_t lt_ledger_publish(struct lt_ledger *l, size_t room, int64_t sched_us);

/* The comment was acknowledged at offset, or failed (never counted). */
void lt_ledger_acked(struct lt_ledger *l, size_t room, uint32_t seq, int64_t offset);
void lt_ledger_failed(struct lt_ledger *l, size_t room, uint32_t seq);

/* The scheduled send time of (room, seq). */
int64_t lt_ledger_sched(const struct lt_ledger *l, size_t room, uint32_t seq);

/* The acknowledged offset of (room, seq); LT_NO_OFFSET when it failed or
 * was never acknowledged. */
int64_t lt_ledger_offset(const struct lt_ledger *l, size_t room, uint32_t seq);

/* Rooms of the ledger. */
size_t lt_ledger_rooms(const struct lt_ledger *l);

/* Comments published to room so far. */
uint32_t lt_ledger_count(const struct lt_ledger *l, size_t room);

/* An offset range (from, to] a viewer was told it missed for good. */
struct lt_gap {
    int64_t from, to;
};

/* One viewer in one room. Embedded by the viewer; zero it, then
 * lt_track_init. */
struct lt_track {
    int64_t joined_offset; /* owed everything after this; LT_NO_OFFSET: never joined */
    int64_t last_offset;   /* highest offset received */
    uint64_t *seen;        /* bitmap by sequence */
    uint32_t nwords;
    uint32_t received; /* distinct comments received */
    uint32_t duplicates;
    uint32_t out_of_order; /* offset lower than one received before */
    uint32_t unknown;      /* sequence the ledger never issued */
    uint64_t skipped;      /* announced by the server's density control */
    struct lt_gap *gaps;
    uint32_t ngaps;
    bool excluded; /* a deliberately slow viewer: not accounted */
};

void lt_track_init(struct lt_track *t);
void lt_track_fini(struct lt_track *t);

/* The server said `joined` after offset. The first join sets what is owed;
 * a later one with recovered=false records the gap (last_offset, offset]. */
void lt_track_joined(struct lt_track *t, int64_t offset, bool recovered);

/* A comment (seq, offset) arrived. Returns false for a duplicate. */
bool lt_track_received(struct lt_track *t, uint32_t seq, int64_t offset);

/* The totals of one or many tracks. */
struct lt_account {
    uint64_t expected;  /* acknowledged comments the viewer was owed */
    uint64_t delivered; /* of those, received */
    uint64_t lost;      /* owed, not received, not announced as skipped */
    uint64_t duplicated;
    uint64_t out_of_order;
    uint64_t skipped;
    uint64_t unrecoverable; /* owed but inside a gap the server announced */
    uint64_t unexpected;    /* received but not owed (before joined, or unknown) */
};

/* Adds the accounting of track t (a viewer of room) to acc. */
void lt_ledger_account(const struct lt_ledger *l, size_t room, const struct lt_track *t,
                       struct lt_account *acc);

#endif
