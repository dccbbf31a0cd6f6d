/* danmaku-loadtest options: one table (options_table.h) of flags, and the
 * named scenarios that preset them. Precedence: defaults < scenario < flags. */
#ifndef DM_LOADTEST_OPTIONS_H
#define DM_LOADTEST_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/util.h"

#define LT_OPT_T_STR  char *
#define LT_OPT_T_INT  int64_t
#define LT_OPT_T_REAL double
#define LT_OPT_T_BOOL bool

struct lt_options {
#define LT_OPT(name, type, def, help) LT_OPT_T_##type name;
#include "loadtest/options_table.h"
#undef LT_OPT
};

/* Parses argv. Returns 0, 1 when --help or --list-scenarios was printed to
 * out, -1 with err. Strings are owned by o: lt_options_fini. */
int lt_options_parse(struct lt_options *o, int argc, char **argv, FILE *out, char err[DM_ERRLEN]);
void lt_options_fini(struct lt_options *o);

/* Calls fn(name, value-as-text) for every option, for the report. */
void lt_options_foreach(const struct lt_options *o,
                        void (*fn)(const char *name, const char *value, bool is_number, void *arg),
                        void *arg);

#endif
