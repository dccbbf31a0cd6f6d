/* Connection limits: a node count and an open-addressing table of counts
 * per client address (linear probing, deletion by backward shift, so no
 * tombstones), keyed by a seeded hash so that peers cannot choose colliding
 * addresses. Entries exist only while their address has connections, so
 * the table never holds more than max_total of them. */
#include "common/connlimit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/check.h"
#include "common/util.h"
#include "common/ws.h"

#define MIN_CAP 64

struct entry {
    uint8_t key[16];
    uint32_t count; /* 0: empty */
};

struct dm_connlimit {
    pthread_mutex_t lock;
    size_t max_total, max_per_ip;
    size_t total;
    struct entry *tab; /* cap entries; NULL without a per-address limit */
    size_t cap, used;  /* cap is a power of two, used < cap / 2 */
    uint64_t seed;
};

struct dm_connlimit *dm_connlimit_new(size_t max_total, size_t max_per_ip)
{
    struct dm_connlimit *cl = dm_calloc(1, sizeof(*cl));

    DM_AZ(pthread_mutex_init(&cl->lock, NULL));
    cl->max_total = max_total;
    cl->max_per_ip = max_per_ip;
    if (max_per_ip > 0) {
        cl->cap = MIN_CAP;
        cl->tab = dm_calloc(cl->cap, sizeof(*cl->tab));
        if (getrandom(&cl->seed, sizeof(cl->seed), 0) != (ssize_t)sizeof(cl->seed))
            cl->seed = (uint64_t)dm_mono_us() * 0x9e3779b97f4a7c15u;
    }
    return cl;
}

void dm_connlimit_free(struct dm_connlimit *cl)
{
    if (cl == NULL)
        return;
    pthread_mutex_destroy(&cl->lock);
    free(cl->tab);
    free(cl);
}

/* The address key of peer; false when it has none (not IP). */
static bool key_of(const struct sockaddr *peer, uint8_t key[16])
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    memset(key, 0, 16);
    if (peer == NULL)
        return false;
    if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)peer;
        memcpy(key, v4mapped, 12);
        memcpy(key + 12, &in->sin_addr, 4);
        return true;
    }
    if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)peer;
        /* An IPv4 client of a dual-stack socket is that IPv4 address. */
        if (memcmp(in6->sin6_addr.s6_addr, v4mapped, 12) == 0)
            memcpy(key, in6->sin6_addr.s6_addr, 16);
        else
            memcpy(key, in6->sin6_addr.s6_addr, 8); /* the /64 */
        return true;
    }
    return false;
}

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return h;
}

static size_t slot_of(const struct dm_connlimit *cl, const uint8_t key[16])
{
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + 8, 8);
    return (size_t)mix(mix(a ^ cl->seed) ^ b) & (cl->cap - 1);
}

/* The entry of key, or the empty one where it would go. */
static struct entry *find(const struct dm_connlimit *cl, const uint8_t key[16])
{
    size_t i = slot_of(cl, key);
    while (cl->tab[i].count != 0 && memcmp(cl->tab[i].key, key, 16) != 0)
        i = (i + 1) & (cl->cap - 1);
    return &cl->tab[i];
}

static void grow(struct dm_connlimit *cl)
{
    struct entry *old = cl->tab;
    size_t oldcap = cl->cap;

    cl->cap *= 2;
    cl->tab = dm_calloc(cl->cap, sizeof(*cl->tab));
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].count != 0)
            *find(cl, old[i].key) = old[i];
    }
    free(old);
}

/* Empties e and moves later entries of its probe run back into the hole
 * (Knuth's algorithm R), so every entry stays reachable from its slot. */
static void remove_entry(struct dm_connlimit *cl, struct entry *e)
{
    size_t mask = cl->cap - 1, hole = (size_t)(e - cl->tab), i = hole;

    for (;;) {
        i = (i + 1) & mask;
        if (cl->tab[i].count == 0)
            break;
        size_t home = slot_of(cl, cl->tab[i].key);
        /* Movable when its home is not cyclically within (hole, i]. */
        bool stays = hole <= i ? (hole < home && home <= i) : (hole < home || home <= i);
        if (!stays) {
            cl->tab[hole] = cl->tab[i];
            hole = i;
        }
    }
    cl->tab[hole].count = 0;
    cl->used--;
}

enum dm_connlimit_verdict dm_connlimit_acquire(struct dm_connlimit *cl, const struct sockaddr *peer,
                                               struct dm_connlimit_slot *slot)
{
    enum dm_connlimit_verdict v = DM_CONNLIMIT_OK;

    slot->per_ip = cl->tab != NULL && key_of(peer, slot->key);
    slot->held = false;
    pthread_mutex_lock(&cl->lock);
    if (cl->max_total > 0 && cl->total >= cl->max_total) {
        v = DM_CONNLIMIT_NODE;
    } else if (slot->per_ip) {
        struct entry *e = find(cl, slot->key);
        if (e->count == 0) {
            /* Keeps used < cap / 2; bounded by max_total entries. */
            if ((cl->used + 1) * 2 > cl->cap) {
                grow(cl);
                e = find(cl, slot->key);
            }
            memcpy(e->key, slot->key, 16);
            cl->used++;
        }
        if (e->count >= cl->max_per_ip)
            v = DM_CONNLIMIT_PER_IP;
        else
            e->count++;
    }
    if (v == DM_CONNLIMIT_OK) {
        cl->total++;
        slot->held = true;
    }
    pthread_mutex_unlock(&cl->lock);
    return v;
}

void dm_connlimit_release(struct dm_connlimit *cl, struct dm_connlimit_slot *slot)
{
    if (!slot->held)
        return;
    pthread_mutex_lock(&cl->lock);
    DM_ASSERT(cl->total > 0);
    cl->total--;
    if (slot->per_ip) {
        struct entry *e = find(cl, slot->key);
        DM_ASSERT(e->count > 0);
        if (--e->count == 0)
            remove_entry(cl, e);
    }
    pthread_mutex_unlock(&cl->lock);
    slot->held = false;
}

size_t dm_connlimit_total(struct dm_connlimit *cl)
{
    pthread_mutex_lock(&cl->lock);
    size_t n = cl->total;
    pthread_mutex_unlock(&cl->lock);
    return n;
}

size_t dm_connlimit_of(struct dm_connlimit *cl, const struct sockaddr *peer)
{
    uint8_t key[16];
    size_t n = 0;

    if (cl->tab == NULL || !key_of(peer, key))
        return 0;
    pthread_mutex_lock(&cl->lock);
    n = find(cl, key)->count;
    pthread_mutex_unlock(&cl->lock);
    return n;
}

size_t dm_connlimit_addresses(struct dm_connlimit *cl)
{
    pthread_mutex_lock(&cl->lock);
    size_t n = cl->used;
    pthread_mutex_unlock(&cl->lock);
    return n;
}

const char *dm_connlimit_reason(enum dm_connlimit_verdict v)
{
    return v == DM_CONNLIMIT_PER_IP ? "max_connections_per_ip"
           : v == DM_CONNLIMIT_NODE ? "max_connections"
                                    : "ok";
}

void dm_connlimit_answer(int fd, int status, const char *code, const char *message)
{
    char buf[512], body[256], sink[2048];
    int blen = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}", code, message);
    DM_ASSERT(blen > 0 && (size_t)blen < sizeof(body));
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n%sConnection: close\r\n\r\n%s",
                     status, dm_http_reason(status), blen,
                     status == 503 ? "Retry-After: 1\r\n" : "", body);
    DM_ASSERT(n > 0 && (size_t)n < sizeof(buf));
    /* What the client already sent: closing with unread input would send
     * RST, which may destroy the answer before the client reads it. */
    for (int i = 0; i < 8 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
    (void)send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}
