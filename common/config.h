/* Configuration: one table (config_table.h) generates the fields, defaults,
 * parsing, bounds and --help. Load once at start, then pass
 * `const struct dm_config *` around. */
#ifndef DM_COMMON_CONFIG_H
#define DM_COMMON_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/util.h"

/* Which binary reads a key. */
enum dm_conf_scope {
    DM_CONF_I = 1,  /* ingest */
    DM_CONF_B = 2,  /* broadcast */
    DM_CONF_IB = 3, /* both */
};

#define DM_CONF_T_STR  char *
#define DM_CONF_T_INT  int64_t
#define DM_CONF_T_SIZE int64_t
#define DM_CONF_T_BOOL bool

struct dm_config {
#define DM_CONF(name, type, def, min, max, scope, help) DM_CONF_T_##type name;
#include "common/config_table.h"
#undef DM_CONF
};

/* Loads defaults, then the file named by --config (or DANMAKU_CONFIG), then
 * DANMAKU_* environment variables, then argv, validating every value.
 * Keys outside `scope` are rejected on the command line and ignored elsewhere.
 * Returns 0 on success, 1 when --help was printed to `out`, -1 with `err`
 * naming the key and the bound. Strings are owned by cfg: dm_config_fini. */
int dm_config_load(struct dm_config *cfg, unsigned scope, const char *prog, int argc, char **argv,
                   FILE *out, char err[DM_ERRLEN]);

/* Frees the strings; the struct may be loaded again afterwards. */
void dm_config_fini(struct dm_config *cfg);

/* Prints the keys of `scope` with defaults, environment names and help. */
void dm_config_usage(FILE *out, unsigned scope, const char *prog);

/* The node's name: cfg->node_id, or "<hostname>-<pid>" when empty (unique
 * per process on a host, and per pod on Kubernetes). */
void dm_config_node_name(const struct dm_config *cfg, char *out, size_t outlen);

/* Logs every key of `scope` at debug, secrets redacted. */
void dm_config_log(const struct dm_config *cfg, unsigned scope);

#endif
