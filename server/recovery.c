/* Searching Kafka for the record of a dead attempt (recovery.h). */
#include "server/recovery.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/check.h"
#include "common/config.h"
#include "common/kafka.h"
#include "common/proto.h"
#include "common/util.h"

#define DM_RECOVERY_MAGIC 0x72637679u
#define SEARCH_MAX        8    /* searches running at once, per worker */
#define SEARCH_TIMEOUT_MS 5000 /* for one read of the partition (< DM_RECOVERY_MAX_MS) */
/* How far before the attempt's own clock the read starts: the record's
 * timestamp is the producer's (CreateTime, taken after the attempt's ts on
 * the same clock), or the broker's when the topic logs append time. */
#define CLOCK_SLACK_MS 10000
/* When the broker finds no record stamped since then (or cannot look times
 * up), the read covers this many records before the log end: a partition
 * takes far longer than a delivery timeout to grow by so many. */
#define SEARCH_FALLBACK_RECORDS 200000

struct search {
    struct dm_recovery *rc;
    int32_t partition;
    char room[DM_ROOM_MAX + 1];
    char id[DM_ID_LEN + 1];
    bool retract;
    int64_t since_ms;
    unsigned seq;
    dm_recovery_cb cb;
    void *arg;
    /* Written by the thread, read by the loop after the thread's
     * event_active (libevent's lock orders them). */
    enum dm_recovery_result res;
    int64_t offset;
    pthread_t thread;
    struct event *done;
    LIST_ENTRY(search) link;
};

struct dm_recovery {
    unsigned magic;
    struct event_base *base;
    const struct dm_config *cfg;
    LIST_HEAD(, search) running;
    int nrunning;
    unsigned seq;
};

struct dm_recovery *dm_recovery_new(struct event_base *base, const struct dm_config *cfg)
{
    struct dm_recovery *rc = dm_calloc(1, sizeof(*rc));
    rc->magic = DM_RECOVERY_MAGIC;
    rc->base = base;
    rc->cfg = cfg;
    LIST_INIT(&rc->running);
    return rc;
}

static bool visit(const rd_kafka_message_t *m, void *arg)
{
    struct search *s = arg;
    struct dm_record_info info;
    enum dm_record_type want = s->retract ? DM_RECORD_RETRACT : DM_RECORD_COMMENT;

    if (dm_record_read(m->payload, m->len, s->room, strlen(s->room), &info) == (int)want &&
        strcmp(info.id, s->id) == 0) {
        s->offset = m->offset;
        return false;
    }
    return true;
}

static void *run_search(void *arg)
{
    struct search *s = arg;
    const struct dm_config *cfg = s->rc->cfg;
    char group[96];

    snprintf(group, sizeof(group), "danmaku-recovery-%ld-%u", (long)getpid(), s->seq);
    struct dm_kafka_range range = {
        .brokers = cfg->kafka_brokers,
        .topic = cfg->kafka_topic,
        .group = group,
        .partition = s->partition,
        .from = -1,
        .from_ts_ms = s->since_ms > CLOCK_SLACK_MS ? s->since_ms - CLOCK_SLACK_MS : 0,
        .ts_fallback = SEARCH_FALLBACK_RECORDS,
        .until = -1,
        .key = s->room,
        .keylen = strlen(s->room),
        .timeout_ms = SEARCH_TIMEOUT_MS,
    };
    switch (dm_kafka_read_range(&range, visit, s)) {
    case DM_KAFKA_READ_STOPPED:
        s->res = DM_RECOVERY_FOUND;
        break;
    case DM_KAFKA_READ_DONE:
        s->res = DM_RECOVERY_ABSENT;
        break;
    default:
        s->res = DM_RECOVERY_FAILED;
        break;
    }
    event_active(s->done, EV_TIMEOUT, 1);
    return NULL;
}

static void finish(struct search *s)
{
    struct dm_recovery *rc = s->rc;

    pthread_join(s->thread, NULL);
    LIST_REMOVE(s, link);
    rc->nrunning--;
    event_free(s->done);
    s->cb(s->res, s->res == DM_RECOVERY_FOUND ? s->offset : -1, s->arg);
    free(s);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    finish(arg);
}

int dm_recovery_find(struct dm_recovery *rc, int32_t partition, const char *room, const char *id,
                     bool retract, int64_t since_ms, dm_recovery_cb cb, void *arg)
{
    DM_CHECK_OBJ(rc, DM_RECOVERY_MAGIC);
    if (rc->nrunning >= SEARCH_MAX)
        return -1;
    struct search *s = dm_calloc(1, sizeof(*s));
    s->rc = rc;
    s->partition = partition;
    snprintf(s->room, sizeof(s->room), "%s", room);
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->retract = retract;
    s->since_ms = since_ms;
    s->seq = ++rc->seq;
    s->cb = cb;
    s->arg = arg;
    s->res = DM_RECOVERY_FAILED;
    s->done = event_new(rc->base, -1, 0, on_done, s);
    DM_AN(s->done);
    LIST_INSERT_HEAD(&rc->running, s, link);
    rc->nrunning++;
    if (pthread_create(&s->thread, NULL, run_search, s) != 0)
        DM_PANIC("pthread_create failed");
    return 0;
}

void dm_recovery_free(struct dm_recovery *rc)
{
    if (rc == NULL)
        return;
    DM_CHECK_OBJ(rc, DM_RECOVERY_MAGIC);
    /* The loop no longer runs: join each search and answer it here. */
    while (!LIST_EMPTY(&rc->running))
        finish(LIST_FIRST(&rc->running));
    rc->magic = 0;
    free(rc);
}
