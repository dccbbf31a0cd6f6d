/* Comment records and protocol messages, encoded and checked with jansson. */
#include "common/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <jansson.h>

#include "common/check.h"
#include "common/history.h"
#include "common/hash.h"
#include "common/utf8.h"

static const char *const mode_names[] = {"scroll", "top", "bottom"};
static const char *const size_names[] = {"small", "normal", "large"};

static int lookup_name(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], s) == 0)
            return (int)i;
    }
    return -1;
}

/* Decodes one UTF-8 sequence of already-valid input (jansson validated it). */
static uint32_t next_codepoint(const unsigned char **pp)
{
    const unsigned char *p = *pp;
    uint32_t cp;
    int extra;

    if (p[0] < 0x80) {
        cp = p[0];
        extra = 0;
    } else if (p[0] < 0xe0) {
        cp = p[0] & 0x1f;
        extra = 1;
    } else if (p[0] < 0xf0) {
        cp = p[0] & 0x0f;
        extra = 2;
    } else {
        cp = p[0] & 0x07;
        extra = 3;
    }
    for (int i = 1; i <= extra; i++)
        cp = (cp << 6) | (p[i] & 0x3f);
    *pp = p + 1 + extra;
    return cp;
}

/* Space characters that render as nothing visible. */
static bool is_blank(uint32_t cp)
{
    return cp == ' ' || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200b) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000 ||
           cp == 0xfeff;
}

/* Checks the text: 1..max code points, no control characters, not blank. */
static const char *check_text(const char *s, size_t len, size_t max_chars)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    size_t count = 0;
    bool blank = true;

    if (memchr(s, '\0', len) != NULL)
        return "text must not contain NUL";
    while (p < end) {
        uint32_t cp = next_codepoint(&p);
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return "text must not contain control characters";
        if (!is_blank(cp))
            blank = false;
        if (++count > max_chars)
            return "text is too long";
    }
    if (count == 0 || blank)
        return "text must not be empty";
    return NULL;
}

static bool parse_color(const char *s, char out[8])
{
    if (strlen(s) != 7 || s[0] != '#')
        return false;
    out[0] = '#';
    for (int i = 1; i < 7; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        out[i] = c;
    }
    out[7] = '\0';
    return true;
}

int dm_comment_parse_request(const char *body, size_t len, size_t max_text_chars,
                             struct dm_comment *c, char err[DM_ERRLEN])
{
    json_error_t jerr;
    json_t *root, *v;
    const char *key, *why = NULL;
    const char *field = "body";
    int rc = -1;

    memset(c, 0, sizeof(*c));
    strcpy(c->color, "#ffffff");
    c->mode = DM_MODE_SCROLL;
    c->size = DM_SIZE_NORMAL;

    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, DM_ERRLEN, "body is not valid JSON: %s", jerr.text);
        return -1;
    }
    if (!json_is_object(root)) {
        why = "body must be a JSON object";
        goto out;
    }
    json_object_foreach(root, key, v)
    {
        field = key;
        if (strcmp(key, "text") == 0) {
            if (!json_is_string(v)) {
                why = "text must be a string";
                goto out;
            }
            why = check_text(json_string_value(v), json_string_length(v), max_text_chars);
            if (why != NULL)
                goto out;
            c->text = dm_strndup(json_string_value(v), json_string_length(v));
        } else if (strcmp(key, "color") == 0) {
            if (!json_is_string(v) || !parse_color(json_string_value(v), c->color)) {
                why = "color must be \"#rrggbb\"";
                goto out;
            }
        } else if (strcmp(key, "mode") == 0) {
            int m = json_is_string(v)
                        ? lookup_name(mode_names, DM_ARRAY_LEN(mode_names), json_string_value(v))
                        : -1;
            if (m < 0) {
                why = "mode must be scroll, top or bottom";
                goto out;
            }
            c->mode = (enum dm_mode)m;
        } else if (strcmp(key, "size") == 0) {
            int s = json_is_string(v)
                        ? lookup_name(size_names, DM_ARRAY_LEN(size_names), json_string_value(v))
                        : -1;
            if (s < 0) {
                why = "size must be small, normal or large";
                goto out;
            }
            c->size = (enum dm_size)s;
        } else if (strcmp(key, "vt") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0) {
                why = "vt must be a non-negative integer (ms)";
                goto out;
            }
            c->has_vt = true;
            c->vt = json_integer_value(v);
        } else {
            why = "unknown field";
            goto out;
        }
    }
    if (c->text == NULL) {
        field = "text";
        why = "text is required";
        goto out;
    }
    rc = 0;
out:
    /* field may point into root: format the message before freeing it. */
    if (rc < 0) {
        snprintf(err, DM_ERRLEN, "%.64s: %s", field, why);
        dm_comment_fini(c);
    }
    json_decref(root);
    return rc;
}

bool dm_comment_id_valid(const char *s, size_t n)
{
    return n > 0 && n <= DM_ID_LEN &&
           strspn(s, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_") == n;
}

void dm_comment_new_id(struct dm_comment *c, int64_t ts_ms)
{
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    unsigned char b[16];
    uint64_t t = (uint64_t)ts_ms;

    for (int i = 5; i >= 0; i--) {
        b[i] = (unsigned char)(t & 0xff);
        t >>= 8;
    }
    if (getrandom(b + 6, 10, 0) != 10)
        DM_PANIC("getrandom failed");
    /* 128 bits → 26 base32 digits, most significant first (2 leading pad bits). */
    for (int i = 0; i < DM_ID_LEN; i++) {
        int bit = i * 5 - 2, v = 0;
        for (int j = 0; j < 5; j++, bit++) {
            v <<= 1;
            if (bit >= 0)
                v |= (b[bit / 8] >> (7 - bit % 8)) & 1;
        }
        c->id[i] = alphabet[v];
    }
    c->id[DM_ID_LEN] = '\0';
}

static char *dump(json_t *o, size_t *len)
{
    char *s = json_dumps(o, JSON_COMPACT);
    DM_AN(s);
    json_decref(o);
    *len = strlen(s);
    return s;
}

char *dm_retract_encode(const char *room, const char *id, const char *by, int64_t ts, size_t *len)
{
    return dump(json_pack("{s:s,s:s,s:s,s:s,s:I}", "type", "retract", "room", room, "id", id, "by",
                          by, "ts", (json_int_t)ts),
                len);
}

char *dm_comment_encode(const struct dm_comment *c, size_t *len)
{
    json_t *o = json_object();

    json_object_set_new(o, "id", json_string(c->id));
    json_object_set_new(o, "room", json_string(c->room));
    json_object_set_new(o, "uid", json_string(c->uid));
    json_object_set_new(o, "name", json_string(c->name));
    json_object_set_new(o, "text", json_string(c->text));
    json_object_set_new(o, "color", json_string(c->color));
    json_object_set_new(o, "mode", json_string(mode_names[c->mode]));
    json_object_set_new(o, "size", json_string(size_names[c->size]));
    json_object_set_new(o, "ts", json_integer(c->ts));
    if (c->has_vt)
        json_object_set_new(o, "vt", json_integer(c->vt));
    if (c->prio > 0)
        json_object_set_new(o, "prio", json_integer(c->prio));
    return dump(o, len);
}

void dm_comment_fini(struct dm_comment *c)
{
    free(c->text);
    c->text = NULL;
}

int dm_record_read(const char *value, size_t len, const char *room, size_t room_len,
                   struct dm_record_info *info)
{
    json_t *root = json_loadb(value, len, 0, NULL), *r, *t, *v;
    int type = -1;

    if (info != NULL)
        memset(info, 0, sizeof(*info));
    if (root == NULL)
        return -1;
    r = json_object_get(root, "room");
    if (!json_is_object(root) || !json_is_string(r) || json_string_length(r) != room_len ||
        memcmp(json_string_value(r), room, room_len) != 0)
        goto out;
    t = json_object_get(root, "type");
    if (t == NULL)
        type = DM_RECORD_COMMENT;
    else if (json_is_string(t) && strcmp(json_string_value(t), "retract") == 0)
        type = DM_RECORD_RETRACT;
    else
        type = DM_RECORD_UNKNOWN;
    if (info != NULL) {
        info->type = (enum dm_record_type)type;
        v = json_object_get(root, "prio");
        if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= 9)
            info->prio = (int)json_integer_value(v);
        v = json_object_get(root, "id");
        if (json_is_string(v) && dm_comment_id_valid(json_string_value(v), json_string_length(v)))
            memcpy(info->id, json_string_value(v), json_string_length(v) + 1);
        /* A retract without a well-formed id it retracts is of no use
         * (and the id goes into viewer frames unescaped). */
        if (type == DM_RECORD_RETRACT && info->id[0] == '\0')
            type = -1;
    }
out:
    json_decref(root);
    return type;
}

int dm_record_inspect(const char *value, size_t len, const char *room, size_t room_len)
{
    return dm_record_read(value, len, room, room_len, NULL);
}

size_t dm_msg_retract(char *out, size_t outlen, const char *room, int64_t offset, const char *id)
{
    int n =
        snprintf(out, outlen, "{\"op\":\"retract\",\"room\":\"%s\",\"offset\":%lld,\"id\":\"%s\"}",
                 room, (long long)offset, id);
    return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
}

char *dm_msg_skipped(const char *room, uint64_t count, size_t *len)
{
    return dump(
        json_pack("{s:s,s:s,s:I}", "op", "skipped", "room", room, "count", (json_int_t)count), len);
}

size_t dm_msg_danmaku(char *out, size_t outlen, const char *room, int64_t offset,
                      const char *record, size_t record_len)
{
    /* The room id pattern needs no JSON escaping, and the record is already
     * compact JSON, so the frame is a concatenation. */
    int n =
        snprintf(out, outlen, "{\"op\":\"danmaku\",\"room\":\"%s\",\"offset\":%lld,\"data\":", room,
                 (long long)offset);
    if (n < 0 || (size_t)n + record_len + 1 >= outlen)
        return 0;
    memcpy(out + n, record, record_len);
    out[(size_t)n + record_len] = '}';
    out[(size_t)n + record_len + 1] = '\0';
    return (size_t)n + record_len + 1;
}

char *dm_msg_hello(const char *node, int64_t heartbeat_ms, int max_rooms, size_t *len)
{
    return dump(json_pack("{s:s,s:s,s:I,s:i}", "op", "hello", "node", node, "heartbeat_ms",
                          (json_int_t)heartbeat_ms, "max_rooms", max_rooms),
                len);
}

char *dm_msg_joined(const char *room, int64_t epoch, int64_t offset, bool recovered, int64_t online,
                    size_t *len)
{
    return dump(json_pack("{s:s,s:s,s:I,s:I,s:b,s:I}", "op", "joined", "room", room, "epoch",
                          (json_int_t)epoch, "offset", (json_int_t)offset, "recovered", recovered,
                          "online", (json_int_t)online),
                len);
}

char *dm_msg_pong(bool has_id, int64_t id, size_t *len)
{
    if (has_id)
        return dump(json_pack("{s:s,s:I}", "op", "pong", "id", (json_int_t)id), len);
    return dump(json_pack("{s:s}", "op", "pong"), len);
}

/* Error messages may quote peer input (a field name, the JSON parser's
 * "near '...'"), cut anywhere: jansson refuses invalid UTF-8, so anything
 * that is not valid becomes '?' byte by byte. */
static json_t *message_string(const char *message)
{
    size_t n = strlen(message);
    if (dm_utf8_valid((const uint8_t *)message, n))
        return json_stringn(message, n);
    char *copy = dm_strndup(message, n);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)copy[i] >= 0x80)
            copy[i] = '?';
    }
    json_t *s = json_stringn(copy, n);
    free(copy);
    return s;
}

char *dm_msg_error(const char *code, const char *message, size_t *len)
{
    return dump(
        json_pack("{s:s,s:s,s:o}", "op", "error", "code", code, "message", message_string(message)),
        len);
}

char *dm_msg_online(const char *room, int64_t count, size_t *len)
{
    return dump(
        json_pack("{s:s,s:s,s:I}", "op", "online", "room", room, "count", (json_int_t)count), len);
}

static int get_opt_int(json_t *root, const char *name, bool *has, int64_t *out)
{
    json_t *v = json_object_get(root, name);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return -1;
    *has = true;
    *out = json_integer_value(v);
    return 0;
}

int dm_client_msg_parse(const char *data, size_t len, struct dm_client_msg *m, const char **reason)
{
    json_t *root, *op, *room, *token;
    int rc = -1;

    memset(m, 0, sizeof(*m));
    root = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    if (root == NULL || !json_is_object(root)) {
        *reason = "message must be a JSON object";
        goto out;
    }
    op = json_object_get(root, "op");
    if (!json_is_string(op)) {
        *reason = "op is required";
        goto out;
    }
    const char *ops = json_string_value(op);
    if (strcmp(ops, "join") == 0)
        m->op = DM_OP_JOIN;
    else if (strcmp(ops, "leave") == 0)
        m->op = DM_OP_LEAVE;
    else if (strcmp(ops, "auth") == 0)
        m->op = DM_OP_AUTH;
    else if (strcmp(ops, "ping") == 0)
        m->op = DM_OP_PING;
    else {
        *reason = "unknown op";
        goto out;
    }
    if (m->op == DM_OP_JOIN || m->op == DM_OP_LEAVE) {
        room = json_object_get(root, "room");
        if (!json_is_string(room) ||
            !dm_room_id_valid(json_string_value(room), json_string_length(room))) {
            *reason = "room must match [A-Za-z0-9_.:-]{1,64}";
            goto out;
        }
        memcpy(m->room, json_string_value(room), json_string_length(room) + 1);
    }
    if (get_opt_int(root, "offset", &m->has_offset, &m->offset) < 0 ||
        get_opt_int(root, "epoch", &m->has_epoch, &m->epoch) < 0 ||
        get_opt_int(root, "id", &m->has_id, &m->id) < 0) {
        *reason = "offset, epoch and id must be integers";
        goto out;
    }
    if (m->op == DM_OP_AUTH) {
        token = json_object_get(root, "token");
        if (!json_is_string(token)) {
            *reason = "token must be a string";
            goto out;
        }
        m->token = dm_strndup(json_string_value(token), json_string_length(token));
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

void dm_client_msg_fini(struct dm_client_msg *m)
{
    free(m->token);
    m->token = NULL;
}

char *dm_msg_accepted(const char *id, const char *room, int32_t partition, int64_t offset,
                      int64_t ts, size_t *len)
{
    return dump(json_pack("{s:s,s:s,s:i,s:I,s:I}", "id", id, "room", room, "partition",
                          (int)partition, "offset", (json_int_t)offset, "ts", (json_int_t)ts),
                len);
}

char *dm_msg_http_error(const char *code, const char *message, size_t *len)
{
    return dump(json_pack("{s:s,s:o}", "error", code, "message", message_string(message)), len);
}

char *dm_msg_history(const char *room, int32_t partition, const struct dm_history_entry *e,
                     size_t n, size_t *len)
{
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *rec = json_loadb(e[i].record, e[i].len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(rec)) {
            json_decref(rec);
            continue;
        }
        json_array_append_new(
            items, json_pack("{s:I,s:o}", "offset", (json_int_t)e[i].offset, "data", rec));
    }
    return dump(
        json_pack("{s:s,s:i,s:o}", "room", room, "partition", (int)partition, "items", items), len);
}

char *dm_msg_room_info(const char *room, int64_t online, int32_t partition, size_t *len)
{
    return dump(json_pack("{s:s,s:I,s:i}", "room", room, "online", (json_int_t)online, "partition",
                          (int)partition),
                len);
}
