/* Configuration: defaults, precedence default < file < environment < argv,
 * flag forms, SIZE/INT/BOOL parsing and bounds, scope and unknown keys,
 * --help, log_level, config files and their errors, and fini. */
#include "common/config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "tests/unit/tap.h"

#define ING  DM_CONF_I /* the ingest binary's scope */
#define BC   DM_CONF_B /* the broadcast binary's scope */
#define BOTH DM_CONF_IB

#define MAX_ARGS 16

extern char **environ;

static char err[DM_ERRLEN];
static char *help_text; /* the --help output of the last load() */

/* ---- helpers ------------------------------------------------------------ */

/* Loads with argv = {"prog", args..., NULL-terminated list}. err and
 * help_text hold what the call reported. */
static int load(struct dm_config *cfg, unsigned scope, ...)
{
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    size_t help_len = 0;
    va_list ap;
    const char *a;
    FILE *out;
    int rc;

    argv[argc++] = (char *)"prog";
    va_start(ap, scope);
    while ((a = va_arg(ap, const char *)) != NULL && argc <= MAX_ARGS)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;

    free(help_text);
    help_text = NULL;
    out = open_memstream(&help_text, &help_len);
    err[0] = '\0';
    rc = dm_config_load(cfg, scope, "prog", argc, argv, out, err);
    fclose(out);
    return rc;
}

/* Removes every DANMAKU_* variable so the caller's environment cannot leak in. */
static void clear_env(void)
{
    char name[256];
    bool again = true;

    while (again) {
        again = false;
        for (char **e = environ; *e != NULL; e++) {
            if (strncmp(*e, "DANMAKU_", 8) != 0)
                continue;
            size_t n = strcspn(*e, "=");
            snprintf(name, sizeof(name), "%.*s", (int)n, *e);
            unsetenv(name);
            again = true; /* environ changed under us: rescan */
            break;
        }
    }
}

static char tmp_paths[16][512];
static int ntmp;

/* Writes `text` to a new temporary file and returns its path (removed by
 * remove_tmp_files). */
static const char *tmp_file(const char *text)
{
    const char *dir = getenv("TMPDIR");
    char *path = tmp_paths[ntmp++];
    int fd;

    snprintf(path, sizeof(tmp_paths[0]), "%s/dm-test-config.XXXXXX",
             dir != NULL && *dir != '\0' ? dir : "/tmp");
    fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        printf("# could not write %s\n", path);
    if (fd >= 0)
        close(fd);
    return path;
}

static void remove_tmp_files(void)
{
    for (int i = 0; i < ntmp; i++)
        unlink(tmp_paths[i]);
    ntmp = 0;
}

static bool contains(const char *hay, const char *needle)
{
    return hay != NULL && strstr(hay, needle) != NULL;
}

/* ---- defaults ----------------------------------------------------------- */

static void test_defaults(void)
{
    struct dm_config cfg;
    int rc = load(&cfg, BOTH, NULL);

    ok(rc == 0, "defaults load (rc %d, %s)", rc, err);
    /* Every string key holds exactly its table default. */
#define DM_CONF_CHECK_STR(name, def)                                                               \
    ok(strcmp(cfg.name, def) == 0, "default " #name " = \"%s\"", cfg.name);
#define DM_CONF_CHECK_INT(name, def)
#define DM_CONF_CHECK_SIZE(name, def)
#define DM_CONF_CHECK_BOOL(name, def)
#define DM_CONF(name, type, def, min, max, scope, help) DM_CONF_CHECK_##type(name, def)
#include "common/config_table.h"
#undef DM_CONF
    ok(cfg.http_port == 8080, "default http_port 8080");
    ok(cfg.ws_port == 8081, "default ws_port 8081");
    ok(cfg.max_body == 4096, "default max_body \"4k\" = 4096");
    ok(cfg.max_header == 8192, "default max_header \"8k\" = 8192");
    ok(cfg.max_client_outbuf == 1048576, "default max_client_outbuf \"1m\" = 1048576");
    ok(cfg.kafka_partitions == 32, "default kafka_partitions 32");
    ok(cfg.allow_anonymous == true, "default allow_anonymous true");
    ok(dm_log_min_level == DM_LOG_INFO, "default log level applied: info");
    dm_config_fini(&cfg);
}

/* ---- precedence --------------------------------------------------------- */

static void test_precedence(void)
{
    struct dm_config cfg;
    const char *file = tmp_file("http_port = 1001\nnode_id = from-file\nmax_body = 1k\n");
    const char *file2 = tmp_file("http_port = 2001\n");
    char cflag[600];
    int rc;

    snprintf(cflag, sizeof(cflag), "--config=%s", file);

    rc = load(&cfg, ING, "--config", file, NULL);
    ok(rc == 0 && cfg.http_port == 1001, "file beats default (--config FILE): %lld",
       (long long)cfg.http_port);
    ok(rc == 0 && strcmp(cfg.node_id, "from-file") == 0, "file sets a string");
    ok(rc == 0 && cfg.max_body == 1024, "file sets a size");
    dm_config_fini(&cfg);

    rc = load(&cfg, ING, cflag, NULL);
    ok(rc == 0 && cfg.http_port == 1001, "--config=FILE form");
    dm_config_fini(&cfg);

    setenv("DANMAKU_CONFIG", file, 1);
    rc = load(&cfg, ING, NULL);
    ok(rc == 0 && cfg.http_port == 1001, "DANMAKU_CONFIG names the file");
    dm_config_fini(&cfg);

    rc = load(&cfg, ING, "--config", file2, NULL);
    ok(rc == 0 && cfg.http_port == 2001, "--config beats DANMAKU_CONFIG");
    dm_config_fini(&cfg);

    setenv("DANMAKU_HTTP_PORT", "1002", 1);
    setenv("DANMAKU_NODE_ID", "from-env", 1);
    rc = load(&cfg, ING, NULL);
    ok(rc == 0 && cfg.http_port == 1002, "environment beats file: %lld", (long long)cfg.http_port);
    ok(rc == 0 && strcmp(cfg.node_id, "from-env") == 0, "environment beats file for a string");
    ok(rc == 0 && cfg.max_body == 1024, "file value kept where env is silent");
    dm_config_fini(&cfg);

    rc = load(&cfg, ING, "--http-port=1003", NULL);
    ok(rc == 0 && cfg.http_port == 1003, "argv beats environment: %lld", (long long)cfg.http_port);
    ok(rc == 0 && strcmp(cfg.node_id, "from-env") == 0, "env value kept where argv is silent");
    ok(rc == 0 && cfg.max_body == 1024, "file value kept where env and argv are silent");
    dm_config_fini(&cfg);

    /* The position of --config among the flags does not matter. */
    rc = load(&cfg, ING, "--http-port=1003", "--config", file2, NULL);
    ok(rc == 0 && cfg.http_port == 1003, "argv beats a --config given after it");
    dm_config_fini(&cfg);

    unsetenv("DANMAKU_HTTP_PORT");
    unsetenv("DANMAKU_NODE_ID");
    unsetenv("DANMAKU_CONFIG");
    rc = load(&cfg, ING, NULL);
    ok(rc == 0 && cfg.http_port == 8080 && strcmp(cfg.node_id, "") == 0,
       "back to defaults without file and env");
    dm_config_fini(&cfg);

    /* A later flag wins over an earlier one. */
    rc = load(&cfg, ING, "--http-port=1", "--http-port=2", NULL);
    ok(rc == 0 && cfg.http_port == 2, "last flag wins");
    dm_config_fini(&cfg);

    setenv("DANMAKU_CONFIG", "", 1);
    rc = load(&cfg, ING, NULL);
    ok(rc == 0, "empty DANMAKU_CONFIG means no file");
    dm_config_fini(&cfg);
    unsetenv("DANMAKU_CONFIG");

    remove_tmp_files();
}

/* ---- flag forms --------------------------------------------------------- */

static void test_flag_forms(void)
{
    struct dm_config cfg;
    int rc;

    rc = load(&cfg, ING, "--http-port=9000", NULL);
    ok(rc == 0 && cfg.http_port == 9000, "--key=value");
    dm_config_fini(&cfg);

    rc = load(&cfg, ING, "--http-port", "9001", "--node-id", "n1", NULL);
    ok(rc == 0 && cfg.http_port == 9001 && strcmp(cfg.node_id, "n1") == 0, "--key value (%s)", err);
    dm_config_fini(&cfg);

    rc = load(&cfg, ING, "--http_port=9002", NULL);
    ok(rc == 0 && cfg.http_port == 9002, "underscores accepted in flags");
    dm_config_fini(&cfg);

    rc = load(&cfg, ING, "--node-id=", NULL);
    ok(rc == 0 && strcmp(cfg.node_id, "") == 0, "--key= sets an empty string");
    dm_config_fini(&cfg);

    rc = load(&cfg, ING, "--cors-origins=a=b", NULL);
    ok(rc == 0 && strcmp(cfg.cors_origins, "a=b") == 0, "value may contain '='");
    dm_config_fini(&cfg);

    setenv("DANMAKU_ALLOW_ANONYMOUS", "false", 1);
    rc = load(&cfg, BC, NULL);
    ok(rc == 0 && cfg.allow_anonymous == false, "env sets a boolean false");
    dm_config_fini(&cfg);
    rc = load(&cfg, BC, "--allow-anonymous", NULL);
    ok(rc == 0 && cfg.allow_anonymous == true, "bare boolean flag means true");
    dm_config_fini(&cfg);
    rc = load(&cfg, BC, "--allow-anonymous", "--ws-port", "7", NULL);
    ok(rc == 0 && cfg.allow_anonymous == true && cfg.ws_port == 7,
       "bare boolean flag does not swallow the next argument");
    dm_config_fini(&cfg);
    unsetenv("DANMAKU_ALLOW_ANONYMOUS");
    rc = load(&cfg, BC, "--allow-anonymous=off", NULL);
    ok(rc == 0 && cfg.allow_anonymous == false, "--bool=off");
    dm_config_fini(&cfg);
    rc = load(&cfg, BC, "--allow-anonymous", "false", "--max-rooms", "3", NULL);
    ok(rc == 0 && cfg.allow_anonymous == false && cfg.max_rooms == 3,
       "--bool false: a boolean word after the flag is its value");
    dm_config_fini(&cfg);
    rc = load(&cfg, BC, "--allow-anonymous", "--max-rooms", "3", NULL);
    ok(rc == 0 && cfg.allow_anonymous == true && cfg.max_rooms == 3,
       "--bool followed by another flag means true");
    dm_config_fini(&cfg);

    rc = load(&cfg, ING, "--http-port", NULL);
    ok(rc == -1 && contains(err, "--http-port") && contains(err, "value"),
       "missing value is an error naming the key: %s", err);

    rc = load(&cfg, ING, "--config", NULL);
    ok(rc == -1 && contains(err, "--config"), "--config without a file is an error: %s", err);

    rc = load(&cfg, ING, "stray", NULL);
    ok(rc == -1 && contains(err, "stray"), "positional argument rejected: %s", err);

    rc = load(&cfg, ING, "-p", "80", NULL);
    ok(rc == -1 && contains(err, "-p"), "short option rejected: %s", err);
}

/* ---- SIZE, INT and BOOL values ------------------------------------------ */

struct value_case {
    const char *flag;  /* --key=value */
    int rc;            /* expected */
    int64_t value;     /* when rc == 0 */
    const char *named; /* substring of err when rc == -1 (besides the key) */
};

#define FIELD(c, k) (*(int64_t *)(void *)((char *)(c) + (k)))

static void run_value_cases(const char *key, size_t off, unsigned scope,
                            const struct value_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct value_case *t = &cases[i];
        struct dm_config cfg;
        int rc = load(&cfg, scope, t->flag, NULL);
        if (t->rc == 0) {
            ok(rc == 0 && FIELD(&cfg, off) == t->value, "%s -> %lld (got rc %d, %lld, %s)", t->flag,
               (long long)t->value, rc, rc == 0 ? (long long)FIELD(&cfg, off) : 0LL, err);
            if (rc == 0)
                dm_config_fini(&cfg);
        } else {
            ok(rc == -1 && contains(err, key) && contains(err, t->named),
               "%s rejected, naming %s and \"%s\": %s", t->flag, key, t->named, err);
        }
    }
}

static void test_sizes(void)
{
    static const struct value_case max_body[] = {
        {"--max-body=4k", 0, 4096, NULL},
        {"--max-body=4K", 0, 4096, NULL},
        {"--max-body=4kb", 0, 4096, NULL},
        {"--max-body=4KB", 0, 4096, NULL},
        {"--max-body=1m", 0, 1048576, NULL},
        {"--max-body=1MB", 0, 1048576, NULL},
        {"--max-body=256", 0, 256, NULL},
        {"--max-body=1048576", 0, 1048576, NULL},
        {"--max-body=255", -1, 0, "256"},
        {"--max-body=1048577", -1, 0, "1048576"},
        {"--max-body=2m", -1, 0, "1048576"},
        {"--max-body=1g", -1, 0, "1048576"},
        {"--max-body=-1k", -1, 0, "256"},
        {"--max-body=4x", -1, 0, "4x"},
        {"--max-body=4kx", -1, 0, "4kx"},
        {"--max-body=4kbb", -1, 0, "4kbb"},
        {"--max-body=k", -1, 0, "\"k\""},
        {"--max-body=", -1, 0, "\"\""},
        {"--max-body=4.5k", -1, 0, "4.5k"},
        {"--max-body=99999999999999g", -1, 0, "99999999999999g"},
    };
    static const struct value_case outbuf[] = {
        {"--max-client-outbuf=1g", 0, 1073741824, NULL},
        {"--max-client-outbuf=1gb", 0, 1073741824, NULL},
        {"--max-client-outbuf=4k", 0, 4096, NULL},
        {"--max-client-outbuf=3k", -1, 0, "4096"},
        {"--max-client-outbuf=2g", -1, 0, "1073741824"},
    };
    run_value_cases("max_body", offsetof(struct dm_config, max_body), ING, max_body,
                    DM_ARRAY_LEN(max_body));
    run_value_cases("max_client_outbuf", offsetof(struct dm_config, max_client_outbuf), BC, outbuf,
                    DM_ARRAY_LEN(outbuf));
}

static void test_ints(void)
{
    static const struct value_case http_port[] = {
        {"--http-port=0", 0, 0, NULL},
        {"--http-port=65535", 0, 65535, NULL},
        {"--http-port=080", 0, 80, NULL},
        {"--http-port=65536", -1, 0, "65535"},
        {"--http-port=-1", -1, 0, "0"},
        {"--http-port=80x", -1, 0, "80x"},
        {"--http-port=4k", -1, 0, "4k"}, /* INT takes no size suffix */
        {"--http-port=", -1, 0, "\"\""},
        {"--http-port=0x50", -1, 0, "0x50"},
        {"--http-port=99999999999999999999", -1, 0, "99999999999999999999"},
    };
    run_value_cases("http_port", offsetof(struct dm_config, http_port), ING, http_port,
                    DM_ARRAY_LEN(http_port));

    /* The same bound is enforced when the value comes from env or a file. */
    struct dm_config cfg;
    setenv("DANMAKU_MAX_ROOMS", "0", 1);
    int rc = load(&cfg, BC, NULL);
    ok(rc == -1 && contains(err, "max_rooms") && contains(err, "DANMAKU_MAX_ROOMS") &&
           contains(err, "1"),
       "env value out of bounds names the variable and key: %s", err);
    unsetenv("DANMAKU_MAX_ROOMS");
}

static void test_bools(void)
{
    static const struct {
        const char *value;
        int rc;
        bool b;
    } cases[] = {
        {"true", 0, true}, {"false", 0, false}, {"1", 0, true},   {"0", 0, false},
        {"yes", 0, true},  {"no", 0, false},    {"on", 0, true},  {"off", 0, false},
        {"TRUE", 0, true}, {"Off", 0, false},   {"maybe", -1, 0}, {"", -1, 0},
        {"2", -1, 0},      {"truee", -1, 0},    {"y", -1, 0},
    };
    char flag[64];

    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        struct dm_config cfg;
        snprintf(flag, sizeof(flag), "--allow-anonymous=%s", cases[i].value);
        /* Start from the opposite value so a no-op cannot pass. */
        setenv("DANMAKU_ALLOW_ANONYMOUS", cases[i].b ? "false" : "true", 1);
        int rc = load(&cfg, BC, flag, NULL);
        if (cases[i].rc == 0) {
            ok(rc == 0 && cfg.allow_anonymous == cases[i].b, "boolean \"%s\" -> %s", cases[i].value,
               cases[i].b ? "true" : "false");
            if (rc == 0)
                dm_config_fini(&cfg);
        } else {
            ok(rc == -1 && contains(err, "allow_anonymous") && contains(err, "boolean"),
               "boolean \"%s\" rejected: %s", cases[i].value, err);
        }
    }
    unsetenv("DANMAKU_ALLOW_ANONYMOUS");
}

/* ---- unknown keys and scope --------------------------------------------- */

static void test_unknown_and_scope(void)
{
    struct dm_config cfg;
    int rc;

    rc = load(&cfg, ING, "--no-such-key=1", NULL);
    ok(rc == -1 && contains(err, "no-such-key"), "unknown flag rejected: %s", err);

    rc = load(&cfg, ING, "--no-such-bool", NULL);
    ok(rc == -1 && contains(err, "no-such-bool"), "unknown bare flag rejected: %s", err);

    rc = load(&cfg, ING, "--ws-port=1", NULL);
    ok(rc == -1 && contains(err, "ws-port"), "broadcast key rejected by ingest: %s", err);

    rc = load(&cfg, BC, "--http-port=1", NULL);
    ok(rc == -1 && contains(err, "http-port"), "ingest key rejected by broadcast: %s", err);

    rc = load(&cfg, BC, "--ws-port=1", NULL);
    ok(rc == 0 && cfg.ws_port == 1, "broadcast key accepted by broadcast");
    dm_config_fini(&cfg);

    rc = load(&cfg, ING, "--kafka-brokers=k:1", NULL);
    ok(rc == 0 && strcmp(cfg.kafka_brokers, "k:1") == 0, "shared key accepted by ingest");
    dm_config_fini(&cfg);

    /* The environment of a shared deployment may hold the other binary's keys. */
    setenv("DANMAKU_WS_PORT", "not-a-number", 1);
    rc = load(&cfg, ING, NULL);
    ok(rc == 0, "other scope's env variable ignored (%s)", err);
    dm_config_fini(&cfg);
    rc = load(&cfg, BC, NULL);
    ok(rc == -1 && contains(err, "ws_port"), "... but read by its own binary: %s", err);
    unsetenv("DANMAKU_WS_PORT");

    const char *other = tmp_file("ws_port = 1234\nhttp_port = 1\n");
    rc = load(&cfg, ING, "--config", other, NULL);
    ok(rc == 0 && cfg.ws_port == 8081 && cfg.http_port == 1,
       "file: other scope's key ignored, own key applied (%s)", err);
    dm_config_fini(&cfg);
    rc = load(&cfg, BC, "--config", other, NULL);
    ok(rc == 0 && cfg.ws_port == 1234 && cfg.http_port == 8080,
       "file: the other binary reads the same file the other way round (%s)", err);
    dm_config_fini(&cfg);

    const char *unknown = tmp_file("http_port = 1\nno_such_key = 2\n");
    rc = load(&cfg, ING, "--config", unknown, NULL);
    char where[600];
    snprintf(where, sizeof(where), "%s:2", unknown);
    ok(rc == -1 && contains(err, where) && contains(err, "no_such_key"),
       "file: unknown key is an error with file:line: %s", err);

    remove_tmp_files();
}

/* ---- --help ------------------------------------------------------------- */

static void check_help(unsigned scope, const char *name)
{
    char flag[64], env[64], def[128];
    int listed = 0, hidden = 0, total_in = 0, total_out = 0;

#define DM_CONF(kname, type, kdef, min, max, kscope, help)                                         \
    do {                                                                                           \
        size_t j;                                                                                  \
        snprintf(flag, sizeof(flag), "--%s ", #kname);                                             \
        for (j = 2; flag[j] != '\0'; j++)                                                          \
            if (flag[j] == '_')                                                                    \
                flag[j] = '-';                                                                     \
        snprintf(env, sizeof(env), "DANMAKU_%s,", #kname);                                         \
        for (j = 8; env[j] != '\0'; j++)                                                           \
            env[j] = (char)(env[j] >= 'a' && env[j] <= 'z' ? env[j] - 'a' + 'A' : env[j]);         \
        snprintf(def, sizeof(def), "%s default \"%s\"", env, kdef);                                \
        if (DM_CONF_##kscope & scope) {                                                            \
            total_in++;                                                                            \
            if (contains(help_text, flag) && contains(help_text, def))                             \
                listed++;                                                                          \
            else                                                                                   \
                printf("# %s: %s missing \"%s\" or \"%s\"\n", name, #kname, flag, def);            \
        } else {                                                                                   \
            total_out++;                                                                           \
            if (!contains(help_text, flag) && !contains(help_text, env))                           \
                hidden++;                                                                          \
            else                                                                                   \
                printf("# %s: %s should not be listed\n", name, #kname);                           \
        }                                                                                          \
    } while (0);
#include "common/config_table.h"
#undef DM_CONF

    ok(total_in > 0 && listed == total_in, "%s --help lists all %d keys with env and default", name,
       total_in);
    ok(total_out > 0 && hidden == total_out, "%s --help hides the other scope's %d keys", name,
       total_out);
}

static void test_help(void)
{
    struct dm_config cfg;
    int rc;

    rc = load(&cfg, ING, "--help", NULL);
    ok(rc == 1, "--help returns 1");
    ok(contains(help_text, "usage: prog"), "usage line names the program");
    check_help(ING, "ingest");
    dm_config_fini(&cfg);

    rc = load(&cfg, BC, "--ws-port=1", "--help", NULL);
    ok(rc == 1, "--help after other flags returns 1");
    check_help(BC, "broadcast");
    dm_config_fini(&cfg);

    rc = load(&cfg, BC, "-h", NULL);
    ok(rc == 1 && contains(help_text, "--ws-port"), "-h is --help");
    dm_config_fini(&cfg);

    ok(contains(help_text, "range 4096..1073741824"), "SIZE bounds are printed");

    rc = load(&cfg, ING, NULL);
    ok(rc == 0 && help_text != NULL && help_text[0] == '\0', "nothing printed without --help");
    dm_config_fini(&cfg);
}

/* ---- log_level ---------------------------------------------------------- */

static void test_log_level(void)
{
    static const struct {
        const char *value;
        int rc;
        enum dm_log_level level;
    } cases[] = {
        {"debug", 0, DM_LOG_DEBUG},   {"info", 0, DM_LOG_INFO},     {"warn", 0, DM_LOG_WARN},
        {"error", 0, DM_LOG_ERROR},   {"verbose", -1, DM_LOG_INFO}, {"", -1, DM_LOG_INFO},
        {"warning", -1, DM_LOG_INFO},
    };
    char flag[64];

    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        struct dm_config cfg;
        /* A level that differs from the expected one, so the store is seen. */
        dm_log_min_level = cases[i].level == DM_LOG_ERROR ? DM_LOG_DEBUG : DM_LOG_ERROR;
        snprintf(flag, sizeof(flag), "--log-level=%s", cases[i].value);
        int rc = load(&cfg, BOTH, flag, NULL);
        if (cases[i].rc == 0) {
            ok(rc == 0 && dm_log_min_level == cases[i].level &&
                   strcmp(cfg.log_level, cases[i].value) == 0,
               "log_level %s applied", cases[i].value);
            if (rc == 0)
                dm_config_fini(&cfg);
        } else {
            ok(rc == -1 && contains(err, "log_level") && cfg.log_level == NULL,
               "log_level \"%s\" rejected: %s", cases[i].value, err);
        }
    }
    dm_log_min_level = DM_LOG_INFO;
}

/* ---- config files ------------------------------------------------------- */

static void test_files(void)
{
    struct dm_config cfg;
    char where[600];
    int rc;

    const char *good = tmp_file("# a comment\n"
                                "\n"
                                "   \n"
                                "\t# indented comment\n"
                                "  http_port   =   1234  \n"
                                "max_body=8k\n"
                                "node-id = dashes-work-too\n"
                                "jwt_issuer =\n");
    rc = load(&cfg, ING, "--config", good, NULL);
    ok(rc == 0, "file with comments and blank lines loads (%s)", err);
    ok(rc == 0 && cfg.http_port == 1234, "spaces around key and value trimmed");
    ok(rc == 0 && cfg.max_body == 8192, "key=value without spaces");
    ok(rc == 0 && strcmp(cfg.node_id, "dashes-work-too") == 0, "dashes accepted in a file");
    ok(rc == 0 && strcmp(cfg.jwt_issuer, "") == 0, "empty value");
    if (rc == 0)
        dm_config_fini(&cfg);

    const char *garbage = tmp_file("http_port = 1\n# fine\nthis line is garbage\n");
    rc = load(&cfg, ING, "--config", garbage, NULL);
    snprintf(where, sizeof(where), "%s:3", garbage);
    ok(rc == -1 && contains(err, where), "garbage line reported with file:line: %s", err);

    const char *bad = tmp_file("\nmax_body = 2g\n");
    rc = load(&cfg, ING, "--config", bad, NULL);
    snprintf(where, sizeof(where), "%s:2", bad);
    ok(rc == -1 && contains(err, where) && contains(err, "max_body") && contains(err, "1048576"),
       "bad value reported with file:line, key and bound: %s", err);

    const char *badbool = tmp_file("allow_anonymous = sure\n");
    rc = load(&cfg, BC, "--config", badbool, NULL);
    ok(rc == -1 && contains(err, "allow_anonymous") && contains(err, "sure"),
       "bad boolean in a file: %s", err);

    const char *missing = "/nonexistent-dir-for-danmaku-tests/cfg";
    rc = load(&cfg, ING, "--config", missing, NULL);
    ok(rc == -1 && contains(err, missing), "missing file is an error naming it: %s", err);

    setenv("DANMAKU_CONFIG", missing, 1);
    rc = load(&cfg, ING, NULL);
    ok(rc == -1 && contains(err, missing), "missing DANMAKU_CONFIG file is an error: %s", err);
    unsetenv("DANMAKU_CONFIG");

    remove_tmp_files();
}

/* ---- fini --------------------------------------------------------------- */

static void test_fini(void)
{
    struct dm_config cfg;
    int rc = load(&cfg, BOTH, "--node-id=n1", NULL);

    ok(rc == 0 && cfg.node_id != NULL, "loaded");
    dm_config_fini(&cfg);
    ok(cfg.node_id == NULL && cfg.log_level == NULL && cfg.kafka_brokers == NULL,
       "fini frees and clears every string");
    dm_config_fini(&cfg); /* idempotent: a second fini must not double free */
    ok(1, "second fini is harmless");

    rc = load(&cfg, BOTH, "--node-id=n2", NULL);
    ok(rc == 0 && strcmp(cfg.node_id, "n2") == 0, "the struct loads again after fini");
    dm_config_fini(&cfg);

    rc = load(&cfg, BOTH, "--node-id=n3", "--http-port=x", NULL);
    ok(rc == -1 && cfg.node_id == NULL && cfg.log_level == NULL,
       "a failed load frees what it had set (LSan checks the rest)");
}

/* ---- dm_config_node_name ------------------------------------------------ */

static void test_node_name(void)
{
    struct dm_config cfg;
    char name[64], want[300], host[256];
    int rc = load(&cfg, BOTH, "--node-id=bcast-7", NULL);

    dm_config_node_name(&cfg, name, sizeof(name));
    ok(rc == 0 && strcmp(name, "bcast-7") == 0, "node_id wins: %s", name);
    dm_config_node_name(&cfg, name, 4);
    ok(strcmp(name, "bca") == 0, "cut to the buffer: %s", name);
    dm_config_fini(&cfg);

    rc = load(&cfg, BOTH, NULL);
    dm_config_node_name(&cfg, name, sizeof(name));
    if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "node");
    host[sizeof(host) - 1] = '\0';
    snprintf(want, sizeof(want), "%s-%ld", host, (long)getpid());
    ok(rc == 0 && strncmp(name, want, sizeof(name) - 1) == 0,
       "empty node_id: <hostname>-<pid> = %s", name);
    dm_config_fini(&cfg);
}

int main(void)
{
    clear_env();
    subtest("defaults", test_defaults);
    subtest("precedence", test_precedence);
    subtest("flag forms", test_flag_forms);
    subtest("SIZE values", test_sizes);
    subtest("INT values", test_ints);
    subtest("BOOL values", test_bools);
    subtest("unknown keys and scope", test_unknown_and_scope);
    subtest("--help", test_help);
    subtest("log_level", test_log_level);
    subtest("config files", test_files);
    subtest("fini", test_fini);
    subtest("dm_config_node_name", test_node_name);
    free(help_text);
    return done_testing();
}
