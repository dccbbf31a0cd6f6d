/* Fuzzes the JSON validation of common/proto.c with the same bytes in every
 * role peers can give them: a POST body (dm_comment_parse_request, as
 * server/comments.c calls it), a viewer's text frame (dm_client_msg_parse,
 * as broadcast/conn.c handle_message calls it) and a Kafka record value
 * (dm_record_inspect/dm_record_read, as broadcast/bcast.c record_frame calls
 * it), plus the answers built from what they return.
 *
 * Input: byte 0 bits 0-1 pick max_text_chars (1, 20, 200 or 1000), bits 2-3
 * the record's room ("r1", "room:A-1", a 64-byte id or one taken from the
 * input's "room"), byte 1 the comment's prio (mod 10); the rest is the JSON.
 *
 * Invariants checked beyond "no crash":
 *  - an accepted comment has a text of 1..max_text_chars code points of
 *    valid UTF-8 without NUL, a "#rrggbb" lower-case color, a known mode and
 *    size and vt >= 0; dm_comment_encode of it (with the id, room, uid,
 *    name, ts and prio ingest adds) is valid JSON that dm_record_read reads
 *    back as a comment of that room with that id and prio, whose fields equal
 *    the comment's; re-posting those fields parses to the same comment; the
 *    viewer frame dm_msg_danmaku wraps around it is valid JSON;
 *  - a refused body has a message, and dm_msg_http_error of it (what the
 *    client receives) is valid JSON;
 *  - an accepted client message has a known op, a valid room for join and
 *    leave, a token for auth; dm_msg_pong and dm_msg_error are valid JSON;
 *  - dm_record_inspect and dm_record_read agree; a usable record is valid
 *    UTF-8, a retract carries a valid id, prio is 0..9; what bcast.c builds
 *    from it (dm_msg_retract into its fixed buffer, dm_msg_danmaku into
 *    len + 160 bytes) fits and is valid JSON. */
#include "fuzz/fuzz.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/hash.h"
#include "common/proto.h"
#include "common/utf8.h"
#include "common/util.h"

#define ENVELOPE_MAX 160 /* broadcast/bcast.c: room of the danmaku envelope */
#define OFFSET       INT64_C(9223372036854775807)
#define COMMENT_ID   "01HZY3V2K0Q8T6S4R2P0N8M6K4"

static const char *const mode_names[] = {"scroll", "top", "bottom"};
static const char *const size_names[] = {"small", "normal", "large"};

static json_t *load_json(const char *s, size_t n)
{
    return json_loadb(s, n, JSON_REJECT_DUPLICATES, NULL);
}

static void check_json_text(const char *s, size_t n, const char *what)
{
    json_t *j = load_json(s, n);

    FUZZ_CHECK(j != NULL && json_is_object(j), what);
    json_decref(j);
}

static const char *get_str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* ---- POST /v1/rooms/{room}/danmaku ---- */

static void check_comment(const struct dm_comment *c, size_t max_text)
{
    size_t tlen = strlen(c->text);

    FUZZ_CHECK(tlen > 0 && dm_utf8_valid((const uint8_t *)c->text, tlen), "text is UTF-8");
    size_t cps = dm_utf8_codepoints((const uint8_t *)c->text, tlen);
    FUZZ_CHECK(cps >= 1 && cps <= max_text, "text within max_text_chars");
    FUZZ_CHECK(strlen(c->color) == 7 && c->color[0] == '#' &&
                   strspn(c->color + 1, "0123456789abcdef") == 6,
               "color is #rrggbb lower case");
    FUZZ_CHECK((unsigned)c->mode <= DM_MODE_BOTTOM && (unsigned)c->size <= DM_SIZE_LARGE,
               "known mode and size");
    FUZZ_CHECK(!c->has_vt || c->vt >= 0, "vt >= 0");
}

/* What ingest adds, then the record it publishes and what viewers get. */
static void check_record_round_trip(struct dm_comment *c, size_t max_text, int prio)
{
    struct dm_record_info info;
    size_t len;

    memcpy(c->id, COMMENT_ID, sizeof(c->id));
    memcpy(c->room, "r1", 3);
    memcpy(c->uid, "user-1", 7);
    memcpy(c->name, "Ada \xe2\x9c\x93", 8);
    c->ts = 1700000000123;
    c->prio = prio;
    char *rec = dm_comment_encode(c, &len);
    FUZZ_CHECK(len == strlen(rec), "record length");

    json_t *o = load_json(rec, len);
    FUZZ_CHECK(o != NULL && json_is_object(o), "the record is a JSON object");
    FUZZ_CHECK(strcmp(get_str(o, "id"), c->id) == 0 && strcmp(get_str(o, "room"), c->room) == 0 &&
                   strcmp(get_str(o, "uid"), c->uid) == 0 &&
                   strcmp(get_str(o, "name"), c->name) == 0,
               "record carries id, room, uid, name");
    json_t *text = json_object_get(o, "text");
    FUZZ_CHECK(json_is_string(text) && json_string_length(text) == strlen(c->text) &&
                   memcmp(json_string_value(text), c->text, strlen(c->text)) == 0,
               "record text is the comment's");
    FUZZ_CHECK(strcmp(get_str(o, "color"), c->color) == 0 &&
                   strcmp(get_str(o, "mode"), mode_names[c->mode]) == 0 &&
                   strcmp(get_str(o, "size"), size_names[c->size]) == 0,
               "record color, mode, size");
    FUZZ_CHECK(json_integer_value(json_object_get(o, "ts")) == c->ts, "record ts");
    json_t *vt = json_object_get(o, "vt");
    FUZZ_CHECK(c->has_vt ? json_is_integer(vt) && json_integer_value(vt) == c->vt : vt == NULL,
               "record vt");
    json_decref(o);

    int type = dm_record_read(rec, len, c->room, strlen(c->room), &info);
    FUZZ_CHECK(type == DM_RECORD_COMMENT && info.type == DM_RECORD_COMMENT,
               "dm_record_read reads our record as a comment");
    FUZZ_CHECK(strcmp(info.id, c->id) == 0 && info.prio == prio, "same id and prio read back");
    FUZZ_CHECK(dm_record_inspect(rec, len, c->room, strlen(c->room)) == DM_RECORD_COMMENT,
               "dm_record_inspect agrees");
    FUZZ_CHECK(dm_record_read(rec, len, "r2", 2, NULL) == -1, "another room's record is refused");

    /* The viewer frame around it. */
    size_t cap = len + ENVELOPE_MAX;
    char *frame = dm_malloc(cap);
    size_t n = dm_msg_danmaku(frame, cap, c->room, OFFSET, rec, len);
    FUZZ_CHECK(n > 0, "danmaku frame fits len + ENVELOPE_MAX");
    check_json_text(frame, n, "danmaku frame is a JSON object");
    free(frame);

    /* Posting the accepted fields again gives the same comment. */
    json_t *req = json_pack("{s:s,s:s,s:s,s:s}", "text", c->text, "color", c->color, "mode",
                            mode_names[c->mode], "size", size_names[c->size]);
    FUZZ_CHECK(req != NULL, "re-post body built");
    if (c->has_vt)
        json_object_set_new(req, "vt", json_integer(c->vt));
    char *again = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    struct dm_comment c2;
    char err[DM_ERRLEN];
    FUZZ_CHECK(dm_comment_parse_request(again, strlen(again), max_text, &c2, err) == 0,
               "re-posted comment accepted");
    FUZZ_CHECK(strcmp(c2.text, c->text) == 0 && strcmp(c2.color, c->color) == 0 &&
                   c2.mode == c->mode && c2.size == c->size && c2.has_vt == c->has_vt &&
                   c2.vt == c->vt,
               "re-posted comment is the same");
    dm_comment_fini(&c2);
    free(again);
    free(rec);
}

static void fuzz_post(const char *body, size_t len, size_t max_text, int prio)
{
    struct dm_comment c;
    char err[DM_ERRLEN];

    err[0] = '\0';
    if (dm_comment_parse_request(body, len, max_text, &c, err) == 0) {
        FUZZ_CHECK(c.text != NULL, "accepted comment has a text");
        check_comment(&c, max_text);
        check_record_round_trip(&c, max_text, prio);
        dm_comment_fini(&c);
        return;
    }
    FUZZ_CHECK(c.text == NULL, "a refused comment owns nothing");
    FUZZ_CHECK(strnlen(err, DM_ERRLEN) > 0 && strnlen(err, DM_ERRLEN) < DM_ERRLEN,
               "a refusal says why");
    size_t n;
    char *answer = dm_msg_http_error("invalid_body", err, &n);
    check_json_text(answer, n, "the 400 body is a JSON object");
    free(answer);
}

/* ---- a viewer's text frame ---- */

static void fuzz_client_msg(const char *data, size_t len)
{
    struct dm_client_msg m;
    const char *reason = NULL;
    size_t n;
    char *answer;

    if (dm_client_msg_parse(data, len, &m, &reason) < 0) {
        FUZZ_CHECK(reason != NULL && m.token == NULL, "a refused message has a reason");
        answer = dm_msg_error("bad_message", reason, &n);
        check_json_text(answer, n, "the error message is a JSON object");
        free(answer);
        dm_client_msg_fini(&m);
        return;
    }
    switch (m.op) {
    case DM_OP_JOIN:
    case DM_OP_LEAVE:
        FUZZ_CHECK(dm_room_id_valid(m.room, strlen(m.room)), "join/leave room is valid");
        break;
    case DM_OP_AUTH:
        FUZZ_CHECK(m.token != NULL, "auth has a token");
        break;
    case DM_OP_PING:
        answer = dm_msg_pong(m.has_id, m.id, &n);
        check_json_text(answer, n, "pong is a JSON object");
        free(answer);
        break;
    default:
        FUZZ_CHECK(false, "known op");
    }
    FUZZ_CHECK(m.op == DM_OP_AUTH || m.token == NULL, "only auth owns a token");
    dm_client_msg_fini(&m);
}

/* ---- a Kafka record value ---- */

/* The room the record is checked against: bcast.c only looks up rooms
 * viewers joined, so it is always a valid id. */
static void pick_room(unsigned which, const char *data, size_t len, char room[DM_ROOM_MAX + 1])
{
    static const char *const rooms[] = {
        "r1",
        "room:A-1",
        "0123456789012345678901234567890123456789012345678901234567890123",
    };

    strcpy(room, rooms[which < 3 ? which : 0]);
    if (which == 3) {
        json_t *o = json_loadb(data, len, 0, NULL);
        json_t *r = json_object_get(o, "room");
        if (json_is_string(r) && dm_room_id_valid(json_string_value(r), json_string_length(r)))
            memcpy(room, json_string_value(r), json_string_length(r) + 1);
        json_decref(o);
    }
}

static void fuzz_record(const char *value, size_t len, const char *room)
{
    struct dm_record_info info;
    size_t rlen = strlen(room);
    int type = dm_record_read(value, len, room, rlen, &info);
    /* Only dm_record_read looks at ids: a retract without one is usable
     * to dm_record_inspect. */
    int inspected = type == -1 && info.type == DM_RECORD_RETRACT ? DM_RECORD_RETRACT : type;

    FUZZ_CHECK(type >= -1 && type <= DM_RECORD_UNKNOWN, "record type");
    FUZZ_CHECK(dm_record_inspect(value, len, room, rlen) == inspected,
               "dm_record_inspect agrees with dm_record_read");
    if (type < 0)
        return;
    FUZZ_CHECK(dm_utf8_valid((const uint8_t *)value, len), "a usable record is UTF-8");
    FUZZ_CHECK(info.type == (enum dm_record_type)type, "info.type is the type");
    FUZZ_CHECK(info.prio >= 0 && info.prio <= 9, "prio 0..9");
    FUZZ_CHECK(info.id[0] == '\0' || dm_comment_id_valid(info.id, strlen(info.id)),
               "id empty or valid");
    if (type == DM_RECORD_RETRACT) {
        /* bcast.c record_frame's buffer and assertion. */
        char retract[96 + DM_ROOM_MAX + DM_ID_LEN];
        FUZZ_CHECK(info.id[0] != '\0', "a retract names a comment");
        size_t n = dm_msg_retract(retract, sizeof(retract), room, OFFSET, info.id);
        FUZZ_CHECK(n > 0, "retract frame fits bcast.c's buffer");
        check_json_text(retract, n, "retract frame is a JSON object");
    } else if (type == DM_RECORD_COMMENT) {
        size_t cap = len + ENVELOPE_MAX;
        char *frame = dm_malloc(cap);
        size_t n = dm_msg_danmaku(frame, cap, room, OFFSET, value, len);
        FUZZ_CHECK(n > 0, "danmaku frame fits len + ENVELOPE_MAX");
        FUZZ_CHECK(dm_utf8_valid((const uint8_t *)frame, n), "danmaku frame is UTF-8");
        json_t *j = json_loadb(frame, n, 0, NULL);
        FUZZ_CHECK(json_is_object(j), "danmaku frame is a JSON object");
        json_decref(j);
        free(frame);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t max_texts[4] = {1, 20, 200, DM_TEXT_MAX_CAP};
    char room[DM_ROOM_MAX + 1];

    if (size < 2)
        return 0;
    size_t max_text = max_texts[data[0] & 3];
    unsigned which = (data[0] >> 2) & 3;
    int prio = data[1] % 10;
    const char *p = (const char *)data + 2;
    size_t n = size - 2;

    fuzz_post(p, n, max_text, prio);
    fuzz_client_msg(p, n);
    pick_room(which, p, n, room);
    fuzz_record(p, n, room);
    return 0;
}
