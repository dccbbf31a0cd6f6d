/* Metrics: one table (metrics_table.h) generates the ids, the counters and
 * the Prometheus text. Each thread records into its own shard with relaxed
 * atomics and no locks; /metrics sums the shards. */
#ifndef DM_COMMON_METRICS_H
#define DM_COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Which binary exports a metric (the scope column of the table). */
enum dm_metrics_scope {
    DM_METRICS_I = 1,  /* ingest */
    DM_METRICS_B = 2,  /* broadcast */
    DM_METRICS_IB = 3, /* both */
};

/* One id per table row: DM_M_CONNECTIONS, DM_M_WS_CLOSED_EOF, ... */
enum dm_metric {
#define DM_METRIC(id, type, family, labels, scope, help) DM_M_##id,
#include "common/metrics_table.h"
#undef DM_METRIC
    DM_M__COUNT
};

/* Upper bounds (inclusive, Prometheus `le`) of every histogram's buckets in
 * microseconds: 0.5 ms to 5 s. A last bucket, +Inf, takes the rest. */
#define DM_METRICS_BUCKETS_US                                                                      \
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000
#define DM_METRICS_NBUCKETS 13

struct dm_metrics;
struct dm_metrics_shard;

/* The registry of one process, exporting the rows of `scope` (an
 * enum dm_metrics_scope; rows outside it may still be recorded and read with
 * dm_metrics_value, and are left out of dm_metrics_render). Checks the table
 * and panics if it is malformed. Caller owns: dm_metrics_free. */
struct dm_metrics *dm_metrics_new(unsigned scope);

/* Frees the registry and every shard of it. No thread may record into its
 * shards or render during or after the call. NULL is a no-op. */
void dm_metrics_free(struct dm_metrics *m);

/* A new zeroed shard registered in m; safe to call from any thread at any
 * time, including while another thread renders. The shard belongs to m (freed
 * by dm_metrics_free, never on its own, so the totals never go down when a
 * thread ends). Give each thread its own shard: its counters sit on cache
 * lines of their own, so recording never contends. Several threads writing
 * one shard still count exactly, only slower. */
struct dm_metrics_shard *dm_metrics_shard_new(struct dm_metrics *m);

/* Recording: from the shard's thread, lock-free, never blocks or allocates.
 * An id of the wrong type is a bug (assert). */

/* Adds n to a COUNTER. */
void dm_metrics_inc(struct dm_metrics_shard *s, enum dm_metric id, uint64_t n);

/* Adds delta (may be negative) to this shard's part of a GAUGE; the gauge is
 * the sum of the parts of every shard, so a thread may raise it and another
 * one lower it. */
void dm_metrics_gauge_add(struct dm_metrics_shard *s, enum dm_metric id, int64_t delta);

/* Sets this shard's part of a GAUGE to value (for a gauge one thread owns and
 * knows in full, like the partitions its consumer holds). */
void dm_metrics_gauge_set(struct dm_metrics_shard *s, enum dm_metric id, int64_t value);

/* Counts one duration of value_us microseconds into a HISTOGRAM: the first
 * bucket whose bound is >= value_us, else +Inf. Negative values (clocks of
 * two hosts disagreeing) count as 0. */
void dm_metrics_observe(struct dm_metrics_shard *s, enum dm_metric id, int64_t value_us);

/* Reading: from any thread, while others record. Each counter is read
 * atomically; a rendering taken while threads record may mix moments but
 * never loses or invents a count, and counters never go down between two. */

/* The Prometheus text exposition format 0.0.4 of every row in scope, summed
 * over all shards: HELP and TYPE once per family in table order, then its
 * series. Sets *len to the length (without the terminating NUL).
 * Caller owns: free(). */
char *dm_metrics_render(const struct dm_metrics *m, size_t *len);

/* The sum over all shards: a COUNTER's total, a GAUGE's value (0 if the parts
 * sum below zero; see dm_metrics_gauge), a HISTOGRAM's observation count. */
uint64_t dm_metrics_value(const struct dm_metrics *m, enum dm_metric id);

/* A GAUGE's value, which may be negative. */
int64_t dm_metrics_gauge(const struct dm_metrics *m, enum dm_metric id);

/* The sum of a HISTOGRAM's observations in microseconds. */
uint64_t dm_metrics_sum_us(const struct dm_metrics *m, enum dm_metric id);

/* The DM_M_HTTP_REQUESTS_<code> row of an HTTP status, DM_M_HTTP_REQUESTS_OTHER
 * for codes without a row of their own. */
enum dm_metric dm_metrics_http_status(int status);

#endif
