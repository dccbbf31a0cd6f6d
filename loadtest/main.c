/* danmaku-loadtest: options -> viewers connect -> open-loop publishing ->
 * drain -> exact accounting -> table, JSON, HTML -> exit status. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>

#include "common/check.h"
#include "common/jwt.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/proto.h"
#include "loadtest/group.h"
#include "loadtest/hist.h"
#include "loadtest/ledger.h"
#include "loadtest/options.h"
#include "loadtest/publisher.h"
#include "loadtest/report.h"
#include "loadtest/viewers.h"

#define CONNECT_GRACE_S 30 /* beyond viewers / connect_rate */

enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

struct run {
    struct lt_options *o;
    struct event_base *base;
    struct lt_ledger *ledger;
    struct lt_group *viewers;
    struct lt_publisher *pub;
    enum phase phase;
    int64_t t0_us;        /* run start (monotonic) */
    int64_t phase_end_us; /* monotonic */
    int64_t last_ack_us;  /* monotonic: when the acknowledged count last grew */
    uint64_t acked_seen;
    int64_t measure_from, measure_to; /* wall clock, scheduled times */
    struct lt_hist cumulative, previous, interval;
    struct lt_viewer_stats last_vs;
    struct lt_publisher_stats last_ps;
    double last_cpu_s;
    int64_t last_tick_us;
    json_t *timeline;
    uint64_t last_errors;
    double cpu_sum;
    int cpu_samples;
};

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static const char *phase_name(enum phase ph)
{
    static const char *const names[] = {"connect", "warmup", "measure", "drain", "done"};
    return names[ph];
}

static void enter_measure(struct run *r)
{
    int64_t now = dm_now_us();
    r->phase = PH_MEASURE;
    r->measure_from = now;
    r->measure_to = now + (int64_t)(r->o->duration * 1e6);
    lt_group_set_window(r->viewers, r->measure_from, r->measure_to);
    lt_publisher_stop_at(r->pub, r->measure_to);
    r->phase_end_us = dm_mono_us() + (int64_t)(r->o->duration * 1e6);
    if (r->o->slow_share > 0)
        lt_group_start_slow(r->viewers);
}

static void advance(struct run *r, const struct lt_viewer_stats *vs)
{
    int64_t now = dm_mono_us();
    switch (r->phase) {
    case PH_CONNECT:
        if (vs->joined >= (uint64_t)r->o->viewers || now >= r->phase_end_us) {
            r->phase = PH_WARMUP;
            r->phase_end_us = now + (int64_t)(r->o->warmup * 1e6);
            lt_publisher_start(r->pub, dm_now_us());
            if (r->o->warmup <= 0)
                enter_measure(r);
        }
        break;
    case PH_WARMUP:
        if (now >= r->phase_end_us)
            enter_measure(r);
        break;
    case PH_MEASURE:
        if (now >= r->phase_end_us) {
            r->phase = PH_DRAIN;
            r->phase_end_us = now + (int64_t)(r->o->drain * 1e6);
        }
        break;
    case PH_DRAIN: {
        /* Deliveries get the drain time after the last acknowledgement;
         * unanswered comments are waited for up to a hard limit (the
         * backlog of an overloaded ingest drains at its own pace). */
        int64_t drain_us = (int64_t)(r->o->drain * 1e6);
        int64_t limit = r->phase_end_us + (drain_us * 4 > 60000000 ? drain_us * 4 : 60000000);
        bool answered = lt_publisher_outstanding(r->pub) == 0;
        if ((now >= r->phase_end_us && answered && now >= r->last_ack_us + drain_us) ||
            now >= limit) {
            r->phase = PH_DONE;
            event_base_loopbreak(r->base);
        }
        break;
    }
    case PH_DONE:
        break;
    }
}

static void on_second(evutil_socket_t fd, short what, void *arg)
{
    struct run *r = arg;
    struct lt_viewer_stats vs;
    struct lt_publisher_stats ps;
    DM_UNUSED(fd);
    DM_UNUSED(what);

    int64_t now = dm_mono_us();
    double dt = (double)(now - r->last_tick_us) / 1e6;
    double cpu = cpu_seconds();
    double cpu_pct = dt > 0 ? 100.0 * (cpu - r->last_cpu_s) / dt : 0;

    lt_publisher_stats(r->pub, &ps);
    lt_hist_reset(&r->cumulative);
    lt_group_stats(r->viewers, &vs, &r->cumulative);
    lt_hist_sub(&r->interval, &r->cumulative, &r->previous);
    r->previous = r->cumulative;

    double sent_ps = dt > 0 ? (double)(ps.sent - r->last_ps.sent) / dt : 0;
    double deliv_ps = dt > 0 ? (double)(vs.delivered - r->last_vs.delivered) / dt : 0;
    uint64_t errors = vs.connect_errors + vs.handshake_errors + vs.server_errors + ps.failed;
    double t = (double)(now - r->t0_us) / 1e6;

    json_array_append_new(r->timeline,
                          json_pack("{s:f,s:s,s:I,s:f,s:f,s:I,s:I,s:I,s:I,s:f}", "t", t, "phase",
                                    phase_name(r->phase), "connections", (json_int_t)vs.open,
                                    "sent_per_s", sent_ps, "delivered_per_s", deliv_ps, "p50_us",
                                    (json_int_t)lt_hist_percentile(&r->interval, 50), "p99_us",
                                    (json_int_t)lt_hist_percentile(&r->interval, 99), "max_us",
                                    (json_int_t)lt_hist_max(&r->interval), "errors",
                                    (json_int_t)errors, "cpu_pct", cpu_pct));
    if (r->phase == PH_MEASURE || r->phase == PH_DRAIN) {
        r->cpu_sum += cpu_pct;
        r->cpu_samples++;
    }
    if (!r->o->quiet) {
        struct lt_progress pr = {
            .t = t,
            .connections = vs.open,
            .sent_per_s = sent_ps,
            .delivered_per_s = deliv_ps,
            .p50_us = lt_hist_percentile(&r->interval, 50),
            .p99_us = lt_hist_percentile(&r->interval, 99),
            .max_us = lt_hist_max(&r->interval),
            .errors = errors - r->last_errors,
            .cpu_pct = cpu_pct,
            .run_p99_us = lt_hist_percentile(&r->cumulative, 99),
            .run_errors = errors,
        };
        char line[512];
        lt_report_progress_line(line, sizeof(line), &pr);
        fprintf(stderr, "[%-7s] %s\n", phase_name(r->phase), line);
    }
    r->last_errors = errors;
    r->last_vs = vs;
    r->last_ps = ps;
    r->last_cpu_s = cpu;
    r->last_tick_us = now;
    advance(r, &vs);
}

static void on_fast_tick(evutil_socket_t fd, short what, void *arg)
{
    struct run *r = arg;
    struct lt_viewer_stats vs;
    struct lt_publisher_stats ps;
    DM_UNUSED(fd);
    DM_UNUSED(what);
    lt_publisher_stats(r->pub, &ps);
    if (ps.acked != r->acked_seen) {
        r->acked_seen = ps.acked;
        r->last_ack_us = dm_mono_us();
    }
    /* Phase changes need not wait for the once-a-second line. */
    lt_group_stats(r->viewers, &vs, NULL);
    advance(r, &vs);
}

/* ---- results ---- */

static json_t *environment(const struct lt_options *o)
{
    char model[256] = "unknown", line[512], host[256] = "", cpus[256] = "";
    struct utsname u;
    FILE *f = fopen("/proc/cpuinfo", "r");
    cpu_set_t set;

    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *v = strchr(line, ':');
            if (v != NULL) {
                snprintf(model, sizeof(model), "%s", v + 2);
                model[strcspn(model, "\n")] = '\0';
            }
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    uname(&u);
    gethostname(host, sizeof(host) - 1);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        size_t n = 0;
        for (int c = 0; c < CPU_SETSIZE && n + 8 < sizeof(cpus); c++) {
            if (CPU_ISSET(c, &set))
                n += (size_t)snprintf(cpus + n, sizeof(cpus) - n, "%s%d", n ? "," : "", c);
        }
    }
    const char *commit = *o->commit != '\0' ? o->commit : getenv("DANMAKU_COMMIT");
    return json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:s}", "cpu_model", model, "cores",
                     (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "kernel", u.release, "commit",
                     commit != NULL ? commit : "unknown", "hostname", host, "generator_cpus", cpus,
                     "server_cpus", o->server_cpus, "kafka", o->kafka_mode);
}

static void add_option(const char *name, const char *value, bool is_number, void *arg)
{
    json_t *cfg = arg;
    if (strcmp(name, "jwt_secret") == 0)
        value = *value != '\0' ? "(set)" : "";
    json_object_set_new(cfg, name, is_number ? json_real(strtod(value, NULL)) : json_string(value));
}

static json_t *latency_json(const struct lt_hist *h)
{
    return json_pack("{s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I}", "count", (json_int_t)lt_hist_count(h),
                     "min", (json_int_t)(lt_hist_count(h) ? lt_hist_min(h) : 0), "mean",
                     lt_hist_mean(h), "p50", (json_int_t)lt_hist_percentile(h, 50), "p90",
                     (json_int_t)lt_hist_percentile(h, 90), "p99",
                     (json_int_t)lt_hist_percentile(h, 99), "p999",
                     (json_int_t)lt_hist_percentile(h, 99.9), "max", (json_int_t)lt_hist_max(h));
}

static json_t *results(struct run *r, const struct lt_account *acc,
                       const struct lt_viewer_stats *vs, const struct lt_publisher_stats *ps,
                       const char *started_at, json_t **slo_failures)
{
    const struct lt_options *o = r->o;
    json_t *cfg = json_object(), *dist = json_array(), *closes = json_object();
    struct lt_hist_iter it;
    char code[16];

    lt_options_foreach(o, add_option, cfg);
    lt_hist_iter_init(&it, &r->cumulative);
    while (lt_hist_iter_next(&it))
        json_array_append_new(dist, json_pack("{s:I,s:I}", "le_us", (json_int_t)it.hi, "count",
                                              (json_int_t)it.count));
#define LT_CLOSE_JSON(c)                                                                           \
    if (vs->closes_##c) {                                                                          \
        snprintf(code, sizeof(code), "%d", c);                                                     \
        json_object_set_new(closes, code, json_integer((json_int_t)vs->closes_##c));               \
    }
    LT_CLOSE_CODES(LT_CLOSE_JSON)
#undef LT_CLOSE_JSON
    if (vs->closes_other)
        json_object_set_new(closes, "other", json_integer((json_int_t)vs->closes_other));

    double loss = acc->expected ? (double)acc->lost / (double)acc->expected : 0;
    uint64_t p99 = lt_hist_percentile(&r->cumulative, 99);
    *slo_failures = json_array();
    if (loss > o->max_loss) {
        char msg[128];
        snprintf(msg, sizeof(msg), "loss %.6f%% exceeds --max-loss %.6f%%", loss * 100,
                 o->max_loss * 100);
        json_array_append_new(*slo_failures, json_string(msg));
    }
    if (o->slo_p99 > 0 && (double)p99 / 1000.0 > o->slo_p99) {
        char msg[128];
        snprintf(msg, sizeof(msg), "p99 %.2f ms exceeds --slo-p99 %.2f ms", (double)p99 / 1000.0,
                 o->slo_p99);
        json_array_append_new(*slo_failures, json_string(msg));
    }
    if (acc->duplicated || acc->out_of_order) {
        json_array_append_new(*slo_failures, json_string("duplicated or out-of-order deliveries"));
    }

    json_t *errors = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "connect", (json_int_t)vs->connect_errors, "handshake",
        (json_int_t)vs->handshake_errors, "server_error_messages", (json_int_t)vs->server_errors,
        "publish_429", (json_int_t)ps->status_429, "publish_503", (json_int_t)ps->status_503,
        "publish_other_status", (json_int_t)ps->status_other, "publish_transport",
        (json_int_t)ps->transport_errors);
    json_t *summary = json_object();
    json_object_set_new(summary, "duration_s", json_real(o->duration));
    json_object_set_new(summary, "viewers", json_integer(o->viewers));
    json_object_set_new(summary, "rooms", json_integer(o->rooms));
    json_object_set_new(summary, "connections_ok", json_integer((json_int_t)vs->joined));
    json_object_set_new(summary, "connect_errors",
                        json_integer((json_int_t)(vs->connect_errors + vs->handshake_errors)));
    json_object_set_new(summary, "sent", json_integer((json_int_t)ps->sent));
    json_object_set_new(summary, "acked", json_integer((json_int_t)ps->acked));
    json_object_set_new(summary, "send_errors", json_integer((json_int_t)ps->failed));
    json_object_set_new(summary, "expected", json_integer((json_int_t)acc->expected));
    json_object_set_new(summary, "delivered", json_integer((json_int_t)acc->delivered));
    json_object_set_new(summary, "lost", json_integer((json_int_t)acc->lost));
    json_object_set_new(summary, "duplicated", json_integer((json_int_t)acc->duplicated));
    json_object_set_new(summary, "out_of_order", json_integer((json_int_t)acc->out_of_order));
    json_object_set_new(summary, "skipped", json_integer((json_int_t)acc->skipped));
    json_object_set_new(summary, "recovered", json_integer((json_int_t)vs->recovered));
    json_object_set_new(summary, "not_recovered", json_integer((json_int_t)vs->not_recovered));
    json_object_set_new(summary, "unrecoverable", json_integer((json_int_t)acc->unrecoverable));
    json_object_set_new(summary, "unexpected", json_integer((json_int_t)acc->unexpected));
    json_object_set_new(summary, "reconnects", json_integer((json_int_t)vs->reconnects));
    json_object_set_new(summary, "deliveries_per_s",
                        json_real((double)lt_hist_count(&r->cumulative) / o->duration));
    json_object_set_new(summary, "sent_per_s",
                        json_real(o->rate)); /* the schedule; sent counts the real number */
    json_object_set_new(summary, "generator_cpu_pct",
                        json_real(r->cpu_samples ? r->cpu_sum / r->cpu_samples : 0));
    json_object_set_new(summary, "latency_us", latency_json(&r->cumulative));
    json_object_set_new(summary, "ack_latency_us", latency_json(lt_publisher_ack_latency(r->pub)));
    json_object_set_new(summary, "closes_by_code", closes);
    json_object_set_new(summary, "errors", errors);

    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:{s:f,s:o,s:b,s:o}}", "tool",
                     "danmaku-loadtest", "version", "1", "scenario",
                     *o->scenario != '\0' ? o->scenario : "custom", "started_at", started_at,
                     "config", cfg, "environment", environment(o), "summary", summary, "timeline",
                     r->timeline, "distribution", dist, "slo", "max_loss", o->max_loss, "p99_us",
                     o->slo_p99 > 0 ? json_integer((json_int_t)(o->slo_p99 * 1000)) : json_null(),
                     "passed", json_array_size(*slo_failures) == 0, "failures", *slo_failures);
}

/* ---- setup ---- */

static int validate(const struct lt_options *o, char err[DM_ERRLEN])
{
    if (o->rooms < 1 || o->rooms > 1000000)
        snprintf(err, DM_ERRLEN, "--rooms must be 1..1000000");
    else if (o->threads < 1 || o->threads > 256)
        snprintf(err, DM_ERRLEN, "--threads must be 1..256");
    else if (o->procs < 1 || o->procs > 64)
        snprintf(err, DM_ERRLEN, "--procs must be 1..64");
    else if (o->rate <= 0)
        snprintf(err, DM_ERRLEN, "--rate must be > 0");
    else if (o->message_size < 30 || o->message_size > 1000)
        snprintf(err, DM_ERRLEN, "--message-size must be 30..1000");
    else if (strcmp(o->publish, "http") != 0 && strcmp(o->publish, "kafka") != 0)
        snprintf(err, DM_ERRLEN, "--publish must be http or kafka");
    else if (o->duration <= 0)
        snprintf(err, DM_ERRLEN, "--duration must be > 0");
    else if (o->hot_share > 1 || o->slow_share > 1 || o->max_loss > 1)
        snprintf(err, DM_ERRLEN, "shares must be within 0..1");
    else if (o->connect_rate <= 0 || o->http_conns < 1 || o->source_addrs < 1 ||
             o->source_addrs > 250 || o->kafka_partitions < 1)
        snprintf(err, DM_ERRLEN,
                 "--connect-rate, --http-conns, --source-addrs (1..250) and "
                 "--kafka-partitions must be positive");
    else
        return 0;
    return -1;
}

static char **split_targets(const char *list, size_t *n)
{
    char *copy = dm_strdup(list), *save = NULL;
    char **out = NULL;
    *n = 0;
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        out = dm_realloc(out, (*n + 1) * sizeof(*out));
        out[(*n)++] = dm_strdup(t);
    }
    free(copy);
    return out;
}

/* `danmaku-loadtest --render-html IN.json OUT.html`: renders saved results
 * (one run, or a bench file with several) without running anything. */
static int render_html(const char *in, const char *out)
{
    json_error_t jerr;
    char err[DM_ERRLEN];
    json_t *res = json_load_file(in, 0, &jerr);

    if (res == NULL) {
        fprintf(stderr, "danmaku-loadtest: %s: %s\n", in, jerr.text);
        return 1;
    }
    int rc = lt_report_write_html(res, out, err);
    if (rc < 0)
        fprintf(stderr, "danmaku-loadtest: %s\n", err);
    json_decref(res);
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct lt_options o;
    char err[DM_ERRLEN], prefix[64], started_at[32];
    unsigned char *secret = NULL;
    size_t secret_len = 0, ntargets = 0;
    struct run r;
    int exit_code = 1;

    if (argc == 4 && strcmp(argv[1], "--render-html") == 0)
        return render_html(argv[2], argv[3]);

    int rc = lt_options_parse(&o, argc, argv, stdout, err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "danmaku-loadtest: %s\n", err);
        return rc < 0 ? 1 : 0;
    }
    dm_log_set_node("loadtest");
    if (validate(&o, err) < 0) {
        fprintf(stderr, "danmaku-loadtest: %s\n", err);
        lt_options_fini(&o);
        return 1;
    }
    /* Before any Kafka client or thread exists (the properties are then
     * only read). */
    if (*o.kafka_properties_file != '\0' &&
        dm_kafka_load_properties(o.kafka_properties_file, err) < 0) {
        fprintf(stderr, "danmaku-loadtest: %s\n", err);
        lt_options_fini(&o);
        return 1;
    }
    if (*o.jwt_secret_file != '\0') {
        if (dm_jwt_key_load(o.jwt_secret_file, &secret, &secret_len, err) < 0) {
            fprintf(stderr, "danmaku-loadtest: %s\n", err);
            dm_kafka_free_properties();
            lt_options_fini(&o);
            return 1;
        }
    } else {
        const char *s = *o.jwt_secret != '\0' ? o.jwt_secret : getenv("DANMAKU_JWT_SECRET");
        if (s != NULL) {
            secret_len = strlen(s);
            secret = (unsigned char *)dm_strndup(s, secret_len);
        }
    }
    evthread_use_pthreads();

    /* Rooms of this run only, so runs never see each other's comments. */
    if (*o.room_prefix != '\0') {
        snprintf(prefix, sizeof(prefix), "%.40s", o.room_prefix);
    } else {
        uint32_t rnd;
        if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
            rnd = (uint32_t)dm_mono_us();
        snprintf(prefix, sizeof(prefix), "lt-%08x", rnd);
    }
    char **room_names = dm_calloc((size_t)o.rooms, sizeof(*room_names));
    for (int64_t i = 0; i < o.rooms; i++) {
        char name[DM_ROOM_MAX + 1];
        snprintf(name, sizeof(name), "%.40s-%lld", prefix, (long long)i);
        room_names[i] = dm_strdup(name);
    }
    char **targets = split_targets(o.ws, &ntargets);

    memset(&r, 0, sizeof(r));
    r.o = &o;
    r.base = event_base_new();
    DM_AN(r.base);
    r.ledger = lt_ledger_new((size_t)o.rooms);
    r.timeline = json_array();
    lt_hist_init(&r.cumulative);
    lt_hist_init(&r.previous);
    lt_hist_init(&r.interval);
    time_t now = time(NULL);
    strftime(started_at, sizeof(started_at), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));

    struct lt_viewers_config vc = {
        .targets = (const char *const *)targets,
        .ntargets = ntargets,
        .room_names = (const char *const *)room_names,
        .nrooms = (size_t)o.rooms,
        .viewers = (size_t)o.viewers,
        .hot_share = o.hot_share,
        .connect_rate = o.connect_rate,
        .threads = (int)o.threads,
        .source_addrs = (int)o.source_addrs,
        .slow_share = o.slow_share,
        .reconnect_every = o.reconnect_every,
    };
    /* Before the publisher: --procs forks, and the Kafka client starts threads. */
    r.viewers = lt_group_start(&vc, (int)o.procs, err);
    if (r.viewers == NULL) {
        fprintf(stderr, "danmaku-loadtest: %s\n", err);
        goto out;
    }
    struct lt_publisher_config pc = {
        .via_kafka = strcmp(o.publish, "kafka") == 0,
        .ingest = o.ingest,
        .kafka_brokers = o.kafka_brokers,
        .kafka_topic = o.kafka_topic,
        .partitions = (int32_t)o.kafka_partitions,
        .room_names = (const char *const *)room_names,
        .nrooms = (size_t)o.rooms,
        .hot_share = o.hot_share,
        .rate = o.rate,
        .message_size = (size_t)o.message_size,
        .http_conns = (int)o.http_conns,
        .secret = secret,
        .secret_len = secret_len,
        .senders = (int)o.senders,
    };
    r.pub = lt_publisher_new(r.base, &pc, r.ledger, err);
    if (r.pub == NULL) {
        fprintf(stderr, "danmaku-loadtest: %s\n", err);
        goto out;
    }
    r.t0_us = r.last_tick_us = dm_mono_us();
    r.last_cpu_s = cpu_seconds();
    r.phase = PH_CONNECT;
    r.phase_end_us =
        r.t0_us + (int64_t)(((double)o.viewers / o.connect_rate + CONNECT_GRACE_S) * 1e6);

    struct event *second = event_new(r.base, -1, EV_PERSIST, on_second, &r);
    struct event *fast = event_new(r.base, -1, EV_PERSIST, on_fast_tick, &r);
    struct timeval one_s = dm_timeval_ms(1000), fast_tv = dm_timeval_ms(20);
    DM_AN(second);
    DM_AN(fast);
    event_add(second, &one_s);
    event_add(fast, &fast_tv);
    event_base_dispatch(r.base);
    event_free(second);
    event_free(fast);

    struct lt_viewer_stats vs;
    struct lt_publisher_stats ps;
    struct lt_account acc;
    json_t *failures;
    memset(&acc, 0, sizeof(acc));
    lt_hist_reset(&r.cumulative);
    lt_group_stats(r.viewers, &vs, &r.cumulative);
    if (lt_group_finish(r.viewers, r.ledger, &acc, err) < 0) {
        fprintf(stderr, "danmaku-loadtest: %s\n", err);
        goto out;
    }
    lt_publisher_stats(r.pub, &ps);

    json_t *res = results(&r, &acc, &vs, &ps, started_at, &failures);
    r.timeline = NULL; /* stolen by results */
    lt_report_print_table(res, stdout);
    exit_code = json_array_size(failures) == 0 ? 0 : 2;
    if (*o.json != '\0' && lt_report_write_json(res, o.json, err) < 0) {
        fprintf(stderr, "danmaku-loadtest: %s\n", err);
        exit_code = 1;
    }
    if (*o.html != '\0' && lt_report_write_html(res, o.html, err) < 0) {
        fprintf(stderr, "danmaku-loadtest: %s\n", err);
        exit_code = 1;
    }
    json_decref(res);

out:
    lt_group_free(r.viewers);
    lt_publisher_free(r.pub);
    lt_ledger_free(r.ledger);
    json_decref(r.timeline);
    if (r.base != NULL)
        event_base_free(r.base);
    for (int64_t i = 0; i < o.rooms; i++)
        free(room_names[i]);
    free(room_names);
    for (size_t i = 0; i < ntargets; i++)
        free(targets[i]);
    free(targets);
    free(secret);
    dm_kafka_free_properties();
    lt_options_fini(&o);
    return exit_code;
}
