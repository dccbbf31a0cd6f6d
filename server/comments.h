/* The comment routes of the ingest API (DESIGN §4):
 *   POST   /v1/rooms/{room}/danmaku          publish; 201 only from the Kafka ack
 *   DELETE /v1/rooms/{room}/danmaku/{id}     retract (moderator or admin)
 *   GET    /v1/rooms/{room}/danmaku          recent history from Redis
 * Each answers by itself (now or once Kafka or Redis answered). */
#ifndef DM_SERVER_COMMENTS_H
#define DM_SERVER_COMMENTS_H

struct dm_request;

/* room is validated by the caller (borrowed); r is copied. */
void dm_comments_post(const struct dm_request *r, const char *room);
/* id is the raw path segment (borrowed), checked here. */
void dm_comments_retract(const struct dm_request *r, const char *room, const char *id);
void dm_comments_history(const struct dm_request *r, const char *room);

#endif
