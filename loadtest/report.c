/* The results writers: JSON and HTML files (written atomically), the final
 * table and the progress line. Everything reads the results object
 * tolerantly: a missing or mistyped key prints as "-" rather than failing,
 * because a report of a run that went wrong matters most. */
#include "loadtest/report.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "loadtest/hist.h"

#define NONE   "-"
#define LABELW 14 /* the table's label column */

typedef int (*write_fn_cb)(FILE *f, const json_t *results);

/* ---- atomic file writes --------------------------------------------------- */

/* Writes via write_fn into "<path>.tmp.<pid>" (same directory, so rename is
 * atomic; the pid keeps two runs from sharing it), then renames it over
 * path. "-" writes to stdout instead. */
static int write_file(const char *path, write_fn_cb write_fn, const json_t *results,
                      char err[DM_ERRLEN])
{
    char tmp[PATH_MAX];
    FILE *f;
    int fd, e, n;

    if (strcmp(path, "-") == 0) {
        if (write_fn(stdout, results) < 0 || fflush(stdout) != 0) {
            snprintf(err, DM_ERRLEN, "stdout: %s", strerror(errno));
            return -1;
        }
        return 0;
    }
    n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        snprintf(err, DM_ERRLEN, "%.200s: path too long", path);
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        e = errno;
        snprintf(err, DM_ERRLEN, "%.200s: %s", tmp, strerror(e));
        return -1;
    }
    f = fdopen(fd, "w");
    if (f == NULL) {
        e = errno;
        close(fd);
        goto fail;
    }
    errno = 0;
    if (write_fn(f, results) < 0 || fflush(f) != 0 || ferror(f)) {
        e = errno ? errno : EIO;
        fclose(f);
        goto fail;
    }
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        e = errno;
        goto fail;
    }
    return 0;
fail:
    unlink(tmp); /* never leave the temporary file behind */
    snprintf(err, DM_ERRLEN, "%.200s: %s", path, strerror(e));
    return -1;
}

static int put_json(FILE *f, const json_t *results)
{
    if (json_dumpf(results, f, JSON_INDENT(2)) < 0)
        return -1;
    return fputc('\n', f) == EOF ? -1 : 0;
}

int lt_report_write_json(const json_t *results, const char *path, char err[DM_ERRLEN])
{
    DM_AN(results);
    DM_AN(path);
    return write_file(path, put_json, results, err);
}

/* The data block: compact JSON in which '<', '>' and '&' (they only occur
 * inside strings) become \u escapes, so neither "</script", "<!--" nor
 * anything else can change how the HTML parser reads the block, and
 * JSON.parse or any JSON parser reads back the very same strings. */
static int put_html(FILE *f, const json_t *results)
{
    char *data = json_dumps(results, JSON_COMPACT);
    int rc = 0;

    if (data == NULL) {
        errno = EINVAL; /* only an invalid object (NaN, bad UTF-8) fails here */
        return -1;
    }
    if (fputs(lt_report_html_head, f) == EOF)
        rc = -1;
    for (const char *p = data; rc == 0 && *p != '\0'; p++) {
        int w;
        if (*p == '<')
            w = fputs("\\u003c", f);
        else if (*p == '>')
            w = fputs("\\u003e", f);
        else if (*p == '&')
            w = fputs("\\u0026", f);
        else
            w = fputc(*p, f);
        if (w == EOF)
            rc = -1;
    }
    if (rc == 0 && (fputc('\n', f) == EOF || fputs(lt_report_html_tail, f) == EOF))
        rc = -1;
    free(data);
    return rc;
}

int lt_report_write_html(const json_t *results, const char *path, char err[DM_ERRLEN])
{
    DM_AN(results);
    DM_AN(path);
    return write_file(path, put_html, results, err);
}

/* ---- reading the results -------------------------------------------------- */

static bool get_num(const json_t *obj, const char *key, double *out)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;

    if (!json_is_number(v))
        return false;
    *out = json_number_value(v);
    return true;
}

static const char *get_str(const json_t *obj, const char *key)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ---- number formats ------------------------------------------------------- */

/* 1234567 -> "1,234,567"; negative values keep their sign. */
static const char *fmt_count(char *buf, size_t len, double v)
{
    char digits[32];
    size_t n, o = 0;
    int i;

    if (!isfinite(v)) {
        snprintf(buf, len, NONE);
        return buf;
    }
    n = (size_t)snprintf(digits, sizeof(digits), "%.0f", fabs(v));
    if (n >= sizeof(digits) || len < n + n / 3 + 2) {
        snprintf(buf, len, "%.0f", v);
        return buf;
    }
    if (v <= -0.5)
        buf[o++] = '-';
    for (i = 0; i < (int)n; i++) {
        if (i > 0 && (n - (size_t)i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

static const char *fmt_key_count(char *buf, size_t len, const json_t *obj, const char *key)
{
    double v;

    if (!get_num(obj, key, &v)) {
        snprintf(buf, len, NONE);
        return buf;
    }
    return fmt_count(buf, len, v);
}

/* A rate: counts with commas, one decimal below 100. */
static const char *fmt_rate(char *buf, size_t len, const json_t *obj, const char *key)
{
    double v;

    if (!get_num(obj, key, &v) || !isfinite(v))
        snprintf(buf, len, NONE);
    else if (fabs(v) < 100)
        snprintf(buf, len, "%.1f", v);
    else
        fmt_count(buf, len, v);
    return buf;
}

/* Three significant digits with an SI suffix: 950, 1.23k, 45.6M. */
static const char *fmt_si(char *buf, size_t len, double v)
{
    static const char suffix[] = {'\0', 'k', 'M', 'G', 'T'};
    size_t i = 0;

    if (!isfinite(v) || fabs(v) >= 999.5e12) {
        snprintf(buf, len, "%.2g", v);
        return buf;
    }
    while (fabs(v) >= 999.5 && i + 1 < sizeof(suffix)) {
        v /= 1000;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.*f%c", fabs(v) >= 99.95 ? 0 : fabs(v) >= 9.995 ? 1 : 2, v, suffix[i]);
    return buf;
}

/* Microseconds in the unit that keeps three significant digits: 850us,
 * 1.21ms, 12.3ms, 1.50s, 2.00min. */
static const char *fmt_us(char *buf, size_t len, double us)
{
    static const struct {
        double scale;
        const char *unit;
    } units[] = {{1e3, "ms"}, {1e6, "s"}, {60e6, "min"}};
    size_t i;

    if (!isfinite(us)) {
        snprintf(buf, len, NONE);
        return buf;
    }
    if (us < 999.5) {
        snprintf(buf, len, "%.0fus", us);
        return buf;
    }
    /* 0.9995 rather than 1: 999.9996 ms is "1.00s", not "1000ms" */
    for (i = 0; i + 1 < DM_ARRAY_LEN(units) && us / units[i + 1].scale >= 0.9995; i++)
        ;
    {
        double v = us / units[i].scale;
        snprintf(buf, len, "%.*f%s", v >= 99.95 ? 0 : v >= 9.995 ? 1 : 2, v, units[i].unit);
    }
    return buf;
}

static const char *fmt_key_us(char *buf, size_t len, const json_t *obj, const char *key)
{
    double v;

    if (!get_num(obj, key, &v)) {
        snprintf(buf, len, NONE);
        return buf;
    }
    return fmt_us(buf, len, v);
}

/* A fraction as a percentage with enough digits to show small losses. */
static const char *fmt_frac(char *buf, size_t len, double frac)
{
    double p = frac * 100;

    if (!isfinite(p))
        snprintf(buf, len, NONE);
    else if (p == 0)
        snprintf(buf, len, "0%%");
    else if (fabs(p) >= 1)
        snprintf(buf, len, "%.2f%%", p);
    else
        snprintf(buf, len, "%.2g%%", p);
    return buf;
}

/* ---- the final table ------------------------------------------------------ */

#define CELL 32 /* longest formatted cell, with its NUL */

enum cell_fmt { CELL_COUNT, CELL_RATE, CELL_US, CELL_LOSS };

struct column {
    const char *head, *key;
    enum cell_fmt fmt;
    int width; /* right-aligned */
};

static void format_cell(char *buf, const json_t *obj, const struct column *c)
{
    double lost, expected;

    switch (c->fmt) {
    case CELL_COUNT:
        fmt_key_count(buf, CELL, obj, c->key);
        break;
    case CELL_RATE:
        fmt_rate(buf, CELL, obj, c->key);
        break;
    case CELL_US:
        fmt_key_us(buf, CELL, obj, c->key);
        break;
    case CELL_LOSS:
        if (get_num(obj, "lost", &lost) && get_num(obj, "expected", &expected) && expected > 0)
            fmt_frac(buf, CELL, lost / expected);
        else
            snprintf(buf, CELL, NONE);
        break;
    }
}

/* A header row and a value row of obj's keys; the label stands on the
 * header row. 80 columns wide at most for the values we expect. */
static void print_grid(FILE *out, const char *label, const struct column *cols, size_t n,
                       const json_t *obj)
{
    char cell[CELL];

    fprintf(out, "%-*s", LABELW, label);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%*s", cols[i].width, cols[i].head);
    fprintf(out, "\n%-*s", LABELW, "");
    for (size_t i = 0; i < n; i++) {
        format_cell(cell, obj, &cols[i]);
        fprintf(out, "%*s", cols[i].width, cell);
    }
    fputc('\n', out);
}

static const char *close_name(const char *code)
{
    static const struct {
        const char *code, *name;
    } names[] = {
        {"1000", "normal"},      {"1001", "going away"}, {"1002", "protocol"},
        {"1003", "unsupported"}, {"1005", "no status"},  {"1006", "abnormal"},
        {"1007", "bad data"},    {"1008", "policy"},     {"1009", "too big"},
        {"1011", "internal"},    {"1012", "restart"},    {"4008", "slow consumer"},
    };

    for (size_t i = 0; i < DM_ARRAY_LEN(names); i++)
        if (strcmp(code, names[i].code) == 0)
            return names[i].name;
    return NULL;
}

/* "name n" pairs of an object of counts, wrapped at 80 columns. */
static void print_counts(FILE *out, const char *label, const json_t *obj, bool close_codes)
{
    const char *key;
    const json_t *v;
    int col = 0, items = 0;

    fprintf(out, "%-*s", LABELW, label);
    if (json_is_object(obj)) {
        json_object_foreach((json_t *)obj, key, v)
        {
            char num[CELL], item[128];
            const char *name = close_codes ? close_name(key) : NULL;
            int w;
            if (json_is_number(v))
                fmt_count(num, sizeof(num), json_number_value(v));
            else
                snprintf(num, sizeof(num), NONE);
            w = snprintf(item, sizeof(item), "%s%s%s %s", key, name ? " " : "", name ? name : "",
                         num);
            if (w < 0)
                continue;
            if (items > 0 && col + 3 + w > 80 - LABELW) {
                fprintf(out, "\n%-*s", LABELW, "");
                col = 0;
            } else if (items > 0) {
                fputs("   ", out);
                col += 3;
            }
            fputs(item, out);
            col += w;
            items++;
        }
    }
    fputs(items ? "\n" : "none\n", out);
}

static void print_slo(FILE *out, const json_t *results, const json_t *sum)
{
    static const struct column loss = {"", NULL, CELL_LOSS, 0};
    const json_t *slo = json_object_get(results, "slo");
    const json_t *passed = json_object_get(slo, "passed");
    const json_t *failures = json_object_get(slo, "failures");
    bool color = isatty(fileno(out)) && getenv("NO_COLOR") == NULL;
    char a[CELL], b[CELL];
    double x;
    size_t i;
    json_t *f;

    fprintf(out, "%-*s", LABELW, "SLO");
    if (!json_is_object(slo) || !json_is_boolean(passed)) {
        fputs("none given\n", out);
        return;
    }
    if (json_is_true(passed))
        fputs(color ? "\033[1;32mPASS\033[0m" : "PASS", out);
    else
        fputs(color ? "\033[1;31mFAIL\033[0m" : "FAIL", out);
    format_cell(a, sum, &loss);
    fprintf(out, "   loss %s (max %s)", a,
            get_num(slo, "max_loss", &x) ? fmt_frac(b, sizeof(b), x) : NONE);
    if (get_num(slo, "p99_us", &x))
        fprintf(out, "   p99 %s (max %s)",
                fmt_key_us(a, sizeof(a), json_object_get(sum, "latency_us"), "p99"),
                fmt_us(b, sizeof(b), x));
    fputc('\n', out);
    json_array_foreach(failures, i, f)
    {
        if (json_is_string(f))
            fprintf(out, "%-*s- %s\n", LABELW, "", json_string_value(f));
    }
}

static void print_run(const json_t *results, FILE *out)
{
    static const struct column thr[] = {
        {"sent/s", "sent_per_s", CELL_RATE, 13},
        {"delivered/s", "deliveries_per_s", CELL_RATE, 13},
        {"sent", "sent", CELL_COUNT, 13},
        {"acked", "acked", CELL_COUNT, 13},
        {"send errors", "send_errors", CELL_COUNT, 13},
    };
    static const struct column lat[] = {
        {"min", "min", CELL_US, 8}, {"mean", "mean", CELL_US, 8},
        {"p50", "p50", CELL_US, 8}, {"p90", "p90", CELL_US, 8},
        {"p99", "p99", CELL_US, 8}, {"p99.9", "p999", CELL_US, 8},
        {"max", "max", CELL_US, 8}, {"count", "count", CELL_COUNT, 10},
    };
    static const struct column acc1[] = {
        {"expected", "expected", CELL_COUNT, 14},
        {"delivered", "delivered", CELL_COUNT, 14},
        {"lost", "lost", CELL_COUNT, 14},
        {"loss", NULL, CELL_LOSS, 14},
    };
    static const struct column acc2[] = {
        {"duplicated", "duplicated", CELL_COUNT, 14},
        {"out-of-order", "out_of_order", CELL_COUNT, 14},
        {"skipped", "skipped", CELL_COUNT, 14},
        {"recovered", "recovered", CELL_COUNT, 14},
    };
    static const struct column con[] = {
        {"viewers", "viewers", CELL_COUNT, 14},
        {"rooms", "rooms", CELL_COUNT, 14},
        {"connected", "connections_ok", CELL_COUNT, 14},
        {"connect errors", "connect_errors", CELL_COUNT, 16},
    };
    const json_t *sum, *lat_obj, *env;
    char a[CELL];
    const char *s;
    double x;

    sum = json_object_get(results, "summary");
    lat_obj = json_object_get(sum, "latency_us");
    env = json_object_get(results, "environment");

    s = get_str(results, "tool");
    fprintf(out, "%s  ", s ? s : "danmaku-loadtest");
    s = get_str(results, "scenario");
    fputs(s ? s : NONE, out);
    if ((s = get_str(results, "started_at")) != NULL)
        fprintf(out, "  started %s", s);
    if (get_num(sum, "duration_s", &x))
        fprintf(out, "  duration %.1fs", x);
    fputc('\n', out);
    fprintf(out, "%-*s", LABELW, "");
    if ((s = get_str(env, "kafka")) != NULL)
        fprintf(out, "kafka %s  ", s);
    if ((s = get_str(env, "commit")) != NULL)
        fprintf(out, "commit %s  ", s);
    if ((s = get_str(env, "hostname")) != NULL)
        fprintf(out, "host %s", s);
    fputs("\n\n", out);

    print_grid(out, "Throughput", thr, DM_ARRAY_LEN(thr), sum);
    print_grid(out, "Latency", lat, DM_ARRAY_LEN(lat), lat_obj);
    if (get_num(lat_obj, "clamped", &x) && x > 0)
        fprintf(out, "%-*s%s values clamped to the histogram's range\n", LABELW, "",
                fmt_count(a, sizeof(a), x));
    print_grid(out, "Accounting", acc1, DM_ARRAY_LEN(acc1), sum);
    print_grid(out, "", acc2, DM_ARRAY_LEN(acc2), sum);
    print_grid(out, "Connections", con, DM_ARRAY_LEN(con), sum);
    print_counts(out, "Closes", json_object_get(sum, "closes_by_code"), true);
    print_counts(out, "Errors", json_object_get(sum, "errors"), false);

    fprintf(out, "%-*s", LABELW, "Generator CPU");
    if (get_num(sum, "generator_cpu_pct", &x))
        fprintf(out, "%.1f%% (100%% = one core busy)", x);
    else
        fputs(NONE, out);
    if (get_num(env, "generator_cpus", &x))
        fprintf(out, ", %.0f CPU%s for the generator", x, x == 1 ? "" : "s");
    fputc('\n', out);
    print_slo(out, results, sum);
}

/* ---- the bench table ------------------------------------------------------ */

/* A bench-wide string: the bench object's own key, else the first run's
 * environment that has it. */
static const char *bench_str(const json_t *bench, const char *key)
{
    const char *s = get_str(bench, key);
    size_t i;
    json_t *run;

    json_array_foreach(json_object_get(bench, "runs"), i, run)
    {
        if (s != NULL)
            break;
        s = get_str(json_object_get(run, "environment"), key);
    }
    return s;
}

/* The growth of the server's memory during the run per viewer connected,
 * in KB; false when nothing connected or the memory did not grow (a heap
 * that an earlier run grew is reused: no growth does not mean no cost). */
static bool kb_per_conn(const json_t *run, double *out)
{
    const json_t *rss = json_object_get(run, "server_rss_kb");
    double before, peak, conns;

    /* steady (the median while connected) when the bench recorded it */
    if (!get_num(rss, "steady", &peak) && !get_num(rss, "peak", &peak))
        return false;
    if (!get_num(rss, "before", &before) ||
        !get_num(json_object_get(run, "summary"), "connections_ok", &conns) || !(conns > 0) ||
        !(peak > before))
        return false;
    *out = (peak - before) / conns;
    return true;
}

/* The run's verdict as the HTML summary gives it, then why it failed: no
 * results, the objectives missed, and an exit status that they do not
 * explain (2 is the load tester's "objectives missed"). */
static void print_run_verdict(FILE *out, const json_t *run, bool color)
{
    const json_t *slo = json_object_get(run, "slo");
    const json_t *passed = json_is_object(slo) ? json_object_get(slo, "passed") : NULL;
    const json_t *failures = json_is_object(slo) ? json_object_get(slo, "failures") : NULL;
    bool results = json_is_object(json_object_get(run, "summary"));
    const char *sep = "  ", *e;
    double status = 0;
    bool odd_exit;
    size_t i;
    json_t *f;

    odd_exit =
        get_num(run, "exit", &status) && status != 0 && !(status == 2 && json_is_false(passed));
    if (!results || json_array_size(failures) > 0 || odd_exit || json_is_false(passed))
        fputs(color ? "\033[1;31mFAIL\033[0m" : "FAIL", out);
    else if (json_is_true(passed))
        fputs(color ? "\033[1;32mPASS\033[0m" : "PASS", out);
    else
        fputs("NO SLO", out);
    if (!results) {
        e = get_str(run, "error");
        fprintf(out, "%s%s", sep, e ? e : "no results");
        sep = "; ";
    }
    json_array_foreach(failures, i, f)
    {
        if (json_is_string(f)) {
            fprintf(out, "%s%s", sep, json_string_value(f));
            sep = "; ";
        }
    }
    if (odd_exit)
        fprintf(out, "%sexit status %.0f", sep, status);
    fputc('\n', out);
}

/* One line per run of a bench object, as the HTML summary has them. */
static void print_bench(const json_t *bench, FILE *out)
{
    const json_t *runs = json_object_get(bench, "runs");
    bool color = isatty(fileno(out)) && getenv("NO_COLOR") == NULL;
    const char *s, *sc, *gc;
    size_t i;
    json_t *run;

    s = get_str(bench, "tool");
    fprintf(out, "%s  %zu run%s", s ? s : "danmaku-bench", json_array_size(runs),
            json_array_size(runs) == 1 ? "" : "s");
    json_array_foreach(runs, i, run)
    {
        if ((s = get_str(run, "started_at")) != NULL) {
            fprintf(out, "  started %s", s);
            break;
        }
    }
    fprintf(out, "\n%-*s", LABELW, "");
    if ((s = bench_str(bench, "kafka")) != NULL)
        fprintf(out, "kafka %s  ", s);
    if ((s = bench_str(bench, "commit")) != NULL)
        fprintf(out, "commit %s  ", s);
    if ((s = bench_str(bench, "hostname")) != NULL)
        fprintf(out, "host %s  ", s);
    sc = bench_str(bench, "server_cpus");
    gc = bench_str(bench, "generator_cpus");
    if (sc != NULL || gc != NULL)
        fprintf(out, "CPUs: servers %s, generator %s", sc ? sc : NONE, gc ? gc : NONE);
    fputs("\n\n", out);

    fprintf(out, "%-*s%7s%12s%8s%8s%8s%7s%5s%5s%5s%8s  %s\n", LABELW, "scenario", "viewers",
            "delivered/s", "p50", "p99", "max", "lost", "dup", "ooo", "CPU", "KB/conn", "verdict");
    json_array_foreach(runs, i, run)
    {
        const json_t *sum = json_object_get(run, "summary");
        const json_t *lat = json_object_get(sum, "latency_us");
        const char *name = get_str(run, "name");
        char c[10][CELL];
        double x;

        if (name == NULL)
            name = get_str(run, "scenario");
        if (get_num(sum, "generator_cpu_pct", &x))
            snprintf(c[8], CELL, "%.0f%%", x);
        else
            snprintf(c[8], CELL, NONE);
        if (kb_per_conn(run, &x))
            snprintf(c[9], CELL, "%.*f", x >= 99.95 ? 0 : x >= 9.995 ? 1 : 2, x);
        else
            snprintf(c[9], CELL, NONE);
        /* a long name pushes its line's columns right rather than being cut */
        fprintf(out, "%-*s %7s%12s%8s%8s%8s%7s%5s%5s%5s%8s  ", LABELW - 1, name ? name : NONE,
                fmt_key_count(c[0], CELL, sum, "viewers"),
                fmt_rate(c[1], CELL, sum, "deliveries_per_s"), fmt_key_us(c[2], CELL, lat, "p50"),
                fmt_key_us(c[3], CELL, lat, "p99"), fmt_key_us(c[4], CELL, lat, "max"),
                fmt_key_count(c[5], CELL, sum, "lost"),
                fmt_key_count(c[6], CELL, sum, "duplicated"),
                fmt_key_count(c[7], CELL, sum, "out_of_order"), c[8], c[9]);
        print_run_verdict(out, run, color);
    }
    fprintf(out, "\n%-*sKB/conn: server memory growth per viewer connected, %s if none\n", LABELW,
            "", NONE);
}

void lt_report_print_table(const json_t *results, FILE *out)
{
    DM_AN(results);
    DM_AN(out);
    if (json_object_get(results, "runs") != NULL)
        print_bench(results, out);
    else
        print_run(results, out);
}

/* ---- progress ------------------------------------------------------------- */

void lt_report_progress_line(char *out, size_t outlen, const struct lt_progress *p)
{
    char conn[CELL], sent[CELL], dlvr[CELL], p50[CELL], p99[CELL], rp99[CELL], err[CELL];

    DM_AN(out);
    DM_AN(p);
    if (outlen == 0)
        return;
    snprintf(out, outlen,
             "%5.0fs  conn %s  sent %s/s  dlvr %s/s  p50 %s  p99 %s (run %s)  err %s (+%" PRIu64
             ")  cpu %.0f%%",
             p->t, fmt_count(conn, CELL, (double)p->connections), fmt_si(sent, CELL, p->sent_per_s),
             fmt_si(dlvr, CELL, p->delivered_per_s), fmt_us(p50, CELL, (double)p->p50_us),
             fmt_us(p99, CELL, (double)p->p99_us), fmt_us(rp99, CELL, (double)p->run_p99_us),
             fmt_count(err, CELL, (double)p->run_errors), p->errors,
             p->cpu_pct < 1e6 ? p->cpu_pct : 1e6);
}

/* ---- builders ------------------------------------------------------------- */

/* Rounds for a readable file: rates to 0.01, times to 1 ms, CPU to 0.1%. */
static double round_to(double v, double unit)
{
    return isfinite(v) ? round(v / unit) * unit : 0.0;
}

json_t *lt_report_timeline_entry(const struct lt_progress *p)
{
    json_t *e;

    DM_AN(p);
    e = json_pack("{s:f, s:s*, s:I, s:f, s:f, s:I, s:I, s:I, s:I, s:f}", "t", round_to(p->t, 0.001),
                  "phase", p->phase, "connections", (json_int_t)p->connections, "sent_per_s",
                  round_to(p->sent_per_s, 0.01), "delivered_per_s",
                  round_to(p->delivered_per_s, 0.01), "p50_us", (json_int_t)p->p50_us, "p99_us",
                  (json_int_t)p->p99_us, "max_us", (json_int_t)p->max_us, "errors",
                  (json_int_t)p->errors, "cpu_pct", round_to(p->cpu_pct, 0.1));
    DM_AN(e);
    return e;
}

json_t *lt_report_latency(const struct lt_hist *h)
{
    json_t *o;

    DM_AN(h);
    o = json_pack(
        "{s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:I, s:I}", "count", (json_int_t)lt_hist_count(h),
        "min", (json_int_t)lt_hist_min(h), "mean", round_to(lt_hist_mean(h), 0.1), "p50",
        (json_int_t)lt_hist_percentile(h, 50), "p90", (json_int_t)lt_hist_percentile(h, 90), "p99",
        (json_int_t)lt_hist_percentile(h, 99), "p999", (json_int_t)lt_hist_percentile(h, 99.9),
        "max", (json_int_t)lt_hist_max(h), "clamped", (json_int_t)lt_hist_clamped(h));
    DM_AN(o);
    return o;
}

json_t *lt_report_distribution(const struct lt_hist *h)
{
    json_t *a = json_array();
    struct lt_hist_iter it;
    uint64_t max;

    DM_AN(h);
    DM_AN(a);
    max = lt_hist_max(h);
    lt_hist_iter_init(&it, h);
    while (lt_hist_iter_next(&it)) {
        uint64_t le = it.hi < max ? it.hi : max;
        json_t *b = json_pack("{s:I, s:I}", "le_us", (json_int_t)le, "count", (json_int_t)it.count);
        DM_AN(b);
        DM_AZ(json_array_append_new(a, b));
    }
    return a;
}
