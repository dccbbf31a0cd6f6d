/* Mutes and room modes. */
#include "server/moderation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>

#include "common/check.h"
#include "common/config.h"
#include "common/jwt.h"
#include "common/proto.h"
#include "server/ingest.h"
#include "server/ratelimit.h"
#include "server/request.h"

/* A moderation change waiting for Redis; body is the 200 answer. */
struct change {
    struct dm_request r;
    char *body;
    size_t len;
};

static void on_done(bool ok, void *arg)
{
    struct change *ch = arg;

    dm_request_done(&ch->r);
    if (ok)
        dm_request_json(&ch->r, 200, ch->body, ch->len);
    else
        dm_request_unavailable(&ch->r, "Redis did not answer; the change was not made");
    free(ch->body);
    free(ch);
}

/* A change answered with obj (stolen) once Redis confirmed it. */
static struct change *change_new(const struct dm_request *r, json_t *obj)
{
    struct change *ch = dm_calloc(1, sizeof(*ch));
    ch->r = *r;
    ch->body = json_dumps(obj, JSON_COMPACT);
    DM_AN(ch->body);
    ch->len = strlen(ch->body);
    json_decref(obj);
    dm_request_wait(&ch->r);
    return ch;
}

/* Authenticates a moderator or admin allowed in room; answers the refusal
 * itself (false). */
static bool moderator(const struct dm_request *r, const char *room)
{
    struct dm_jwt_claims claims;
    bool ok = false;

    if (dm_request_authenticate(r, &claims) < 0)
        return false;
    if (claims.role != DM_ROLE_MODERATOR && claims.role != DM_ROLE_ADMIN)
        dm_request_error(r, 403, "forbidden", "moderation needs the moderator or admin role");
    else if (!dm_jwt_claims_allow_room(&claims, room))
        dm_request_error(r, 403, "forbidden", "the token does not allow this room");
    else
        ok = true;
    dm_jwt_claims_fini(&claims);
    return ok;
}

/* The request body as a JSON object with only the given integer and string
 * fields; answers 400/415 itself (NULL). Caller owns the result. */
static json_t *json_body(const struct dm_request *r, const char *const *allowed)
{
    const char *body, *key;
    size_t len;
    json_t *v;

    if (!dm_request_json_body(r, &body, &len))
        return NULL;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o))
        goto bad;
    json_object_foreach(o, key, v)
    {
        bool known = false;
        for (const char *const *a = allowed; *a != NULL; a++)
            known = known || strcmp(*a, key) == 0;
        if (!known)
            goto bad;
    }
    return o;
bad:
    json_decref(o);
    dm_request_error(r, 400, "invalid_body", "expected a JSON object with the documented fields");
    return NULL;
}

/* An integer field in [min, max] (absent: def; def < 0 makes it required). */
static bool int_field(json_t *o, const char *name, int64_t min, int64_t max, int64_t def,
                      int64_t *out)
{
    json_t *v = json_object_get(o, name);
    if (v == NULL) {
        *out = def;
        return def >= 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return false;
    *out = json_integer_value(v);
    return true;
}

void dm_moderation_mute(const struct dm_request *r, const char *room)
{
    static const char *const fields[] = {"uid", "seconds", NULL};
    int64_t seconds;

    if (!moderator(r, room))
        return;
    json_t *o = json_body(r, fields);
    if (o == NULL)
        return;
    json_t *uid = json_object_get(o, "uid");
    if (!json_is_string(uid) ||
        !dm_jwt_sub_valid(json_string_value(uid), json_string_length(uid)) ||
        strlen(json_string_value(uid)) != json_string_length(uid) ||
        !int_field(o, "seconds", 1, DM_RATELIMIT_MUTE_MAX_S, -1, &seconds)) {
        json_decref(o);
        dm_request_error(r, 400, "invalid_body", "expected {\"uid\":U,\"seconds\":1..2592000}");
        return;
    }
    struct change *ch = change_new(
        r, json_pack("{s:s,s:O,s:I}", "room", room, "uid", uid, "seconds", (json_int_t)seconds));
    dm_ratelimit_mute(r->in->ratelimit, room, json_string_value(uid), seconds, on_done, ch);
    json_decref(o);
}

void dm_moderation_unmute(const struct dm_request *r, const char *room, const char *raw_uid)
{
    size_t n;

    if (!moderator(r, room))
        return;
    char *uid = evhttp_uridecode(raw_uid, 0, &n);
    if (uid == NULL || strlen(uid) != n || !dm_jwt_sub_valid(uid, n)) {
        free(uid);
        dm_request_error(r, 400, "invalid_uid", "not a user id");
        return;
    }
    struct change *ch =
        change_new(r, json_pack("{s:s,s:s,s:b}", "room", room, "uid", uid, "muted", 0));
    dm_ratelimit_unmute(r->in->ratelimit, room, uid, on_done, ch);
    free(uid);
}

void dm_moderation_set_modes(const struct dm_request *r, const char *room)
{
    static const char *const fields[] = {"slow", "unique", NULL};
    int64_t slow, unique;

    if (!moderator(r, room))
        return;
    json_t *o = json_body(r, fields);
    if (o == NULL)
        return;
    bool ok = int_field(o, "slow", 0, DM_RATELIMIT_MODE_MAX_S, 0, &slow) &&
              int_field(o, "unique", 0, DM_RATELIMIT_MODE_MAX_S, 0, &unique);
    json_decref(o);
    if (!ok) {
        dm_request_error(r, 400, "invalid_body",
                         "expected {\"slow\":0..86400,\"unique\":0..86400} (seconds, 0: off)");
        return;
    }
    struct change *ch = change_new(r, json_pack("{s:s,s:I,s:I}", "room", room, "slow",
                                                (json_int_t)slow, "unique", (json_int_t)unique));
    dm_ratelimit_set_modes(r->in->ratelimit, room, slow, unique, on_done, ch);
}
