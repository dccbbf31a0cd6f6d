/* What the libFuzzer harnesses share: the entry points' prototypes, a check
 * for invariants beyond "no crash", and a deterministic split of an input
 * into the chunks a peer's TCP segments would deliver. Header only: each
 * harness is one translation unit linked with libdm.a. */
#ifndef DM_FUZZ_FUZZ_H
#define DM_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* libFuzzer's entry points (-Wmissing-prototypes wants them declared). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A broken invariant is a finding like a crash: say which one and abort,
 * so libFuzzer saves the input. */
#define FUZZ_CHECK(cond, what)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz: invariant broken: %s [%s] at %s:%d\n", (what), #cond, __FILE__, \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Bytes at the start of an input that choose its split: a class byte (the
 * harness may use its high bits for other settings) and a 32-bit seed. */
#define FUZZ_SPLIT_HDR 5

struct fuzz_split {
    uint32_t state;   /* xorshift32, never 0 */
    size_t max_chunk; /* chunks are 1..max_chunk bytes; 0: 1..all that is left */
};

/* klass & 7 picks the largest chunk: 1, 2, 3, 7, 16, 64, 512 or anything. */
static inline void fuzz_split_init(struct fuzz_split *s, uint8_t klass, const uint8_t seed[4])
{
    static const size_t max_chunk[8] = {1, 2, 3, 7, 16, 64, 512, 0};

    s->state = (uint32_t)seed[0] | (uint32_t)seed[1] << 8 | (uint32_t)seed[2] << 16 |
               (uint32_t)seed[3] << 24;
    if (s->state == 0)
        s->state = 0x9e3779b9u;
    s->max_chunk = max_chunk[klass & 7];
}

static inline uint32_t fuzz_split_rand(struct fuzz_split *s)
{
    uint32_t x = s->state;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s->state = x;
    return x;
}

/* Size of the next chunk when `left` (> 0) bytes remain. */
static inline size_t fuzz_split_next(struct fuzz_split *s, size_t left)
{
    size_t cap = s->max_chunk == 0 || s->max_chunk > left ? left : s->max_chunk;

    return 1 + (size_t)fuzz_split_rand(s) % cap;
}

#endif
