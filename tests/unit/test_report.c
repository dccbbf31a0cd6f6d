/* The results writers: the JSON file reads back equal, the HTML embeds the
 * same results and nothing can break out of its data block, the page
 * references nothing outside itself, the builders match the histogram, and
 * the table and progress line format a full and an empty results object.
 * The same for a bench object of three runs, one without results. When
 * chromium is installed, the pages are also run headless and the DOM their
 * script built is checked (skipped otherwise). TEST_REPORT_KEEP=1 keeps
 * the reports to look at. */
#include "loadtest/report.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/check.h"
#include "common/util.h"
#include "loadtest/hist.h"
#include "tests/unit/tap.h"

#define DATA_OPEN "<script type=\"application/json\" id=\"results\">"

/* The hostile string: tries to close the data block, open a comment-escaped
 * script, and carries quotes, an ampersand and non-ASCII text. */
#define HOSTILE                                                                                    \
    "</script><script>alert(1)</script> <!-- <script> </SCRIPT > & \"q\" "                         \
    "\xe6\x97\xa5\xe6\x9c\xac"

static char dir[256];

static const char *in_dir(const char *name)
{
    static char path[4][512];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof(path[0]), "%s/%s", dir, name);
    return p;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    DM_AZ(fseek(f, 0, SEEK_END));
    n = ftell(f);
    DM_ASSERT(n >= 0);
    rewind(f);
    buf = dm_malloc((size_t)n + 1);
    DM_ASSERT(fread(buf, 1, (size_t)n, f) == (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static bool contains(const char *hay, const char *needle)
{
    return hay != NULL && strstr(hay, needle) != NULL;
}

/* An occurrence of needle that does not continue a name (so "url(" is
 * found in CSS but not in createObjectURL(). */
static bool contains_word(const char *hay, const char *needle)
{
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++) {
        char c = p == hay ? ' ' : p[-1];
        if (!(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '_')
            return true;
    }
    return false;
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* Files in dir whose name holds ".tmp": none may be left behind. */
static int temp_files(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    DM_AN(d);
    while ((e = readdir(d)) != NULL)
        n += strstr(e->d_name, ".tmp") != NULL;
    closedir(d);
    return n;
}

/* ---- a synthetic run ------------------------------------------------------ */

static uint64_t next_rand(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static struct lt_hist total; /* the run's latencies, for the builder checks */

/* A 60 s hot-room run: 1,000 msgs/s to 5,000 viewers, a stall at 30..33 s,
 * built the way the main program builds it (timeline from lt_progress,
 * latency and distribution from the histogram). */
static json_t *make_results(void)
{
    struct lt_hist *prev = dm_malloc(sizeof(*prev)), *sec = dm_malloc(sizeof(*sec));
    json_t *timeline = json_array(), *r;
    uint64_t state = 3, errors_total = 0;

    lt_hist_init(&total);
    lt_hist_init(prev);
    for (int t = 1; t <= 60; t++) {
        struct lt_progress p = {0};
        bool stall = t >= 30 && t <= 33;
        for (int i = 0; i < 2000; i++) {
            double u = (double)((next_rand(&state) >> 11) + 1) * 0x1p-53;
            double v = -1500.0 * log(u) + 300;
            if (stall)
                v += 150000 * u;
            lt_hist_record(&total, (int64_t)v);
        }
        lt_hist_sub(sec, &total, prev);
        p.t = t;
        p.phase = t <= 5 ? "connect" : t <= 8 ? "warmup" : t <= 57 ? "measure" : "drain";
        p.connections = t < 5 ? (uint64_t)t * 1250 : 5000;
        p.sent_per_s = 1000 + (double)(next_rand(&state) % 100) / 10;
        p.delivered_per_s = stall ? 3.1e6 : 5e6 - (double)(next_rand(&state) % 1000);
        p.p50_us = lt_hist_percentile(sec, 50);
        p.p99_us = lt_hist_percentile(sec, 99);
        p.max_us = lt_hist_max(sec);
        p.errors = stall ? 3 : 0;
        errors_total += p.errors;
        p.cpu_pct = stall ? 99.5 : 71.25;
        p.run_p99_us = lt_hist_percentile(&total, 99);
        p.run_errors = errors_total;
        DM_AZ(json_array_append_new(timeline, lt_report_timeline_entry(&p)));
        lt_hist_reset(prev);
        lt_hist_merge(prev, &total);
    }
    r = json_pack("{s:s, s:s, s:s, s:s,"
                  " s:{s:s, s:i, s:i, s:i, s:s, s:s, s:b, s:n, s:s},"
                  " s:{s:s, s:i, s:s, s:s, s:s, s:i, s:i, s:s},"
                  " s:{s:f, s:i, s:i, s:i, s:i, s:I, s:I, s:i, s:I, s:I, s:I, s:i, s:i, s:i, s:i,"
                  "    s:f, s:f, s:f, s:o, s:i, s:{s:i, s:i, s:i, s:i},"
                  "    s:{s:i, s:i, s:i}, s:{s:i, s:i}},"
                  " s:o, s:o,"
                  " s:{s:f, s:i, s:b, s:[s]}}",
                  "tool", "danmaku-loadtest", "version", "1", "scenario", "hot-room", "started_at",
                  "2024-05-01T12:00:00Z",
                  /* config */
                  "config", "scenario", "hot-room", "viewers", 5000, "rooms", 1, "rate", 1000,
                  "duration", "60s", "publish", "kafka", "tokens", 1, "slo_p99", "note", HOSTILE,
                  /* environment */
                  "environment", "cpu_model", "Example CPU @ 2.40GHz", "cores", 2, "kernel",
                  "6.1.0-18-amd64", "commit", "4559cbb", "hostname", "dev-1", "generator_cpus", 1,
                  "server_cpus", 1, "kafka", "real",
                  /* summary */
                  "summary", "duration_s", 60.0, "viewers", 5000, "rooms", 1, "connections_ok",
                  4998, "connect_errors", 2, "sent", (json_int_t)60000, "acked", (json_int_t)59990,
                  "send_errors", 10, "expected", (json_int_t)299950000, "delivered",
                  (json_int_t)299914000, "lost", (json_int_t)36000, "duplicated", 0, "out_of_order",
                  0, "skipped", 0, "recovered", 12, "deliveries_per_s", 4998566.25, "sent_per_s",
                  999.83, "generator_cpu_pct", 74.5, "latency_us", lt_report_latency(&total),
                  "reconnects", 3, "ack_latency_us", "count", 60000, "p50", 900, "p99", 4100, "max",
                  9000, "closes_by_code", "1000", 4980, "4008", 18, "1006", 2, "errors",
                  "connect_timeout", 2, "send_http_503", 10,
                  /* series */
                  "timeline", timeline, "distribution", lt_report_distribution(&total),
                  /* slo */
                  "slo", "max_loss", 0.0001, "p99_us", 250000, "passed", 0, "failures",
                  "loss 0.012% > 0.01% (36,000 of 299,950,000 lost)");
    DM_AN(r);
    free(prev);
    free(sec);
    return r;
}

/* A bench object as bench.sh writes it: hot-room (misses its loss
 * objective, exit 2), many-rooms (passes; the server's memory did not grow)
 * and a run that wrote no results, whose name tries to be markup. */
#define BROKEN "broken <b>x</b>"

static json_t *make_bench(void)
{
    json_t *hot = make_results(), *many = make_results(), *bench;
    json_t *slo = json_object_get(many, "slo");

    DM_AZ(json_object_set_new(hot, "name", json_string("hot-room")));
    DM_AZ(json_object_set_new(hot, "exit", json_integer(2)));
    DM_AZ(json_object_set_new(hot, "server_rss_kb",
                              json_pack("{s:i, s:i}", "before", 40000, "peak", 125000)));
    DM_AZ(json_object_set_new(many, "scenario", json_string("many-rooms")));
    DM_AZ(json_object_set_new(many, "name", json_string("many-rooms")));
    DM_AZ(json_object_set_new(many, "exit", json_integer(0)));
    DM_AZ(json_object_set_new(many, "server_rss_kb",
                              json_pack("{s:i, s:i}", "before", 125000, "peak", 125000)));
    DM_AZ(json_object_set_new(slo, "passed", json_true()));
    DM_AZ(json_array_clear(json_object_get(slo, "failures")));
    bench = json_pack("{s:s, s:s, s:s, s:s, s:[o, o, {s:s, s:i, s:s}]}", "tool", "danmaku-bench",
                      "server_cpus", "0-0", "generator_cpus", "1-1", "kafka", "real", "runs", hot,
                      many, "name", BROKEN, "exit", 1, "error", "no results");
    DM_AN(bench);
    return bench;
}

/* ---- builders ------------------------------------------------------------- */

static void test_builders(void)
{
    struct lt_progress p = {.t = 12.3456,
                            .connections = 5000,
                            .sent_per_s = 1000.126,
                            .delivered_per_s = 4999999.994,
                            .p50_us = 1210,
                            .p99_us = 8400,
                            .max_us = 12000,
                            .errors = 2,
                            .cpu_pct = 87.26};
    json_t *e, *lat, *dist, *b;
    uint64_t sum = 0, prev = 0;
    bool increasing = true;
    size_t i;

    json_decref(make_results()); /* fills total */
    e = lt_report_timeline_entry(&p);
    lat = lt_report_latency(&total);
    dist = lt_report_distribution(&total);

    ok(json_object_size(e) == 9 && json_object_get(e, "phase") == NULL &&
           json_real_value(json_object_get(e, "t")) == round(12.3456 * 1000) * 0.001 &&
           json_integer_value(json_object_get(e, "connections")) == 5000 &&
           fabs(json_real_value(json_object_get(e, "sent_per_s")) - 1000.13) < 1e-9 &&
           fabs(json_real_value(json_object_get(e, "delivered_per_s")) - 4999999.99) < 1e-6 &&
           json_integer_value(json_object_get(e, "p50_us")) == 1210 &&
           json_integer_value(json_object_get(e, "p99_us")) == 8400 &&
           json_integer_value(json_object_get(e, "max_us")) == 12000 &&
           json_integer_value(json_object_get(e, "errors")) == 2 &&
           fabs(json_real_value(json_object_get(e, "cpu_pct")) - 87.3) < 1e-9,
       "timeline entry: the nine schema keys, rounded for reading");
    json_decref(e);
    p.phase = "warmup";
    e = lt_report_timeline_entry(&p);
    ok(json_object_size(e) == 10 &&
           strcmp(json_string_value(json_object_get(e, "phase")), "warmup") == 0,
       "and the phase when there is one");
    ok(json_integer_value(json_object_get(lat, "count")) == (json_int_t)lt_hist_count(&total) &&
           json_integer_value(json_object_get(lat, "min")) == (json_int_t)lt_hist_min(&total) &&
           json_integer_value(json_object_get(lat, "max")) == (json_int_t)lt_hist_max(&total) &&
           json_integer_value(json_object_get(lat, "p50")) ==
               (json_int_t)lt_hist_percentile(&total, 50) &&
           json_integer_value(json_object_get(lat, "p90")) ==
               (json_int_t)lt_hist_percentile(&total, 90) &&
           json_integer_value(json_object_get(lat, "p99")) ==
               (json_int_t)lt_hist_percentile(&total, 99) &&
           json_integer_value(json_object_get(lat, "p999")) ==
               (json_int_t)lt_hist_percentile(&total, 99.9) &&
           fabs(json_real_value(json_object_get(lat, "mean")) - lt_hist_mean(&total)) <= 0.05 &&
           json_integer_value(json_object_get(lat, "clamped")) == 0,
       "latency: count, min, mean, p50, p90, p99, p999, max, clamped of the histogram");
    json_array_foreach(dist, i, b)
    {
        uint64_t le = (uint64_t)json_integer_value(json_object_get(b, "le_us"));
        increasing &= (i == 0 || le > prev) && json_integer_value(json_object_get(b, "count")) > 0;
        sum += (uint64_t)json_integer_value(json_object_get(b, "count"));
        prev = le;
    }
    ok(increasing && sum == lt_hist_count(&total) && prev == lt_hist_max(&total),
       "distribution: %zu non-empty buckets, increasing, counts add up, last is the max",
       json_array_size(dist));
    json_decref(e);
    json_decref(lat);
    json_decref(dist);
}

/* ---- JSON file ------------------------------------------------------------ */

static void test_json_file(void)
{
    json_t *r = make_results(), *back;
    char err[DM_ERRLEN] = "";
    json_error_t jerr;
    char *text;
    int rc;

    rc = lt_report_write_json(r, in_dir("results.json"), err);
    ok(rc == 0, "write_json: %s", rc == 0 ? "ok" : err);
    back = json_load_file(in_dir("results.json"), 0, &jerr);
    ok(back != NULL && json_equal(r, back), "the JSON file parses back equal");
    text = slurp(in_dir("results.json"));
    ok(contains(text, "{\n  \"tool\": \"danmaku-loadtest\",\n  \"version\": \"1\",") &&
           text[strlen(text) - 1] == '\n',
       "pretty-printed, keys in the order built, newline at the end");
    free(text);
    json_decref(back);

    /* A second write replaces the file atomically and leaves no temp file. */
    json_object_set_new(r, "scenario", json_string("many-rooms"));
    ok(lt_report_write_json(r, in_dir("results.json"), err) == 0, "rewrite succeeds");
    back = json_load_file(in_dir("results.json"), 0, &jerr);
    ok(back != NULL && json_equal(r, back), "the rewrite replaced the file");
    ok(temp_files() == 0, "no temporary file left behind");
    json_decref(back);

    rc = lt_report_write_json(r, in_dir("no/such/dir/results.json"), err);
    ok(rc == -1 && contains(err, "no/such/dir") && contains(err, strerror(ENOENT)),
       "a missing directory fails with the path and the reason: %s", err);
    rc = lt_report_write_html(r, in_dir("no/such/dir/report.html"), err);
    ok(rc == -1 && contains(err, "report.html"), "so does the HTML writer: %s", err);
    ok(temp_files() == 0, "still no temporary file");
    json_decref(r);
}

/* ---- HTML file ------------------------------------------------------------ */

/* The data block of an HTML report, as a new string, or NULL. */
static char *data_block(const char *html)
{
    const char *start = strstr(html, DATA_OPEN), *end;

    if (start == NULL)
        return NULL;
    start += strlen(DATA_OPEN);
    end = strstr(start, "</script>");
    return end ? dm_strndup(start, (size_t)(end - start)) : NULL;
}

/* The checks every page passes, for the results or bench object r written
 * to file (in dir): what; it must stay under max_kb. */
static void check_page(const json_t *r, const char *file, const char *what, size_t max_kb)
{
    static const char *const external[] = {
        "http:",       "https:",         "ftp:",       "src=",         "url(",    "@import",
        "<link",       "<img",           "<iframe",    "<object",      "<embed",  "fetch(",
        "sendbeacon(", "xmlhttprequest", "websocket(", "eventsource(", "import(", "//cdn",
    };
    char err[DM_ERRLEN] = "";
    char *html, *data, *lower;
    json_error_t jerr;
    json_t *back;
    size_t bad = 0;
    int rc;

    rc = lt_report_write_html(r, in_dir(file), err);
    ok(rc == 0, "%s: write_html: %s", what, rc == 0 ? "ok" : err);
    html = slurp(in_dir(file));
    DM_AN(html);
    ok(strncmp(html, "<!DOCTYPE html>", 15) == 0 && contains(html, "<meta charset=\"utf-8\">") &&
           contains(html, "</html>\n"),
       "%s: an HTML5 document in UTF-8", what);

    data = data_block(html);
    back = data ? json_loads(data, 0, &jerr) : NULL;
    ok(back != NULL && json_equal(r, back), "%s: the embedded data block parses back equal", what);
    ok(data != NULL && strchr(data, '<') == NULL && strchr(data, '>') == NULL &&
           strchr(data, '&') == NULL,
       "%s: the data block holds no '<', '>' or '&' at all", what);
    ok(contains(data, "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)"),
       "%s: the hostile string is there, escaped", what);
    /* The block must end where the template's tail begins: the hostile
     * string did not end it early, and the parser reaches our own script. */
    /* data starts with the head's last newline: count it once */
    ok(data != NULL &&
           strlen(html) ==
               strlen(lt_report_html_head) + strlen(data) - 1 + strlen(lt_report_html_tail) &&
           strncmp(html + strlen(html) - strlen(lt_report_html_tail), lt_report_html_tail,
                   strlen(lt_report_html_tail)) == 0,
       "%s: head + data + tail, nothing else", what);
    ok(count_of(html, "</script>") == 2 && count_of(html, "<script") == 2,
       "%s: exactly two script elements: the data and the code", what);

    lower = dm_strdup(html);
    for (char *p = lower; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    for (size_t i = 0; i < DM_ARRAY_LEN(external); i++)
        if (contains_word(lower, external[i])) {
            bad++;
            printf("# found %s\n", external[i]);
        }
    ok(bad == 0, "%s: no external resource or network use (%zu patterns)", what,
       DM_ARRAY_LEN(external));
    ok(strlen(html) < max_kb * 1024, "%s: size %zu bytes", what, strlen(html));
    ok(temp_files() == 0, "%s: no temporary file left behind", what);

    free(lower);
    free(data);
    free(html);
    json_decref(back);
}

static void test_html_file(void)
{
    json_t *r = make_results();

    check_page(r, "report.html", "run", 200);
    json_decref(r);
}

/* A bench object: the same page, the same checks; its JSON file too. */
static void test_bench_files(void)
{
    json_t *b = make_bench(), *back;
    char err[DM_ERRLEN] = "";
    json_error_t jerr;
    char *html;
    int rc;

    check_page(b, "bench.html", "bench", 400);
    html = slurp(in_dir("bench.html"));
    ok(contains(html, "\"runs\":[{\"tool\":\"danmaku-loadtest\"") &&
           contains(html, "\"name\":\"broken \\u003cb\\u003ex\\u003c/b\\u003e\""),
       "bench: the runs are embedded, the markup in a run's name escaped");
    rc = lt_report_write_json(b, in_dir("bench.json"), err);
    back = json_load_file(in_dir("bench.json"), 0, &jerr);
    ok(rc == 0 && back != NULL && json_equal(b, back), "bench: the JSON file parses back equal");
    free(html);
    json_decref(back);
    json_decref(b);
}

/* The template alone: the part of the page that does not come from data. */
static void test_template(void)
{
    const char *parts[] = {lt_report_html_head, lt_report_html_tail};
    bool ascii = true;

    for (size_t i = 0; i < 2; i++)
        for (const char *p = parts[i]; *p; p++)
            ascii &= (unsigned char)*p < 0x80;
    ok(ascii, "the template is ASCII (the page declares UTF-8 for the data)");
    ok(contains(lt_report_html_head, DATA_OPEN) &&
           strcmp(lt_report_html_head + strlen(lt_report_html_head) - strlen(DATA_OPEN) - 1,
                  DATA_OPEN "\n") == 0 &&
           strncmp(lt_report_html_tail, "</script>", 9) == 0,
       "head ends by opening the data block, tail starts by closing it");
    ok(count_of(lt_report_html_tail, "innerHTML") == 1,
       "innerHTML is used once, on a constant (the SVG namespace probe)");
    ok(contains(lt_report_html_head, "width: 1000px") && contains(lt_report_html_head, "system-ui"),
       "1000-px layout, system font");
}

/* ---- table and progress line ---------------------------------------------- */

static char *print_to_string(const json_t *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    DM_AN(f);
    lt_report_print_table(r, f);
    fclose(f);
    return buf;
}

static void line_stats(const char *s, int *lines, int *widest)
{
    int w = 0;

    *lines = 0;
    *widest = 0;
    for (; *s; s++) {
        if (*s == '\n') {
            (*lines)++;
            w = 0;
        } else if (++w > *widest) {
            *widest = w;
        }
    }
}

static void test_table(void)
{
    json_t *r = make_results(), *empty = json_object();
    char *t = print_to_string(r), *e;
    int lines, widest;

    printf("# ---- the final table ----\n");
    for (const char *p = t, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        printf("# %.*s\n", (int)(nl - p), p);
    }
    line_stats(t, &lines, &widest);
    ok(lines <= 24 && widest <= 80, "one screen: %d lines, widest %d columns", lines, widest);
    ok(contains(t, "hot-room") && contains(t, "2024-05-01T12:00:00Z") && contains(t, "60.0s"),
       "header: scenario, start, duration");
    ok(contains(t, "1,000") && contains(t, "4,998,566") && contains(t, "59,990"),
       "throughput: rates and counts");
    ok(contains(t, "p99.9") && contains(t, "ms") && contains(t, "120,000"),
       "latency percentiles in units, count with separators");
    ok(contains(t, "299,950,000") && contains(t, "36,000") && contains(t, "loss 0.012%"),
       "accounting with the loss ratio");
    ok(contains(t, "1000 normal 4,980") && contains(t, "4008 slow consumer 18") &&
           contains(t, "1006 abnormal 2") && contains(t, "send_http_503 10"),
       "closes by code with names, errors by name");
    ok(contains(t, "74.5%") && contains(t, "FAIL") && contains(t, "loss 0.012% (max 0.01%)") &&
           contains(t, "p99 129ms (max 250ms)") && contains(t, "- loss 0.012% > 0.01%"),
       "generator CPU, the verdict, the objectives and the failures");
    ok(!contains(t, "\033["), "no colour codes when not a terminal");

    e = print_to_string(empty);
    line_stats(e, &lines, &widest);
    ok(contains(e, "danmaku-loadtest  -") && contains(e, "SLO           none given") &&
           contains(e, "Closes        none") && lines > 10,
       "an empty results object prints placeholders, not a crash");
    free(t);
    free(e);
    json_decref(r);
    json_decref(empty);
}

/* The line of s that starts with prefix, as a new string, or NULL. */
static char *line_of(const char *s, const char *prefix)
{
    for (const char *p = s; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, strlen(prefix)) == 0)
            return dm_strndup(p, strcspn(p, "\n"));
    return NULL;
}

static void test_bench_table(void)
{
    json_t *b = make_bench();
    char *t = print_to_string(b), *hot, *many, *broken;
    int lines, widest;

    printf("# ---- the bench table ----\n");
    for (const char *p = t, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        printf("# %.*s\n", (int)(nl - p), p);
    }
    line_stats(t, &lines, &widest);
    hot = line_of(t, "hot-room ");
    many = line_of(t, "many-rooms ");
    broken = line_of(t, BROKEN " ");
    ok(lines == 9, "bench: header, column heads, one line per run, a note: %d lines", lines);
    ok(contains(t, "danmaku-bench  3 runs  started 2024-05-01T12:00:00Z") &&
           contains(t, "kafka real  commit 4559cbb  host dev-1  CPUs: servers 0-0, generator 1-1"),
       "bench header: runs, first start, Kafka, commit, host, CPU split");
    ok(contains(hot, " 5,000 ") && contains(hot, " 4,998,566 ") && contains(hot, " 129ms ") &&
           contains(hot, " 36,000 ") && contains(hot, " 74% ") && contains(hot, " 17.0  "),
       "a run's line: viewers, deliveries/s, p99, lost, CPU, server KB per connection");
    ok(contains(hot, "  FAIL  loss 0.012% > 0.01% (36,000 of 299,950,000 lost)") &&
           !contains(hot, "exit status"),
       "missed objectives fail with the reasons; exit status 2 is theirs");
    ok(contains(many, "       -  PASS") && many[strlen(many) - 1] == 'S',
       "no memory growth prints '-', a passing run PASS");
    ok(contains(broken, "  -  ") && contains(broken, "  FAIL  no results; exit status 1"),
       "a run without results: dashes, FAIL, the error and the exit status");
    free(hot);
    free(many);
    free(broken);
    free(t);
    json_decref(b);
}

static void test_progress(void)
{
    struct lt_progress p = {.t = 12,
                            .connections = 5000,
                            .sent_per_s = 1000,
                            .delivered_per_s = 4996000,
                            .p50_us = 1210,
                            .p99_us = 8400,
                            .max_us = 12000,
                            .errors = 1,
                            .cpu_pct = 87.4,
                            .run_p99_us = 9100,
                            .run_errors = 3};
    struct lt_progress big = {.t = 1e9,
                              .connections = UINT64_MAX,
                              .sent_per_s = 1e300,
                              .delivered_per_s = 1e300,
                              .p50_us = UINT64_MAX,
                              .p99_us = UINT64_MAX,
                              .max_us = UINT64_MAX,
                              .errors = UINT64_MAX,
                              .cpu_pct = 1e300,
                              .run_p99_us = UINT64_MAX,
                              .run_errors = UINT64_MAX};
    char line[256], small[16];

    lt_report_progress_line(line, sizeof(line), &p);
    printf("# %s\n", line);
    ok(strcmp(line, "   12s  conn 5,000  sent 1.00k/s  dlvr 5.00M/s  p50 1.21ms  p99 8.40ms "
                    "(run 9.10ms)  err 3 (+1)  cpu 87%") == 0,
       "progress line: elapsed, connections, rates, interval and run latency, errors, CPU");
    lt_report_progress_line(line, sizeof(line), &big);
    ok(strlen(line) < sizeof(line) - 1 && !contains(line, "\n"),
       "extreme values still fit in 256 bytes: %zu", strlen(line));
    lt_report_progress_line(small, sizeof(small), &p);
    ok(strlen(small) == sizeof(small) - 1, "a short buffer truncates");
}

/* ---- the pages in a browser ---------------------------------------------- */

/* The DOM that the page in file (in dir) built, run headless by chromium,
 * into *dom (caller frees); false, having reported a TAP skip, when
 * chromium is not there or did not run. */
static bool dump_dom(const char *file, char **dom)
{
    char cmd[2048], profile[300];
    size_t len = 0;
    FILE *p, *m;
    int c, rc;

    *dom = NULL;
    if (system("command -v chromium >/dev/null 2>&1") != 0) {
        ok(1, "# SKIP chromium not installed: the page's script is not run");
        return false;
    }
    snprintf(profile, sizeof(profile), "%s/profile", dir);
    snprintf(cmd, sizeof(cmd),
             "timeout 120 chromium --headless --no-sandbox --disable-gpu "
             "--disable-background-networking --disable-component-update --disable-sync "
             "--no-first-run --user-data-dir='%s' --window-size=1100,2400 "
             "--virtual-time-budget=5000 --dump-dom 'file://%s' 2>/dev/null",
             profile, in_dir(file));
    p = popen(cmd, "r");
    DM_AN(p);
    m = open_memstream(dom, &len);
    DM_AN(m);
    while ((c = fgetc(p)) != EOF)
        fputc(c, m);
    rc = pclose(p);
    fclose(m);
    if (rc != 0 && len == 0) {
        ok(1, "# SKIP chromium did not run (status %d)", rc);
        free(*dom);
        *dom = NULL;
        return false;
    }
    return true;
}

static void test_browser(void)
{
    char *dom;

    if (!dump_dom("report.html", &dom))
        return;
    ok(contains(dom, "<h1>danmaku-loadtest \xe2\x80\x94 hot-room</h1>"),
       "the script ran: title from the data");
    ok(contains(dom, "class=\"verdict fail\"") && contains(dom, ">FAIL<") &&
           contains(dom, "loss 0.012% &gt; 0.01%"),
       "the FAIL verdict with its failure");
    ok(count_of(dom, "<svg") >= 5 && count_of(dom, "<path") >= 8 &&
           !contains(dom, "class=\"empty\""),
       "%zu SVG charts with their lines", count_of(dom, "<svg"));
    ok(contains(dom, "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;") &&
           count_of(dom, "<script") == 2,
       "the hostile config value is shown as text and added no script");
    ok(contains(dom, "4008 slow consumer") && contains(dom, "Example CPU @ 2.40GHz"),
       "closes by code and the environment are shown");
    ok(contains(dom, "<th>ack latency us</th>") && contains(dom, "p99 4.10 ms") &&
           contains(dom, "<th>reconnects</th>"),
       "other summary keys under other counters");
    ok(contains(dom, ">warmup</text>") && contains(dom, ">drain</text>"),
       "phases other than measure are marked on the time charts");
    free(dom);
}

/* The part of the DOM from the element with id to the next section (or the
 * footer), as a new string; "" when there is no such element. */
static char *section_of(const char *dom, const char *id)
{
    char attr[128];
    const char *start, *end;

    snprintf(attr, sizeof(attr), "id=\"%s\"", id);
    if ((start = strstr(dom, attr)) == NULL)
        return dm_strdup("");
    if ((end = strstr(start + 1, "<section")) == NULL && (end = strstr(start, "<footer")) == NULL)
        end = start + strlen(start);
    return dm_strndup(start, (size_t)(end - start));
}

static void test_bench_browser(void)
{
    static const char *const ids[] = {"run-1-hot-room", "run-2-many-rooms", "run-3-broken-b-x-b-"};
    char *dom, *table, *sec[3];
    size_t rows, links = 0;

    if (!dump_dom("bench.html", &dom))
        return;
    table = section_of(dom, "bench-summary");
    *strstr(table, "</table>") = '\0';
    for (size_t i = 0; i < 3; i++) {
        char href[64];
        snprintf(href, sizeof(href), "href=\"#%s\"", ids[i]);
        links += contains(table, href);
        sec[i] = section_of(dom, ids[i]);
    }
    rows = count_of(table, "<tr");
    ok(contains(dom, "<h1>danmaku benchmark \xe2\x80\x94 2024-05-01</h1>") &&
           contains(dom, "started 2024-05-01 12:00:00 UTC") && contains(dom, "commit 4559cbb") &&
           contains(dom, "host dev-1") && contains(dom, "Kafka real") &&
           contains(dom, "servers on CPU 0-0, generator on CPU 1-1"),
       "bench page: title, date, commit, host, Kafka and CPU split");
    ok(contains(dom, "class=\"verdict fail\"") && contains(dom, "2 of 3 scenarios failed"),
       "the overall verdict counts the failed runs");
    ok(rows == 4 && links == 3, "the summary table: a header and %zu rows, %zu linked", rows - 1,
       links);
    ok(contains(table, ">5,000<") && contains(table, ">5.00M<") && contains(table, ">129 ms<") &&
           contains(table, ">36,000<") && contains(table, ">75%<") && contains(table, ">17.0<"),
       "a row: viewers, deliveries/s, p99, lost, CPU, server KB per connection");
    ok(contains(table, "<td class=\"n\">\xe2\x80\x93</td><td class=\"vd\"><span class=\"tag pass\">"
                       "PASS</span></td>"),
       "no memory growth shows a dash; a passing run PASS");
    ok(contains(table, "FAIL</span><div class=\"why\">loss 0.012% &gt; 0.01%") &&
           contains(table, "FAIL</span><div class=\"why\">no results; exit status 1</div>") &&
           contains(table, ">broken &lt;b&gt;x&lt;/b&gt;</a>"),
       "failed runs say why; a run's name is text");
    for (size_t i = 0; i < 2; i++)
        ok(count_of(sec[i], "<figure") == 5 && count_of(sec[i], "<svg") >= 10 &&
               count_of(sec[i], "<path") >= 8 && !contains(sec[i], "class=\"empty\"") &&
               contains(sec[i], "Delivery accounting") && contains(sec[i], "Configuration"),
           "run %zu's section: %zu charts, %zu SVG elements, the tables", i + 1,
           count_of(sec[i], "<figure"), count_of(sec[i], "<svg"));
    ok(contains(sec[0], "17.0 KB per connection") && contains(sec[1], "exit status 0"),
       "a run's section: its exit status and server memory");
    ok(contains(sec[0], "name=\"dist-1\"") && contains(sec[1], "name=\"dist-2\""),
       "each run's chart controls are a group of their own");
    ok(count_of(sec[2], "<figure") == 0 && contains(sec[2], "No results.") &&
           contains(sec[2], "exited with status 1 and wrote no results file."),
       "the run without results: FAIL and why, no charts");
    ok(count_of(dom, "<script") == 2 && !contains(dom, "<b>x</b>"),
       "nothing in the data became markup");
    for (size_t i = 0; i < 3; i++)
        free(sec[i]);
    free(table);
    free(dom);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    char rm[600];

    snprintf(dir, sizeof(dir), "%s/test_report.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    DM_AN(mkdtemp(dir));
    subtest("builders", test_builders);
    subtest("JSON file", test_json_file);
    subtest("HTML file", test_html_file);
    subtest("bench files", test_bench_files);
    subtest("template", test_template);
    subtest("final table", test_table);
    subtest("bench table", test_bench_table);
    subtest("progress line", test_progress);
    subtest("page in a browser", test_browser);
    subtest("bench page in a browser", test_bench_browser);
    /* TEST_REPORT_KEEP=1 keeps the files, to look at the report by eye. */
    if (getenv("TEST_REPORT_KEEP") != NULL) {
        printf("# kept %s/report.html and bench.html\n", dir);
        return done_testing();
    }
    snprintf(rm, sizeof(rm), "rm -rf -- '%s'", dir);
    if (system(rm) != 0)
        printf("# could not remove %s\n", dir);
    return done_testing();
}
