/* Idempotency-Key (DESIGN §4, §5): a retried POST with the same key from the
 * same user gets the first answer again and publishes nothing new, on any
 * ingest node. State in Redis, key <prefix>idem:<len(uid)>:<uid>:<key>:
 *   "P<fp> <owner> <deadline> <id> <partition> <ts>"
 *                   the request `owner` holds the key until `deadline`
 *                   (Redis clock, ms); the record of the attempt that may be
 *                   in Kafka is comment `id` (or the retract of it) for
 *                   `partition`, made at `ts`
 *   "D<fp> <json>"  it was accepted; json is its 201 body
 *   "U<fp>"         (earlier versions) its publish failed after the broker may
 *                   have written it: never published again under this key
 * where fp fingerprints the room and body, so the same key reused for
 * another comment is told apart (422). The holder's deadline covers the
 * longest publish; a claim still pending after it belongs to an attempt
 * that died with its node, and the next request with the key takes it over
 * (DM_IDEM_ORPHANED) to find out from Kafka whether that attempt's record
 * was written (recovery.h) before it answers or publishes. Every state
 * lives idempotency_ttl_ms. */
#ifndef DM_SERVER_IDEMPOTENCY_H
#define DM_SERVER_IDEMPOTENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/proto.h"

struct dm_redis;

#define DM_IDEM_KEY_MAX 128

/* A client's key: 1..DM_IDEM_KEY_MAX printable ASCII characters. */
bool dm_idem_key_valid(const char *key);

/* The fingerprint of a request: room and body. */
uint64_t dm_idem_fingerprint(const char *room, const void *body, size_t len);

/* The record an attempt publishes, as its claim names it. */
struct dm_idem_attempt {
    char id[DM_ID_LEN + 1];
    int32_t partition;
    int64_t ts; /* ms, the ingest node's clock */
};

/* A request's token in the claims it holds: 16 random hex digits. */
#define DM_IDEM_OWNER_LEN 16
void dm_idem_new_owner(char owner[DM_IDEM_OWNER_LEN + 1]);

enum dm_idem_state {
    DM_IDEM_NEW,         /* first use: publish, then dm_idem_finish or _abandon */
    DM_IDEM_REPLAY,      /* answered before: the stored 201 body is given */
    DM_IDEM_IN_PROGRESS, /* the first request is still being published */
    DM_IDEM_MISMATCH,    /* the key was used for another request */
    DM_IDEM_UNAVAILABLE, /* Redis did not answer: no guarantee possible */
    DM_IDEM_UNKNOWN,     /* "U<fp>", written by earlier versions after a publish whose
                          * outcome was unknown: not published again */
    DM_IDEM_ORPHANED,    /* the claim of a dead attempt is now ours: look for its record,
                          * then dm_idem_finish, or dm_idem_renew and publish, or
                          * dm_idem_release */
};

/* Fires once from the event loop. body (the stored 201 answer) is set for
 * DM_IDEM_REPLAY only, orphan (the dead attempt) for DM_IDEM_ORPHANED
 * only; both borrowed for the call. */
typedef void (*dm_idem_cb)(enum dm_idem_state state, const char *body, size_t len,
                           const struct dm_idem_attempt *orphan, void *arg);

/* Where a claim lives: strings borrowed for the call. */
struct dm_idem_ref {
    struct dm_redis *redis;
    const char *prefix, *uid, *key;
    uint64_t fp;
    const char *owner; /* dm_idem_new_owner's, one per request */
};

/* Claims the key for `mine`, atomically: exactly one concurrent caller gets
 * DM_IDEM_NEW (held for pending_ms) or DM_IDEM_ORPHANED (held for
 * recover_ms). The key's state lives ttl_ms. */
void dm_idem_begin(const struct dm_idem_ref *ref, const struct dm_idem_attempt *mine,
                   int64_t pending_ms, int64_t recover_ms, int64_t ttl_ms, dm_idem_cb cb,
                   void *arg);

/* Fires once, from the event loop: ok when Redis confirmed the change. */
typedef void (*dm_idem_done_cb)(bool ok, void *arg);

/* Stores the 201 body for ttl_ms, if the claim is still ours; cb fires
 * when Redis answered (the 201 is given only then, so that a retry right
 * after it finds the answer, not the claim). */
void dm_idem_finish(const struct dm_idem_ref *ref, const char *body, size_t len, int64_t ttl_ms,
                    dm_idem_done_cb cb, void *arg);

/* Drops the claim after a failed publish that certainly wrote nothing, so a
 * retry may publish (fire and forget). */
void dm_idem_abandon(const struct dm_idem_ref *ref);

/* After an orphan's record was found absent: points the claim at `mine`,
 * held for pending_ms. cb(true) once that is stored; only then may mine be
 * published (a claim naming the orphan would let a later recovery miss
 * it). */
void dm_idem_renew(const struct dm_idem_ref *ref, const struct dm_idem_attempt *mine,
                   int64_t pending_ms, dm_idem_done_cb cb, void *arg);

/* Gives up a claim taken over without an answer (Kafka could not be asked):
 * the next request with the key takes it over at once (fire and forget). */
void dm_idem_release(const struct dm_idem_ref *ref);

#endif
