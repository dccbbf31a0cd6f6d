/* The comment record and the wire messages built around it (DESIGN §4).
 * Pure functions over jansson; the only module that builds or reads
 * danmaku JSON, so the wire format lives in one place. */
#ifndef DM_COMMON_PROTO_H
#define DM_COMMON_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define DM_ROOM_MAX     64
#define DM_UID_MAX      128
#define DM_NAME_MAX     128
#define DM_ID_LEN       26   /* ULID: 48-bit ms time + 80 random bits, Crockford base32 */
#define DM_TEXT_MAX_CAP 1000 /* hard cap on max_text_chars */

enum dm_mode { DM_MODE_SCROLL, DM_MODE_TOP, DM_MODE_BOTTOM };
enum dm_size { DM_SIZE_SMALL, DM_SIZE_NORMAL, DM_SIZE_LARGE };

/* One comment as it travels through Kafka. Embedded by callers; `text` is
 * owned by the record (dm_comment_fini). */
struct dm_comment {
    char id[DM_ID_LEN + 1];
    char room[DM_ROOM_MAX + 1];
    char uid[DM_UID_MAX + 1];
    char name[DM_NAME_MAX + 1];
    char *text;
    char color[8]; /* "#rrggbb", lower case */
    enum dm_mode mode;
    enum dm_size size;
    int64_t ts;  /* Unix ms, set by ingest */
    bool has_vt; /* vt present */
    int64_t vt;  /* video time, ms */
    int prio;    /* priority lane, from the token */
};

/* Parses the body of POST /v1/rooms/{room}/danmaku into c (text, color, mode,
 * size, vt; defaults for the optional fields). The body must be one JSON
 * object with known fields only. Returns 0, or -1 with err saying which
 * field is wrong and why. On success c->text is owned by c. */
int dm_comment_parse_request(const char *body, size_t len, size_t max_text_chars,
                             struct dm_comment *c, char err[DM_ERRLEN]);

/* Fills c->id with a new ULID for time ts_ms. */
void dm_comment_new_id(struct dm_comment *c, int64_t ts_ms);

/* Whether s[0..n) can be a comment id: 1..DM_ID_LEN of [0-9A-Za-z_-] (ours
 * are ULIDs; the wider set is what records may carry). */
bool dm_comment_id_valid(const char *s, size_t n);

/* The retract record {"type":"retract","room","id","by","ts"} that withdraws
 * comment id of room (moderation, published like a comment). Caller frees. */
char *dm_retract_encode(const char *room, const char *id, const char *by, int64_t ts, size_t *len);

/* Encodes the record as compact JSON. Caller owns the result (free()). */
char *dm_comment_encode(const struct dm_comment *c, size_t *len);

/* Frees c->text; c may be reused. */
void dm_comment_fini(struct dm_comment *c);

/* Record types found in the topic. A record without "type" is a comment. */
enum dm_record_type { DM_RECORD_COMMENT, DM_RECORD_RETRACT, DM_RECORD_UNKNOWN };

/* Checks a record read from Kafka: a JSON object whose "room" equals the
 * record key. Returns its type, or -1 when the record is not usable. */
int dm_record_inspect(const char *value, size_t len, const char *room, size_t room_len);

/* What fan-out needs to know of a record. */
struct dm_record_info {
    enum dm_record_type type;
    int prio;               /* priority lane, 0 normal: never sampled when > 0 */
    char id[DM_ID_LEN + 1]; /* the comment's id; for a retract, the id it retracts */
};

/* dm_record_inspect that also fills info (may be NULL). A retract record
 * ({"type":"retract","room","id"}) without an id is not usable (-1). */
int dm_record_read(const char *value, size_t len, const char *room, size_t room_len,
                   struct dm_record_info *info);

/* {"op":"retract","room":R,"offset":O,"id":ID} into out (NUL-terminated);
 * the length, or 0 when out is too small. Room and id need no escaping
 * (room pattern; ULID alphabet, checked by dm_record_read's length bound
 * and the ingest that wrote it). */
size_t dm_msg_retract(char *out, size_t outlen, const char *room, int64_t offset, const char *id);

/* {"op":"skipped","room":R,"count":N}: comments sampled out by density control. */
char *dm_msg_skipped(const char *room, uint64_t count, size_t *len);

/* Builds the viewer frame payload {"op":"danmaku","room":R,"offset":O,"data":RECORD}
 * around an already-valid record without re-encoding it, NUL-terminated.
 * Returns the length written (without the NUL), or 0 when out is too small
 * (it needs the length + 1). */
size_t dm_msg_danmaku(char *out, size_t outlen, const char *room, int64_t offset,
                      const char *record, size_t record_len);

/* Server messages. Each returns a malloc'd compact JSON string the caller
 * frees with free(), and its length in *len. */
char *dm_msg_hello(const char *node, int64_t heartbeat_ms, int max_rooms, size_t *len);
char *dm_msg_joined(const char *room, int64_t epoch, int64_t offset, bool recovered, int64_t online,
                    size_t *len);
char *dm_msg_pong(bool has_id, int64_t id, size_t *len);
char *dm_msg_error(const char *code, const char *message, size_t *len);
char *dm_msg_online(const char *room, int64_t count, size_t *len);

/* A client message parsed from a text frame. */
enum dm_client_op { DM_OP_JOIN, DM_OP_LEAVE, DM_OP_AUTH, DM_OP_PING };
struct dm_client_msg {
    enum dm_client_op op;
    char room[DM_ROOM_MAX + 1];
    bool has_offset, has_epoch, has_id;
    int64_t offset, epoch, id;
    char *token; /* auth only; owned, dm_client_msg_fini */
};

/* Parses a client frame. Returns 0, or -1 with *reason a static message. */
int dm_client_msg_parse(const char *data, size_t len, struct dm_client_msg *m, const char **reason);
void dm_client_msg_fini(struct dm_client_msg *m);

/* Body helpers for the ingest API. Caller frees with free(). */
char *dm_msg_accepted(const char *id, const char *room, int32_t partition, int64_t offset,
                      int64_t ts, size_t *len);
char *dm_msg_http_error(const char *code, const char *message, size_t *len);
char *dm_msg_room_info(const char *room, int64_t online, int32_t partition, size_t *len);
/* {"room","partition","items":[{"offset","data":{record}}...]}; entries
 * whose record is not a JSON object are left out. */
struct dm_history_entry;
char *dm_msg_history(const char *room, int32_t partition, const struct dm_history_entry *e,
                     size_t n, size_t *len);

#endif
