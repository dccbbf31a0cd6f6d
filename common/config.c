/* Table-driven configuration: defaults < file < environment < argv. */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "common/log.h"

enum conf_type { T_STR, T_INT, T_SIZE, T_BOOL };

struct conf_key {
    const char *name;
    enum conf_type type;
    const char *def;
    int64_t min, max;
    unsigned scope;
    const char *help;
    size_t offset;
};

#define DM_CONF(name, type, def, min, max, scope, help)                                            \
    {#name, T_##type, def, min, max, DM_CONF_##scope, help, offsetof(struct dm_config, name)},
static const struct conf_key conf_keys[] = {
#include "common/config_table.h"
};
#undef DM_CONF

/* Keys whose values never appear in logs. */
static bool is_secret(const struct conf_key *k)
{
    return strcmp(k->name, "jwt_secret") == 0;
}

static const struct conf_key *find_key(const char *name, size_t len)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(conf_keys); i++) {
        const char *kn = conf_keys[i].name;
        if (strlen(kn) != len)
            continue;
        /* Accept both dashes (flags) and underscores (files). */
        size_t j;
        for (j = 0; j < len; j++) {
            char c = name[j] == '-' ? '_' : name[j];
            if (c != kn[j])
                break;
        }
        if (j == len)
            return &conf_keys[i];
    }
    return NULL;
}

static int parse_int(const char *s, int64_t *out, bool size_suffix)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s)
        return -1;
    if (size_suffix && *end != '\0') {
        int64_t mul = 1;
        switch (tolower((unsigned char)*end)) {
        case 'k':
            mul = 1024;
            break;
        case 'm':
            mul = 1024 * 1024;
            break;
        case 'g':
            mul = 1024 * 1024 * 1024;
            break;
        default:
            return -1;
        }
        end++;
        if (*end == 'b' || *end == 'B')
            end++;
        if (v > INT64_MAX / mul || v < INT64_MIN / mul)
            return -1;
        v *= mul;
    }
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < DM_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Stores one value, checking type and bounds; `origin` names where it came from. */
static int set_value(struct dm_config *cfg, const struct conf_key *k, const char *value,
                     const char *origin, char err[DM_ERRLEN])
{
    char *field = (char *)cfg + k->offset;
    int64_t v;
    bool b;

    switch (k->type) {
    case T_STR: {
        char **sp = (char **)(void *)field;
        free(*sp);
        *sp = dm_strdup(value);
        return 0;
    }
    case T_INT:
    case T_SIZE:
        if (parse_int(value, &v, k->type == T_SIZE) < 0) {
            snprintf(err, DM_ERRLEN, "%s: %s: not %s: \"%s\"", origin, k->name,
                     k->type == T_SIZE ? "a size (like 64k, 8m)" : "an integer", value);
            return -1;
        }
        if (v < k->min || v > k->max) {
            snprintf(err, DM_ERRLEN, "%s: %s = %lld is outside [%lld, %lld]", origin, k->name,
                     (long long)v, (long long)k->min, (long long)k->max);
            return -1;
        }
        memcpy(field, &v, sizeof(v));
        return 0;
    case T_BOOL:
        if (parse_bool(value, &b) < 0) {
            snprintf(err, DM_ERRLEN, "%s: %s: not a boolean: \"%s\"", origin, k->name, value);
            return -1;
        }
        memcpy(field, &b, sizeof(b));
        return 0;
    }
    DM_PANIC("unknown config type");
}

static int load_file(struct dm_config *cfg, unsigned scope, const char *path, char err[DM_ERRLEN])
{
    FILE *f = fopen(path, "r");
    char line[4096], origin[DM_ERRLEN / 2];
    int lineno = 0, rc = 0;

    if (f == NULL) {
        int e = errno;
        snprintf(err, DM_ERRLEN, "config file %s: %s", path, strerror(e));
        return -1;
    }
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *s = dm_str_trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        snprintf(origin, sizeof(origin), "%s:%d", path, lineno);
        if (eq == NULL) {
            snprintf(err, DM_ERRLEN, "%s: expected key = value", origin);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = dm_str_trim(s), *value = dm_str_trim(eq + 1);
        const struct conf_key *k = find_key(key, strlen(key));
        if (k == NULL) {
            snprintf(err, DM_ERRLEN, "%s: unknown key \"%s\"", origin, key);
            rc = -1;
        } else if (k->scope & scope) {
            rc = set_value(cfg, k, value, origin, err);
        }
    }
    fclose(f);
    return rc;
}

static void env_name(const struct conf_key *k, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "DANMAKU_");
    for (const char *p = k->name; *p != '\0' && n + 1 < outlen; p++)
        out[n++] = (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

static void flag_name(const struct conf_key *k, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "--");
    for (const char *p = k->name; *p != '\0' && n + 1 < outlen; p++)
        out[n++] = *p == '_' ? '-' : *p;
    out[n] = '\0';
}

void dm_config_usage(FILE *out, unsigned scope, const char *prog)
{
    char flag[64], env[64];

    fprintf(out,
            "usage: %s [--config FILE] [--KEY=VALUE ...]\n\n"
            "Every key can also be set as an environment variable or in the --config file\n"
            "(`key = value` lines). Precedence: default < file < environment < flag.\n\n",
            prog);
    for (size_t i = 0; i < DM_ARRAY_LEN(conf_keys); i++) {
        const struct conf_key *k = &conf_keys[i];
        if (!(k->scope & scope))
            continue;
        flag_name(k, flag, sizeof(flag));
        env_name(k, env, sizeof(env));
        fprintf(out, "  %-28s %s\n  %-28s env %s, default \"%s\"", flag, k->help, "", env, k->def);
        if (k->type == T_INT || k->type == T_SIZE)
            fprintf(out, ", range %lld..%lld", (long long)k->min, (long long)k->max);
        fprintf(out, "\n");
    }
}

int dm_config_load(struct dm_config *cfg, unsigned scope, const char *prog, int argc, char **argv,
                   FILE *out, char err[DM_ERRLEN])
{
    const char *file = getenv("DANMAKU_CONFIG");
    char name[64];

    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < DM_ARRAY_LEN(conf_keys); i++) {
        if (set_value(cfg, &conf_keys[i], conf_keys[i].def, "default", err) < 0)
            DM_PANIC("bad default in config_table.h");
    }

    /* First pass over argv: --help and --config, which must act before the rest. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            dm_config_usage(out, scope, prog);
            dm_config_fini(cfg);
            return 1;
        }
        if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[++i];
    }
    if (file != NULL && *file != '\0' && load_file(cfg, scope, file, err) < 0)
        goto fail;

    for (size_t i = 0; i < DM_ARRAY_LEN(conf_keys); i++) {
        const struct conf_key *k = &conf_keys[i];
        if (!(k->scope & scope))
            continue;
        env_name(k, name, sizeof(name));
        const char *v = getenv(name);
        if (v != NULL && set_value(cfg, k, v, name, err) < 0)
            goto fail;
    }

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value;
        size_t len;
        if (strcmp(arg, "--config") == 0) {
            /* A trailing --config used to be ignored silently, so the
             * defaults ran instead of the file the operator meant. */
            if (++i >= argc) {
                snprintf(err, DM_ERRLEN, "option \"--config\" needs a value");
                goto fail;
            }
            continue;
        }
        if (strncmp(arg, "--config=", 9) == 0)
            continue;
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, DM_ERRLEN, "unexpected argument \"%s\" (see --help)", arg);
            goto fail;
        }
        arg += 2;
        const char *eq = strchr(arg, '=');
        len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        const struct conf_key *k = find_key(arg, len);
        if (k == NULL || !(k->scope & scope)) {
            snprintf(err, DM_ERRLEN, "unknown option \"--%.*s\" (see --help)", (int)len, arg);
            goto fail;
        }
        if (eq != NULL) {
            value = eq + 1;
        } else if (k->type == T_BOOL) {
            /* `--flag` alone means true; `--flag false` works too. */
            bool ignored;
            value = i + 1 < argc && parse_bool(argv[i + 1], &ignored) == 0 ? argv[++i] : "true";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            flag_name(k, name, sizeof(name));
            snprintf(err, DM_ERRLEN, "option \"%s\" needs a value", name);
            goto fail;
        }
        flag_name(k, name, sizeof(name));
        if (set_value(cfg, k, value, name, err) < 0)
            goto fail;
    }

    enum dm_log_level level;
    if (dm_log_parse_level(cfg->log_level, &level) < 0) {
        snprintf(err, DM_ERRLEN, "log_level: unknown level \"%s\"", cfg->log_level);
        goto fail;
    }
    dm_log_min_level = level;
    return 0;

fail:
    dm_config_fini(cfg);
    return -1;
}

void dm_config_fini(struct dm_config *cfg)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(conf_keys); i++) {
        if (conf_keys[i].type != T_STR)
            continue;
        char **sp = (char **)(void *)((char *)cfg + conf_keys[i].offset);
        free(*sp);
        *sp = NULL;
    }
}

void dm_config_log(const struct dm_config *cfg, unsigned scope)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(conf_keys); i++) {
        const struct conf_key *k = &conf_keys[i];
        const char *field = (const char *)cfg + k->offset;
        int64_t v;
        bool b;
        if (!(k->scope & scope))
            continue;
        switch (k->type) {
        case T_STR: {
            const char *s = *(char *const *)(const void *)field;
            DM_LOG(DM_LOG_DEBUG, "msg=\"config\" key=%s value=\"%s\"", k->name,
                   is_secret(k) && *s != '\0' ? "(redacted)" : s);
            break;
        }
        case T_INT:
        case T_SIZE:
            memcpy(&v, field, sizeof(v));
            DM_LOG(DM_LOG_DEBUG, "msg=\"config\" key=%s value=%lld", k->name, (long long)v);
            break;
        case T_BOOL:
            memcpy(&b, field, sizeof(b));
            DM_LOG(DM_LOG_DEBUG, "msg=\"config\" key=%s value=%s", k->name, b ? "true" : "false");
            break;
        }
    }
}

void dm_config_node_name(const struct dm_config *cfg, char *out, size_t outlen)
{
    char host[256];

    if (*cfg->node_id != '\0') {
        snprintf(out, outlen, "%s", cfg->node_id);
        return;
    }
    if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "node");
    host[sizeof(host) - 1] = '\0';
    snprintf(out, outlen, "%.200s-%ld", host, (long)getpid());
}
