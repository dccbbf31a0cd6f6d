/* Recovery of an Idempotency-Key whose first attempt died with its ingest
 * node: was that attempt's record written to Kafka? The answer comes from
 * Kafka itself: the partition is read from the attempt's time up to the log
 * end, by a short-lived consumer on a thread of its own (the read blocks),
 * and the result is handed back to the worker's event loop. */
#ifndef DM_SERVER_RECOVERY_H
#define DM_SERVER_RECOVERY_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct dm_config;
struct dm_recovery;

/* The longest a search takes, reading and tearing down its client: how
 * long a request that took over a claim holds it. */
#define DM_RECOVERY_MAX_MS 10000

enum dm_recovery_result {
    DM_RECOVERY_FOUND,  /* the record is in Kafka at the given offset */
    DM_RECOVERY_ABSENT, /* read up to the log end: it is not there */
    DM_RECOVERY_FAILED, /* Kafka did not answer, or the search was cut short */
};

/* Fires once, from the event loop (or from dm_recovery_free). offset is
 * set for DM_RECOVERY_FOUND only. */
typedef void (*dm_recovery_cb)(enum dm_recovery_result res, int64_t offset, void *arg);

/* base (whose loop runs the callbacks) and cfg are borrowed. libevent's
 * pthread locking must be on (evthread_use_pthreads) before base was made:
 * the searching threads wake the loop with event_active(). */
struct dm_recovery *dm_recovery_new(struct event_base *base, const struct dm_config *cfg);

/* Waits for the searches still running (each ends within its timeout),
 * fires their callbacks, then frees everything. NULL is a no-op. */
void dm_recovery_free(struct dm_recovery *rc);

/* Looks in partition for the record of room whose id is id (a retract of
 * id when retract is set), stamped at or after since_ms. Strings are
 * copied. Returns 0 when started (cb fires later), -1 when too many
 * searches are running already (cb never fires). */
int dm_recovery_find(struct dm_recovery *rc, int32_t partition, const char *room, const char *id,
                     bool retract, int64_t since_ms, dm_recovery_cb cb, void *arg);

#endif
