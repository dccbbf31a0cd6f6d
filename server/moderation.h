/* Moderation routes of the ingest API (moderator or admin role, and a token
 * allowed in the room):
 *   POST   /v1/rooms/{room}/mutes          {"uid":U,"seconds":N}  mute U here for N s
 *   DELETE /v1/rooms/{room}/mutes/{uid}                           lift it
 *   PUT    /v1/rooms/{room}/modes          {"slow":S,"unique":N}  slow mode, unique-chat
 * Muted users get 403 `muted`; the modes apply to everyone but moderators.
 * State lives in Redis (server/ratelimit.h); each route answers by itself
 * once Redis did (503 when it does not). Retracting a comment is in
 * comments.h. */
#ifndef DM_SERVER_MODERATION_H
#define DM_SERVER_MODERATION_H

struct dm_request;

/* room is validated by the caller (borrowed); r is copied. */
void dm_moderation_mute(const struct dm_request *r, const char *room);
/* uid is the raw (percent-encoded) path segment, decoded and checked here. */
void dm_moderation_unmute(const struct dm_request *r, const char *room, const char *uid);
void dm_moderation_set_modes(const struct dm_request *r, const char *room);

#endif
