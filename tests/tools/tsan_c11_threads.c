/* ThreadSanitizer builds only: C11 <threads.h> on top of pthreads.
 *
 * librdkafka starts its threads with thrd_create and locks with mtx_* and
 * cnd_*. glibc implements those by calling its pthread internals directly,
 * so TSan's pthread interceptors never see them: a thread it did not see
 * start crashes it, and locks it does not see would be reported as races.
 * Defined here, in the executable, these take precedence over glibc's (the
 * dynamic linker binds librdkafka's references to the first definition) and
 * go through the intercepted pthread functions. glibc lays out mtx_t,
 * cnd_t, thrd_t, tss_t and once_flag exactly as their pthread
 * counterparts, which the static asserts check. Never linked into the
 * normal or ASan builds. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>
#include <time.h>

_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread mutex");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread condition");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t is a pthread_t");
_Static_assert(sizeof(tss_t) == sizeof(pthread_key_t), "tss_t is a pthread key");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag is a pthread once");

static int status_of(int err)
{
    switch (err) {
    case 0:
        return thrd_success;
    case ENOMEM:
        return thrd_nomem;
    case ETIMEDOUT:
        return thrd_timedout;
    case EBUSY:
        return thrd_busy;
    default:
        return thrd_error;
    }
}

struct start {
    thrd_start_t func;
    void *arg;
};

static void *trampoline(void *p)
{
    struct start s = *(struct start *)p;
    free(p);
    return (void *)(intptr_t)s.func(s.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg)
{
    struct start *s = malloc(sizeof(*s));
    if (s == NULL)
        return thrd_nomem;
    s->func = func;
    s->arg = arg;
    int err = pthread_create((pthread_t *)thr, NULL, trampoline, s);
    if (err != 0)
        free(s);
    return status_of(err);
}

int thrd_join(thrd_t thr, int *res)
{
    void *ret;
    int err = pthread_join((pthread_t)thr, &ret);
    if (err == 0 && res != NULL)
        *res = (int)(intptr_t)ret;
    return status_of(err);
}

int thrd_detach(thrd_t thr)
{
    return status_of(pthread_detach((pthread_t)thr));
}

thrd_t thrd_current(void)
{
    return (thrd_t)pthread_self();
}

int thrd_equal(thrd_t a, thrd_t b)
{
    return pthread_equal((pthread_t)a, (pthread_t)b);
}

void thrd_yield(void)
{
    sched_yield();
}

int thrd_sleep(const struct timespec *duration, struct timespec *remaining)
{
    if (nanosleep(duration, remaining) == 0)
        return 0;
    return errno == EINTR ? -1 : -2;
}

_Noreturn void thrd_exit(int res)
{
    pthread_exit((void *)(intptr_t)res);
}

int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    if (type & mtx_recursive)
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    int err = pthread_mutex_init((pthread_mutex_t *)m, &attr);
    pthread_mutexattr_destroy(&attr);
    return status_of(err);
}

int mtx_lock(mtx_t *m)
{
    return status_of(pthread_mutex_lock((pthread_mutex_t *)m));
}

int mtx_trylock(mtx_t *m)
{
    return status_of(pthread_mutex_trylock((pthread_mutex_t *)m));
}

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts)
{
    return status_of(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}

int mtx_unlock(mtx_t *m)
{
    return status_of(pthread_mutex_unlock((pthread_mutex_t *)m));
}

void mtx_destroy(mtx_t *m)
{
    pthread_mutex_destroy((pthread_mutex_t *)m);
}

int cnd_init(cnd_t *c)
{
    return status_of(pthread_cond_init((pthread_cond_t *)c, NULL));
}

int cnd_signal(cnd_t *c)
{
    return status_of(pthread_cond_signal((pthread_cond_t *)c));
}

int cnd_broadcast(cnd_t *c)
{
    return status_of(pthread_cond_broadcast((pthread_cond_t *)c));
}

int cnd_wait(cnd_t *c, mtx_t *m)
{
    return status_of(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
    return status_of(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}

void cnd_destroy(cnd_t *c)
{
    pthread_cond_destroy((pthread_cond_t *)c);
}

int tss_create(tss_t *key, tss_dtor_t dtor)
{
    return status_of(pthread_key_create((pthread_key_t *)key, dtor));
}

void *tss_get(tss_t key)
{
    return pthread_getspecific((pthread_key_t)key);
}

int tss_set(tss_t key, void *value)
{
    return status_of(pthread_setspecific((pthread_key_t)key, value));
}

void tss_delete(tss_t key)
{
    pthread_key_delete((pthread_key_t)key);
}

void call_once(once_flag *flag, void (*func)(void))
{
    pthread_once((pthread_once_t *)flag, func);
}
