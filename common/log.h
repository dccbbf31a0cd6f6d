/* Logging: one key=value line per event on stderr.
 *
 *   ts=2026-11-25T17:20:00.123Z lvl=warn node=broadcast msg="slow consumer" conn=42
 *
 * DM_LOG skips disabled levels before evaluating its arguments. The sink is
 * swappable so tests can capture lines. This is the only global in common/. */
#ifndef DM_COMMON_LOG_H
#define DM_COMMON_LOG_H

#include <stdbool.h>

enum dm_log_level {
    DM_LOG_DEBUG = 0,
    DM_LOG_INFO,
    DM_LOG_WARN,
    DM_LOG_ERROR,
};

/* Receives one formatted line without the trailing newline. */
typedef void (*dm_log_sink_cb)(enum dm_log_level level, const char *line, void *arg);

extern enum dm_log_level dm_log_min_level;

#define DM_LOG(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) >= dm_log_min_level)                                                           \
            dm_log_write((level), __VA_ARGS__);                                                    \
    } while (0)

/* Sets the node name printed in every line (borrowed; must outlive logging). */
void dm_log_set_node(const char *node);

/* Parses "debug|info|warn|error"; returns -1 on an unknown name. */
int dm_log_parse_level(const char *name, enum dm_log_level *out);

/* Replaces the sink; NULL restores stderr. */
void dm_log_set_sink(dm_log_sink_cb sink, void *arg);

/* Writes one line: `msg` is the printf-style remainder after the fixed
 * fields; by convention it starts with msg="..." followed by key=value pairs. */
void dm_log_write(enum dm_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Routes libevent's internal messages into this log. */
void dm_log_route_libevent(void);

#endif
