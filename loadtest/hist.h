/* An HDR-style log-linear latency histogram of microsecond values: exact
 * below 256 us, then 128 sub-buckets per power of two (relative error below
 * 1/128 < 1%), up to LT_HIST_MAX (2^32 - 1 us, about 71.6 minutes). Fixed
 * size, no allocation; recording is lock-free and safe from any number of
 * threads while other threads read (all fields are accessed atomically). */
#ifndef DM_LOADTEST_HIST_H
#define DM_LOADTEST_HIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LT_HIST_SUB_BITS 7 /* 2^7 sub-buckets per power of two */
#define LT_HIST_SUB      (1u << LT_HIST_SUB_BITS)
#define LT_HIST_MAX_BITS 32
#define LT_HIST_MAX      ((UINT64_C(1) << LT_HIST_MAX_BITS) - 1) /* largest recordable value, us */
/* Buckets: values 0..2*SUB-1 are exact, then SUB buckets per power of two. */
#define LT_HIST_BUCKETS ((LT_HIST_MAX_BITS - LT_HIST_SUB_BITS + 1) * LT_HIST_SUB)

/* Defined here so callers can embed it (one per worker, ~27 KB). Treat the
 * fields as private: read them only through the functions below, which use
 * atomic loads. An empty histogram has count 0 and min UINT64_MAX. */
struct lt_hist {
    uint64_t count;   /* values recorded */
    uint64_t sum;     /* of the recorded (clamped) values, for the mean */
    uint64_t min;     /* UINT64_MAX when empty */
    uint64_t max;     /* 0 when empty */
    uint64_t clamped; /* values recorded as 0 or LT_HIST_MAX because out of range */
    uint64_t counts[LT_HIST_BUCKETS];
};

/* A cursor over the non-empty buckets in increasing value order. */
struct lt_hist_iter {
    const struct lt_hist *h; /* borrowed */
    size_t next;             /* private: next bucket index to look at */
    uint64_t lo, hi;         /* this bucket holds the values lo..hi (inclusive) */
    uint64_t count;          /* values in this bucket */
    uint64_t cumulative;     /* values in this and every lower bucket */
};

/* Empties h (init and reset are the same operation; init names the first
 * use). Not atomic: no other thread may use h meanwhile. */
void lt_hist_init(struct lt_hist *h);
void lt_hist_reset(struct lt_hist *h);

/* Records one value in microseconds. Negative values record as 0 and values
 * above LT_HIST_MAX as LT_HIST_MAX; both also bump the clamped count.
 * Allocation-free and lock-free: relaxed atomic increments, so several
 * threads may record into the same histogram while others read it. */
void lt_hist_record(struct lt_hist *h, int64_t us);

/* lt_hist_record for a histogram only the calling thread ever records into
 * (a viewer worker's own): each field is updated with a relaxed atomic load
 * and store instead of a locked read-modify-write, several times cheaper
 * per value. Readers on other threads are as safe as with lt_hist_record
 * (no field is ever torn, lost or seen going backwards); a second recording
 * thread would lose updates, so never mix the two on one histogram. */
void lt_hist_record_owned(struct lt_hist *h, int64_t us);

/* Accessors; each is one atomic load (mean: two). On a histogram being
 * recorded into they are individually current but not mutually consistent:
 * take a snapshot with lt_hist_merge into a private histogram first when
 * that matters. min and max are 0 when empty; mean is 0.0 when empty. */
uint64_t lt_hist_count(const struct lt_hist *h);
uint64_t lt_hist_min(const struct lt_hist *h);
uint64_t lt_hist_max(const struct lt_hist *h);
uint64_t lt_hist_clamped(const struct lt_hist *h);
double lt_hist_mean(const struct lt_hist *h);

/* The value at percentile p (0..100; out-of-range p is clamped) with
 * HdrHistogram semantics: the highest value equivalent to the bucket that
 * holds the value of rank ceil(p/100 * count), capped at the recorded max,
 * so the result is >= the exact percentile and within 1% of it. p <= 0
 * gives the min, p >= 100 the max. 0 when empty. Monotonic in p. */
uint64_t lt_hist_percentile(const struct lt_hist *h, double p);

/* dst += src: counts, sum and clamped add, min/max combine. src is read with
 * atomic loads, so it may be recorded into meanwhile: this is how a
 * progress thread takes a snapshot (lt_hist_reset(snap) then merge each
 * worker's histogram into it). The count dst gains is the sum of the bucket
 * counts it read, so a snapshot is always self-consistent. dst must not be
 * used by another thread meanwhile; dst == src is allowed. */
void lt_hist_merge(struct lt_hist *dst, const struct lt_hist *src);

/* dst = a - b, the distribution of the values recorded between two
 * snapshots b (earlier) and a (later) of the same cumulative histogram:
 * the per-second histogram. count, sum, clamped and buckets are exact; min
 * and max are those of the lowest and highest non-empty bucket (lowest and
 * highest equivalent value, max capped at a's max), so within 1%. b not
 * being an earlier snapshot of a (any field of b above a's) is a bug and
 * aborts. dst may be a or b; a and b are not modified otherwise and must
 * not be recorded into meanwhile. */
void lt_hist_sub(struct lt_hist *dst, const struct lt_hist *a, const struct lt_hist *b);

/* Iteration over the non-empty buckets (the distribution chart):
 *
 *   struct lt_hist_iter it;
 *   lt_hist_iter_init(&it, &snap);
 *   while (lt_hist_iter_next(&it))
 *       use(it.hi, it.count);
 *
 * h is borrowed and must outlive the iterator; iterate over a snapshot, not
 * a histogram being recorded into. lt_hist_iter_next returns false after
 * the last non-empty bucket. */
void lt_hist_iter_init(struct lt_hist_iter *it, const struct lt_hist *h);
bool lt_hist_iter_next(struct lt_hist_iter *it);

/* The bucket arithmetic: the lowest and the highest value recorded into the
 * same bucket as v (values above LT_HIST_MAX count as LT_HIST_MAX). Both
 * equal v below 2*LT_HIST_SUB. */
uint64_t lt_hist_lowest_equiv(uint64_t v);
uint64_t lt_hist_highest_equiv(uint64_t v);

#endif
