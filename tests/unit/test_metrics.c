/* Metrics: every table row exported once with HELP and TYPE, the output a
 * valid Prometheus text exposition (checked by a line validator here, and by
 * promtool when installed), exact sums over shards recorded from several
 * threads while another renders (run under SANITIZER=thread too), histogram
 * buckets with their le boundaries, labels, gauges and scopes. */
#include "common/metrics.h"

#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/util.h"
#include "tests/unit/tap.h"

/* The table as the test sees it, to check the output against every row. */
struct row {
    enum dm_metric id;
    const char *type;
    const char *family;
    const char *labels;
    unsigned scope;
};

#define DM_METRIC(id, type, family, labels, scope, help)                                           \
    {DM_M_##id, #type, #family, labels, DM_METRICS_##scope},
static const struct row rows[] = {
#include "common/metrics_table.h"
};
#undef DM_METRIC

/* The bucket bounds as they must read on the wire, in seconds. */
static const char *const le_text[DM_METRICS_NBUCKETS + 1] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "+Inf"};

/* ---- helpers ------------------------------------------------------------ */

/* danmaku_<family>, counters with _total. */
static void exported_name(const struct row *r, char *buf, size_t n)
{
    size_t len = strlen(r->family);
    bool has_total = len >= 6 && strcmp(r->family + len - 6, "_total") == 0;
    bool counter = strcmp(r->type, "COUNTER") == 0;

    snprintf(buf, n, "danmaku_%s%s", r->family, counter && !has_total ? "_total" : "");
}

/* Lines of text that start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
    size_t plen = strlen(prefix);
    int n = 0;

    for (const char *p = text; *p != '\0';) {
        if (strncmp(p, prefix, plen) == 0)
            n++;
        const char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return n;
}

/* The value on the line starting with prefix (which ends with the space
 * before the value), or -1 when there is no such line. */
static double line_value(const char *text, const char *prefix)
{
    size_t plen = strlen(prefix);

    for (const char *p = text; *p != '\0';) {
        if (strncmp(p, prefix, plen) == 0)
            return strtod(p + plen, NULL);
        const char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return -1;
}

static bool has_line(const char *text, const char *line)
{
    size_t len = strlen(line);

    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (n == len && memcmp(p, line, len) == 0)
            return true;
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return false;
}

/* ---- exposition format validator ---------------------------------------- */

#define MAX_FAMILIES 256
#define MAX_SERIES   2048

struct validator {
    regex_t sample, labelset, name;
    char families[MAX_FAMILIES][128];
    int nfamilies;
    char *series[MAX_SERIES];
    int nseries;
    char why[512];
};

static void validator_init(struct validator *v)
{
    memset(v, 0, sizeof(*v));
    DM_AZ(regcomp(&v->sample, "^[a-zA-Z_:][a-zA-Z0-9_:]*(\\{[^}]*\\})? [0-9.e+-]+(Inf)?$",
                  REG_EXTENDED | REG_NOSUB));
    DM_AZ(regcomp(&v->labelset,
                  "^[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\""
                  "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\")*$",
                  REG_EXTENDED | REG_NOSUB));
    DM_AZ(regcomp(&v->name, "^[a-zA-Z_:][a-zA-Z0-9_:]*$", REG_EXTENDED | REG_NOSUB));
}

static void validator_fini(struct validator *v)
{
    regfree(&v->sample);
    regfree(&v->labelset);
    regfree(&v->name);
    for (int i = 0; i < v->nseries; i++)
        free(v->series[i]);
}

/* Removes `le="..."` from a label set copy, returning its value (or NULL). */
static char *take_le(char *labels, char *le, size_t lelen)
{
    char *p = strstr(labels, "le=\"");
    if (p == NULL || (p != labels && p[-1] != ','))
        return NULL;
    char *q = strchr(p + 4, '"');
    if (q == NULL)
        return NULL;
    snprintf(le, lelen, "%.*s", (int)(q - (p + 4)), p + 4);
    q++;
    if (*q == ',')
        q++;
    else if (p != labels)
        p--; /* drop the comma before a trailing le */
    memmove(p, q, strlen(q) + 1);
    return le;
}

/* Checks text line by line: HELP then TYPE once per family before its
 * samples, families never interleaved or repeated, sample syntax and label
 * sets, series unique, histogram buckets ascending in le and cumulative with
 * +Inf equal to _count. Returns false with v->why set. */
static bool validate(struct validator *v, const char *text)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    const char *type = NULL;
    char cur[128] = "", line[1024];
    char hseries[512] = "";
    double last_le = -1, last_count = -1, inf_count = -1;
    bool help_seen = false;
    int lineno = 0;

    if (*text != '\0' && text[strlen(text) - 1] != '\n') {
        snprintf(v->why, sizeof(v->why), "no newline at the end");
        return false;
    }
    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        snprintf(line, sizeof(line), "%.*s", (int)(nl - p), p);
        p = nl + 1;
        lineno++;

        char name[128], rest[512];
        if (strncmp(line, "# HELP ", 7) == 0) {
            if (sscanf(line + 7, "%127s", name) != 1 || regexec(&v->name, name, 0, NULL, 0) != 0)
                goto bad;
            for (int i = 0; i < v->nfamilies; i++) {
                if (strcmp(v->families[i], name) == 0) {
                    snprintf(v->why, sizeof(v->why), "line %d: family %s again", lineno, name);
                    return false;
                }
            }
            DM_ASSERT(v->nfamilies < MAX_FAMILIES);
            snprintf(v->families[v->nfamilies++], sizeof(v->families[0]), "%s", name);
            snprintf(cur, sizeof(cur), "%s", name);
            type = NULL;
            help_seen = true;
            snprintf(hseries, sizeof(hseries), "(none)"); /* no label set is this */
            last_le = last_count = inf_count = -1;
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            if (sscanf(line + 7, "%127s %31s", name, rest) != 2 || !help_seen ||
                strcmp(name, cur) != 0 || type != NULL)
                goto bad;
            for (size_t i = 0; i < DM_ARRAY_LEN(types); i++) {
                if (strcmp(rest, types[i]) == 0)
                    type = types[i];
            }
            if (type == NULL)
                goto bad;
            help_seen = false;
            continue;
        }
        if (line[0] == '#' || regexec(&v->sample, line, 0, NULL, 0) != 0 || type == NULL)
            goto bad;

        /* name{labels} value */
        size_t nlen = strcspn(line, "{ ");
        snprintf(name, sizeof(name), "%.*s", (int)nlen, line);
        char labels[512] = "";
        const char *sp;
        if (line[nlen] == '{') {
            const char *close = strchr(line + nlen, '}');
            snprintf(labels, sizeof(labels), "%.*s", (int)(close - line - nlen - 1),
                     line + nlen + 1);
            if (regexec(&v->labelset, labels, 0, NULL, 0) != 0)
                goto bad;
            sp = close + 1;
        } else {
            sp = line + nlen;
        }
        char *end;
        double value = strtod(sp + 1, &end);
        if (*end != '\0')
            goto bad;

        char *series = dm_malloc(strlen(line) + 1);
        snprintf(series, strlen(line) + 1, "%.*s", (int)(sp - line), line);
        for (int i = 0; i < v->nseries; i++) {
            if (strcmp(v->series[i], series) == 0) {
                free(series);
                snprintf(v->why, sizeof(v->why), "line %d: series repeated", lineno);
                return false;
            }
        }
        DM_ASSERT(v->nseries < MAX_SERIES);
        v->series[v->nseries++] = series;

        if (strcmp(type, "histogram") != 0) {
            if (strcmp(name, cur) != 0)
                goto bad;
            continue;
        }
        size_t clen = strlen(cur);
        const char *suffix = name + clen;
        if (strncmp(name, cur, clen) != 0)
            goto bad;
        char le[64];
        if (strcmp(suffix, "_bucket") == 0) {
            if (take_le(labels, le, sizeof(le)) == NULL)
                goto bad;
            double lev = strcmp(le, "+Inf") == 0 ? 1e300 : strtod(le, NULL);
            if (strcmp(labels, hseries) != 0) {
                snprintf(hseries, sizeof(hseries), "%s", labels);
                last_le = -1;
                last_count = -1;
                inf_count = -1;
            }
            if (lev <= last_le || value < last_count)
                goto bad;
            last_le = lev;
            last_count = value;
            if (lev == 1e300)
                inf_count = value;
        } else if (strcmp(suffix, "_count") == 0) {
            if (strcmp(labels, hseries) != 0 || inf_count < 0 || value != inf_count)
                goto bad;
        } else if (strcmp(suffix, "_sum") != 0) {
            goto bad;
        }
    }
    return true;
bad:
    snprintf(v->why, sizeof(v->why), "line %d: \"%.400s\"", lineno, line);
    return false;
}

static bool valid_exposition(const char *text, char *why, size_t n)
{
    struct validator *v = dm_malloc(sizeof(*v));
    validator_init(v);
    bool good = validate(v, text);
    snprintf(why, n, "%s", good ? "" : v->why);
    validator_fini(v);
    free(v);
    return good;
}

/* ---- tests -------------------------------------------------------------- */

static void test_validator(void)
{
    static const char *const bad[] = {
        "# HELP a x\n# TYPE a counter\na 1", /* no final newline */
        "a 1\n",                             /* no HELP/TYPE */
        "# HELP a x\n# TYPE a counter\na 1\n# HELP b x\n# TYPE b gauge\nb 1\n"
        "# HELP a x\n# TYPE a counter\na{x=\"1\"} 1\n", /* interleaved */
        "# HELP a x\n# TYPE a counter\nb 1\n",          /* sample of another family */
        "# HELP a x\n# TYPE a counter\na{x=1} 1\n",     /* unquoted label */
        "# HELP a x\n# TYPE a counter\na 1\na 2\n",     /* repeated series */
        "# HELP 9a x\n# TYPE 9a counter\n9a 1\n",       /* bad name */
        "# HELP a x\n# TYPE a summary\na 1\n",          /* unknown type */
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
        "h_sum 1\nh_count 1\n", /* not cumulative */
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
        "h_sum 1\nh_count 3\n", /* count != +Inf */
    };
    char why[512];

    ok(valid_exposition("# HELP a x\n# TYPE a counter\na{x=\"1\"} 1\na{x=\"2\"} 2\n"
                        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                        "h_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n",
                        why, sizeof(why)),
       "validator accepts a valid sample (%s)", why);
    for (size_t i = 0; i < DM_ARRAY_LEN(bad); i++)
        ok(!valid_exposition(bad[i], why, sizeof(why)), "validator rejects bad input %zu (%s)", i,
           why);
}

/* Every row in scope exactly once, with HELP and TYPE once per family, and
 * nothing else in the output. */
static void check_rows(const char *text, unsigned scope, const char *what)
{
    char name[160], prefix[400];
    int expected_samples = 0, missing = 0;
    bool ids_in_order = true;

    for (size_t i = 0; i < DM_ARRAY_LEN(rows); i++) {
        const struct row *r = &rows[i];
        bool in = (r->scope & scope) != 0;
        bool hist = strcmp(r->type, "HISTOGRAM") == 0;
        const char *sep = *r->labels != '\0' ? "," : "";

        if (r->id != (enum dm_metric)i)
            ids_in_order = false;
        exported_name(r, name, sizeof(name));
        if (*r->labels != '\0')
            snprintf(prefix, sizeof(prefix), "%s%s{%s} ", name, hist ? "_count" : "", r->labels);
        else
            snprintf(prefix, sizeof(prefix), "%s%s ", name, hist ? "_count" : "");
        int n = count_lines(text, prefix);
        if (n != (in ? 1 : 0)) {
            ok(0, "%s: \"%s\" appears %d times", what, prefix, n);
            missing++;
        }
        if (hist) {
            snprintf(prefix, sizeof(prefix), "%s_bucket{%s%sle=\"+Inf\"} ", name, r->labels, sep);
            if (count_lines(text, prefix) != (in ? 1 : 0)) {
                ok(0, "%s: \"%s\" count", what, prefix);
                missing++;
            }
        }
        if (in)
            expected_samples += hist ? DM_METRICS_NBUCKETS + 3 : 1;
        if (i > 0 && strcmp(rows[i - 1].family, r->family) == 0)
            continue;
        snprintf(prefix, sizeof(prefix), "# HELP %s ", name);
        int nh = count_lines(text, prefix);
        snprintf(prefix, sizeof(prefix), "# TYPE %s %s", name,
                 strcmp(r->type, "COUNTER") == 0 ? "counter"
                 : strcmp(r->type, "GAUGE") == 0 ? "gauge"
                                                 : "histogram");
        int nt = count_lines(text, prefix);
        if (nh != (in ? 1 : 0) || nt != (in ? 1 : 0)) {
            ok(0, "%s: %s has %d HELP and %d TYPE lines", what, name, nh, nt);
            missing++;
        }
    }
    ok(ids_in_order, "%s: ids follow the table order", what);
    ok(missing == 0, "%s: every row in scope exactly once, the others absent", what);
    ok(count_lines(text, "danmaku_") == expected_samples, "%s: %d sample lines, no others", what,
       expected_samples);
}

static void test_every_metric_once(void)
{
    static const struct {
        unsigned scope;
        const char *name;
    } scopes[] = {{DM_METRICS_IB, "all"}, {DM_METRICS_I, "ingest"}, {DM_METRICS_B, "broadcast"}};
    char why[512];

    for (size_t i = 0; i < DM_ARRAY_LEN(scopes); i++) {
        struct dm_metrics *m = dm_metrics_new(scopes[i].scope);
        size_t len = 0;
        char *text = dm_metrics_render(m, &len); /* no shard yet: all zero */
        ok(len == strlen(text) && len > 0, "%s: render length %zu", scopes[i].name, len);
        ok(valid_exposition(text, why, sizeof(why)), "%s: valid exposition format (%s)",
           scopes[i].name, why);
        check_rows(text, scopes[i].scope, scopes[i].name);
        free(text);
        dm_metrics_free(m);
    }

    struct dm_metrics *m = dm_metrics_new(DM_METRICS_I);
    char *text = dm_metrics_render(m, NULL);
    ok(has_line(text, "# TYPE danmaku_redis_errors_total counter") &&
           has_line(text, "# TYPE danmaku_http_requests_total counter") &&
           !has_line(text, "# TYPE danmaku_ws_closed_total counter") &&
           !has_line(text, "# TYPE danmaku_connections gauge"),
       "ingest exports its rows and the shared ones, not broadcast's");
    free(text);
    dm_metrics_free(m);
    m = dm_metrics_new(DM_METRICS_B);
    text = dm_metrics_render(m, NULL);
    ok(has_line(text, "# TYPE danmaku_redis_errors_total counter") &&
           has_line(text, "# TYPE danmaku_ws_closed_total counter") &&
           has_line(text, "# TYPE danmaku_connections gauge") &&
           !has_line(text, "# TYPE danmaku_http_requests_total counter"),
       "broadcast exports its rows and the shared ones, not ingest's");
    ok(has_line(text, "# HELP danmaku_ws_closed_total Viewer connections closed, by reason"),
       "HELP text of a family");
    ok(has_line(text, "# TYPE danmaku_fanout_latency_seconds histogram"),
       "histogram family keeps its name (no _total)");
    free(text);
    dm_metrics_free(m);
    dm_metrics_free(NULL);
    ok(1, "dm_metrics_free(NULL) is a no-op");
}

static void test_labels_and_counters(void)
{
    struct dm_metrics *m = dm_metrics_new(DM_METRICS_IB);
    struct dm_metrics_shard *s = dm_metrics_shard_new(m);
    char why[512];

    dm_metrics_inc(s, DM_M_WS_CLOSED_SLOW_CONSUMER, 3);
    dm_metrics_inc(s, DM_M_WS_CLOSED_SLOW_CONSUMER, 1);
    dm_metrics_inc(s, DM_M_WS_CLOSED_EOF, 1);
    dm_metrics_inc(s, dm_metrics_http_status(429), 2);
    dm_metrics_inc(s, dm_metrics_http_status(418), 1);
    dm_metrics_inc(s, dm_metrics_http_status(500), 1);
    dm_metrics_inc(s, DM_M_DELIVERY_BYTES, UINT64_C(10000000000));

    char *text = dm_metrics_render(m, NULL);
    ok(valid_exposition(text, why, sizeof(why)), "valid after recording (%s)", why);
    ok(has_line(text, "danmaku_ws_closed_total{reason=\"slow_consumer\"} 4"),
       "labelled counter: slow_consumer 4");
    ok(has_line(text, "danmaku_ws_closed_total{reason=\"eof\"} 1"), "labelled counter: eof 1");
    ok(has_line(text, "danmaku_ws_closed_total{reason=\"policy\"} 0"),
       "labelled counter: untouched series 0");
    ok(has_line(text, "danmaku_http_requests_total{code=\"429\"} 2"), "status 429 counted");
    ok(has_line(text, "danmaku_http_requests_total{code=\"other\"} 2"),
       "statuses 418 and 500 counted as other");
    ok(has_line(text, "danmaku_delivery_bytes_total 10000000000"), "counter beyond 32 bits");
    ok(dm_metrics_value(m, DM_M_WS_CLOSED_SLOW_CONSUMER) == 4, "dm_metrics_value of a counter");
    free(text);

    static const int codes[] = {200, 201, 204, 400, 401, 403, 404,
                                405, 409, 413, 415, 422, 429, 503};
    static const enum dm_metric ids[] = {
        DM_M_HTTP_REQUESTS_200, DM_M_HTTP_REQUESTS_201, DM_M_HTTP_REQUESTS_204,
        DM_M_HTTP_REQUESTS_400, DM_M_HTTP_REQUESTS_401, DM_M_HTTP_REQUESTS_403,
        DM_M_HTTP_REQUESTS_404, DM_M_HTTP_REQUESTS_405, DM_M_HTTP_REQUESTS_409,
        DM_M_HTTP_REQUESTS_413, DM_M_HTTP_REQUESTS_415, DM_M_HTTP_REQUESTS_422,
        DM_M_HTTP_REQUESTS_429, DM_M_HTTP_REQUESTS_503};
    bool all = true;
    for (size_t i = 0; i < DM_ARRAY_LEN(codes); i++)
        all = all && dm_metrics_http_status(codes[i]) == ids[i];
    ok(all, "dm_metrics_http_status maps every code with a row to it");
    ok(dm_metrics_http_status(0) == DM_M_HTTP_REQUESTS_OTHER &&
           dm_metrics_http_status(302) == DM_M_HTTP_REQUESTS_OTHER,
       "dm_metrics_http_status: the rest is other");
    dm_metrics_free(m);
}

static void test_gauges(void)
{
    struct dm_metrics *m = dm_metrics_new(DM_METRICS_B);
    struct dm_metrics_shard *a = dm_metrics_shard_new(m);
    struct dm_metrics_shard *b = dm_metrics_shard_new(m);
    char *text;

    dm_metrics_gauge_add(a, DM_M_ROOMS, 5);
    dm_metrics_gauge_add(b, DM_M_ROOMS, -7);
    text = dm_metrics_render(m, NULL);
    ok(has_line(text, "danmaku_rooms -2"), "gauge parts sum across shards: -2");
    ok(dm_metrics_gauge(m, DM_M_ROOMS) == -2, "dm_metrics_gauge -2");
    ok(dm_metrics_value(m, DM_M_ROOMS) == 0, "dm_metrics_value of a negative gauge is 0");
    free(text);

    dm_metrics_gauge_add(b, DM_M_ROOMS, 10);
    ok(dm_metrics_gauge(m, DM_M_ROOMS) == 8 && dm_metrics_value(m, DM_M_ROOMS) == 8, "gauge up: 8");
    dm_metrics_gauge_set(a, DM_M_ROOMS, 1); /* a's part 5 -> 1; b's stays 3 */
    ok(dm_metrics_gauge(m, DM_M_ROOMS) == 4, "gauge_set replaces only the shard's part: 4");
    dm_metrics_gauge_add(a, DM_M_ROOMS, -1);
    dm_metrics_gauge_add(b, DM_M_ROOMS, -3);
    text = dm_metrics_render(m, NULL);
    ok(has_line(text, "danmaku_rooms 0"), "gauge down to 0");
    free(text);

    dm_metrics_gauge_set(a, DM_M_KAFKA_PARTITIONS_ASSIGNED, 12);
    dm_metrics_gauge_set(a, DM_M_KAFKA_PARTITIONS_ASSIGNED, 7);
    text = dm_metrics_render(m, NULL);
    ok(has_line(text, "danmaku_kafka_partitions_assigned 7"), "gauge_set: last value wins");
    free(text);
    dm_metrics_free(m);
}

static void test_histogram(void)
{
    /* Bounds are inclusive: 500 us lands in le="0.0005", 501 in le="0.001".
     * Negative values count as 0. */
    static const int64_t values[] = {-5, 0, 500, 501, 1000, 1001, 5000000, 5000001, 123456789};
    static const uint64_t cumulative[DM_METRICS_NBUCKETS + 1] = {3, 5, 6, 6, 6, 6, 6,
                                                                 6, 6, 6, 6, 6, 7, 9};
    struct dm_metrics *m = dm_metrics_new(DM_METRICS_IB);
    struct dm_metrics_shard *a = dm_metrics_shard_new(m);
    struct dm_metrics_shard *b = dm_metrics_shard_new(m);
    char line[256], why[512];
    bool buckets = true;

    for (size_t i = 0; i < DM_ARRAY_LEN(values); i++)
        dm_metrics_observe(i % 2 ? a : b, DM_M_FANOUT_LATENCY, values[i]);
    dm_metrics_observe(a, DM_M_HTTP_REQUEST_LATENCY, 1500);

    char *text = dm_metrics_render(m, NULL);
    ok(valid_exposition(text, why, sizeof(why)), "valid with observations (%s)", why);
    for (int i = 0; i <= DM_METRICS_NBUCKETS; i++) {
        snprintf(line, sizeof(line), "danmaku_fanout_latency_seconds_bucket{le=\"%s\"} %llu",
                 le_text[i], (unsigned long long)cumulative[i]);
        if (!has_line(text, line)) {
            buckets = false;
            ok(0, "missing \"%s\"", line);
        }
    }
    ok(buckets, "cumulative buckets exact, bounds inclusive, over two shards");
    ok(has_line(text, "danmaku_fanout_latency_seconds_count 9"), "_count 9");
    ok(has_line(text, "danmaku_fanout_latency_seconds_sum 133.459792"),
       "_sum exact in seconds: 133.459792");
    ok(has_line(text, "danmaku_http_request_duration_seconds_sum 0.0015"),
       "_sum without trailing zeros: 0.0015");
    ok(has_line(text, "danmaku_http_request_duration_seconds_bucket{le=\"0.001\"} 0") &&
           has_line(text, "danmaku_http_request_duration_seconds_bucket{le=\"0.0025\"} 1"),
       "1.5 ms lands in le=\"0.0025\"");
    ok(has_line(text, "danmaku_kafka_delivery_latency_seconds_sum 0") &&
           has_line(text, "danmaku_kafka_delivery_latency_seconds_count 0"),
       "empty histogram: _sum 0, _count 0");
    ok(dm_metrics_value(m, DM_M_FANOUT_LATENCY) == 9, "dm_metrics_value of a histogram: count");
    ok(dm_metrics_sum_us(m, DM_M_FANOUT_LATENCY) == 133459792, "dm_metrics_sum_us");
    free(text);
    dm_metrics_free(m);
}

/* ---- threads ------------------------------------------------------------ */

#define NTHREADS 3
#define ITER     100000

struct worker {
    struct dm_metrics *m;
    int index;
    atomic_int *done;
};

static const enum dm_metric worker_close[NTHREADS] = {
    DM_M_WS_CLOSED_EOF, DM_M_WS_CLOSED_IDLE_TIMEOUT, DM_M_WS_CLOSED_SLOW_CONSUMER};

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    /* Registering races with the other workers and with the renderer. */
    struct dm_metrics_shard *s = dm_metrics_shard_new(w->m);

    for (int i = 0; i < ITER; i++) {
        dm_metrics_inc(s, DM_M_DELIVERIES, 1);
        dm_metrics_inc(s, DM_M_DELIVERY_BYTES, (uint64_t)w->index + 1);
        dm_metrics_gauge_add(s, DM_M_CONNECTIONS, 2);
        dm_metrics_gauge_add(s, DM_M_CONNECTIONS, -1);
        dm_metrics_observe(s, DM_M_FANOUT_LATENCY, (i % 7) * 1000);
        if (i % 10 == 0)
            dm_metrics_inc(s, worker_close[w->index], 1);
    }
    atomic_fetch_add(w->done, 1);
    return NULL;
}

static void test_threads(void)
{
    struct dm_metrics *m = dm_metrics_new(DM_METRICS_B);
    struct worker w[NTHREADS];
    pthread_t tid[NTHREADS];
    atomic_int done;
    char why[512];
    double last = 0;
    bool monotone = true, valid = true;
    int renders = 0;

    atomic_init(&done, 0);
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){m, i, &done};
        DM_AZ(pthread_create(&tid[i], NULL, run_worker, &w[i]));
    }
    /* Render while the workers record: every rendering is valid and the
     * counters never go down. */
    while (atomic_load(&done) < NTHREADS) {
        char *text = dm_metrics_render(m, NULL);
        double d = line_value(text, "danmaku_deliveries_total ");
        if (d < last || d > (double)NTHREADS * ITER)
            monotone = false;
        last = d;
        if (renders < 50 && !valid_exposition(text, why, sizeof(why))) {
            valid = false;
            printf("# %s\n", why);
        }
        renders++;
        free(text);
    }
    for (int i = 0; i < NTHREADS; i++)
        DM_AZ(pthread_join(tid[i], NULL));
    ok(monotone, "concurrent renders (%d): deliveries never go down", renders);
    ok(valid, "concurrent renders are valid");

    uint64_t sum_us = 0;
    uint64_t le_1ms = 0; /* values <= 1000 us: 0 and 1000 */
    for (int i = 0; i < ITER; i++) {
        sum_us += (uint64_t)(i % 7) * 1000;
        le_1ms += (i % 7) <= 1;
    }
    ok(dm_metrics_value(m, DM_M_DELIVERIES) == (uint64_t)NTHREADS * ITER,
       "deliveries: %llu from %d threads", (unsigned long long)dm_metrics_value(m, DM_M_DELIVERIES),
       NTHREADS);
    ok(dm_metrics_value(m, DM_M_DELIVERY_BYTES) == (uint64_t)(1 + 2 + 3) * ITER,
       "delivery bytes exact");
    ok(dm_metrics_gauge(m, DM_M_CONNECTIONS) == (int64_t)NTHREADS * ITER, "gauge exact");
    ok(dm_metrics_value(m, DM_M_FANOUT_LATENCY) == (uint64_t)NTHREADS * ITER, "histogram count");
    ok(dm_metrics_sum_us(m, DM_M_FANOUT_LATENCY) == NTHREADS * sum_us, "histogram sum");
    for (int i = 0; i < NTHREADS; i++)
        ok(dm_metrics_value(m, worker_close[i]) == ITER / 10, "thread %d's close reason: %d", i,
           ITER / 10);

    char *text = dm_metrics_render(m, NULL), line[256];
    snprintf(line, sizeof(line), "danmaku_deliveries_total %d", NTHREADS * ITER);
    ok(has_line(text, line), "rendered: %s", line);
    snprintf(line, sizeof(line), "danmaku_fanout_latency_seconds_bucket{le=\"0.001\"} %llu",
             (unsigned long long)(NTHREADS * le_1ms));
    ok(has_line(text, line), "rendered: %s", line);
    /* 3 x 299995000 us = 899.985 s */
    ok(NTHREADS * sum_us == UINT64_C(899985000) &&
           has_line(text, "danmaku_fanout_latency_seconds_sum 899.985"),
       "rendered: danmaku_fanout_latency_seconds_sum 899.985");
    free(text);
    dm_metrics_free(m);
}

/* ---- promtool ----------------------------------------------------------- */

static void test_promtool(void)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        ok(1, "promtool check metrics # SKIP promtool not installed");
        return;
    }
    struct dm_metrics *m = dm_metrics_new(DM_METRICS_IB);
    struct dm_metrics_shard *s = dm_metrics_shard_new(m);
    dm_metrics_inc(s, DM_M_WS_CLOSED_TOO_BIG, 2);
    dm_metrics_observe(s, DM_M_FANOUT_LATENCY, 1234);
    dm_metrics_gauge_add(s, DM_M_CONNECTIONS, 3);
    size_t len;
    char *text = dm_metrics_render(m, &len);
    FILE *p = popen("promtool check metrics", "w");
    bool wrote = p != NULL && fwrite(text, 1, len, p) == len;
    int status = p != NULL ? pclose(p) : -1;
    ok(wrote && status == 0, "promtool check metrics accepts the output (status %d)", status);
    free(text);
    dm_metrics_free(m);
}

int main(void)
{
    subtest("line validator", test_validator);
    subtest("every metric once, scopes", test_every_metric_once);
    subtest("counters and labels", test_labels_and_counters);
    subtest("gauges", test_gauges);
    subtest("histograms", test_histogram);
    subtest("threads", test_threads);
    subtest("promtool", test_promtool);
    return done_testing();
}
