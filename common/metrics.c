/* Table-driven metrics: per-thread shards of relaxed atomic counters, summed
 * into the Prometheus text format when scraped. */
#include "common/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/util.h"

#define METRICS_MAGIC 0x6d657472u
#define SHARD_MAGIC   0x73686172u

/* Two 64-byte lines: x86's adjacent-line prefetcher pairs them, and some ARM
 * cores have 128-byte lines. */
#define CACHELINE 128

enum metric_type { T_COUNTER, T_GAUGE, T_HISTOGRAM };

/* Slots a metric takes in a shard. A histogram holds its buckets
 * non-cumulatively (an observation touches one), then +Inf, then the sum of
 * the observations in microseconds; its count is the sum of the buckets, so
 * count and +Inf always agree. */
#define SLOTS_COUNTER   1
#define SLOTS_GAUGE     1
#define SLOTS_HISTOGRAM (DM_METRICS_NBUCKETS + 2)
#define HIST_INF        DM_METRICS_NBUCKETS
#define HIST_SUM        (DM_METRICS_NBUCKETS + 1)

/* First slot of each metric, laid out at compile time. */
enum {
#define DM_METRIC(id, type, family, labels, scope, help)                                           \
    SLOT_##id, SLOT_LAST_##id = SLOT_##id + SLOTS_##type - 1,
#include "common/metrics_table.h"
#undef DM_METRIC
    NSLOTS
};

struct metric_def {
    const char *family;
    const char *labels;
    const char *help;
    enum metric_type type;
    unsigned scope;
    unsigned slot;
};

#define DM_METRIC(id, type, family, labels, scope, help)                                           \
    {#family, labels, help, T_##type, DM_METRICS_##scope, SLOT_##id},
static const struct metric_def defs[] = {
#include "common/metrics_table.h"
};
#undef DM_METRIC

_Static_assert(DM_ARRAY_LEN(defs) == DM_M__COUNT, "one definition per id");

static const int64_t bucket_us[DM_METRICS_NBUCKETS] = {DM_METRICS_BUCKETS_US};

_Static_assert(DM_ARRAY_LEN(bucket_us) == DM_METRICS_NBUCKETS, "DM_METRICS_NBUCKETS");

struct dm_metrics_shard {
    unsigned magic;
    unsigned scope;
    struct dm_metrics_shard *next; /* set before publication, then immutable */
    /* Aligning the slots also pads the struct to whole cache lines, so no
     * other shard or allocation shares them. */
    _Alignas(CACHELINE) _Atomic uint64_t slot[NSLOTS];
};

struct dm_metrics {
    unsigned magic;
    unsigned scope;
    /* Shards are pushed at the head and never removed before
     * dm_metrics_free, so readers walk the list without a lock. */
    _Atomic(struct dm_metrics_shard *) shards;
};

/* ---- table checks ------------------------------------------------------- */

static bool valid_name(const char *s)
{
    if (*s == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_';
        if (!alpha && !(p != s && *p >= '0' && *p <= '9'))
            return false;
    }
    return true;
}

/* Rows of a family adjacent and consistent, label sets distinct: otherwise
 * the exposition would interleave families or repeat a series. */
static void check_table(void)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(defs); i++) {
        const struct metric_def *d = &defs[i];
        DM_ASSERT(valid_name(d->family));
        DM_ASSERT(d->type != T_HISTOGRAM || strstr(d->labels, "le=") == NULL);
        if (i > 0 && strcmp(defs[i - 1].family, d->family) == 0) {
            const struct metric_def *p = &defs[i - 1];
            DM_ASSERT(p->type == d->type && p->scope == d->scope);
            DM_ASSERT(strcmp(p->help, d->help) == 0);
            for (size_t j = i; j-- > 0 && strcmp(defs[j].family, d->family) == 0;)
                DM_ASSERT(strcmp(defs[j].labels, d->labels) != 0);
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(defs[j].family, d->family) == 0)
                DM_PANIC("metrics_table.h: rows of one family must be adjacent");
        }
    }
}

/* ---- registry and shards ------------------------------------------------ */

struct dm_metrics *dm_metrics_new(unsigned scope)
{
    struct dm_metrics *m = dm_calloc(1, sizeof(*m));

    check_table();
    m->magic = METRICS_MAGIC;
    m->scope = scope;
    atomic_init(&m->shards, NULL);
    return m;
}

void dm_metrics_free(struct dm_metrics *m)
{
    if (m == NULL)
        return;
    DM_CHECK_OBJ(m, METRICS_MAGIC);
    struct dm_metrics_shard *s = atomic_load_explicit(&m->shards, memory_order_acquire);
    while (s != NULL) {
        struct dm_metrics_shard *next = s->next;
        s->magic = 0;
        free(s);
        s = next;
    }
    m->magic = 0;
    free(m);
}

struct dm_metrics_shard *dm_metrics_shard_new(struct dm_metrics *m)
{
    DM_CHECK_OBJ(m, METRICS_MAGIC);
    struct dm_metrics_shard *s = aligned_alloc(CACHELINE, sizeof(*s));
    if (s == NULL)
        DM_PANIC("out of memory");
    s->magic = SHARD_MAGIC;
    s->scope = m->scope;
    for (size_t i = 0; i < NSLOTS; i++)
        atomic_init(&s->slot[i], 0);

    /* Release: a reader that sees the shard sees its zeroed slots and next. */
    struct dm_metrics_shard *head = atomic_load_explicit(&m->shards, memory_order_relaxed);
    do {
        s->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&m->shards, &head, s, memory_order_release,
                                                    memory_order_relaxed));
    return s;
}

/* ---- recording ---------------------------------------------------------- */

static _Atomic uint64_t *slot_of(struct dm_metrics_shard *s, enum dm_metric id,
                                 enum metric_type type)
{
    DM_CHECK_OBJ(s, SHARD_MAGIC);
    DM_ASSERT((unsigned)id < DM_M__COUNT);
    DM_ASSERT(defs[id].type == type);
    return &s->slot[defs[id].slot];
}

/* Relaxed: each counter is independent, and readers only need every
 * increment to land exactly once, not an order between counters. */
static void add(_Atomic uint64_t *slot, uint64_t n)
{
    atomic_fetch_add_explicit(slot, n, memory_order_relaxed);
}

void dm_metrics_inc(struct dm_metrics_shard *s, enum dm_metric id, uint64_t n)
{
    add(slot_of(s, id, T_COUNTER), n);
}

/* Gauge parts are two's complement in uint64_t, so unsigned wrap-around adds
 * signed deltas and the parts sum to the signed value. */
void dm_metrics_gauge_add(struct dm_metrics_shard *s, enum dm_metric id, int64_t delta)
{
    add(slot_of(s, id, T_GAUGE), (uint64_t)delta);
}

void dm_metrics_gauge_set(struct dm_metrics_shard *s, enum dm_metric id, int64_t value)
{
    atomic_store_explicit(slot_of(s, id, T_GAUGE), (uint64_t)value, memory_order_relaxed);
}

void dm_metrics_observe(struct dm_metrics_shard *s, enum dm_metric id, int64_t value_us)
{
    _Atomic uint64_t *h = slot_of(s, id, T_HISTOGRAM);
    size_t b = 0;

    if (value_us < 0)
        value_us = 0;
    while (b < DM_METRICS_NBUCKETS && value_us > bucket_us[b])
        b++;
    add(&h[b], 1);
    add(&h[HIST_SUM], (uint64_t)value_us);
}

/* ---- reading ------------------------------------------------------------ */

static uint64_t sum_slot(const struct dm_metrics *m, unsigned slot)
{
    DM_CHECK_OBJ(m, METRICS_MAGIC);
    uint64_t sum = 0;

    for (struct dm_metrics_shard *s = atomic_load_explicit(&m->shards, memory_order_acquire);
         s != NULL; s = s->next)
        sum += atomic_load_explicit(&s->slot[slot], memory_order_relaxed);
    return sum;
}

static int64_t as_signed(uint64_t u)
{
    return u <= INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

uint64_t dm_metrics_value(const struct dm_metrics *m, enum dm_metric id)
{
    DM_ASSERT((unsigned)id < DM_M__COUNT);
    const struct metric_def *d = &defs[id];
    uint64_t v = 0;

    switch (d->type) {
    case T_COUNTER:
        return sum_slot(m, d->slot);
    case T_GAUGE: {
        int64_t g = as_signed(sum_slot(m, d->slot));
        return g < 0 ? 0 : (uint64_t)g;
    }
    case T_HISTOGRAM:
        for (unsigned b = 0; b <= HIST_INF; b++)
            v += sum_slot(m, d->slot + b);
        return v;
    }
    DM_PANIC("unknown metric type");
}

int64_t dm_metrics_gauge(const struct dm_metrics *m, enum dm_metric id)
{
    DM_ASSERT((unsigned)id < DM_M__COUNT && defs[id].type == T_GAUGE);
    return as_signed(sum_slot(m, defs[id].slot));
}

uint64_t dm_metrics_sum_us(const struct dm_metrics *m, enum dm_metric id)
{
    DM_ASSERT((unsigned)id < DM_M__COUNT && defs[id].type == T_HISTOGRAM);
    return sum_slot(m, defs[id].slot + HIST_SUM);
}

enum dm_metric dm_metrics_http_status(int status)
{
    switch (status) {
    case 200:
        return DM_M_HTTP_REQUESTS_200;
    case 201:
        return DM_M_HTTP_REQUESTS_201;
    case 204:
        return DM_M_HTTP_REQUESTS_204;
    case 400:
        return DM_M_HTTP_REQUESTS_400;
    case 401:
        return DM_M_HTTP_REQUESTS_401;
    case 403:
        return DM_M_HTTP_REQUESTS_403;
    case 404:
        return DM_M_HTTP_REQUESTS_404;
    case 405:
        return DM_M_HTTP_REQUESTS_405;
    case 409:
        return DM_M_HTTP_REQUESTS_409;
    case 413:
        return DM_M_HTTP_REQUESTS_413;
    case 422:
        return DM_M_HTTP_REQUESTS_422;
    case 415:
        return DM_M_HTTP_REQUESTS_415;
    case 429:
        return DM_M_HTTP_REQUESTS_429;
    case 503:
        return DM_M_HTTP_REQUESTS_503;
    default:
        return DM_M_HTTP_REQUESTS_OTHER;
    }
}

/* ---- rendering ---------------------------------------------------------- */

struct out {
    char *p;
    size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        DM_ASSERT(n >= 0);
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = 2 * (o->cap + (size_t)n);
        o->p = dm_realloc(o->p, o->cap);
    }
}

/* Microseconds as exact decimal seconds without trailing zeros: 2500 ->
 * "0.0025", 5000000 -> "5" (no binary floating point on the way). */
static void format_seconds(char *buf, size_t n, uint64_t us)
{
    uint64_t frac = us % 1000000;
    int digits = 6;

    if (frac == 0) {
        snprintf(buf, n, "%" PRIu64, us / 1000000);
        return;
    }
    while (frac % 10 == 0) {
        frac /= 10;
        digits--;
    }
    snprintf(buf, n, "%" PRIu64 ".%0*" PRIu64, us / 1000000, digits, frac);
}

/* HELP text escaping of the exposition format: backslash and newline. */
static void put_help(struct out *o, const char *name, const char *help)
{
    put(o, "# HELP %s ", name);
    for (const char *p = help; *p != '\0'; p++) {
        if (*p == '\\')
            put(o, "\\\\");
        else if (*p == '\n')
            put(o, "\\n");
        else
            put(o, "%c", *p);
    }
    put(o, "\n");
}

/* `name{labels,extra}` with the braces left out when both are empty. */
static void put_series(struct out *o, const char *name, const char *suffix, const char *labels,
                       const char *extra)
{
    const char *sep = *labels != '\0' && *extra != '\0' ? "," : "";

    if (*labels == '\0' && *extra == '\0')
        put(o, "%s%s ", name, suffix);
    else
        put(o, "%s%s{%s%s%s} ", name, suffix, labels, sep, extra);
}

static void render_histogram(struct out *o, const char *name, const struct metric_def *d,
                             const uint64_t *snap)
{
    const uint64_t *h = &snap[d->slot];
    char num[48], le[64];
    uint64_t cumulative = 0;

    for (unsigned b = 0; b <= HIST_INF; b++) {
        cumulative += h[b];
        if (b < HIST_INF) {
            format_seconds(num, sizeof(num), (uint64_t)bucket_us[b]);
            snprintf(le, sizeof(le), "le=\"%s\"", num);
        } else {
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        }
        put_series(o, name, "_bucket", d->labels, le);
        put(o, "%" PRIu64 "\n", cumulative);
    }
    format_seconds(num, sizeof(num), h[HIST_SUM]);
    put_series(o, name, "_sum", d->labels, "");
    put(o, "%s\n", num);
    put_series(o, name, "_count", d->labels, "");
    put(o, "%" PRIu64 "\n", cumulative);
}

/* The exported family name: danmaku_<family>, counters ending in _total. */
static void family_name(char *buf, size_t n, const struct metric_def *d)
{
    size_t flen = strlen(d->family);
    bool total = flen >= 6 && strcmp(d->family + flen - 6, "_total") == 0;

    snprintf(buf, n, "danmaku_%s%s", d->family, d->type == T_COUNTER && !total ? "_total" : "");
}

char *dm_metrics_render(const struct dm_metrics *m, size_t *len)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    uint64_t *snap = dm_calloc(NSLOTS, sizeof(*snap));
    struct out o = {dm_malloc(8192), 0, 8192};
    char name[160];

    o.p[0] = '\0'; /* an empty scope renders "" */
    DM_CHECK_OBJ(m, METRICS_MAGIC);
    for (unsigned i = 0; i < NSLOTS; i++)
        snap[i] = sum_slot(m, i);

    for (size_t i = 0; i < DM_ARRAY_LEN(defs); i++) {
        const struct metric_def *d = &defs[i];
        if (!(d->scope & m->scope))
            continue;
        family_name(name, sizeof(name), d);
        if (i == 0 || strcmp(defs[i - 1].family, d->family) != 0) {
            put_help(&o, name, d->help);
            put(&o, "# TYPE %s %s\n", name, type_names[d->type]);
        }
        switch (d->type) {
        case T_COUNTER:
            put_series(&o, name, "", d->labels, "");
            put(&o, "%" PRIu64 "\n", snap[d->slot]);
            break;
        case T_GAUGE:
            put_series(&o, name, "", d->labels, "");
            put(&o, "%" PRId64 "\n", as_signed(snap[d->slot]));
            break;
        case T_HISTOGRAM:
            render_histogram(&o, name, d, snap);
            break;
        }
    }
    free(snap);
    if (len != NULL)
        *len = o.len;
    return o.p;
}
