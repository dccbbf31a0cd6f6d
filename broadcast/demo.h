/* The demo viewer page served at `/`: broadcast/demo.html, compiled in at
 * build time (broadcast/embed.sh), with the node's settings filled in once
 * at start-up. No external assets, so it works offline. */
#ifndef DM_BROADCAST_DEMO_H
#define DM_BROADCAST_DEMO_H

#include <stddef.h>

#include "common/util.h"

struct dm_config;

/* Builds the page for cfg: demo_ingest_url goes into an HTML attribute,
 * escaped, so no value can add markup or script. Returns 0 with *page (the
 * caller frees it with free()) and *len, or with *page NULL when
 * cfg->demo_page is off; -1 with err when demo_ingest_url is neither empty,
 * an http(s) URL nor an absolute path. */
int dm_demo_page_build(const struct dm_config *cfg, char **page, size_t *len, char err[DM_ERRLEN]);

/* Appends s escaped for a double- or single-quoted HTML attribute value to
 * out (which must hold 6 * strlen(s) + 1 bytes); returns the length written.
 * Exposed for the unit test. */
size_t dm_demo_escape_attr(const char *s, char *out);

#endif
