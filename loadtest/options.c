/* Flag table and scenario presets of danmaku-loadtest. */
#include "loadtest/options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"

enum opt_type { T_STR, T_INT, T_REAL, T_BOOL };

struct opt {
    const char *name;
    enum opt_type type;
    const char *def;
    const char *help;
    size_t offset;
};

#define LT_OPT(name, type, def, help)                                                              \
    {#name, T_##type, def, help, offsetof(struct lt_options, name)},
static const struct opt opts[] = {
#include "loadtest/options_table.h"
};
#undef LT_OPT

/* Each preset is a list of name=value settings applied over the defaults. */
static const struct {
    const char *name;
    const char *what;
    const char *settings[12];
} scenarios[] = {
    {"hot-room",
     "one room, 5,000 viewers, comments straight into Kafka: the fan-out engine",
     {"rooms=1", "viewers=5000", "rate=400", "publish=kafka", "duration=20", "connect_rate=5000",
      NULL}},
    {"many-rooms",
     "1,000 viewers over 100 rooms, comments through ingest",
     {"rooms=100", "viewers=1000", "rate=1000", "publish=http", "duration=20", NULL}},
    {"connect-storm",
     "10,000 viewers connecting as fast as allowed, light traffic",
     {"rooms=10", "viewers=10000", "rate=20", "connect_rate=5000", "publish=kafka", "duration=10",
      NULL}},
    {"reconnect-storm",
     "1,000 viewers each reconnecting every ~2 s and resuming where they were",
     {"rooms=10", "viewers=1000", "rate=100", "reconnect_every=2", "publish=kafka", "duration=30",
      NULL}},
    {"slow-viewers",
     "10% of 1,000 viewers stop reading; the others must not notice",
     {"rooms=1", "viewers=1000", "rate=200", "slow_share=0.1", "publish=kafka", "duration=20",
      NULL}},
    {"ingest-max",
     "as many accepted comments per second as ingest takes, few viewers",
     {"rooms=100", "viewers=10", "rate=20000", "publish=http", "http_conns=64", "senders=1000",
      "duration=10", NULL}},
};

static const struct opt *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(opts); i++) {
        const char *on = opts[i].name;
        size_t j;
        if (strlen(on) != len)
            continue;
        for (j = 0; j < len && (name[j] == '-' ? '_' : name[j]) == on[j]; j++)
            ;
        if (j == len)
            return &opts[i];
    }
    return NULL;
}

static int set_opt(struct lt_options *o, const struct opt *k, const char *value,
                   char err[DM_ERRLEN])
{
    char *field = (char *)o + k->offset, *end;

    errno = 0;
    switch (k->type) {
    case T_STR: {
        char **sp = (char **)(void *)field;
        free(*sp);
        *sp = dm_strdup(value);
        return 0;
    }
    case T_INT: {
        long long v = strtoll(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || v < 0)
            goto bad;
        int64_t v64 = v;
        memcpy(field, &v64, sizeof(v64));
        return 0;
    }
    case T_REAL: {
        double v = strtod(value, &end);
        if (errno != 0 || end == value || *end != '\0' || v < 0)
            goto bad;
        memcpy(field, &v, sizeof(v));
        return 0;
    }
    case T_BOOL: {
        bool b;
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
            b = true;
        else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
            b = false;
        else
            goto bad;
        memcpy(field, &b, sizeof(b));
        return 0;
    }
    }
    DM_PANIC("unknown option type");
bad:
    snprintf(err, DM_ERRLEN, "--%s: bad value \"%s\"", k->name, value);
    return -1;
}

static int apply_setting(struct lt_options *o, const char *setting, char err[DM_ERRLEN])
{
    const char *eq = strchr(setting, '=');
    DM_AN(eq);
    const struct opt *k = find_opt(setting, (size_t)(eq - setting));
    DM_AN(k);
    return set_opt(o, k, eq + 1, err);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: danmaku-loadtest [--scenario NAME] [--FLAG VALUE ...]\n\n"
                 "Open-loop load against danmaku: viewers over WebSocket, comments through\n"
                 "ingest or straight into Kafka; latency from each comment's scheduled send\n"
                 "time to its arrival at each viewer. Exit status: 0 ok, 1 usage or setup\n"
                 "error, 2 loss or SLO exceeded.\n\n");
    for (size_t i = 0; i < DM_ARRAY_LEN(opts); i++) {
        char flag[64];
        size_t n = (size_t)snprintf(flag, sizeof(flag), "--");
        for (const char *p = opts[i].name; *p != '\0' && n + 1 < sizeof(flag); p++)
            flag[n++] = *p == '_' ? '-' : *p;
        flag[n] = '\0';
        fprintf(out, "  %-20s %s (default \"%s\")\n", flag, opts[i].help, opts[i].def);
    }
    fprintf(out, "\nOther forms:\n"
                 "  danmaku-loadtest --list-scenarios             the presets and their flags\n"
                 "  danmaku-loadtest --render-html IN.json OUT.html  re-render saved results\n");
    fprintf(out, "\nScenarios (--list-scenarios shows their settings):\n");
    for (size_t i = 0; i < DM_ARRAY_LEN(scenarios); i++)
        fprintf(out, "  %-16s %s\n", scenarios[i].name, scenarios[i].what);
}

static void list_scenarios(FILE *out)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(scenarios); i++) {
        fprintf(out, "%s: %s\n   ", scenarios[i].name, scenarios[i].what);
        for (const char *const *s = scenarios[i].settings; *s != NULL; s++)
            fprintf(out, " --%s", *s);
        fprintf(out, "\n");
    }
}

int lt_options_parse(struct lt_options *o, int argc, char **argv, FILE *out, char err[DM_ERRLEN])
{
    const char *scenario = NULL;

    memset(o, 0, sizeof(*o));
    for (size_t i = 0; i < DM_ARRAY_LEN(opts); i++) {
        if (set_opt(o, &opts[i], opts[i].def, err) < 0)
            DM_PANIC("bad default in options_table.h");
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(out);
            lt_options_fini(o);
            return 1;
        }
        if (strcmp(argv[i], "--list-scenarios") == 0) {
            list_scenarios(out);
            lt_options_fini(o);
            return 1;
        }
        if (strcmp(argv[i], "--scenario") == 0 && i + 1 < argc)
            scenario = argv[i + 1];
        else if (strncmp(argv[i], "--scenario=", 11) == 0)
            scenario = argv[i] + 11;
    }
    if (scenario != NULL && *scenario != '\0') {
        size_t i;
        for (i = 0; i < DM_ARRAY_LEN(scenarios); i++) {
            if (strcmp(scenarios[i].name, scenario) == 0)
                break;
        }
        if (i == DM_ARRAY_LEN(scenarios)) {
            snprintf(err, DM_ERRLEN, "unknown scenario \"%.64s\" (see --list-scenarios)", scenario);
            goto fail;
        }
        for (const char *const *s = scenarios[i].settings; *s != NULL; s++) {
            if (apply_setting(o, *s, err) < 0)
                goto fail;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value;
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, DM_ERRLEN, "unexpected argument \"%.64s\"", arg);
            goto fail;
        }
        arg += 2;
        const char *eq = strchr(arg, '=');
        size_t len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        const struct opt *k = find_opt(arg, len);
        if (k == NULL) {
            snprintf(err, DM_ERRLEN, "unknown flag \"--%.*s\" (see --help)", (int)len, arg);
            goto fail;
        }
        if (eq != NULL)
            value = eq + 1;
        else if (k->type == T_BOOL)
            value = "true";
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            snprintf(err, DM_ERRLEN, "--%.*s needs a value", (int)len, arg);
            goto fail;
        }
        if (set_opt(o, k, value, err) < 0)
            goto fail;
    }
    return 0;
fail:
    lt_options_fini(o);
    return -1;
}

void lt_options_fini(struct lt_options *o)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(opts); i++) {
        if (opts[i].type == T_STR) {
            char **sp = (char **)(void *)((char *)o + opts[i].offset);
            free(*sp);
            *sp = NULL;
        }
    }
}

void lt_options_foreach(const struct lt_options *o,
                        void (*fn)(const char *name, const char *value, bool is_number, void *arg),
                        void *arg)
{
    char buf[64];
    for (size_t i = 0; i < DM_ARRAY_LEN(opts); i++) {
        const char *field = (const char *)o + opts[i].offset;
        switch (opts[i].type) {
        case T_STR:
            fn(opts[i].name, *(char *const *)(const void *)field, false, arg);
            break;
        case T_INT: {
            int64_t v;
            memcpy(&v, field, sizeof(v));
            snprintf(buf, sizeof(buf), "%lld", (long long)v);
            fn(opts[i].name, buf, true, arg);
            break;
        }
        case T_REAL: {
            double v;
            memcpy(&v, field, sizeof(v));
            snprintf(buf, sizeof(buf), "%g", v);
            fn(opts[i].name, buf, true, arg);
            break;
        }
        case T_BOOL: {
            bool b;
            memcpy(&b, field, sizeof(b));
            fn(opts[i].name, b ? "true" : "false", false, arg);
            break;
        }
        }
    }
}
