/* Idempotency-Key (DESIGN §4, §5): a retried POST with the same key from the
 * same user gets the first answer again and publishes nothing new, on any
 * ingest node. State in Redis, key <prefix>idem:<len(uid)>:<uid>:<key>:
 *   "P<fp>"         a request with this key is being published
 *   "D<fp> <json>"  it was accepted; json is its 201 body
 *   "U<fp>"         its publish failed after the broker may have written it:
 *                   never published again under this key
 * where fp fingerprints the room and body, so the same key reused for
 * another comment is told apart (422). The pending mark lives only as long
 * as a publish can take; the answer for idempotency_ttl_ms. */
#ifndef DM_SERVER_IDEMPOTENCY_H
#define DM_SERVER_IDEMPOTENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dm_redis;

#define DM_IDEM_KEY_MAX 128

/* A client's key: 1..DM_IDEM_KEY_MAX printable ASCII characters. */
bool dm_idem_key_valid(const char *key);

/* The fingerprint of a request: room and body. */
uint64_t dm_idem_fingerprint(const char *room, const void *body, size_t len);

enum dm_idem_state {
    DM_IDEM_NEW,         /* first use: publish, then dm_idem_finish or _abandon */
    DM_IDEM_REPLAY,      /* answered before: the stored 201 body is given */
    DM_IDEM_IN_PROGRESS, /* the first request is still being published */
    DM_IDEM_MISMATCH,    /* the key was used for another request */
    DM_IDEM_UNAVAILABLE, /* Redis did not answer: no guarantee possible */
    DM_IDEM_UNKNOWN,     /* an earlier attempt may be in Kafka: not published again */
};

/* Fires once from the event loop; body (the stored 201 answer) is set for
 * DM_IDEM_REPLAY only and borrowed for the call. */
typedef void (*dm_idem_cb)(enum dm_idem_state state, const char *body, size_t len, void *arg);

/* Claims (uid, key) for a request with fingerprint fp, atomically: exactly
 * one concurrent caller gets DM_IDEM_NEW. The claim expires after
 * pending_ms. Strings are borrowed. */
void dm_idem_begin(struct dm_redis *r, const char *prefix, const char *uid, const char *key,
                   uint64_t fp, int64_t pending_ms, dm_idem_cb cb, void *arg);

/* Stores the 201 body for ttl_ms, if the claim is still ours (fire and
 * forget). */
void dm_idem_finish(struct dm_redis *r, const char *prefix, const char *uid, const char *key,
                    uint64_t fp, const char *body, size_t len, int64_t ttl_ms);

/* Marks the claim "outcome unknown" for ttl_ms, if it is still ours (fire
 * and forget): the publish failed, but the record may be in Kafka, so a
 * retry must not publish it a second time. */
void dm_idem_unknown(struct dm_redis *r, const char *prefix, const char *uid, const char *key,
                     uint64_t fp, int64_t ttl_ms);

/* Drops the claim after a failed publish that certainly wrote nothing, so a
 * retry may publish (fire and forget). */
void dm_idem_abandon(struct dm_redis *r, const char *prefix, const char *uid, const char *key,
                     uint64_t fp);

#endif
