/* Small helpers: string copies, zeroed and growing allocations, the abort on
 * OOM, the macros, and the two clocks. */
#include "common/util.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/tap.h"

/* ---- strings ------------------------------------------------------------ */

static void test_strings(void)
{
    static const struct {
        const char *s;
        size_t n;
        const char *want;
    } cases[] = {
        {"abc", 0, ""}, {"abc", 1, "a"},   {"abc", 2, "ab"},    {"abc", 3, "abc"},
        {"", 0, ""},    {"abc", 4, "abc"}, {"abc", 100, "abc"}, {"a\0bc", 4, "a"},
    };
    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        char *p = dm_strndup(cases[i].s, cases[i].n);
        ok(p != NULL && strcmp(p, cases[i].want) == 0, "dm_strndup(\"%s\", %zu) = \"%s\"",
           cases[i].s, cases[i].n, p);
        free(p);
    }

    /* A buffer without a terminator: exactly n bytes are read. */
    char raw[4] = {'w', 'x', 'y', 'z'};
    char *p = dm_strndup(raw, sizeof(raw));
    ok(memcmp(p, "wxyz", 5) == 0, "unterminated input copied and terminated");
    free(p);

    /* A heap buffer with nothing after it: ASan sees any read past n. */
    char *h = dm_malloc(3);
    memcpy(h, "hey", 3);
    p = dm_strndup(h, 3);
    ok(strcmp(p, "hey") == 0, "reads stay inside n (heap, no terminator)");
    free(p);
    free(h);

    /* Guard page (picohttpparser test.c): "abc" ends a readable page and the
     * next page faults, so reading past the NUL crashes any build. */
    long page = sysconf(_SC_PAGESIZE);
    char *map =
        mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map != MAP_FAILED && mprotect(map + page, (size_t)page, PROT_NONE) == 0) {
        char *end = map + page - 4;
        memcpy(end, "abc", 4);
        p = dm_strndup(end, 100);
        ok(strcmp(p, "abc") == 0, "stops at the NUL before the guard page");
        free(p);
        p = dm_strndup(end, 3);
        ok(strcmp(p, "abc") == 0, "n equal to the length");
        free(p);
        munmap(map, (size_t)page * 2);
    } else {
        ok(0, "guard page: mmap/mprotect failed");
        ok(0, "guard page: mmap/mprotect failed");
    }

    p = dm_strdup("copy me");
    ok(p != NULL && strcmp(p, "copy me") == 0, "dm_strdup");
    p[0] = 'C'; /* writable, its own storage */
    ok(strcmp(p, "Copy me") == 0, "dm_strdup returns a private copy");
    free(p);
    p = dm_strdup("");
    ok(p != NULL && p[0] == '\0', "dm_strdup(\"\")");
    free(p);
}

/* ---- allocation --------------------------------------------------------- */

static void test_alloc(void)
{
    /* Dirty the heap first so a calloc that forgot to zero is caught: freed
     * small blocks are handed out again by the next allocation of their size
     * (glibc tcache; ASan fills fresh blocks with 0xbe instead). */
    bool zero = true;
    for (size_t size = 16; size <= 4096; size *= 2) {
        unsigned char *d[8];
        for (int r = 0; r < 8; r++) {
            d[r] = dm_malloc(size);
            memset(d[r], 0xa5, size);
        }
        for (int r = 0; r < 8; r++)
            free(d[r]);
        unsigned char *z = dm_calloc(size / 8, 8);
        for (size_t i = 0; i < size; i++)
            zero = zero && z[i] == 0;
        free(z);
    }
    ok(zero, "dm_calloc zeroes count * n bytes (16..4096 bytes over dirty blocks)");

    void *m = dm_malloc(0);
    ok(m != NULL, "dm_malloc(0) is not NULL");
    free(m);
    m = dm_calloc(0, 16);
    ok(m != NULL, "dm_calloc(0, n) is not NULL");
    free(m);
    m = dm_calloc(16, 0);
    ok(m != NULL, "dm_calloc(n, 0) is not NULL");
    free(m);

    unsigned char *g = dm_malloc(16);
    for (int i = 0; i < 16; i++)
        g[i] = (unsigned char)i;
    size_t size = 16;
    bool kept = true;
    while (size < (1u << 20)) {
        size *= 4;
        g = dm_realloc(g, size);
        g[size - 1] = 0x5a; /* the new size is really there (ASan) */
        for (int i = 0; i < 16; i++)
            kept = kept && g[i] == (unsigned char)i;
    }
    ok(kept && g[size - 1] == 0x5a, "dm_realloc grows to %zu bytes and keeps the contents", size);
    g = dm_realloc(g, 8);
    kept = true;
    for (int i = 0; i < 8; i++)
        kept = kept && g[i] == (unsigned char)i;
    ok(kept, "dm_realloc shrinks and keeps the prefix");
    g = dm_realloc(g, 0);
    ok(g != NULL, "dm_realloc(p, 0) returns a block, not NULL");
    free(g);
    g = dm_realloc(NULL, 32);
    ok(g != NULL, "dm_realloc(NULL, n) allocates");
    free(g);
}

/* Runs fn in a child with stderr discarded; true when the child aborted. */
static bool aborts(void (*fn)(void))
{
    pid_t pid;
    int status;

    fflush(stdout);
    pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO);
        fn();
        _exit(0); /* not reached when fn aborts */
    }
    if (waitpid(pid, &status, 0) != pid)
        return false;
    return (WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT) ||
           (WIFEXITED(status) && WEXITSTATUS(status) != 0); /* sanitizer exit */
}

static volatile size_t huge = SIZE_MAX / 2;
static void *sink;

static void alloc_huge(void)
{
    sink = dm_malloc(huge);
}

static void calloc_overflow(void)
{
    sink = dm_calloc(huge, 4);
}

static void realloc_huge(void)
{
    sink = dm_realloc(NULL, huge);
}

static void alloc_small(void)
{
    sink = dm_malloc(16);
    free(sink);
}

static void test_oom(void)
{
    ok(aborts(alloc_huge), "dm_malloc aborts instead of returning NULL");
    ok(aborts(calloc_overflow), "dm_calloc aborts on count * n overflow");
    ok(aborts(realloc_huge), "dm_realloc aborts instead of returning NULL");
    ok(!aborts(alloc_small), "a normal allocation does not abort (the check can tell)");
}

/* ---- macros ------------------------------------------------------------- */

struct outer {
    int a;
    double b;
    char member;
};

static void test_macros(void)
{
    struct outer o;
    int arr[7];
    char *mp = &o.member;

    ok(DM_CONTAINER_OF(mp, struct outer, member) == &o, "DM_CONTAINER_OF");
    ok(DM_ARRAY_LEN(arr) == 7, "DM_ARRAY_LEN");
    DM_UNUSED(arr);
}

/* ---- clocks ------------------------------------------------------------- */

static void test_clocks(void)
{
    int64_t before = (int64_t)time(NULL) * 1000;
    int64_t now = dm_now_ms();
    int64_t after = ((int64_t)time(NULL) + 1) * 1000;

    ok(now >= before && now < after, "dm_now_ms %lld within [%lld, %lld)", (long long)now,
       (long long)before, (long long)after);
    ok(now > INT64_C(1577836800000), "dm_now_ms is after 2020 (milliseconds, not seconds)");

    int64_t m0 = dm_mono_us(), prev = m0;
    bool mono = m0 > 0;
    for (int i = 0; i < 100000; i++) {
        int64_t m = dm_mono_us();
        mono = mono && m >= prev;
        prev = m;
    }
    ok(mono, "dm_mono_us never goes back over 100000 reads");
    ok(prev - m0 < 10 * 1000000, "dm_mono_us is in microseconds (100000 reads < 10 s)");
}

int main(void)
{
    subtest("strings", test_strings);
    subtest("allocation", test_alloc);
    subtest("out of memory", test_oom);
    subtest("macros", test_macros);
    subtest("clocks", test_clocks);
    return done_testing();
}
