/* The small viewer page served at `/` (no external assets). */
#ifndef DM_BROADCAST_DEMO_H
#define DM_BROADCAST_DEMO_H

#include <stddef.h>

extern const char dm_demo_page[];
extern const size_t dm_demo_page_len;

#endif
