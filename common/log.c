/* key=value logging to stderr with a swappable sink. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

enum dm_log_level dm_log_min_level = DM_LOG_INFO;

static const char *log_node = "-";
static dm_log_sink_cb log_sink;
static void *log_sink_arg;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void dm_log_set_node(const char *node)
{
    log_node = node;
}

int dm_log_parse_level(const char *name, enum dm_log_level *out)
{
    for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum dm_log_level)i;
            return 0;
        }
    }
    return -1;
}

void dm_log_set_sink(dm_log_sink_cb sink, void *arg)
{
    log_sink = sink;
    log_sink_arg = arg;
}

void dm_log_write(enum dm_log_level level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ lvl=%s node=%s ",
                          ts.tv_nsec / 1000000, level_names[level], log_node);
    /* snprintf returns the untruncated length: a node name longer than the
     * line (node_id is configurable) used to push n past the buffer, and
     * the vsnprintf below then wrote out of bounds. */
    if (n >= sizeof(line))
        n = sizeof(line) - 1;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);

    if (log_sink != NULL) {
        log_sink(level, line, log_sink_arg);
        return;
    }
    fprintf(stderr, "%s\n", line);
}

static void on_libevent_log(int severity, const char *msg)
{
    enum dm_log_level level = severity >= EVENT_LOG_ERR    ? DM_LOG_ERROR
                              : severity >= EVENT_LOG_WARN ? DM_LOG_WARN
                                                           : DM_LOG_DEBUG;
    DM_LOG(level, "msg=\"libevent\" detail=\"%s\"", msg);
}

void dm_log_route_libevent(void)
{
    event_set_log_callback(on_libevent_log);
}
