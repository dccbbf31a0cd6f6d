/* Always-on assertions for bugs (Varnish vas.h): they stay on in release
 * builds, print where they fired and abort. Never use them for peer input. */
#ifndef DM_COMMON_CHECK_H
#define DM_COMMON_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define DM_PANIC(msg)                                                                              \
    do {                                                                                           \
        fprintf(stderr, "panic: %s in %s() at %s:%d\n", (msg), __func__, __FILE__, __LINE__);      \
        abort();                                                                                   \
    } while (0)

#define DM_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            DM_PANIC("assertion failed: " #cond);                                                  \
    } while (0)

#define DM_AN(p) DM_ASSERT((p) != 0)
#define DM_AZ(x) DM_ASSERT((x) == 0)

/* Long-lived objects carry `unsigned magic`; check it at every entry point. */
#define DM_CHECK_OBJ(o, m)                                                                         \
    do {                                                                                           \
        DM_AN(o);                                                                                  \
        DM_ASSERT((o)->magic == (m));                                                              \
    } while (0)

#endif
