/* The latency histogram: bucket arithmetic, percentiles of many
 * distributions against the exact percentiles of the sorted values, merge
 * and interval subtraction, the iterator, the single-writer recorder, and
 * recording from several threads while another one reads (run this one
 * under SANITIZER=thread). */
#include "loadtest/hist.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/util.h"
#include "tests/unit/tap.h"

/* ---- helpers ------------------------------------------------------------ */

/* splitmix64: a deterministic PRNG, so every run sees the same values. */
static uint64_t next_rand(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]. */
static double next_unit(uint64_t *state)
{
    return (double)((next_rand(state) >> 11) + 1) * 0x1p-53;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The exact percentile of n sorted values, nearest rank: the value of rank
 * ceil(p/100 * n), p given in units of 0.0001 % so no float rounds it. */
static uint64_t exact_percentile(const uint64_t *sorted, size_t n, uint64_t p_e4)
{
    uint64_t rank = ((uint64_t)n * p_e4 + 999999) / 1000000;

    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

/* Within 1% above the exact value, and exact where the bucket is (< 256). */
static bool close_enough(uint64_t got, uint64_t exact)
{
    if (exact < 2 * LT_HIST_SUB)
        return got == exact;
    return got >= exact && (got - exact) * 100 <= exact;
}

static struct lt_hist *hist_new(void)
{
    struct lt_hist *h = dm_malloc(sizeof(*h));
    lt_hist_init(h);
    return h;
}

static bool same_hist(const struct lt_hist *a, const struct lt_hist *b)
{
    return a->count == b->count && a->sum == b->sum && a->min == b->min && a->max == b->max &&
           a->clamped == b->clamped && memcmp(a->counts, b->counts, sizeof(a->counts)) == 0;
}

/* ---- bucket arithmetic -------------------------------------------------- */

static void test_buckets(void)
{
    bool exact = true, contains = true, narrow = true, contiguous = true;
    uint64_t v;

    for (v = 0; v < 2 * LT_HIST_SUB; v++)
        exact &= lt_hist_lowest_equiv(v) == v && lt_hist_highest_equiv(v) == v;
    ok(exact, "values below %u have their own bucket", 2 * LT_HIST_SUB);

    /* Walk bucket by bucket over the whole range, then spot-check inside. */
    for (v = 0; v <= LT_HIST_MAX;) {
        uint64_t lo = lt_hist_lowest_equiv(v), hi = lt_hist_highest_equiv(v);
        contains &=
            lo == v && hi >= v && lt_hist_lowest_equiv(hi) == lo && lt_hist_highest_equiv(lo) == hi;
        narrow &= (hi - lo) * LT_HIST_SUB <= lo;
        if (hi < LT_HIST_MAX)
            contiguous &= lt_hist_lowest_equiv(hi + 1) == hi + 1;
        v = hi + 1;
    }
    ok(contains, "each bucket [lo, hi] maps back to itself");
    ok(narrow, "each bucket's width is at most 1/%u of its lowest value", LT_HIST_SUB);
    ok(contiguous, "the buckets tile 0..LT_HIST_MAX without gaps");
    ok(lt_hist_highest_equiv(LT_HIST_MAX) == LT_HIST_MAX, "the top bucket ends at LT_HIST_MAX");
    ok(lt_hist_highest_equiv(UINT64_MAX) == LT_HIST_MAX &&
           lt_hist_lowest_equiv(LT_HIST_MAX + 1) == lt_hist_lowest_equiv(LT_HIST_MAX),
       "values above LT_HIST_MAX fall in the top bucket");
    ok(LT_HIST_MAX >= UINT64_C(3600000000), "LT_HIST_MAX (%llu us) covers an hour",
       (unsigned long long)LT_HIST_MAX);
    ok(sizeof(struct lt_hist) < 32 * 1024, "fixed size: %zu bytes", sizeof(struct lt_hist));

    {
        uint64_t state = 42;
        bool inside = true;
        for (int i = 0; i < 100000; i++) {
            uint64_t x = next_rand(&state) >> (next_rand(&state) % 64);
            uint64_t c = x > LT_HIST_MAX ? LT_HIST_MAX : x;
            uint64_t lo = lt_hist_lowest_equiv(x), hi = lt_hist_highest_equiv(x);
            inside &= lo <= c && c <= hi;
        }
        ok(inside, "random values lie inside their bucket");
    }
}

/* ---- the empty histogram ------------------------------------------------ */

static void test_empty(void)
{
    struct lt_hist *h = hist_new();
    struct lt_hist_iter it;

    ok(lt_hist_count(h) == 0 && lt_hist_min(h) == 0 && lt_hist_max(h) == 0 &&
           lt_hist_mean(h) == 0.0 && lt_hist_clamped(h) == 0,
       "empty: count, min, max, mean, clamped are 0");
    ok(lt_hist_percentile(h, 0) == 0 && lt_hist_percentile(h, 50) == 0 &&
           lt_hist_percentile(h, 100) == 0,
       "empty: every percentile is 0");
    lt_hist_iter_init(&it, h);
    ok(!lt_hist_iter_next(&it), "empty: the iterator yields nothing");

    lt_hist_record(h, 5);
    lt_hist_reset(h);
    ok(lt_hist_count(h) == 0 && lt_hist_max(h) == 0 && lt_hist_percentile(h, 50) == 0,
       "reset empties it");
    free(h);
}

/* ---- percentiles against sorted arrays ---------------------------------- */

enum dist { UNIFORM, SMALL, EXPONENTIAL, LOG_UNIFORM, BIMODAL, CONSTANT, SINGLE, ZEROS, CLAMP };

struct dist_case {
    const char *name;
    enum dist dist;
    size_t n;
    uint64_t a, b; /* parameters, per dist */
};

static const struct dist_case dist_cases[] = {
    {"uniform 0..100000", UNIFORM, 100000, 0, 100000},
    {"uniform 1..3600000000 (1 us .. 1 h)", UNIFORM, 100000, 1, UINT64_C(3600000000)},
    {"small exact 0..255", SMALL, 50000, 0, 255},
    {"exponential mean 5 ms", EXPONENTIAL, 100000, 5000, 0},
    {"exponential mean 300 us", EXPONENTIAL, 100000, 300, 0},
    {"log-uniform 1 us .. 1 h", LOG_UNIFORM, 100000, 1, UINT64_C(3600000000)},
    {"bimodal 1 ms (90%) / 200 ms (10%)", BIMODAL, 100000, 1000, 200000},
    {"constant 12345", CONSTANT, 1000, 12345, 0},
    {"single value 777777", SINGLE, 1, 777777, 0},
    {"single value 3", SINGLE, 1, 3, 0},
    {"all zero", ZEROS, 1000, 0, 0},
    {"near and above the max (clamped)", CLAMP, 10000, 0, 0},
};

/* Percentiles in units of 0.0001 %. */
static const uint64_t pcts_e4[] = {0,      10000,  100000, 250000, 333000, 500000, 750000,
                                   900000, 990000, 999000, 999900, 999990, 1000000};

/* Fills vals with the case's values; *raw gets what is passed to record
 * (CLAMP includes out-of-range ones), vals what the histogram should hold. */
static void make_values(const struct dist_case *c, int64_t *raw, uint64_t *vals)
{
    uint64_t state = 0x5eed + (uint64_t)c->dist * 1000 + c->n;

    for (size_t i = 0; i < c->n; i++) {
        int64_t x = 0;
        double u = next_unit(&state);
        switch (c->dist) {
        case UNIFORM:
        case SMALL:
            x = (int64_t)(c->a + next_rand(&state) % (c->b - c->a + 1));
            break;
        case EXPONENTIAL:
            x = (int64_t)(-(double)c->a * log(u));
            break;
        case LOG_UNIFORM:
            x = (int64_t)exp(log((double)c->a) + u * (log((double)c->b) - log((double)c->a)));
            break;
        case BIMODAL:
            if (next_rand(&state) % 10 == 0)
                x = (int64_t)(c->b * 9 / 10 + next_rand(&state) % (c->b / 5));
            else
                x = (int64_t)(c->a * 9 / 10 + next_rand(&state) % (c->a / 5));
            break;
        case CONSTANT:
        case SINGLE:
            x = (int64_t)c->a;
            break;
        case ZEROS:
            x = 0;
            break;
        case CLAMP:
            switch (i % 5) {
            case 0:
                x = (int64_t)(LT_HIST_MAX - next_rand(&state) % 100000000);
                break;
            case 1:
                x = (int64_t)LT_HIST_MAX + 1 + (int64_t)(next_rand(&state) % 1000000000);
                break;
            case 2:
                x = INT64_MAX;
                break;
            case 3:
                x = -(int64_t)(next_rand(&state) % 1000) - 1;
                break;
            default:
                x = (int64_t)(next_rand(&state) % 1000);
                break;
            }
            break;
        }
        raw[i] = x;
        vals[i] = x < 0 ? 0 : (uint64_t)x > LT_HIST_MAX ? LT_HIST_MAX : (uint64_t)x;
    }
}

static void check_dist(const struct dist_case *c)
{
    int64_t *raw = dm_malloc(c->n * sizeof(*raw));
    uint64_t *vals = dm_malloc(c->n * sizeof(*vals));
    struct lt_hist *h = hist_new();
    uint64_t sum = 0, clamped = 0;

    make_values(c, raw, vals);
    for (size_t i = 0; i < c->n; i++) {
        lt_hist_record(h, raw[i]);
        sum += vals[i];
        clamped += (uint64_t)raw[i] != vals[i];
    }
    qsort(vals, c->n, sizeof(*vals), cmp_u64);

    ok(lt_hist_count(h) == c->n && lt_hist_min(h) == vals[0] && lt_hist_max(h) == vals[c->n - 1] &&
           lt_hist_clamped(h) == clamped,
       "%s: count %llu, min %llu, max %llu, clamped %llu", c->name,
       (unsigned long long)lt_hist_count(h), (unsigned long long)lt_hist_min(h),
       (unsigned long long)lt_hist_max(h), (unsigned long long)lt_hist_clamped(h));
    ok(fabs(lt_hist_mean(h) - (double)sum / (double)c->n) <= 1e-9 * ((double)sum / (double)c->n),
       "%s: mean %.3f is exact", c->name, lt_hist_mean(h));

    for (size_t k = 0; k < DM_ARRAY_LEN(pcts_e4); k++) {
        double p = (double)pcts_e4[k] / 10000.0;
        uint64_t want = exact_percentile(vals, c->n, pcts_e4[k]);
        uint64_t got = lt_hist_percentile(h, p);
        if (pcts_e4[k] == 0)
            want = vals[0];
        ok(close_enough(got, want) && (pcts_e4[k] % 1000000 != 0 || got == want),
           "%s: p%g = %llu, exact %llu", c->name, p, (unsigned long long)got,
           (unsigned long long)want);
    }
    free(raw);
    free(vals);
    free(h);
}

static void test_percentiles(void)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(dist_cases); i++)
        check_dist(&dist_cases[i]);
}

static void test_percentile_edges(void)
{
    struct lt_hist *h = hist_new();
    uint64_t prev = 0;
    bool mono = true;
    uint64_t state = 7;

    for (int i = 0; i < 20000; i++)
        lt_hist_record(h, (int64_t)(-2000.0 * log(next_unit(&state))));
    for (int k = 0; k <= 100000; k++) {
        uint64_t v = lt_hist_percentile(h, k / 1000.0);
        mono &= v >= prev;
        prev = v;
    }
    ok(mono, "percentile is monotonic in p (0..100 step 0.001)");
    ok(lt_hist_percentile(h, -5) == lt_hist_min(h) && lt_hist_percentile(h, 250) == lt_hist_max(h),
       "p < 0 gives the min, p > 100 the max");
    ok(lt_hist_percentile(h, NAN) == lt_hist_min(h), "NaN gives the min");

    /* Rank rounding: 1000 values 1..1000; p99.9 is the 999th, not the 1000th. */
    lt_hist_reset(h);
    for (int i = 1; i <= 1000; i++)
        lt_hist_record(h, i * 1000);
    ok(lt_hist_percentile(h, 99.9) == lt_hist_highest_equiv(999000),
       "p99.9 of 1000 values is rank 999: %llu", (unsigned long long)lt_hist_percentile(h, 99.9));
    ok(lt_hist_percentile(h, 0.1) == lt_hist_highest_equiv(1000), "p0.1 is rank 1");
    ok(lt_hist_percentile(h, 100) == 1000000, "p100 is the max itself, not its bucket's top");
    free(h);
}

/* ---- merge and interval subtraction ------------------------------------- */

/* Values over every scale, with a few out of range on both sides. */
static int64_t mixed_value(uint64_t *state, int i)
{
    if (i % 1000 == 999)
        return INT64_MAX;
    if (i % 997 == 996)
        return -1;
    return (int64_t)(next_rand(state) % (UINT64_C(1) << (1 + i % 32)));
}

static void test_merge(void)
{
    struct lt_hist *all = hist_new(), *part[3], *m = hist_new(), *copy = hist_new();
    struct lt_hist *empty = hist_new();
    uint64_t state = 99;

    for (int k = 0; k < 3; k++)
        part[k] = hist_new();
    for (int i = 0; i < 30000; i++) {
        int64_t v = mixed_value(&state, i);
        lt_hist_record(all, v);
        lt_hist_record(part[i % 3], v);
    }
    for (int k = 0; k < 3; k++)
        lt_hist_merge(m, part[k]);
    ok(same_hist(m, all), "merging three parts equals recording the union");
    ok(lt_hist_clamped(m) == lt_hist_clamped(all) && lt_hist_clamped(m) > 0,
       "merge adds the clamped counts (%llu)", (unsigned long long)lt_hist_clamped(m));

    lt_hist_merge(copy, all);
    ok(same_hist(copy, all), "merging into an empty histogram copies it");
    lt_hist_merge(copy, empty);
    ok(same_hist(copy, all), "merging an empty histogram changes nothing");
    lt_hist_merge(copy, copy);
    ok(lt_hist_count(copy) == 2 * lt_hist_count(all) && lt_hist_min(copy) == lt_hist_min(all) &&
           lt_hist_max(copy) == lt_hist_max(all) &&
           lt_hist_percentile(copy, 50) == lt_hist_percentile(all, 50) &&
           lt_hist_mean(copy) == lt_hist_mean(all),
       "merging a histogram into itself doubles the counts, keeps the shape");

    for (int k = 0; k < 3; k++)
        free(part[k]);
    free(all);
    free(m);
    free(copy);
    free(empty);
}

/* A worker's cumulative histogram, snapshotted once per "second" by merge;
 * the difference of consecutive snapshots must be that second's values. */
static void test_sub(void)
{
    struct lt_hist *live = hist_new(), *prev = hist_new(), *cur = hist_new();
    struct lt_hist *d = hist_new(), *second = hist_new();
    uint64_t state = 1234;
    bool counts = true, minmax = true, pcts = true, chained = true;

    for (int s = 0; s < 5; s++) {
        uint64_t lo = UINT64_MAX, hi = 0;
        lt_hist_reset(second);
        /* each second has its own scale, so its min and max are not the total's */
        for (int i = 0; i < 5000; i++) {
            int64_t v = (int64_t)(100 * (uint64_t)(s + 1) + next_rand(&state) % (2000 * (s + 1)));
            if (s == 3 && i == 0)
                v = 7; /* an exact small value as this second's min */
            lt_hist_record(live, v);
            lt_hist_record(second, v);
            if ((uint64_t)v < lo)
                lo = (uint64_t)v;
            if ((uint64_t)v > hi)
                hi = (uint64_t)v;
        }
        lt_hist_reset(cur);
        lt_hist_merge(cur, live);
        lt_hist_sub(d, cur, prev);
        counts &= d->count == second->count && d->sum == second->sum &&
                  memcmp(d->counts, second->counts, sizeof(d->counts)) == 0 &&
                  lt_hist_mean(d) == lt_hist_mean(second);
        minmax &= lt_hist_lowest_equiv(lo) <= lt_hist_min(d) && lt_hist_min(d) <= lo &&
                  hi <= lt_hist_max(d) && lt_hist_max(d) <= lt_hist_highest_equiv(hi);
        for (size_t k = 0; k < DM_ARRAY_LEN(pcts_e4); k++) {
            double p = (double)pcts_e4[k] / 10000.0;
            uint64_t a = lt_hist_percentile(d, p), b = lt_hist_percentile(second, p);
            pcts &= lt_hist_lowest_equiv(a) == lt_hist_lowest_equiv(b);
        }
        /* The interval of interval and previous must give the current back. */
        lt_hist_merge(d, prev);
        chained &= d->count == cur->count && d->sum == cur->sum &&
                   memcmp(d->counts, cur->counts, sizeof(d->counts)) == 0;
        lt_hist_reset(prev);
        lt_hist_merge(prev, cur);
    }
    ok(counts, "interval count, sum, mean and buckets equal that second's own histogram");
    ok(minmax, "interval min and max are within their bucket of the true ones");
    ok(pcts, "interval percentiles fall in the same bucket as that second's own");
    ok(chained, "previous snapshot + interval gives the current snapshot");

    lt_hist_sub(d, cur, cur);
    ok(lt_hist_count(d) == 0 && lt_hist_max(d) == 0 && lt_hist_min(d) == 0 &&
           lt_hist_percentile(d, 99) == 0,
       "a snapshot minus itself is empty");
    lt_hist_reset(d);
    lt_hist_merge(d, cur);
    lt_hist_sub(d, d, prev); /* prev == cur here: in place */
    ok(lt_hist_count(d) == 0, "dst may alias a");
    lt_hist_reset(prev);
    lt_hist_sub(prev, cur, prev); /* minus the empty histogram: a copy */
    ok(prev->count == cur->count && prev->sum == cur->sum && prev->min == cur->min &&
           prev->max == cur->max,
       "dst may alias b; minus an empty histogram copies");

    free(live);
    free(prev);
    free(cur);
    free(d);
    free(second);
}

/* ---- iterator ----------------------------------------------------------- */

static void test_iter(void)
{
    struct lt_hist *h = hist_new();
    struct lt_hist_iter it;
    uint64_t vals[20000], state = 5, total = 0, last_hi = 0;
    size_t j = 0, buckets = 0;
    bool order = true, match = true, cumulative = true;

    for (size_t i = 0; i < DM_ARRAY_LEN(vals); i++) {
        vals[i] = next_rand(&state) % (UINT64_C(1) << (i % 24));
        lt_hist_record(h, (int64_t)vals[i]);
    }
    qsort(vals, DM_ARRAY_LEN(vals), sizeof(vals[0]), cmp_u64);
    lt_hist_iter_init(&it, h);
    while (lt_hist_iter_next(&it)) {
        size_t n = 0;
        order &= it.count > 0 && it.lo <= it.hi && (buckets == 0 || it.lo > last_hi) &&
                 lt_hist_lowest_equiv(it.hi) == it.lo;
        while (j < DM_ARRAY_LEN(vals) && vals[j] <= it.hi) {
            match &= vals[j] >= it.lo;
            j++;
            n++;
        }
        match &= n == it.count;
        total += it.count;
        cumulative &= it.cumulative == total;
        last_hi = it.hi;
        buckets++;
    }
    ok(order, "the iterator visits %zu non-empty buckets in increasing order", buckets);
    ok(match && j == DM_ARRAY_LEN(vals), "each bucket's count is the number of values in [lo, hi]");
    ok(cumulative && total == lt_hist_count(h), "cumulative ends at the count");
    ok(!lt_hist_iter_next(&it), "the iterator stays at the end");
    free(h);
}

/* ---- the single-writer recorder ----------------------------------------- */

static void test_owned(void)
{
    struct lt_hist *a = hist_new(), *b = hist_new();
    uint64_t state = 7;
    static const int64_t edges[] = {
        -5, 0, 1, 255, 256, (int64_t)LT_HIST_MAX, (int64_t)LT_HIST_MAX + 1, INT64_MAX, INT64_MIN};

    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        lt_hist_record(a, edges[i]);
        lt_hist_record_owned(b, edges[i]);
    }
    for (int i = 0; i < 100000; i++) {
        int64_t v = (int64_t)(next_rand(&state) % (UINT64_C(1) << (i % 32)));
        lt_hist_record(a, v);
        lt_hist_record_owned(b, v);
    }
    ok(same_hist(a, b), "owned recording gives the same histogram as the atomic one");
    ok(lt_hist_clamped(b) == 4 && lt_hist_min(b) == 0 && lt_hist_max(b) == LT_HIST_MAX,
       "owned recording clamps and tracks min and max (clamped %llu)",
       (unsigned long long)lt_hist_clamped(b));
    free(a);
    free(b);
}

/* ---- threads ------------------------------------------------------------ */

#define THREADS    4
#define PER_THREAD 200000

struct worker {
    pthread_t tid;
    int id;
    struct lt_hist *shared; /* all workers record here */
    struct lt_hist own;     /* and here, read by the progress thread */
    uint64_t sum;
};

static int stop_reading;

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    uint64_t state = (uint64_t)w->id + 1;

    for (int i = 0; i < PER_THREAD; i++) {
        int64_t v = (int64_t)(next_rand(&state) % (UINT64_C(1) << (i % 26)));
        if (i == 0)
            v = w->id; /* min 0 comes from worker 0 */
        if (i == 1)
            v = 100000000 + w->id; /* max from the last worker */
        lt_hist_record(w->shared, v);
        lt_hist_record_owned(&w->own, v); /* only this thread records here */
        w->sum += (uint64_t)v;
    }
    return NULL;
}

static void test_threads(void)
{
    struct worker *w = dm_calloc(THREADS, sizeof(*w));
    struct lt_hist *shared = hist_new(), *snap = hist_new(), *prev = hist_new();
    struct lt_hist *d = hist_new(), *total = hist_new();
    uint64_t sum = 0, reads = 0;
    bool monotonic = true;

    for (int i = 0; i < THREADS; i++) {
        w[i].id = i;
        w[i].shared = shared;
        lt_hist_init(&w[i].own);
        DM_ASSERT(pthread_create(&w[i].tid, NULL, run_worker, &w[i]) == 0);
    }
    /* The progress thread's job, while the workers record: snapshot all
     * workers, take the interval, read percentiles from both. */
    while (!__atomic_load_n(&stop_reading, __ATOMIC_RELAXED)) {
        lt_hist_reset(snap);
        for (int i = 0; i < THREADS; i++)
            lt_hist_merge(snap, &w[i].own);
        lt_hist_sub(d, snap, prev); /* aborts if any field went backwards */
        monotonic &= snap->count >= prev->count;
        (void)lt_hist_percentile(d, 99);
        (void)lt_hist_percentile(shared, 99.9);
        (void)lt_hist_mean(shared);
        lt_hist_reset(prev);
        lt_hist_merge(prev, snap);
        reads++;
        if (lt_hist_count(snap) == (uint64_t)THREADS * PER_THREAD)
            __atomic_store_n(&stop_reading, 1, __ATOMIC_RELAXED);
    }
    for (int i = 0; i < THREADS; i++) {
        DM_ASSERT(pthread_join(w[i].tid, NULL) == 0);
        sum += w[i].sum;
        lt_hist_merge(total, &w[i].own);
    }
    ok(lt_hist_count(shared) == (uint64_t)THREADS * PER_THREAD,
       "%d threads x %d records into one histogram: count %llu", THREADS, PER_THREAD,
       (unsigned long long)lt_hist_count(shared));
    ok(shared->sum == sum && lt_hist_min(shared) == 0 &&
           lt_hist_max(shared) == 100000000 + THREADS - 1,
       "no lost update in sum, min or max");
    ok(same_hist(total, shared), "the shared histogram equals the merged per-thread ones");
    ok(monotonic && reads > 0, "%llu concurrent snapshots, each one at least the previous",
       (unsigned long long)reads);

    free(w);
    free(shared);
    free(snap);
    free(prev);
    free(d);
    free(total);
}

int main(void)
{
    subtest("bucket arithmetic", test_buckets);
    subtest("empty histogram", test_empty);
    subtest("percentiles against sorted arrays", test_percentiles);
    subtest("percentile edges", test_percentile_edges);
    subtest("merge", test_merge);
    subtest("interval subtraction", test_sub);
    subtest("iterator", test_iter);
    subtest("single-writer recording", test_owned);
    subtest("concurrent recording", test_threads);
    return done_testing();
}
