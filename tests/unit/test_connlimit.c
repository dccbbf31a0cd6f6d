/* common/connlimit.c: the node count, counts per address (IPv4, IPv6 by
 * /64, IPv4-mapped IPv6 as IPv4), the bound on the table, deletion that
 * keeps every entry reachable (checked against a plain model), and threads
 * sharing one table. */
#include "common/connlimit.c"

#include <arpa/inet.h>
#include <pthread.h>

#include "tests/unit/tap.h"

static struct sockaddr_in v4(uint32_t host_order)
{
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(host_order);
    a.sin_port = htons(1234);
    return a;
}

static struct sockaddr_in6 v6(const char *text)
{
    struct sockaddr_in6 a = {0};
    a.sin6_family = AF_INET6;
    DM_ASSERT(inet_pton(AF_INET6, text, &a.sin6_addr) == 1);
    return a;
}

#define SA(x) ((const struct sockaddr *)(const void *)&(x))

static void test_node_limit(void)
{
    struct dm_connlimit *cl = dm_connlimit_new(3, 0);
    struct dm_connlimit_slot s[4];
    struct sockaddr_in a = v4(0x7f000001);

    ok(dm_connlimit_acquire(cl, SA(a), &s[0]) == DM_CONNLIMIT_OK && s[0].held && !s[0].per_ip,
       "first connection counted, no table without a per-address limit");
    ok(dm_connlimit_acquire(cl, SA(a), &s[1]) == DM_CONNLIMIT_OK, "second");
    ok(dm_connlimit_acquire(cl, NULL, &s[2]) == DM_CONNLIMIT_OK, "no address: node count only");
    ok(dm_connlimit_acquire(cl, SA(a), &s[3]) == DM_CONNLIMIT_NODE && !s[3].held,
       "fourth refused: max_total 3");
    ok(dm_connlimit_total(cl) == 3, "total 3");
    dm_connlimit_release(cl, &s[3]);
    ok(dm_connlimit_total(cl) == 3, "releasing a refused slot changes nothing");
    dm_connlimit_release(cl, &s[1]);
    dm_connlimit_release(cl, &s[1]);
    ok(dm_connlimit_total(cl) == 2, "released once, however often it is given back");
    ok(dm_connlimit_acquire(cl, SA(a), &s[1]) == DM_CONNLIMIT_OK, "room again after a close");
    for (int i = 0; i < 3; i++)
        dm_connlimit_release(cl, &s[i]);
    ok(dm_connlimit_total(cl) == 0, "all released");
    ok(strcmp(dm_connlimit_reason(DM_CONNLIMIT_NODE), "max_connections") == 0 &&
           strcmp(dm_connlimit_reason(DM_CONNLIMIT_PER_IP), "max_connections_per_ip") == 0,
       "reasons name the config keys");
    dm_connlimit_free(cl);

    cl = dm_connlimit_new(0, 0);
    for (int i = 0; i < 1000; i++)
        DM_ASSERT(dm_connlimit_acquire(cl, SA(a), &s[0]) == DM_CONNLIMIT_OK);
    ok(dm_connlimit_total(cl) == 1000, "max_total 0: no node limit");
    dm_connlimit_free(cl);
    dm_connlimit_free(NULL);
    ok(1, "free(NULL) is a no-op");
}

static void test_per_ip(void)
{
    struct dm_connlimit *cl = dm_connlimit_new(100, 2);
    struct dm_connlimit_slot s[8];
    struct sockaddr_in a = v4(0x0a000001), b = v4(0x0a000002);
    struct sockaddr_in6 a_mapped = v6("::ffff:10.0.0.1");
    struct sockaddr_in6 c1 = v6("2001:db8:1:2:aaaa::1"), c2 = v6("2001:db8:1:2:ffff::9");
    struct sockaddr_in6 d = v6("2001:db8:1:3::1");
    struct sockaddr_storage unix_peer = {0};
    unix_peer.ss_family = AF_UNIX;

    ok(dm_connlimit_acquire(cl, SA(a), &s[0]) == DM_CONNLIMIT_OK && s[0].per_ip, "a: 1");
    ok(dm_connlimit_acquire(cl, SA(a_mapped), &s[1]) == DM_CONNLIMIT_OK, "a as ::ffff:a: 2");
    ok(dm_connlimit_of(cl, SA(a)) == 2, "IPv4-mapped IPv6 counts as the IPv4 address");
    ok(dm_connlimit_acquire(cl, SA(a), &s[2]) == DM_CONNLIMIT_PER_IP, "a: third refused");
    ok(dm_connlimit_total(cl) == 2, "a refusal is not counted");
    ok(dm_connlimit_acquire(cl, SA(b), &s[2]) == DM_CONNLIMIT_OK, "b is another address");
    ok(dm_connlimit_acquire(cl, SA(c1), &s[3]) == DM_CONNLIMIT_OK, "IPv6 c1");
    ok(dm_connlimit_acquire(cl, SA(c2), &s[4]) == DM_CONNLIMIT_OK, "c2, same /64");
    ok(dm_connlimit_acquire(cl, SA(c1), &s[5]) == DM_CONNLIMIT_PER_IP,
       "a third in that /64 refused, whatever its low 64 bits");
    ok(dm_connlimit_acquire(cl, SA(d), &s[5]) == DM_CONNLIMIT_OK, "the next /64 is another");
    ok(dm_connlimit_acquire(cl, SA(unix_peer), &s[6]) == DM_CONNLIMIT_OK && !s[6].per_ip &&
           dm_connlimit_acquire(cl, SA(unix_peer), &s[7]) == DM_CONNLIMIT_OK,
       "a non-IP peer is limited by the node count only");
    dm_connlimit_release(cl, &s[6]);
    dm_connlimit_release(cl, &s[7]);
    ok(dm_connlimit_addresses(cl) == 4, "4 addresses in the table (a, b, c/64, d/64)");
    dm_connlimit_release(cl, &s[0]);
    ok(dm_connlimit_of(cl, SA(a)) == 1, "a back to 1");
    ok(dm_connlimit_acquire(cl, SA(a), &s[0]) == DM_CONNLIMIT_OK, "so a may connect again");
    for (int i = 0; i < 6; i++)
        dm_connlimit_release(cl, &s[i]);
    ok(dm_connlimit_total(cl) == 0 && dm_connlimit_addresses(cl) == 0,
       "an address without connections has no entry");
    dm_connlimit_free(cl);

    cl = dm_connlimit_new(10, 1);
    ok(dm_connlimit_acquire(cl, SA(a), &s[0]) == DM_CONNLIMIT_OK &&
           dm_connlimit_acquire(cl, SA(a), &s[1]) == DM_CONNLIMIT_PER_IP,
       "max_per_ip 1");
    dm_connlimit_release(cl, &s[0]);
    dm_connlimit_free(cl);
}

/* Many addresses come and go in a random order; the table must agree with
 * a plain array of counts after every step, and stay within its bound. */
#define NADDR 3000
static uint32_t model[NADDR];

static uint64_t rng = 88172645463325252u;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void test_model(void)
{
    const size_t max_total = 20000, per_ip = 3;
    struct dm_connlimit *cl = dm_connlimit_new(max_total, per_ip);
    static struct dm_connlimit_slot held[20000];
    static uint32_t held_addr[20000];
    size_t nheld = 0, mismatches = 0, refused_wrongly = 0, maxcap = 0;

    for (int step = 0; step < 200000; step++) {
        bool open = nheld == 0 || (next_rand() % 100 < 55 && nheld < max_total);
        if (open) {
            uint32_t a = (uint32_t)(next_rand() % NADDR);
            struct sockaddr_in sa = v4(0xc0000000u + a);
            enum dm_connlimit_verdict v = dm_connlimit_acquire(cl, SA(sa), &held[nheld]);
            enum dm_connlimit_verdict want =
                model[a] >= per_ip ? DM_CONNLIMIT_PER_IP : DM_CONNLIMIT_OK;
            if (v != want)
                refused_wrongly++;
            if (v == DM_CONNLIMIT_OK) {
                model[a]++;
                held_addr[nheld++] = a;
            }
        } else {
            size_t i = (size_t)(next_rand() % nheld);
            dm_connlimit_release(cl, &held[i]);
            model[held_addr[i]]--;
            held[i] = held[nheld - 1];
            held_addr[i] = held_addr[nheld - 1];
            nheld--;
        }
        if (cl->cap > maxcap)
            maxcap = cl->cap;
        if (step % 997 == 0) {
            size_t used = 0;
            for (uint32_t a = 0; a < NADDR; a++) {
                struct sockaddr_in sa = v4(0xc0000000u + a);
                if (dm_connlimit_of(cl, SA(sa)) != model[a])
                    mismatches++;
                used += model[a] > 0;
            }
            if (used != dm_connlimit_addresses(cl))
                mismatches++;
        }
    }
    ok(refused_wrongly == 0, "every verdict as the model says (%zu wrong)", refused_wrongly);
    ok(mismatches == 0, "every count as the model says after deletions (%zu wrong)", mismatches);
    ok(dm_connlimit_total(cl) == nheld, "total = connections held (%zu)", nheld);
    ok(maxcap <= 2 * 4096, "the table stays small: at most %zu entries for %d addresses", maxcap,
       NADDR);
    while (nheld > 0)
        dm_connlimit_release(cl, &held[--nheld]);
    ok(dm_connlimit_total(cl) == 0 && dm_connlimit_addresses(cl) == 0, "empty at the end");
    dm_connlimit_free(cl);
}

static void test_bound(void)
{
    /* Entries exist only for addresses with connections, so they can
     * never outnumber max_total: the table is bounded by it. */
    struct dm_connlimit *cl = dm_connlimit_new(1000, 5);
    static struct dm_connlimit_slot s[1001];
    size_t ok_count = 0;
    for (uint32_t i = 0; i < 1001; i++) {
        struct sockaddr_in sa = v4(0x0b000000u + i);
        ok_count += dm_connlimit_acquire(cl, SA(sa), &s[i]) == DM_CONNLIMIT_OK;
    }
    ok(ok_count == 1000 && dm_connlimit_addresses(cl) == 1000,
       "1000 distinct addresses admitted, the 1001st refused by the node limit");
    ok(cl->cap <= 4096, "capacity %zu for 1000 entries", cl->cap);
    for (uint32_t i = 0; i < 1001; i++)
        dm_connlimit_release(cl, &s[i]);
    ok(dm_connlimit_addresses(cl) == 0, "all gone");
    dm_connlimit_free(cl);
}

struct worker_arg {
    struct dm_connlimit *cl;
    uint32_t base;
    size_t refused;
};

static void *hammer(void *p)
{
    struct worker_arg *w = p;
    struct dm_connlimit_slot s[16];
    for (int round = 0; round < 2000; round++) {
        for (int i = 0; i < 16; i++) {
            struct sockaddr_in sa = v4(w->base + (uint32_t)(i % 4));
            if (dm_connlimit_acquire(w->cl, SA(sa), &s[i]) != DM_CONNLIMIT_OK)
                w->refused++;
        }
        for (int i = 0; i < 16; i++)
            dm_connlimit_release(w->cl, &s[i]);
    }
    return NULL;
}

static void test_threads(void)
{
    struct dm_connlimit *cl = dm_connlimit_new(0, 4);
    pthread_t t[4];
    struct worker_arg w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker_arg){cl, 0x0c000000u + (uint32_t)i * 16, 0};
        pthread_create(&t[i], NULL, hammer, &w[i]);
    }
    size_t refused = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        refused += w[i].refused;
    }
    ok(refused == 0, "4 threads, 4 connections per address each: none refused (%zu)", refused);
    ok(dm_connlimit_total(cl) == 0 && dm_connlimit_addresses(cl) == 0,
       "every count given back across threads");
    dm_connlimit_free(cl);
}

int main(void)
{
    subtest("node limit", test_node_limit);
    subtest("per address", test_per_ip);
    subtest("random opens and closes against a model", test_model);
    subtest("bounded by max_total", test_bound);
    subtest("threads", test_threads);
    return done_testing();
}
