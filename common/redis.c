/* Async Redis with reconnects and per-command deadlines. */
#include "common/redis.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/crypto.h>

#include "common/check.h"
#include "common/log.h"

#define DM_REDIS_MAGIC   0x72656469u
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 5000
#define PASSWORD_MAX     1024

struct dm_redis {
    unsigned magic;
    struct event_base *base;
    char *host;
    int port;
    char *auth_user;     /* NULL: the default user */
    char *password_file; /* NULL: no AUTH */
    bool authenticated;  /* this connection's AUTH was accepted */
    int timeout_ms;
    redisAsyncContext *ac; /* NULL while disconnected */
    bool connected;
    bool answering; /* the last command was answered in time (readiness) */
    int backoff_ms;
    struct event *reconnect;
    struct event *drop; /* drops the connection from outside hiredis's callbacks */
    size_t pending;
    unsigned long errors;
    bool freeing;
};

/* One command in flight. Freed when hiredis is done with it; the deadline
 * may answer the caller earlier. */
struct call {
    struct dm_redis *r;
    dm_redis_reply_cb cb;
    void *arg;
    struct event *deadline;
    bool answered;
};

static void connect_now(struct dm_redis *r);
static void on_drop(evutil_socket_t fd, short what, void *arg);

static void schedule_reconnect(struct dm_redis *r)
{
    struct timeval tv = dm_timeval_ms(r->backoff_ms);
    if (r->freeing)
        return;
    event_add(r->reconnect, &tv);
    r->backoff_ms = r->backoff_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : r->backoff_ms * 2;
}

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    connect_now(arg);
}

/* Reads the password into buf (PASSWORD_BUF bytes), without its trailing
 * line end, its length into *len: 0, or -1 with err (never the password).
 * Unbuffered, so no copy of the secret is left in a stdio buffer. */
#define PASSWORD_BUF (PASSWORD_MAX + 3) /* the password, CR LF, and one more */

static int read_password(const char *path, char buf[PASSWORD_BUF], size_t *len, char err[DM_ERRLEN])
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        int e = errno;
        snprintf(err, DM_ERRLEN, "redis_password_file %s: %s", path, strerror(e));
        return -1;
    }
    setvbuf(f, NULL, _IONBF, 0);
    size_t n = fread(buf, 1, PASSWORD_BUF, f);
    bool failed = ferror(f) != 0;
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    const char *why = failed             ? "cannot read it"
                      : n == 0           ? "empty"
                      : n > PASSWORD_MAX ? "longer than 1024 bytes"
                                         : NULL;
    if (why != NULL) {
        OPENSSL_cleanse(buf, PASSWORD_BUF);
        snprintf(err, DM_ERRLEN, "redis_password_file %s: %s", path, why);
        return -1;
    }
    *len = n;
    return 0;
}

int dm_redis_check_password_file(const char *password_file, char err[DM_ERRLEN])
{
    char pw[PASSWORD_BUF];
    size_t len;
    int rc = read_password(password_file, pw, &len, err);
    OPENSSL_cleanse(pw, sizeof(pw));
    return rc;
}

static void on_auth_reply(const redisReply *reply, void *arg)
{
    struct dm_redis *r = arg;
    /* NULL: the connection is already gone or being dropped. */
    if (reply == NULL)
        return;
    if (reply->type != REDIS_REPLY_ERROR) {
        r->authenticated = true;
        return;
    }
    /* Refused: every later command on this connection would fail NOAUTH.
     * Drop it (soon, outside this hiredis callback) and retry with backoff. */
    DM_LOG(DM_LOG_ERROR, "msg=\"redis refused AUTH\" addr=%s:%d user=%s", r->host, r->port,
           r->auth_user != NULL ? r->auth_user : "default");
    r->answering = false;
    event_active(r->drop, EV_TIMEOUT, 0);
}

/* Sends AUTH ahead of anything else on a new connection (Redis answers in
 * order, so the commands after it run authenticated). The file is read on
 * the loop: a few bytes from a local (secret) volume, once per connect. */
static void send_auth(struct dm_redis *r)
{
    char pw[PASSWORD_BUF], err[DM_ERRLEN];
    size_t len;
    int rc;

    if (read_password(r->password_file, pw, &len, err) < 0) {
        DM_LOG(DM_LOG_ERROR, "msg=\"redis password unreadable\" detail=\"%s\"", err);
        event_active(r->drop, EV_TIMEOUT, 0);
        return;
    }
    /* %b with a length: a password may hold any byte. */
    if (r->auth_user != NULL)
        rc = dm_redis_commandf(r, on_auth_reply, r, "AUTH %s %b", r->auth_user, pw, len);
    else
        rc = dm_redis_commandf(r, on_auth_reply, r, "AUTH %b", pw, len);
    OPENSSL_cleanse(pw, sizeof(pw));
    if (rc < 0)
        event_active(r->drop, EV_TIMEOUT, 0);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct dm_redis *r = ac->data;
    DM_CHECK_OBJ(r, DM_REDIS_MAGIC);
    if (status != REDIS_OK) {
        /* hiredis frees ac after this callback. */
        DM_LOG(DM_LOG_WARN, "msg=\"redis connect failed\" addr=%s:%d err=\"%s\"", r->host, r->port,
               ac->errstr);
        r->ac = NULL;
        schedule_reconnect(r);
        return;
    }
    r->connected = true;
    r->authenticated = false;
    DM_LOG(DM_LOG_INFO, "msg=\"redis connected\" addr=%s:%d", r->host, r->port);
    if (r->password_file != NULL)
        send_auth(r);
    /* A frozen Redis still accepts connections (the kernel does): it is
     * usable once it answers. */
    (void)dm_redis_commandf(r, NULL, NULL, "PING");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct dm_redis *r = ac->data;
    DM_CHECK_OBJ(r, DM_REDIS_MAGIC);
    r->ac = NULL;
    r->connected = false;
    r->answering = false;
    if (status != REDIS_OK) {
        r->errors++;
        DM_LOG(DM_LOG_WARN, "msg=\"redis connection lost\" addr=%s:%d err=\"%s\"", r->host, r->port,
               ac->errstr);
    }
    schedule_reconnect(r);
}

static void connect_now(struct dm_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (ac == NULL || ac->err) {
        DM_LOG(DM_LOG_WARN, "msg=\"redis connect failed\" addr=%s:%d err=\"%s\"", r->host, r->port,
               ac != NULL ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
}

struct dm_redis *dm_redis_new(struct event_base *base, const char *host, int port, int timeout_ms)
{
    struct dm_redis *r = dm_calloc(1, sizeof(*r));
    r->magic = DM_REDIS_MAGIC;
    r->base = base;
    r->host = dm_strdup(host);
    r->port = port;
    r->timeout_ms = timeout_ms;
    r->backoff_ms = RECONNECT_MIN_MS;
    r->reconnect = evtimer_new(base, on_reconnect_timer, r);
    r->drop = evtimer_new(base, on_drop, r);
    DM_AN(r->reconnect);
    DM_AN(r->drop);
    connect_now(r);
    return r;
}

void dm_redis_set_auth(struct dm_redis *r, const char *user, const char *password_file)
{
    DM_CHECK_OBJ(r, DM_REDIS_MAGIC);
    free(r->auth_user);
    free(r->password_file);
    r->auth_user = user != NULL && *user != '\0' ? dm_strdup(user) : NULL;
    r->password_file =
        password_file != NULL && *password_file != '\0' ? dm_strdup(password_file) : NULL;
}

void dm_redis_free(struct dm_redis *r)
{
    if (r == NULL)
        return;
    DM_CHECK_OBJ(r, DM_REDIS_MAGIC);
    r->freeing = true;
    /* redisAsyncFree runs every pending callback with a NULL reply. */
    if (r->ac != NULL)
        redisAsyncFree(r->ac);
    DM_ASSERT(r->pending == 0);
    event_free(r->reconnect);
    event_free(r->drop);
    free(r->host);
    free(r->auth_user);
    free(r->password_file);
    r->magic = 0;
    free(r);
}

static void answer(struct call *c, const redisReply *reply)
{
    if (c->answered)
        return;
    c->answered = true;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        c->r->errors++;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        DM_LOG(DM_LOG_WARN, "msg=\"redis error reply\" detail=\"%s\"", reply->str);
    if (c->cb != NULL)
        c->cb(reply, c->arg);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct call *c = privdata;
    DM_UNUSED(ac);
    const redisReply *rep = reply;
    if (rep != NULL && !c->answered)
        c->r->answering = true;
    /* The backoff starts over only once a connection has proved usable
     * (answered, and authenticated where AUTH is on): a Redis that accepts
     * connections and then refuses or drops them is retried ever slower,
     * not ten times a second. */
    if (rep != NULL && rep->type != REDIS_REPLY_ERROR &&
        (c->r->password_file == NULL || c->r->authenticated))
        c->r->backoff_ms = RECONNECT_MIN_MS;
    answer(c, reply);
    c->r->pending--;
    event_free(c->deadline);
    free(c);
}

/* Frees the connection and schedules a reconnect; pending callbacks fire
 * with NULL first. Only from a timer or event of ours, never from inside a
 * hiredis callback, where freeing the context would pull it from under
 * hiredis. */
static void drop_connection(struct dm_redis *r)
{
    if (r->ac == NULL)
        return;
    r->errors++;
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->connected = false;
    redisAsyncFree(ac);
    if (!evtimer_pending(r->reconnect, NULL))
        schedule_reconnect(r);
}

static void on_drop(evutil_socket_t fd, short what, void *arg)
{
    DM_UNUSED(fd);
    DM_UNUSED(what);
    drop_connection(arg);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct call *c = arg;
    struct dm_redis *r = c->r;
    DM_UNUSED(fd);
    DM_UNUSED(what);

    answer(c, NULL);
    r->answering = false;
    /* hiredis has no command timeout: a Redis that stopped answering would
     * keep every later command queued. Drop the connection (its pending
     * callbacks fire with NULL, which frees c) and reconnect. */
    if (r->ac != NULL) {
        DM_LOG(DM_LOG_WARN, "msg=\"redis did not answer in time, reconnecting\" timeout_ms=%d",
               r->timeout_ms);
        drop_connection(r);
    }
}

static struct call *new_call(struct dm_redis *r, dm_redis_reply_cb cb, void *arg)
{
    struct call *c = dm_calloc(1, sizeof(*c));
    struct timeval tv = dm_timeval_ms(r->timeout_ms);
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    c->deadline = evtimer_new(r->base, on_deadline, c);
    DM_AN(c->deadline);
    evtimer_add(c->deadline, &tv);
    return c;
}

/* More commands than this waiting for replies means Redis is not keeping
 * up: refuse rather than queue without bound. */
#define PENDING_MAX 100000

static int sent(struct dm_redis *r, struct call *c, int rc)
{
    if (rc != REDIS_OK) {
        event_free(c->deadline);
        free(c);
        r->errors++;
        return -1;
    }
    r->pending++;
    return 0;
}

int dm_redis_command(struct dm_redis *r, dm_redis_reply_cb cb, void *arg, int argc,
                     const char **argv, const size_t *argvlen)
{
    DM_CHECK_OBJ(r, DM_REDIS_MAGIC);
    if (!r->connected || r->pending >= PENDING_MAX) {
        r->errors++;
        return -1;
    }
    struct call *c = new_call(r, cb, arg);
    return sent(r, c, redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, argvlen));
}

int dm_redis_commandf(struct dm_redis *r, dm_redis_reply_cb cb, void *arg, const char *fmt, ...)
{
    va_list ap;
    int rc;

    DM_CHECK_OBJ(r, DM_REDIS_MAGIC);
    if (!r->connected || r->pending >= PENDING_MAX) {
        r->errors++;
        return -1;
    }
    struct call *c = new_call(r, cb, arg);
    va_start(ap, fmt);
    rc = redisvAsyncCommand(r->ac, on_reply, c, fmt, ap);
    va_end(ap);
    return sent(r, c, rc);
}

bool dm_redis_connected(const struct dm_redis *r)
{
    return r->connected;
}

bool dm_redis_usable(const struct dm_redis *r)
{
    return r->connected && r->answering;
}

size_t dm_redis_pending(const struct dm_redis *r)
{
    return r->pending;
}

unsigned long dm_redis_errors(const struct dm_redis *r)
{
    return r->errors;
}
