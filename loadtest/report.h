/* The load tester's results: the JSON file, the self-contained HTML report,
 * the final table on the terminal and the once-a-second progress line, all
 * made from one results object whose schema (below) is the contract between
 * the main program, which builds it, and this module, which only reads it;
 * and the same files and table of a bench object, the runs of `make bench`.
 *
 * The results object (jansson). Numbers are JSON integers or reals. Any key
 * may be missing (the table prints "-", the HTML a dash or "No data"); other
 * keys are kept in the JSON, and the HTML shows other summary keys under
 * "Other counters" (numbers, or latency objects like latency_us):
 *
 *   { "tool": "danmaku-loadtest", "version": "1", "scenario": "hot-room",
 *     "started_at": "2024-05-01T12:00:00Z",          ISO 8601 UTC
 *     "config": { "<flag>": value, ... },             every flag as given or defaulted
 *     "environment": { "cpu_model", "cores", "kernel", "commit", "hostname",
 *                      "generator_cpus", "server_cpus",
 *                      "kafka": "real" | "embedded" | "external" },
 *     "summary": {
 *       "duration_s", "viewers", "rooms", "connections_ok", "connect_errors",
 *       "sent", "acked", "send_errors",
 *       "expected", "delivered", "lost", "duplicated", "out_of_order",
 *       "skipped", "recovered",
 *       "deliveries_per_s", "sent_per_s",
 *       "generator_cpu_pct",                          100 = one core busy
 *       "latency_us": { "count", "min", "mean", "p50", "p90", "p99", "p999",
 *                       "max", "clamped" },           see lt_report_latency
 *       "closes_by_code": { "1000": n, "4008": n, ... },
 *       "errors": { "<name>": n, ... } },
 *     "timeline": [ { "t",                            seconds since start
 *                     "phase",                        optional: "connect", "warmup",
 *                                                     "measure", "drain"; the HTML
 *                                                     shades all but "measure"
 *                     "connections", "sent_per_s", "delivered_per_s",
 *                     "p50_us", "p99_us", "max_us",   latency of that second
 *                     "errors",                       errors during that second
 *                     "cpu_pct" }, ... ],             see lt_report_timeline_entry
 *     "distribution": [ { "le_us": v, "count": n }, ... ],
 *                                                     non-empty histogram buckets,
 *                                                     see lt_report_distribution
 *     "slo": { "max_loss": x,                         allowed lost/expected, 0..1
 *              "p99_us": y or null,                   null: no latency SLO
 *              "passed": bool, "failures": [ "<why>", ... ] } }
 *
 * The bench object: several runs in one file, written by `make bench`
 * (loadtest/bench.sh). The writers and the table take it as well as a
 * results object; an object with a "runs" key is a bench object. Same
 * tolerance: any key may be missing.
 *
 *   { "tool": "danmaku-bench",
 *     "server_cpus": "0-0", "generator_cpus": "1-1",  taskset CPU lists
 *     "kafka": "real" | "embedded",
 *     "runs": [ { <a results object, as above>,       one per scenario, in order
 *                 "name": "<scenario name>",          bench's name for the run
 *                 "exit": n,                          the load tester's exit status:
 *                                                     0 ok, 2 objectives missed, 1 error
 *                 "server_rss_kb": { "before": kb,    broadcast node's RSS at the start
 *                                    "peak": kb } },  and its peak during the run
 *               { "name", "exit",                     a run that wrote no results
 *                 "error": "no results" }, ... ] }
 *
 * A run's server memory per connection is (peak - before) /
 * summary.connections_ok KB, shown as "-" unless both are positive (a heap
 * grown by an earlier run is reused, so no growth does not mean no cost).
 * A run fails when it has no results, missed an objective, or exited with
 * a status other than 0 that missed objectives do not explain.
 */
#ifndef DM_LOADTEST_REPORT_H
#define DM_LOADTEST_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "common/util.h"

struct lt_hist;

/* One progress sample, taken once a second by the main program: the
 * interval fields describe the last second only (they become a timeline
 * entry), the run fields everything since the start (progress line only). */
struct lt_progress {
    double t;                        /* seconds since start */
    const char *phase;               /* borrowed; NULL: none (timeline entry only) */
    uint64_t connections;            /* viewer connections open now */
    double sent_per_s;               /* interval: messages published per second */
    double delivered_per_s;          /* interval: messages received by viewers per second */
    uint64_t p50_us, p99_us, max_us; /* interval: delivery latency */
    uint64_t errors;                 /* interval: errors of any kind */
    double cpu_pct;                  /* interval: generator CPU, 100 = one core busy */
    uint64_t run_p99_us;             /* run: delivery latency p99 since the start */
    uint64_t run_errors;             /* run: errors since the start */
};

/* Writes results (a results or a bench object) as pretty-printed JSON
 * (2-space indent, key order kept)
 * to path atomically: a temporary file in the same directory, then
 * rename, so a reader never sees half a file. path "-" writes to stdout.
 * results and path are borrowed. 0, or -1 with err filled. */
int lt_report_write_json(const json_t *results, const char *path, char err[DM_ERRLEN]);

/* Writes the self-contained HTML report (no external scripts, styles,
 * fonts, images or URLs; works offline) to path atomically as above. The
 * results JSON is embedded in a <script type="application/json"> block with
 * every '<', '>' and '&' written as \u003c, \u003e, \u0026, so no string in
 * it can close the block; the page's own script draws the tables and SVG
 * charts from it. For a results object the page is that run's report; for
 * a bench object it is a header (date, commit, host, Kafka, CPU split), a
 * summary table with one row per run linked to the run's section, and one
 * section per run with the charts and tables of a run's own page (or why
 * it has none). results and path are borrowed; path "-" writes to stdout.
 * 0, or -1 with err filled. */
int lt_report_write_html(const json_t *results, const char *path, char err[DM_ERRLEN]);

/* Prints the final summary of a results object (one screen, aligned
 * columns): throughput, latency percentiles, accounting, connections and
 * closes by code, errors, generator CPU and the SLO verdict. For a bench
 * object: a header and one line per run (viewers, deliveries/s, p50, p99,
 * max, lost, duplicated, out of order, generator CPU, server KB per
 * connection, verdict and why), about 100 columns. results and out are
 * borrowed; missing keys print as "-". Colours the verdict only when out
 * is a terminal and NO_COLOR is unset. */
void lt_report_print_table(const json_t *results, FILE *out);

/* Formats the progress line of p (no newline) into out, truncating to
 * outlen - 1 bytes; 256 bytes always suffice. Latencies are those of the
 * last second but for "run", errors the run's total with the last second's
 * in parentheses. Example (one line, about 100 columns):
 *   "   12s  conn 5,000  sent 1.00k/s  dlvr 5.00M/s  p50 1.21ms  p99 8.40ms
 *    (run 9.10ms)  err 3 (+1)  cpu 87%" */
void lt_report_progress_line(char *out, size_t outlen, const struct lt_progress *p);

/* Builders for the parts of the results object the load tester's own types
 * hold; each returns a new reference (caller owns: json_decref, or give it
 * to a jansson *_new setter). */

/* The timeline entry of p: {"t", "phase" (only when p->phase is set),
 * "connections", "sent_per_s", "delivered_per_s", "p50_us", "p99_us",
 * "max_us", "errors", "cpu_pct"}. */
json_t *lt_report_timeline_entry(const struct lt_progress *p);

/* summary.latency_us of h: {"count", "min", "mean", "p50", "p90", "p99",
 * "p999", "max", "clamped"} (integers but mean). h is borrowed; take it
 * from a snapshot, not a histogram being recorded into. */
json_t *lt_report_latency(const struct lt_hist *h);

/* The distribution array of h: one {"le_us", "count"} per non-empty bucket
 * in increasing order, le_us being the highest value of the bucket (the
 * last one capped at the recorded max). h is borrowed, as above. */
json_t *lt_report_distribution(const struct lt_hist *h);

/* The HTML template around the embedded results, in report_html.c: head
 * ends by opening the data block, tail starts by closing it. */
extern const char lt_report_html_head[];
extern const char lt_report_html_tail[];

#endif
