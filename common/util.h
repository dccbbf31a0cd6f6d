/* Small helpers every module uses: allocation that aborts on OOM, the codec
 * return convention, and a few macros. */
#ifndef DM_COMMON_UTIL_H
#define DM_COMMON_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#define DM_UNUSED(x)                       ((void)(x))
#define DM_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#define DM_ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))

/* Codec return convention (picohttpparser): >0 consumed, DM_AGAIN need more
 * input, DM_EPROTO invalid input. */
#define DM_EPROTO (-1)
#define DM_AGAIN  (-2)

/* Size of the error buffers filled by setup paths. */
#define DM_ERRLEN 256

/* Allocation: never returns NULL; prints a message and aborts on OOM.
 * dm_strndup copies at most n bytes of s, stopping at a NUL (POSIX strndup),
 * and always terminates the copy; s need not be NUL-terminated within n. */
void *dm_malloc(size_t n);
void *dm_calloc(size_t count, size_t n);
void *dm_realloc(void *p, size_t n);
char *dm_strdup(const char *s);
char *dm_strndup(const char *s, size_t n);

/* Cuts leading and trailing white space off s in place; returns the first
 * non-space character (for `name = value` lines). */
char *dm_str_trim(char *s);

/* A duration in milliseconds as the struct timeval libevent wants. */
struct timeval dm_timeval_ms(int64_t ms);

/* Wall clock in Unix milliseconds and microseconds, and a monotonic clock
 * in microseconds. */
int64_t dm_now_ms(void);
int64_t dm_now_us(void);
int64_t dm_mono_us(void);

#endif
