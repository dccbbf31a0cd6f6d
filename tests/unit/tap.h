/* A tiny TAP producer for unit tests (picotest style).
 *
 *   ok(cond, "name %d", i);   one numbered check
 *   subtest("name", fn);      runs fn, prints a comment header
 *   return done_testing();    prints the plan, exit status 1 on any failure
 *
 * tests/run.sh counts the "ok"/"not ok" lines of every test binary. */
#ifndef DM_TESTS_UNIT_TAP_H
#define DM_TESTS_UNIT_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int tap_count;
static int tap_failed;

__attribute__((format(printf, 4, 5))) static int tap_ok(int cond, const char *file, int line,
                                                        const char *fmt, ...)
{
    va_list ap;
    tap_count++;
    printf("%sok %d - ", cond ? "" : "not ", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond) {
        tap_failed++;
        printf("#   failed at %s:%d\n", file, line);
    }
    fflush(stdout);
    return cond;
}

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

static inline void subtest(const char *name, void (*fn)(void))
{
    printf("# %s\n", name);
    fn();
}

static inline int done_testing(void)
{
    printf("1..%d\n", tap_count);
    if (tap_failed)
        printf("# %d of %d failed\n", tap_failed, tap_count);
    return tap_failed ? 1 : 0;
}

#endif
