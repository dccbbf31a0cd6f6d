/* Admission control for comments (DESIGN §3): a per-user and a per-room
 * rate limit (GCRA), the room modes slow mode and unique chat, and mutes,
 * decided for each comment by one atomic Lua call in Redis. When Redis does
 * not answer in time the node decides alone with a bounded local limiter.
 *
 * Redis keys (P = cfg->redis_prefix; {room} is the room id in braces, so a
 * room id, which may hold ':', can never run into the uid after it):
 *
 *   P rl:user:<uid>           string  GCRA TAT of the user (µs); PX until the TAT passes
 *   P rl:room:{room}          string  GCRA TAT of the room (µs); PX until the TAT passes
 *   P room:{room}:modes       hash    slow, unique (seconds; absent or 0: off), written by
 *                                     dm_ratelimit_set_modes; PX DM_RATELIMIT_MODES_TTL_S,
 *                                     renewed by comments once under half of it
 *   P mute:{room}:<uid>       string  present while the user is muted; PX the mute
 *   P rl:slow:{room}:<uid>    string  time of the user's last admitted comment in the room
 *                                     (µs; slow mode only); PX the slow-mode interval
 *   P rl:uniq:{room}:<uid>    zset    hashes of the user's recent texts in the room, scored
 *                                     by admission time (µs; unique mode only); trimmed to
 *                                     the unique window and DM_RATELIMIT_UNIQUE_MAX members;
 *                                     PX the unique window
 *
 * The script reads everything first and writes only when the comment is
 * admitted: a comment refused by one limit never counts against another.
 * It keeps time with Redis TIME, so every ingest node shares one clock and a
 * node with a skewed clock cannot push other nodes' users into the future
 * (the script also takes an explicit time, which the tests use). The keys
 * span several hash slots: one Redis, not Redis Cluster (as common/online.c).
 *
 * Rates: GCRA with emission interval T = 1 s / rate (whole µs) and burst B:
 * B comments at once, then one every T. E.g. rate 2, burst 3: three
 * admitted at t=0, the fourth refused with retry_after 500 ms, one more at
 * t=500 ms. The user limit counts a user's comments over all rooms. Slow
 * mode S: a user's comments in the room are at least S seconds apart.
 * Unique mode N: the same normalized text (dm_ratelimit_text_hash) from the
 * same user in the room is refused for N seconds after it was admitted.
 *
 * Order when several checks fail: MUTED, DUPLICATE, SLOW_MODE, USER_RATE,
 * ROOM_RATE; retry_after_ms is then the longest wait of the failing checks,
 * i.e. when the same request would pass them all (absent other traffic).
 *
 * Exempt senders (moderators, admins: the caller decides) are admitted
 * without a Redis call and count against nothing. They cannot be muted:
 * a mute is a viewer's sanction, and a moderator who must be stopped loses
 * the role (token), not the voice.
 *
 * Fallback (Redis unreachable, no answer within redis_timeout_ms, an error
 * reply): the comment is decided by the local limiter with the same rules
 * and this node's clock, and counted (dm_ratelimit_fallbacks). Its table
 * has ratelimit_local_max_keys fixed slots (48 bytes each, allocated once);
 * a full neighbourhood evicts the entry whose state ends first, expired ones
 * before live ones (live evictions counted; an evicted user or room starts
 * afresh, i.e. the table fails open). With K ingest nodes a user gets at
 * most K times the configured rate while Redis is away. Modes and mutes in
 * fallback are the last ones this node saw: every Redis answer for a room
 * refreshes its cached modes (kept at least 10 minutes after that), a MUTED
 * answer caches the mute until it ends, any other answer clears it, and
 * this node's own set_modes/mute/unmute update the cache. Unknown mutes are
 * admitted: a Redis outage must not silence a room. The Redis path does not
 * mirror rate state locally, so budgets start afresh when the fallback
 * begins, and in fallback unique mode remembers only each user's last text
 * per room.
 *
 * Defaults (config_table.h): user 1/s burst 5 — a person types a comment in
 * seconds; the burst covers a quick reaction ("666", "lol") without letting a
 * script flood. Room 200/s burst 400 — far more than a screen shows legibly
 * (viewers get at most density_cap/s anyway); above that it is noise that
 * costs Kafka and fan-out. Load tests posting as few users need these raised
 * (or 0: off).
 *
 * One dm_ratelimit per event loop; not thread-safe. */
#ifndef DM_SERVER_RATELIMIT_H
#define DM_SERVER_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dm_config;
struct dm_redis;

/* Longest uid (bytes), as common/jwt.h's DM_JWT_MAX_SUB. */
#define DM_RATELIMIT_UID_MAX 128

/* Bounds of the moderation calls' arguments (callers validate against them;
 * out-of-range values are bugs and abort). */
#define DM_RATELIMIT_MODE_MAX_S 86400   /* slow and unique: 0 (off) .. 1 day */
#define DM_RATELIMIT_MUTE_MAX_S 2592000 /* mute: 1 s .. 30 days */

/* Room modes live this long in Redis after they were set or last used. */
#define DM_RATELIMIT_MODES_TTL_S 2592000
/* Texts remembered per user and room in unique mode (the oldest go first). */
#define DM_RATELIMIT_UNIQUE_MAX 256

/* The verdicts, in the order of the script's reply codes. */
enum dm_ratelimit_verdict {
    DM_RATELIMIT_ADMIT = 0,
    DM_RATELIMIT_USER_RATE, /* the user's rate limit: 429 */
    DM_RATELIMIT_ROOM_RATE, /* the room's rate limit: 429 */
    DM_RATELIMIT_SLOW_MODE, /* the room's slow mode: 429 */
    DM_RATELIMIT_DUPLICATE, /* the room's unique mode: same text too soon */
    DM_RATELIMIT_MUTED,     /* the user is muted in the room: 403 */
    DM_RATELIMIT_NVERDICTS
};

struct dm_ratelimit;

/* One comment to admit. Strings are borrowed for the call only. */
struct dm_ratelimit_req {
    const char *room; /* a valid room id (common/hash.h), NUL-terminated */
    const char *uid;  /* 1..DM_RATELIMIT_UID_MAX bytes, NUL-terminated */
    const char *text; /* the comment text (need not be NUL-terminated) */
    size_t text_len;
    bool exempt; /* moderator/admin: admitted, counted against nothing */
};

struct dm_ratelimit_result {
    enum dm_ratelimit_verdict verdict;
    /* > 0 for USER_RATE, ROOM_RATE, SLOW_MODE and DUPLICATE: when the same
     * request would pass (Retry-After: dm_ratelimit_retry_after_s). For
     * MUTED the mute's remaining time when known, else 0. 0 for ADMIT. */
    int64_t retry_after_ms;
    bool local; /* decided by the local limiter (Redis did not answer) */
};

/* Fires exactly once per dm_ratelimit_check, from the event loop or before
 * dm_ratelimit_check returns (exempt, Redis not connected). res is valid
 * during the call only. The callback may call dm_ratelimit_check again but
 * must not free the limiter. */
typedef void (*dm_ratelimit_cb)(const struct dm_ratelimit_result *res, void *arg);

/* Fires exactly once per moderation call, possibly before it returns:
 * ok = Redis stored the change (then this node's fallback cache follows
 * it at once; other nodes' caches follow their next Redis answer for the
 * room). Callers may pass NULL for no callback. */
typedef void (*dm_ratelimit_done_cb)(bool ok, void *arg);

/* A clock in microseconds (tests inject one; see dm_ratelimit_set_clock). */
typedef int64_t (*dm_ratelimit_clock_cb)(void *arg);

/* ---- lifecycle ---- */

/* Reads the ratelimit_* keys and redis_prefix from cfg. redis and cfg are
 * borrowed and must outlive the limiter; redis may be NULL, then every
 * decision is local (and counted as a fallback) and moderation calls change
 * only the local cache (ok = true). Allocates the local table once. */
struct dm_ratelimit *dm_ratelimit_new(struct dm_redis *redis, const struct dm_config *cfg);

/* Frees the limiter. No call may be in flight: free the Redis client first
 * (its free answers every pending command, so every callback has fired) or
 * wait for them. NULL is a no-op. */
void dm_ratelimit_free(struct dm_ratelimit *rl);

/* Replaces the local limiter's clock (default: dm_mono_us). For tests. */
void dm_ratelimit_set_clock(struct dm_ratelimit *rl, dm_ratelimit_clock_cb clock, void *arg);

/* ---- operations ---- */

/* Decides whether req may be published; cb fires exactly once with the
 * verdict (see dm_ratelimit_cb), at the latest about redis_timeout_ms later
 * (twice that when Redis lost the script and is sent it again).
 * There is no cancel: keep arg alive until cb fires. An admitted comment is
 * counted even if publishing it fails later. Check Idempotency-Key replays
 * before calling this, or a retried comment is refused as a DUPLICATE. */
void dm_ratelimit_check(struct dm_ratelimit *rl, const struct dm_ratelimit_req *req,
                        dm_ratelimit_cb cb, void *arg);

/* Sets room's modes (seconds, 0: off, each 0..DM_RATELIMIT_MODE_MAX_S);
 * both 0 deletes the hash. They apply to the next comments on every node. */
void dm_ratelimit_set_modes(struct dm_ratelimit *rl, const char *room, int64_t slow_s,
                            int64_t unique_s, dm_ratelimit_done_cb cb, void *arg);

/* Mutes uid in room for seconds (1..DM_RATELIMIT_MUTE_MAX_S; a new mute
 * replaces the old one), or lifts the mute. room and uid as in the request. */
void dm_ratelimit_mute(struct dm_ratelimit *rl, const char *room, const char *uid, int64_t seconds,
                       dm_ratelimit_done_cb cb, void *arg);
void dm_ratelimit_unmute(struct dm_ratelimit *rl, const char *room, const char *uid,
                         dm_ratelimit_done_cb cb, void *arg);

/* ---- accessors (counters since start, for /metrics) ---- */

/* Decisions with this verdict (exempt senders count as ADMIT). */
unsigned long dm_ratelimit_decisions(const struct dm_ratelimit *rl,
                                     enum dm_ratelimit_verdict verdict);

/* Decisions taken by the local limiter (danmaku_ratelimit_fallback_total). */
unsigned long dm_ratelimit_fallbacks(const struct dm_ratelimit *rl);

/* Occupied slots of the local table (<= ratelimit_local_max_keys), and live
 * entries it evicted to make room (their users or rooms started afresh). */
size_t dm_ratelimit_local_entries(const struct dm_ratelimit *rl);
unsigned long dm_ratelimit_local_evictions(const struct dm_ratelimit *rl);

/* ---- pure functions ---- */

/* One GCRA step at now_us for a key whose stored theoretical arrival time
 * is tat_us (any time <= now_us for a fresh key, e.g. 0), emission
 * interval interval_us > 0 and burst >= 1. Admits: returns true and sets
 * *new_tat_us, the TAT to store. Refuses: returns false and sets *wait_us
 * (> 0), how long until the same step would admit. Changes nothing else. */
bool dm_ratelimit_gcra(int64_t tat_us, int64_t now_us, int64_t interval_us, int64_t burst,
                       int64_t *new_tat_us, int64_t *wait_us);

/* Seconds for a Retry-After header: retry_after_ms rounded up, at least 1. */
int64_t dm_ratelimit_retry_after_s(int64_t retry_after_ms);

/* The hash unique mode compares: FNV-1a 64 of the text after
 * normalization — fullwidth ASCII (U+FF01..U+FF5E) folded to ASCII, ASCII
 * letters lower-cased, zero-width characters (U+200B..U+200D, U+2060,
 * U+FEFF) dropped, whitespace runs (ASCII, U+00A0, U+3000) collapsed to one
 * space and trimmed. Same on every node. text borrowed. */
uint64_t dm_ratelimit_text_hash(const char *text, size_t len);

/* "admit", "user_rate", "room_rate", "slow_mode", "duplicate", "muted":
 * for error codes, logs and metric labels. Static strings. */
const char *dm_ratelimit_verdict_name(enum dm_ratelimit_verdict verdict);

/* The Lua text of the admission script (static), for tools and tests.
 * KEYS: the six keys above in order user, room, modes, mute, slow, uniq.
 * ARGV: now (µs, or "time" for Redis TIME), user interval µs (0: no limit),
 * user burst, room interval µs (0: no limit), room burst, text hash (16 hex
 * digits), modes TTL ms, unique max members. Reply: {verdict,
 * retry_after_ms, slow_s, unique_s} with verdict as enum
 * dm_ratelimit_verdict. */
const char *dm_ratelimit_script(void);

#endif
