/* Strict UTF-8 validator: a small state machine over "what the next
 * continuation byte may be", with an 8-bytes-at-a-time ASCII fast path. */
#include "common/utf8.h"

#include <string.h>

#include "common/check.h"

/* States 1..7 mean "inside a sequence"; each allows exactly one byte range
 * next, which is how overlongs (E0 80.., F0 80..), surrogates (ED A0..) and
 * code points above U+10FFFF (F4 90..) are refused at their second byte. */
enum {
    S_ACCEPT = 0, /* between characters */
    S_TAIL1 = 1,  /* one more 80..BF */
    S_TAIL2 = 2,  /* two more 80..BF */
    S_TAIL3 = 3,  /* three more 80..BF */
    S_E0 = 4,     /* after E0: A0..BF, then one */
    S_ED = 5,     /* after ED: 80..9F (no surrogates), then one */
    S_F0 = 6,     /* after F0: 90..BF, then two */
    S_F4 = 7,     /* after F4: 80..8F (<= U+10FFFF), then two */
    S_REJECT = 8,
};

static const uint8_t next_lo[S_REJECT] = {0, 0x80, 0x80, 0x80, 0xA0, 0x80, 0x90, 0x80};
static const uint8_t next_hi[S_REJECT] = {0, 0xBF, 0xBF, 0xBF, 0xBF, 0x9F, 0xBF, 0x8F};
static const uint8_t next_state[S_REJECT] = {0,       S_ACCEPT, S_TAIL1, S_TAIL2,
                                             S_TAIL1, S_TAIL1,  S_TAIL2, S_TAIL2};

#define HIGH_BITS 0x8080808080808080ull

/* State after a non-ASCII lead byte. C0/C1 could only start overlong
 * two-byte forms; F5..FF would exceed U+10FFFF; 80..BF are not leads. */
static uint32_t lead_state(uint8_t b)
{
    if (b < 0xC2)
        return S_REJECT;
    if (b < 0xE0)
        return S_TAIL1;
    if (b == 0xE0)
        return S_E0;
    if (b == 0xED)
        return S_ED;
    if (b < 0xF0)
        return S_TAIL2;
    if (b == 0xF0)
        return S_F0;
    if (b < 0xF4)
        return S_TAIL3;
    if (b == 0xF4)
        return S_F4;
    return S_REJECT;
}

void dm_utf8_init(struct dm_utf8 *u)
{
    DM_AN(u);
    u->state = S_ACCEPT;
}

int dm_utf8_feed(struct dm_utf8 *u, const uint8_t *p, size_t n)
{
    uint32_t s;
    size_t i = 0;

    DM_AN(u);
    DM_ASSERT(p != NULL || n == 0);
    s = u->state;
    DM_ASSERT(s <= S_REJECT);
    if (s == S_REJECT)
        return -1;
    while (i < n) {
        uint8_t b;
        if (s == S_ACCEPT) {
            while (n - i >= 8) {
                uint64_t w;
                memcpy(&w, p + i, sizeof(w));
                if (w & HIGH_BITS)
                    break;
                i += 8;
            }
            if (i == n)
                break;
            b = p[i++];
            if (b < 0x80)
                continue;
            s = lead_state(b);
            if (s == S_REJECT)
                goto fail;
        } else {
            b = p[i++];
            if (b < next_lo[s] || b > next_hi[s])
                goto fail;
            s = next_state[s];
        }
    }
    u->state = s;
    return 0;

fail:
    u->state = S_REJECT;
    return -1;
}

bool dm_utf8_complete(const struct dm_utf8 *u)
{
    DM_AN(u);
    return u->state == S_ACCEPT;
}

bool dm_utf8_valid(const uint8_t *p, size_t n)
{
    struct dm_utf8 u;

    dm_utf8_init(&u);
    return dm_utf8_feed(&u, p, n) == 0 && dm_utf8_complete(&u);
}

size_t dm_utf8_codepoints(const uint8_t *p, size_t n)
{
    size_t count = 0;
    size_t i = 0;

    DM_ASSERT(p != NULL || n == 0);
    /* ASCII runs: every byte is a code point. */
    while (i < n) {
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, sizeof(w));
            if ((w & HIGH_BITS) == 0) {
                count += 8;
                i += 8;
                continue;
            }
        }
        count += (p[i] & 0xC0) != 0x80;
        i++;
    }
    return count;
}
