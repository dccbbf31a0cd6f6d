/* Viewers in this process or in child processes sharing their figures. */
#include "loadtest/group.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/check.h"
#include "common/log.h"

#define POLL_MS 20

/* The shared page(s): orders from the parent, results from the children. */
struct control {
    int64_t window_from, window_to; /* atomics */
    int slow, stop;                 /* atomics, 0 -> 1 */
};

struct child {
    pid_t pid;
    int ledger_fd; /* parent's write end */
};

struct slot {
    struct lt_account acc;
    int done;
};

struct lt_group {
    struct lt_viewers_config cfg;
    int procs;
    struct lt_viewers *local; /* procs == 1 */
    /* procs > 1 */
    void *map;
    size_t map_len;
    struct control *ctl;
    struct slot *slots;         /* procs */
    struct lt_worker_shm *figs; /* procs * threads */
    struct child *children;
};

/* ---- the child side ---- */

struct child_run {
    struct lt_group *g;
    struct lt_viewers *v;
    struct event_base *base;
    int64_t from, to;
    int slow_done;
};

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct child_run *c = arg;
    struct control *ctl = c->g->ctl;
    DM_UNUSED(fd);
    DM_UNUSED(what);

    int64_t from = __atomic_load_n(&ctl->window_from, __ATOMIC_ACQUIRE);
    int64_t to = __atomic_load_n(&ctl->window_to, __ATOMIC_ACQUIRE);
    if (from != c->from || to != c->to) {
        c->from = from;
        c->to = to;
        lt_viewers_set_window(c->v, from, to);
    }
    if (!c->slow_done && __atomic_load_n(&ctl->slow, __ATOMIC_ACQUIRE)) {
        c->slow_done = 1;
        lt_viewers_start_slow(c->v);
    }
    if (__atomic_load_n(&ctl->stop, __ATOMIC_ACQUIRE) || getppid() == 1)
        event_base_loopbreak(c->base);
}

static int read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The ledger as the parent sent it: per room, a count then the offsets. */
static struct lt_ledger *read_ledger(int fd, size_t nrooms)
{
    struct lt_ledger *l = lt_ledger_new(nrooms);
    for (size_t room = 0; room < nrooms; room++) {
        uint32_t n;
        if (read_full(fd, &n, sizeof(n)) < 0)
            goto fail;
        for (uint32_t i = 0; i < n; i++) {
            int64_t off;
            if (read_full(fd, &off, sizeof(off)) < 0)
                goto fail;
            uint32_t seq = lt_ledger_publish(l, room, 0);
            if (off != LT_NO_OFFSET)
                lt_ledger_acked(l, room, seq, off);
            else
                lt_ledger_failed(l, room, seq);
        }
    }
    return l;
fail:
    lt_ledger_free(l);
    return NULL;
}

static void run_child(struct lt_group *g, int k, int ledger_fd)
{
    struct child_run c = {.g = g};
    struct lt_viewers_config cfg = g->cfg;
    char err[DM_ERRLEN];
    struct timeval tv = dm_timeval_ms(POLL_MS);
    int status = 1;

    cfg.first = (size_t)k;
    cfg.stride = (size_t)g->procs;
    cfg.connect_rate = g->cfg.connect_rate / g->procs;
    cfg.shm = &g->figs[(size_t)k * (size_t)g->cfg.threads];
    c.base = event_base_new();
    DM_AN(c.base);
    c.v = lt_viewers_start(&cfg, NULL, err);
    if (c.v == NULL) {
        DM_LOG(DM_LOG_ERROR, "msg=\"viewer process failed\" proc=%d detail=\"%s\"", k, err);
        _exit(1);
    }
    struct event *poll = event_new(c.base, -1, EV_PERSIST, on_poll, &c);
    DM_AN(poll);
    event_add(poll, &tv);
    event_base_dispatch(c.base);
    event_free(poll);
    lt_viewers_stop(c.v);

    struct lt_ledger *l = read_ledger(ledger_fd, g->cfg.nrooms);
    if (l != NULL) {
        lt_viewers_account(c.v, l, &g->slots[k].acc);
        __atomic_store_n(&g->slots[k].done, 1, __ATOMIC_RELEASE);
        lt_ledger_free(l);
        status = 0;
    }
    lt_viewers_free(c.v);
    event_base_free(c.base);
    _exit(status);
}

/* ---- the parent side ---- */

struct lt_group *lt_group_start(const struct lt_viewers_config *cfg, int procs, char err[DM_ERRLEN])
{
    struct lt_group *g = dm_calloc(1, sizeof(*g));
    g->cfg = *cfg;
    g->procs = procs < 1 ? 1 : procs;

    if (g->procs == 1) {
        g->local = lt_viewers_start(cfg, NULL, err);
        if (g->local == NULL) {
            free(g);
            return NULL;
        }
        return g;
    }

    size_t nfig = (size_t)g->procs * (size_t)cfg->threads;
    g->map_len = sizeof(struct control) + (size_t)g->procs * sizeof(struct slot) +
                 nfig * sizeof(struct lt_worker_shm) + 64;
    g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED) {
        int e = errno;
        snprintf(err, DM_ERRLEN, "shared memory for %d processes: %s", g->procs, strerror(e));
        free(g);
        return NULL;
    }
    g->ctl = g->map;
    g->ctl->window_from = g->ctl->window_to = INT64_MAX;
    g->slots = (struct slot *)(void *)(g->ctl + 1);
    /* The histograms want 8-byte alignment; the slots keep it. */
    g->figs = (struct lt_worker_shm *)(void *)(g->slots + g->procs);
    for (size_t i = 0; i < nfig; i++)
        lt_hist_init(&g->figs[i].latency);

    g->children = dm_calloc((size_t)g->procs, sizeof(*g->children));
    for (int k = 0; k < g->procs; k++) {
        int fds[2];
        if (pipe(fds) < 0) {
            int e = errno;
            snprintf(err, DM_ERRLEN, "pipe: %s", strerror(e));
            goto fail;
        }
        pid_t pid = fork();
        if (pid < 0) {
            int e = errno;
            close(fds[0]);
            close(fds[1]);
            snprintf(err, DM_ERRLEN, "fork: %s", strerror(e));
            goto fail;
        }
        if (pid == 0) {
            close(fds[1]);
            for (int j = 0; j < k; j++)
                close(g->children[j].ledger_fd);
            run_child(g, k, fds[0]);
        }
        close(fds[0]);
        g->children[k].pid = pid;
        g->children[k].ledger_fd = fds[1];
    }
    return g;

fail:
    __atomic_store_n(&g->ctl->stop, 1, __ATOMIC_RELEASE);
    lt_group_free(g);
    return NULL;
}

void lt_group_set_window(struct lt_group *g, int64_t from_us, int64_t to_us)
{
    if (g->local != NULL) {
        lt_viewers_set_window(g->local, from_us, to_us);
        return;
    }
    __atomic_store_n(&g->ctl->window_from, from_us, __ATOMIC_RELEASE);
    __atomic_store_n(&g->ctl->window_to, to_us, __ATOMIC_RELEASE);
}

void lt_group_start_slow(struct lt_group *g)
{
    if (g->local != NULL)
        lt_viewers_start_slow(g->local);
    else
        __atomic_store_n(&g->ctl->slow, 1, __ATOMIC_RELEASE);
}

void lt_group_stats(struct lt_group *g, struct lt_viewer_stats *out, struct lt_hist *lat)
{
    if (g->local != NULL) {
        lt_viewers_stats(g->local, out);
        if (lat != NULL)
            lt_viewers_merge_latency(g->local, lat);
        return;
    }
    lt_viewers_sum(g->figs, (size_t)g->procs * (size_t)g->cfg.threads, out, lat);
}

static int send_ledger(int fd, const struct lt_ledger *l)
{
    for (size_t room = 0; room < lt_ledger_rooms(l); room++) {
        uint32_t n = lt_ledger_count(l, room);
        if (write_full(fd, &n, sizeof(n)) < 0)
            return -1;
        for (uint32_t i = 0; i < n; i++) {
            int64_t off = lt_ledger_offset(l, room, i);
            if (write_full(fd, &off, sizeof(off)) < 0)
                return -1;
        }
    }
    return 0;
}

int lt_group_finish(struct lt_group *g, const struct lt_ledger *ledger, struct lt_account *acc,
                    char err[DM_ERRLEN])
{
    int rc = 0;

    if (g->local != NULL) {
        lt_viewers_stop(g->local);
        lt_viewers_account(g->local, ledger, acc);
        return 0;
    }
    __atomic_store_n(&g->ctl->stop, 1, __ATOMIC_RELEASE);
    for (int k = 0; k < g->procs; k++) {
        if (send_ledger(g->children[k].ledger_fd, ledger) < 0) {
            snprintf(err, DM_ERRLEN, "viewer process %d went away", k);
            rc = -1;
        }
        close(g->children[k].ledger_fd);
        g->children[k].ledger_fd = -1;
    }
    for (int k = 0; k < g->procs; k++) {
        int status;
        while (waitpid(g->children[k].pid, &status, 0) < 0 && errno == EINTR)
            ;
        g->children[k].pid = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
            !__atomic_load_n(&g->slots[k].done, __ATOMIC_ACQUIRE)) {
            snprintf(err, DM_ERRLEN, "viewer process %d failed (status %d)", k, status);
            rc = -1;
            continue;
        }
        const struct lt_account *a = &g->slots[k].acc;
        acc->expected += a->expected;
        acc->delivered += a->delivered;
        acc->lost += a->lost;
        acc->duplicated += a->duplicated;
        acc->out_of_order += a->out_of_order;
        acc->skipped += a->skipped;
        acc->unrecoverable += a->unrecoverable;
        acc->unexpected += a->unexpected;
    }
    return rc;
}

void lt_group_free(struct lt_group *g)
{
    if (g == NULL)
        return;
    lt_viewers_free(g->local);
    for (int k = 0; g->children != NULL && k < g->procs; k++) {
        if (g->children[k].ledger_fd > 0)
            close(g->children[k].ledger_fd);
        if (g->children[k].pid > 0) {
            kill(g->children[k].pid, SIGKILL);
            waitpid(g->children[k].pid, NULL, 0);
        }
    }
    free(g->children);
    if (g->map != NULL && g->map != MAP_FAILED)
        munmap(g->map, g->map_len);
    free(g);
}
