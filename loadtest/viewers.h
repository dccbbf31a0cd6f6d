/* The simulated viewers: WebSocket clients spread over worker threads (one
 * event loop each), several target nodes and local source addresses. Each
 * viewer watches one room, answers pings, measures the latency of every
 * comment from its scheduled send time, and keeps the exact per-room
 * accounting (ledger.h). Slow viewers stop reading after the warm-up; in a
 * reconnect storm each viewer drops its connection every so often and
 * resumes with its last (epoch, offset). */
#ifndef DM_LOADTEST_VIEWERS_H
#define DM_LOADTEST_VIEWERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "loadtest/hist.h"
#include "loadtest/ledger.h"

struct lt_viewers;

/* One worker thread's live figures: its latency histogram and counters,
 * updated with relaxed atomics, so another thread — or another process,
 * when they live in shared memory — can read them while it runs. */
struct lt_worker_shm;

struct lt_viewers_config {
    const char *const *targets; /* "host:port" of broadcast nodes (numeric host) */
    size_t ntargets;
    const char *const *room_names; /* nrooms names, borrowed */
    size_t nrooms;
    size_t viewers;
    double hot_share;    /* share of viewers in room 0 */
    double connect_rate; /* per second, all threads */
    int threads;
    int source_addrs; /* 127.0.0.1 .. 127.0.0.N */
    double slow_share;
    double reconnect_every; /* seconds, 0: never */
    /* Several processes: this one runs viewers first, first+stride, ... of
     * the `viewers` in total (the global index decides room, target and
     * slowness, so the split does not change the load). 0/1 for all. */
    size_t first, stride;
    /* threads entries for the workers' figures (shared memory when several
     * processes report to one); NULL: allocated here. */
    struct lt_worker_shm *shm;
};

/* Close codes counted one by one; everything else is "other". */
#define LT_CLOSE_CODES(X)                                                                          \
    X(1000) X(1001) X(1002) X(1003) X(1006) X(1007) X(1008) X(1009) X(1011) X(1012) X(4008)

struct lt_viewer_stats {
    uint64_t open;   /* connections open now */
    uint64_t joined; /* viewers that got `joined` at least once */
    uint64_t connect_errors;
    uint64_t handshake_errors;
    uint64_t delivered; /* comments received in the measured window */
    uint64_t messages;  /* all frames received */
    uint64_t reconnects;
    uint64_t recovered; /* resumes answered recovered:true */
    uint64_t not_recovered;
    uint64_t server_errors; /* {"op":"error"} received */
    uint64_t closes_other;
#define LT_CLOSE_FIELD(code) uint64_t closes_##code;
    LT_CLOSE_CODES(LT_CLOSE_FIELD)
#undef LT_CLOSE_FIELD
};

struct lt_worker_shm {
    struct lt_hist latency;
    struct lt_viewer_stats stats;
};

/* Sums n workers' figures (safe while they run); lat may be NULL. */
void lt_viewers_sum(const struct lt_worker_shm *w, size_t n, struct lt_viewer_stats *out,
                    struct lt_hist *lat);

/* Starts the worker threads; connections open at connect_rate. cfg and
 * the ledger are borrowed until lt_viewers_free. NULL with err. */
struct lt_viewers *lt_viewers_start(const struct lt_viewers_config *cfg,
                                    const struct lt_ledger *ledger, char err[DM_ERRLEN]);

/* Latencies of comments scheduled in [from_us, to_us) are recorded (Unix µs;
 * set from the main thread when the warm-up ends and when sending stops). */
void lt_viewers_set_window(struct lt_viewers *v, int64_t from_us, int64_t to_us);

/* Slow viewers stop reading from now on. */
void lt_viewers_start_slow(struct lt_viewers *v);

/* Sums the workers' counters (safe while running). */
void lt_viewers_stats(struct lt_viewers *v, struct lt_viewer_stats *out);

/* Adds every worker's latency histogram into dst (safe while running). */
void lt_viewers_merge_latency(struct lt_viewers *v, struct lt_hist *dst);

/* Closes every connection and joins the threads. */
void lt_viewers_stop(struct lt_viewers *v);

/* After lt_viewers_stop: the accounting of every viewer's room. */
void lt_viewers_account(struct lt_viewers *v, const struct lt_ledger *ledger,
                        struct lt_account *acc);

void lt_viewers_free(struct lt_viewers *v);

/* Parses the comment text the publisher writes: "lt <seq> <sched_us> ...".
 * Exposed for tests. Returns false when the text is not one of ours. */
bool lt_parse_text(const char *text, size_t len, uint32_t *seq, int64_t *sched_us);

/* Extracts offset, seq and scheduled time from a danmaku frame payload
 * without a JSON parse. Exposed for tests. */
bool lt_parse_danmaku(const char *json, size_t len, int64_t *offset, uint32_t *seq,
                      int64_t *sched_us);

#endif
