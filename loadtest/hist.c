/* Log-linear histogram (HdrHistogram's layout with 7 sub-bucket bits): the
 * bucket of v is given by its top 8 significant bits, so a bucket's width
 * is at most 1/128 of its lowest value. Writers use relaxed atomic RMWs and
 * readers relaxed atomic loads: no ordering between fields is promised,
 * only that every field is itself never torn and never lost. */
#include "loadtest/hist.h"

#include <string.h>

#include "common/check.h"

#define LOAD(p)         __atomic_load_n((p), __ATOMIC_RELAXED)
#define ADD(p, n)       __atomic_fetch_add((p), (n), __ATOMIC_RELAXED)
#define EXACT_BELOW     (2 * (uint64_t)LT_HIST_SUB) /* values below this have their own bucket */
#define PPB_PER_PERCENT 10000000.0                  /* parts per billion in one percent */

static size_t bucket_of(uint64_t v)
{
    unsigned shift;

    if (v > LT_HIST_MAX)
        v = LT_HIST_MAX;
    if (v < EXACT_BELOW)
        return (size_t)v;
    /* v >= 256 so its highest set bit e is >= 8; keep the top 8 bits. */
    shift = (unsigned)(63 - __builtin_clzll(v)) - LT_HIST_SUB_BITS;
    return (size_t)shift * LT_HIST_SUB + (size_t)(v >> shift);
}

static uint64_t bucket_lo(size_t i)
{
    unsigned shift;

    if (i < LT_HIST_SUB)
        return i;
    shift = (unsigned)(i / LT_HIST_SUB) - 1;
    return (uint64_t)(LT_HIST_SUB + i % LT_HIST_SUB) << shift;
}

static uint64_t bucket_hi(size_t i)
{
    unsigned shift;

    if (i < LT_HIST_SUB)
        return i;
    shift = (unsigned)(i / LT_HIST_SUB) - 1;
    return bucket_lo(i) + (UINT64_C(1) << shift) - 1;
}

uint64_t lt_hist_lowest_equiv(uint64_t v)
{
    return bucket_lo(bucket_of(v));
}

uint64_t lt_hist_highest_equiv(uint64_t v)
{
    return bucket_hi(bucket_of(v));
}

void lt_hist_init(struct lt_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void lt_hist_reset(struct lt_hist *h)
{
    lt_hist_init(h);
}

/* Lock-free min/max: the loop runs only while v would still change the
 * field, so the common case is one load and no write. */
static void update_min(uint64_t *field, uint64_t v)
{
    uint64_t cur = LOAD(field);

    while (v < cur &&
           !__atomic_compare_exchange_n(field, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

static void update_max(uint64_t *field, uint64_t v)
{
    uint64_t cur = LOAD(field);

    while (v > cur &&
           !__atomic_compare_exchange_n(field, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

/* The value recorded for us: negative ones as 0, above LT_HIST_MAX as
 * LT_HIST_MAX, both flagged in *clamped. */
static uint64_t clamp_value(int64_t us, bool *clamped)
{
    *clamped = us < 0 || (uint64_t)us > LT_HIST_MAX;
    if (us < 0)
        return 0;
    return (uint64_t)us > LT_HIST_MAX ? LT_HIST_MAX : (uint64_t)us;
}

void lt_hist_record(struct lt_hist *h, int64_t us)
{
    bool clamped;
    uint64_t v = clamp_value(us, &clamped);

    if (clamped)
        ADD(&h->clamped, 1);
    ADD(&h->counts[bucket_of(v)], 1);
    ADD(&h->sum, v);
    ADD(&h->count, 1);
    update_min(&h->min, v);
    update_max(&h->max, v);
}

/* Only this thread writes h, so load + store cannot lose an update, and each
 * store is atomic for the readers. */
#define BUMP(p, n) __atomic_store_n((p), LOAD(p) + (n), __ATOMIC_RELAXED)

void lt_hist_record_owned(struct lt_hist *h, int64_t us)
{
    bool clamped;
    uint64_t v = clamp_value(us, &clamped);

    if (clamped)
        BUMP(&h->clamped, 1);
    BUMP(&h->counts[bucket_of(v)], 1);
    BUMP(&h->sum, v);
    BUMP(&h->count, 1);
    if (v < LOAD(&h->min))
        __atomic_store_n(&h->min, v, __ATOMIC_RELAXED);
    if (v > LOAD(&h->max))
        __atomic_store_n(&h->max, v, __ATOMIC_RELAXED);
}

uint64_t lt_hist_count(const struct lt_hist *h)
{
    return LOAD(&h->count);
}

uint64_t lt_hist_min(const struct lt_hist *h)
{
    uint64_t m = LOAD(&h->min);

    return m == UINT64_MAX ? 0 : m;
}

uint64_t lt_hist_max(const struct lt_hist *h)
{
    return LOAD(&h->max);
}

uint64_t lt_hist_clamped(const struct lt_hist *h)
{
    return LOAD(&h->clamped);
}

double lt_hist_mean(const struct lt_hist *h)
{
    uint64_t n = LOAD(&h->count);

    return n == 0 ? 0.0 : (double)LOAD(&h->sum) / (double)n;
}

/* ceil(count * p / 100) in integers: p is taken in parts per billion (so
 * 99.9 is exactly 999000000, not 99.900000000000006), and count is split
 * so that no product overflows 64 bits. */
static uint64_t rank_of(uint64_t count, double p)
{
    const uint64_t billion = 1000000000;
    uint64_t ppb = (uint64_t)(p * PPB_PER_PERCENT + 0.5);
    uint64_t q = count / billion, r = count % billion;
    uint64_t rank = q * ppb + (r * ppb + billion - 1) / billion;

    if (rank < 1)
        rank = 1;
    return rank > count ? count : rank;
}

uint64_t lt_hist_percentile(const struct lt_hist *h, double p)
{
    uint64_t count = LOAD(&h->count), max = LOAD(&h->max), rank, seen = 0;

    if (count == 0)
        return 0;
    if (!(p > 0.0)) /* also NaN */
        return lt_hist_min(h);
    if (p >= 100.0)
        return max;
    rank = rank_of(count, p);
    for (size_t i = 0; i < LT_HIST_BUCKETS; i++) {
        seen += LOAD(&h->counts[i]);
        if (seen >= rank) {
            uint64_t hi = bucket_hi(i);
            return hi < max ? hi : max;
        }
    }
    return max; /* count ran ahead of the buckets on a histogram being recorded into */
}

void lt_hist_merge(struct lt_hist *dst, const struct lt_hist *src)
{
    uint64_t added = 0;
    size_t first = LT_HIST_BUCKETS, last = 0;

    for (size_t i = 0; i < LT_HIST_BUCKETS; i++) {
        uint64_t n = LOAD(&src->counts[i]);
        if (n == 0)
            continue;
        dst->counts[i] += n;
        added += n;
        if (first == LT_HIST_BUCKETS)
            first = i;
        last = i;
    }
    dst->count += added;
    dst->sum += LOAD(&src->sum);
    dst->clamped += LOAD(&src->clamped);
    if (added > 0) {
        uint64_t mn = LOAD(&src->min), mx = LOAD(&src->max);
        /* On a live src, a value whose bucket we counted may not have reached
         * min/max yet: the buckets bound them to within one bucket. */
        if (mn > bucket_hi(first))
            mn = bucket_hi(first);
        if (mx < bucket_lo(last))
            mx = bucket_lo(last);
        if (dst->min > mn)
            dst->min = mn;
        if (dst->max < mx)
            dst->max = mx;
    }
}

void lt_hist_sub(struct lt_hist *dst, const struct lt_hist *a, const struct lt_hist *b)
{
    uint64_t sum = LOAD(&a->sum), bsum = LOAD(&b->sum);
    uint64_t clamped = LOAD(&a->clamped), bclamped = LOAD(&b->clamped);
    uint64_t amin = LOAD(&a->min), amax = LOAD(&a->max), count = 0;
    size_t first = LT_HIST_BUCKETS, last = 0;

    DM_ASSERT(sum >= bsum && clamped >= bclamped);
    for (size_t i = 0; i < LT_HIST_BUCKETS; i++) {
        uint64_t x = LOAD(&a->counts[i]), y = LOAD(&b->counts[i]);
        DM_ASSERT(x >= y);
        dst->counts[i] = x - y;
        if (x > y) {
            count += x - y;
            if (first == LT_HIST_BUCKETS)
                first = i;
            last = i;
        }
    }
    /* As in merge, the count is that of the buckets, so dst is consistent. */
    dst->count = count;
    dst->sum = sum - bsum;
    dst->clamped = clamped - bclamped;
    if (count == 0) {
        dst->min = UINT64_MAX;
        dst->max = 0;
    } else {
        /* The interval's extremes lie in its first and last buckets; a's
         * min and max tighten them when they fall in those buckets. */
        uint64_t lo = bucket_lo(first), hi = bucket_hi(last);
        dst->min = amin != UINT64_MAX && amin > lo ? amin : lo;
        dst->max = hi < amax ? hi : amax;
    }
}

void lt_hist_iter_init(struct lt_hist_iter *it, const struct lt_hist *h)
{
    memset(it, 0, sizeof(*it));
    it->h = h;
}

bool lt_hist_iter_next(struct lt_hist_iter *it)
{
    while (it->next < LT_HIST_BUCKETS) {
        size_t i = it->next++;
        uint64_t n = LOAD(&it->h->counts[i]);
        if (n > 0) {
            it->lo = bucket_lo(i);
            it->hi = bucket_hi(i);
            it->count = n;
            it->cumulative += n;
            return true;
        }
    }
    return false;
}
