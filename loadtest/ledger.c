/* Published comments versus received ones. */
#include "loadtest/ledger.h"

#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/util.h"

struct entry {
    int64_t sched_us;
    int64_t offset; /* LT_NO_OFFSET until acknowledged */
    bool failed;
};

struct room_log {
    struct entry *entries;
    uint32_t n, cap;
};

struct lt_ledger {
    size_t nrooms;
    struct room_log *rooms;
};

struct lt_ledger *lt_ledger_new(size_t nrooms)
{
    struct lt_ledger *l = dm_calloc(1, sizeof(*l));
    l->nrooms = nrooms;
    l->rooms = dm_calloc(nrooms, sizeof(*l->rooms));
    return l;
}

void lt_ledger_free(struct lt_ledger *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->nrooms; i++)
        free(l->rooms[i].entries);
    free(l->rooms);
    free(l);
}

uint32_t lt_ledger_publish(struct lt_ledger *l, size_t room, int64_t sched_us)
{
    DM_ASSERT(room < l->nrooms);
    struct room_log *r = &l->rooms[room];
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 1024;
        r->entries = dm_realloc(r->entries, r->cap * sizeof(*r->entries));
    }
    r->entries[r->n] = (struct entry){sched_us, LT_NO_OFFSET, false};
    return r->n++;
}

void lt_ledger_acked(struct lt_ledger *l, size_t room, uint32_t seq, int64_t offset)
{
    DM_ASSERT(room < l->nrooms && seq < l->rooms[room].n);
    l->rooms[room].entries[seq].offset = offset;
}

void lt_ledger_failed(struct lt_ledger *l, size_t room, uint32_t seq)
{
    DM_ASSERT(room < l->nrooms && seq < l->rooms[room].n);
    l->rooms[room].entries[seq].failed = true;
}

int64_t lt_ledger_sched(const struct lt_ledger *l, size_t room, uint32_t seq)
{
    DM_ASSERT(room < l->nrooms && seq < l->rooms[room].n);
    return l->rooms[room].entries[seq].sched_us;
}

int64_t lt_ledger_offset(const struct lt_ledger *l, size_t room, uint32_t seq)
{
    DM_ASSERT(room < l->nrooms && seq < l->rooms[room].n);
    const struct entry *e = &l->rooms[room].entries[seq];
    return e->failed ? LT_NO_OFFSET : e->offset;
}

size_t lt_ledger_rooms(const struct lt_ledger *l)
{
    return l->nrooms;
}

uint32_t lt_ledger_count(const struct lt_ledger *l, size_t room)
{
    return l->rooms[room].n;
}

void lt_track_init(struct lt_track *t)
{
    memset(t, 0, sizeof(*t));
    t->joined_offset = LT_NO_OFFSET;
    t->last_offset = LT_NO_OFFSET;
}

void lt_track_fini(struct lt_track *t)
{
    free(t->seen);
    free(t->gaps);
    memset(t, 0, sizeof(*t));
}

void lt_track_joined(struct lt_track *t, int64_t offset, bool recovered)
{
    if (t->joined_offset == LT_NO_OFFSET) {
        t->joined_offset = offset;
        if (t->last_offset == LT_NO_OFFSET)
            t->last_offset = offset;
        return;
    }
    if (!recovered && offset > t->last_offset) {
        t->gaps = dm_realloc(t->gaps, (t->ngaps + 1) * sizeof(*t->gaps));
        t->gaps[t->ngaps++] = (struct lt_gap){t->last_offset, offset};
    }
    if (offset > t->last_offset)
        t->last_offset = offset;
}

static bool test_bit(const struct lt_track *t, uint32_t seq)
{
    return seq / 64 < t->nwords && (t->seen[seq / 64] >> (seq % 64) & 1);
}

bool lt_track_received(struct lt_track *t, uint32_t seq, int64_t offset)
{
    uint32_t w = seq / 64;

    if (w >= t->nwords) {
        uint32_t n = t->nwords ? t->nwords : 16;
        while (n <= w)
            n *= 2;
        t->seen = dm_realloc(t->seen, n * sizeof(*t->seen));
        memset(t->seen + t->nwords, 0, (n - t->nwords) * sizeof(*t->seen));
        t->nwords = n;
    }
    if (t->seen[w] >> (seq % 64) & 1) {
        t->duplicates++;
        return false;
    }
    t->seen[w] |= UINT64_C(1) << (seq % 64);
    t->received++;
    if (t->last_offset != LT_NO_OFFSET && offset < t->last_offset)
        t->out_of_order++;
    else
        t->last_offset = offset;
    return true;
}

static bool in_gap(const struct lt_track *t, int64_t offset)
{
    for (uint32_t i = 0; i < t->ngaps; i++) {
        if (offset > t->gaps[i].from && offset <= t->gaps[i].to)
            return true;
    }
    return false;
}

void lt_ledger_account(const struct lt_ledger *l, size_t room, const struct lt_track *t,
                       struct lt_account *acc)
{
    const struct room_log *r = &l->rooms[room];
    uint64_t expected = 0, delivered = 0, unrecoverable = 0, unexpected = 0;

    if (t->excluded || t->joined_offset == LT_NO_OFFSET)
        return;
    for (uint32_t seq = 0; seq < r->n; seq++) {
        const struct entry *e = &r->entries[seq];
        bool got = test_bit(t, seq);
        bool owed = !e->failed && e->offset != LT_NO_OFFSET && e->offset > t->joined_offset;
        if (owed && in_gap(t, e->offset)) {
            unrecoverable++;
            unexpected += got;
        } else if (owed) {
            expected++;
            delivered += got;
        } else {
            unexpected += got;
        }
    }
    /* Sequences beyond what the ledger issued. */
    for (uint32_t w = r->n / 64; w < t->nwords; w++) {
        uint64_t bits = t->seen[w];
        if (w == r->n / 64)
            bits &= r->n % 64 == 0 ? ~UINT64_C(0) : ~((UINT64_C(1) << (r->n % 64)) - 1);
        unexpected += (uint64_t)__builtin_popcountll(bits);
    }
    uint64_t missing = expected - delivered;
    uint64_t skipped = t->skipped < missing ? t->skipped : missing;
    acc->expected += expected;
    acc->delivered += delivered;
    acc->skipped += t->skipped;
    acc->lost += missing - skipped;
    acc->duplicated += t->duplicates;
    acc->out_of_order += t->out_of_order;
    acc->unrecoverable += unrecoverable;
    acc->unexpected += unexpected + t->unknown;
}
