/* Strict incremental UTF-8 validation (RFC 3629): no overlong forms, no
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF. The state survives
 * across calls, so a WebSocket text message can be checked fragment by
 * fragment and rejected at its first bad byte (RFC 6455 §8.1). */
#ifndef DM_COMMON_UTF8_H
#define DM_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Embedded by callers (4 bytes). Private: read it only through the
 * functions below. */
struct dm_utf8 {
    uint32_t state; /* 0 between characters, else a pending or failed state */
};

/* Resets `u` to "between characters". */
void dm_utf8_init(struct dm_utf8 *u);

/* Feeds n bytes (borrowed; p may be NULL when n is 0). Returns 0 when
 * everything so far is a valid prefix of UTF-8, or -1 at the first invalid
 * byte. A failed state is sticky: later feeds return -1 until dm_utf8_init. */
int dm_utf8_feed(struct dm_utf8 *u, const uint8_t *p, size_t n);

/* True when the bytes fed so far end on a character boundary and nothing
 * failed (i.e. the text is complete and valid). */
bool dm_utf8_complete(const struct dm_utf8 *u);

/* One-shot check of a whole buffer (borrowed). */
bool dm_utf8_valid(const uint8_t *p, size_t n);

/* Number of code points in p[0..n) (borrowed), which must already be valid
 * UTF-8 (it counts the bytes that are not continuation bytes). */
size_t dm_utf8_codepoints(const uint8_t *p, size_t n);

#endif
