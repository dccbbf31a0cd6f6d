/* Blocked-words filter: an Aho-Corasick automaton over normalized code
 * points. Goto edges live in one open-addressing hash table keyed by
 * (state, code point), so memory is proportional to the entries whatever
 * the alphabet; failure links are followed at match time (amortized O(1)
 * per code point), and each state stores only the length of the longest
 * entry ending there, which is all match and mask need.
 *
 * Two shortcuts keep the common "no such edge" step off the hash table:
 * a 32-bit filter of each state's child code points (most states have one
 * child), and a dense table of the root's children for the BMP, where every
 * failure chain ends. */
#include "common/blocklist.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/utf8.h"

#define DM_BLOCKLIST_MAGIC 0x626c6b6cu /* "blkl" */

/* Decoder results that are not code points. INVALID (one bad byte) fits in
 * the 21 bits of a code point and appears in no entry, so the automaton
 * simply returns to the root on it. */
#define CP_INVALID 0x110000u
#define CP_IGNORED UINT32_MAX

#define ROOT     0u
#define NO_STATE UINT32_MAX

/* One goto edge; from == NO_STATE marks an empty slot. */
struct edge {
    uint32_t from;
    uint32_t cp;
    uint32_t to;
};

struct state {
    uint32_t fail;     /* failure link */
    uint32_t children; /* bit cp_bit(c) set for each child edge c: a filter */
    uint8_t out;       /* longest entry (normalized code points) ending here, 0: none */
};

/* The root's BMP children: page p (code points p*256..p*256+255) is
 * root_pages[(root_dir[p] - 1) * 256 ..], root_dir[p] == 0 when the root
 * has no child there; a slot holds the child or ROOT (no edge). */
#define ROOT_DIR_LEN 256

struct dm_blocklist {
    unsigned magic;
    struct edge *edges; /* hash table, ecap slots (a power of two) */
    uint32_t ebits;     /* log2(ecap) */
    uint32_t nedges;
    uint32_t nstates;
    struct state *st;
    uint16_t root_dir[ROOT_DIR_LEN];
    uint32_t *root_pages;
    size_t count; /* entry lines */
};

/* ---------------------------------------------------------------- */
/* Decoding and normalization                                        */
/* ---------------------------------------------------------------- */

/* Strict UTF-8 decode of one code point at p[0..n), n >= 1: returns it and
 * sets *adv to its length, or CP_INVALID with *adv = 1 for a byte that does
 * not start a valid sequence (same rules as common/utf8.c: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
static uint32_t decode_cp(const uint8_t *p, size_t n, size_t *adv)
{
    uint32_t b = p[0];
    uint8_t lo = 0x80, hi = 0xBF;
    size_t k;
    uint32_t cp;

    *adv = 1;
    if (b < 0x80)
        return b;
    if (b < 0xC2 || b > 0xF4)
        return CP_INVALID;
    if (b < 0xE0) {
        k = 1, cp = b & 0x1F;
    } else if (b < 0xF0) {
        k = 2, cp = b & 0x0F;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F;
    } else {
        k = 3, cp = b & 0x07;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F;
    }
    if (n <= k || p[1] < lo || p[1] > hi)
        return CP_INVALID;
    for (size_t j = 1; j <= k; j++) {
        if ((p[j] & 0xC0) != 0x80)
            return CP_INVALID;
        cp = cp << 6 | (p[j] & 0x3F);
    }
    *adv = k + 1;
    return cp;
}

/* Whitespace and invisible format characters (header, step 1). */
static bool is_ignored(uint32_t c)
{
    if (c < 0x80)
        return c == ' ' || (c >= 0x09 && c <= 0x0D);
    switch (c) {
    case 0x85:
    case 0xA0:
    case 0xAD:
    case 0x34F:
    case 0x61C:
    case 0x1680:
    case 0x180E:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
    case 0xFEFF:
        return true;
    default:
        break;
    }
    return (c >= 0x2000 && c <= 0x200F) || (c >= 0x202A && c <= 0x202E) ||
           (c >= 0x2060 && c <= 0x2064) || (c >= 0x2066 && c <= 0x2069) ||
           (c >= 0xFE00 && c <= 0xFE0F);
}

/* The normalized form of one code point (header, steps 1-3): CP_IGNORED,
 * or the code point to match on. CP_INVALID maps to itself. */
static uint32_t fold_cp(uint32_t c)
{
    if (c < 0x80) {
        if (c >= 'A' && c <= 'Z')
            return c + 0x20;
        return c == ' ' || (c >= 0x09 && c <= 0x0D) ? CP_IGNORED : c;
    }
    if (c >= 0xFF01 && c <= 0xFF5E) {
        c -= 0xFF01 - 0x21;
        return c >= 'A' && c <= 'Z' ? c + 0x20 : c;
    }
    if (is_ignored(c))
        return CP_IGNORED;
    if (c < 0x100) {
        if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
            return c + 0x20;
        return c == 0xB5 ? 0x3BC : c;
    }
    if (c < 0x180) {
        if ((c <= 0x12F || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) &&
            (c & 1) == 0)
            return c + 1;
        if (((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) && (c & 1) == 1)
            return c + 1;
        if (c == 0x178)
            return 0xFF;
        return c == 0x17F ? 's' : c;
    }
    if (c >= 0x386 && c <= 0x3C2) {
        if (c >= 0x391 && c <= 0x3AB && c != 0x3A2)
            return c + 0x20;
        if (c == 0x386)
            return 0x3AC;
        if (c >= 0x388 && c <= 0x38A)
            return c + 0x25;
        if (c == 0x38C)
            return 0x3CC;
        if (c == 0x38E || c == 0x38F)
            return c + 0x3F;
        return c == 0x3C2 ? 0x3C3 : c;
    }
    if (c >= 0x400 && c <= 0x42F)
        return c < 0x410 ? c + 0x50 : c + 0x20;
    return c;
}

/* ---------------------------------------------------------------- */
/* The automaton                                                     */
/* ---------------------------------------------------------------- */

static uint32_t cp_bit(uint32_t cp)
{
    return 1u << ((cp * 0x9E3779B1u) >> 27);
}

static size_t edge_slot(uint32_t ebits, uint32_t from, uint32_t cp)
{
    uint64_t k = (uint64_t)from << 21 | cp;
    return (size_t)((k * 0x9E3779B97F4A7C15ull) >> (64 - ebits));
}

static uint32_t edge_get(const struct dm_blocklist *b, uint32_t from, uint32_t cp)
{
    size_t mask = ((size_t)1 << b->ebits) - 1;
    size_t i = edge_slot(b->ebits, from, cp);

    for (;; i = (i + 1) & mask) {
        const struct edge *e = &b->edges[i];
        if (e->from == from && e->cp == cp)
            return e->to;
        if (e->from == NO_STATE)
            return NO_STATE;
    }
}

static void edge_put_raw(struct edge *tab, uint32_t ebits, const struct edge *e)
{
    size_t mask = ((size_t)1 << ebits) - 1;
    size_t i = edge_slot(ebits, e->from, e->cp);

    while (tab[i].from != NO_STATE)
        i = (i + 1) & mask;
    tab[i] = *e;
}

/* Rehashes the edge table into 2^ebits slots (ebits large enough to keep
 * it at most half full). */
static void edges_resize(struct dm_blocklist *b, uint32_t ebits)
{
    size_t oldcap = (size_t)1 << b->ebits, cap = (size_t)1 << ebits;
    struct edge *tab = dm_malloc(cap * sizeof(*tab));

    DM_ASSERT((size_t)b->nedges * 2 <= cap);
    for (size_t i = 0; i < cap; i++)
        tab[i].from = NO_STATE;
    for (size_t i = 0; b->edges != NULL && i < oldcap; i++)
        if (b->edges[i].from != NO_STATE)
            edge_put_raw(tab, ebits, &b->edges[i]);
    free(b->edges);
    b->edges = tab;
    b->ebits = ebits;
}

/* Build-time trie: child lists for the breadth-first failure pass. */
struct builder {
    uint32_t cap;          /* allocated states */
    uint32_t *first_child; /* NO_STATE: leaf */
    uint32_t *next_sib;
    uint32_t *label; /* code point on the edge into the state */
};

static uint32_t add_state(struct dm_blocklist *b, struct builder *t, uint32_t parent, uint32_t cp)
{
    uint32_t s = b->nstates++;

    if (s == t->cap) {
        t->cap *= 2;
        b->st = dm_realloc(b->st, t->cap * sizeof(*b->st));
        t->first_child = dm_realloc(t->first_child, t->cap * sizeof(*t->first_child));
        t->next_sib = dm_realloc(t->next_sib, t->cap * sizeof(*t->next_sib));
        t->label = dm_realloc(t->label, t->cap * sizeof(*t->label));
    }
    b->st[s].fail = ROOT;
    b->st[s].children = 0;
    b->st[s].out = 0;
    t->first_child[s] = NO_STATE;
    t->label[s] = cp;
    if (s != ROOT) {
        struct edge e = {parent, cp, s};
        t->next_sib[s] = t->first_child[parent];
        t->first_child[parent] = s;
        b->st[parent].children |= cp_bit(cp);
        if (((size_t)b->nedges + 1) * 2 > (size_t)1 << b->ebits)
            edges_resize(b, b->ebits + 1);
        edge_put_raw(b->edges, b->ebits, &e);
        b->nedges++;
    }
    return s;
}

/* Adds one normalized entry cps[0..n), 1 <= n <= DM_BLOCKLIST_MAX_CPS. */
static void insert_entry(struct dm_blocklist *b, struct builder *t, const uint32_t *cps, size_t n)
{
    uint32_t s = ROOT;

    DM_ASSERT(n >= 1 && n <= DM_BLOCKLIST_MAX_CPS);
    for (size_t i = 0; i < n; i++) {
        uint32_t next = edge_get(b, s, cps[i]);
        s = next != NO_STATE ? next : add_state(b, t, s, cps[i]);
    }
    b->st[s].out = (uint8_t)n;
}

/* Fills root_dir/root_pages from the root's child list. */
static void index_root(struct dm_blocklist *b, const struct builder *t)
{
    uint32_t npages = 0;

    for (uint32_t c = t->first_child[ROOT]; c != NO_STATE; c = t->next_sib[c]) {
        uint32_t cp = t->label[c];
        if (cp < ROOT_DIR_LEN * 256 && b->root_dir[cp >> 8] == 0)
            b->root_dir[cp >> 8] = (uint16_t)++npages;
    }
    b->root_pages = dm_calloc((size_t)npages * 256, sizeof(*b->root_pages));
    for (uint32_t c = t->first_child[ROOT]; c != NO_STATE; c = t->next_sib[c]) {
        uint32_t cp = t->label[c];
        if (cp < ROOT_DIR_LEN * 256)
            b->root_pages[(size_t)(b->root_dir[cp >> 8] - 1) * 256 + (cp & 255)] = c;
    }
}

/* One automaton step from s on normalized code point c. */
static uint32_t step(const struct dm_blocklist *b, uint32_t s, uint32_t c)
{
    uint32_t bit = cp_bit(c), next;

    for (; s != ROOT; s = b->st[s].fail) {
        if ((b->st[s].children & bit) != 0 && (next = edge_get(b, s, c)) != NO_STATE)
            return next;
    }
    if (c < ROOT_DIR_LEN * 256) {
        uint32_t page = b->root_dir[c >> 8];
        return page == 0 ? ROOT : b->root_pages[(size_t)(page - 1) * 256 + (c & 255)];
    }
    next = edge_get(b, ROOT, c);
    return next != NO_STATE ? next : ROOT;
}

/* Breadth-first: fail[child] is the longest proper suffix of its string
 * that is in the trie, and out[] inherits through it (the longest entry
 * ending at a state is its own, else its failure state's: every entry
 * ending there is a suffix of the state's string). */
static void link_failures(struct dm_blocklist *b, struct builder *t)
{
    uint32_t *queue = dm_malloc((size_t)b->nstates * sizeof(*queue));
    size_t head = 0, tail = 0;

    for (uint32_t c = t->first_child[ROOT]; c != NO_STATE; c = t->next_sib[c]) {
        b->st[c].fail = ROOT;
        queue[tail++] = c;
    }
    while (head < tail) {
        uint32_t u = queue[head++];
        for (uint32_t c = t->first_child[u]; c != NO_STATE; c = t->next_sib[c]) {
            uint32_t f = step(b, b->st[u].fail, t->label[c]);
            b->st[c].fail = f;
            if (b->st[c].out == 0)
                b->st[c].out = b->st[f].out;
            queue[tail++] = c;
        }
    }
    DM_ASSERT(tail == b->nstates - 1);
    free(queue);
}

/* ---------------------------------------------------------------- */
/* Loading                                                           */
/* ---------------------------------------------------------------- */

/* Parses and inserts line number lineno, p[0..n) without its '\n'.
 * Returns 1 for an entry, 0 for a blank or comment line, -1 with err. */
static int parse_line(struct dm_blocklist *b, struct builder *t, const uint8_t *p, size_t n,
                      size_t lineno, char err[DM_ERRLEN])
{
    uint32_t cps[DM_BLOCKLIST_MAX_CPS];
    size_t ncp = 0, nraw = 0, pending = 0;
    size_t i = 0, adv;

    if (!dm_utf8_valid(p, n)) {
        snprintf(err, DM_ERRLEN, "line %zu: invalid UTF-8", lineno);
        return -1;
    }
    /* Skip leading ignored code points; then count the trimmed entry's code
     * points as we go: trailing ignored ones are pending until something
     * else follows them. */
    while (i < n) {
        uint32_t c = decode_cp(p + i, n - i, &adv);
        if (!is_ignored(c))
            break;
        i += adv;
    }
    if (i == n || p[i] == '#')
        return 0;
    for (; i < n; i += adv) {
        uint32_t f = fold_cp(decode_cp(p + i, n - i, &adv));
        if (f == CP_IGNORED) {
            pending++;
            continue;
        }
        nraw += pending + 1;
        pending = 0;
        if (nraw > DM_BLOCKLIST_MAX_CPS) {
            snprintf(err, DM_ERRLEN, "line %zu: entry longer than %d code points", lineno,
                     DM_BLOCKLIST_MAX_CPS);
            return -1;
        }
        cps[ncp++] = f;
    }
    DM_ASSERT(ncp >= 1 && ncp <= nraw);
    insert_entry(b, t, cps, ncp);
    return 1;
}

struct dm_blocklist *dm_blocklist_new(const char *data, size_t len, char err[DM_ERRLEN])
{
    struct dm_blocklist *b = dm_calloc(1, sizeof(*b));
    struct builder t = {0};
    const uint8_t *p = (const uint8_t *)data;
    size_t lineno = 0, pos = 0;

    DM_AN(err);
    DM_ASSERT(data != NULL || len == 0);
    b->magic = DM_BLOCKLIST_MAGIC;
    if (len > DM_BLOCKLIST_MAX_BYTES) {
        snprintf(err, DM_ERRLEN, "list larger than %u bytes", DM_BLOCKLIST_MAX_BYTES);
        goto fail;
    }
    t.cap = 64;
    b->st = dm_malloc(t.cap * sizeof(*b->st));
    t.first_child = dm_malloc(t.cap * sizeof(*t.first_child));
    t.next_sib = dm_malloc(t.cap * sizeof(*t.next_sib));
    t.label = dm_malloc(t.cap * sizeof(*t.label));
    edges_resize(b, 4);
    add_state(b, &t, NO_STATE, 0);

    while (pos < len) {
        const uint8_t *nl = memchr(p + pos, '\n', len - pos);
        size_t end = nl != NULL ? (size_t)(nl - p) : len;
        int rc = parse_line(b, &t, p + pos, end - pos, ++lineno, err);
        if (rc < 0)
            goto fail;
        if (rc > 0 && ++b->count > DM_BLOCKLIST_MAX_ENTRIES) {
            snprintf(err, DM_ERRLEN, "line %zu: more than %d entries", lineno,
                     DM_BLOCKLIST_MAX_ENTRIES);
            goto fail;
        }
        pos = end + 1;
    }
    index_root(b, &t);
    link_failures(b, &t);
    /* Shrink the table to the edges actually made (at most half full). */
    {
        uint32_t bits = 4;
        while (((size_t)1 << bits) < (size_t)b->nedges * 2)
            bits++;
        if (bits < b->ebits)
            edges_resize(b, bits);
    }
    free(t.first_child);
    free(t.next_sib);
    free(t.label);
    return b;

fail:
    free(t.first_child);
    free(t.next_sib);
    free(t.label);
    dm_blocklist_free(b);
    return NULL;
}

struct dm_blocklist *dm_blocklist_load(const char *path, char err[DM_ERRLEN])
{
    struct dm_blocklist *b = NULL;
    char why[DM_ERRLEN];
    char *buf = NULL;
    size_t len = 0, cap = 64 * 1024;
    FILE *f;

    DM_AN(path);
    DM_AN(err);
    f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        snprintf(err, DM_ERRLEN, "%s: %s", path, strerror(e));
        return NULL;
    }
    /* Read at most one byte past the bound, whatever the file claims. */
    buf = dm_malloc(cap);
    for (;;) {
        size_t n;
        if (len == cap) {
            if (cap > DM_BLOCKLIST_MAX_BYTES) {
                snprintf(err, DM_ERRLEN, "%s: larger than %u bytes", path, DM_BLOCKLIST_MAX_BYTES);
                goto done;
            }
            cap = cap * 2 > (size_t)DM_BLOCKLIST_MAX_BYTES + 1 ? (size_t)DM_BLOCKLIST_MAX_BYTES + 1
                                                               : cap * 2;
            buf = dm_realloc(buf, cap);
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                int e = errno;
                snprintf(err, DM_ERRLEN, "%s: %s", path, strerror(e));
                goto done;
            }
            break;
        }
    }
    if (len > DM_BLOCKLIST_MAX_BYTES) {
        snprintf(err, DM_ERRLEN, "%s: larger than %u bytes", path, DM_BLOCKLIST_MAX_BYTES);
        goto done;
    }
    b = dm_blocklist_new(buf, len, why);
    if (b == NULL)
        snprintf(err, DM_ERRLEN, "%s: %.128s", path, why);
done:
    free(buf);
    fclose(f);
    return b;
}

void dm_blocklist_free(struct dm_blocklist *b)
{
    if (b == NULL)
        return;
    DM_CHECK_OBJ(b, DM_BLOCKLIST_MAGIC);
    b->magic = 0;
    free(b->edges);
    free(b->st);
    free(b->root_pages);
    free(b);
}

size_t dm_blocklist_count(const struct dm_blocklist *b)
{
    DM_CHECK_OBJ(b, DM_BLOCKLIST_MAGIC);
    return b->count;
}

/* ---------------------------------------------------------------- */
/* Matching and masking                                              */
/* ---------------------------------------------------------------- */

bool dm_blocklist_match(const struct dm_blocklist *b, const char *text, size_t len)
{
    const uint8_t *p = (const uint8_t *)text;
    uint32_t s = ROOT;
    size_t adv;

    DM_CHECK_OBJ(b, DM_BLOCKLIST_MAGIC);
    DM_ASSERT(text != NULL || len == 0);
    if (b->nedges == 0)
        return false;
    for (size_t i = 0; i < len; i += adv) {
        uint32_t c = p[i] < 0x80 ? (adv = 1, p[i]) : decode_cp(p + i, len - i, &adv);
        c = fold_cp(c);
        if (c == CP_IGNORED)
            continue;
        s = step(b, s, c);
        if (b->st[s].out != 0)
            return true;
    }
    return false;
}

/* A matchable code point of the text whose fate is still open in mask: no
 * entry is longer than DM_BLOCKLIST_MAX_CPS, so a match can reach back at
 * most that many of them and older ones are final. */
struct pending_cp {
    uint32_t off; /* byte offset in the text */
    uint8_t n;    /* bytes */
    bool masked;
};

/* Output is the text with some code points replaced by '*'. Unmasked bytes
 * are copied lazily, one run per gap between masked code points, so a text
 * without a match costs one memmove (none in place). */
struct mask_out {
    const uint8_t *src;
    uint8_t *dst;
    size_t run; /* text bytes from run on are not copied yet */
    size_t w;   /* where they go in dst (w <= run: safe in place) */
    size_t masked;
};

static void copy_run(struct mask_out *m, size_t end)
{
    if (m->dst + m->w != m->src + m->run)
        memmove(m->dst + m->w, m->src + m->run, end - m->run);
    m->w += end - m->run;
    m->run = end;
}

/* Settles cp, the oldest pending code point: only a masked one writes. */
static void settle(struct mask_out *m, const struct pending_cp *cp)
{
    if (!cp->masked)
        return;
    copy_run(m, cp->off);
    m->dst[m->w++] = '*';
    m->run = cp->off + cp->n;
    m->masked++;
}

size_t dm_blocklist_mask(const struct dm_blocklist *b, const char *text, size_t len, char *out,
                         size_t outcap, size_t *outlen)
{
    struct pending_cp ring[DM_BLOCKLIST_MAX_CPS];
    struct mask_out m = {(const uint8_t *)text, (uint8_t *)out, 0, 0, 0};
    size_t seen = 0, adv;
    uint32_t s = ROOT;

    DM_CHECK_OBJ(b, DM_BLOCKLIST_MAGIC);
    DM_ASSERT(text != NULL || len == 0);
    DM_AN(out);
    DM_ASSERT(len < outcap);
    DM_ASSERT(len <= UINT32_MAX);
    for (size_t i = 0; i < len && b->nedges != 0; i += adv) {
        uint32_t c = m.src[i] < 0x80 ? (adv = 1, m.src[i]) : decode_cp(m.src + i, len - i, &adv);
        struct pending_cp *slot;
        c = fold_cp(c);
        if (c == CP_IGNORED)
            continue;
        slot = &ring[seen % DM_BLOCKLIST_MAX_CPS];
        if (seen >= DM_BLOCKLIST_MAX_CPS)
            settle(&m, slot);
        slot->off = (uint32_t)i;
        slot->n = (uint8_t)adv;
        slot->masked = false;
        seen++;
        s = step(b, s, c);
        for (size_t k = 1; k <= b->st[s].out; k++)
            ring[(seen - k) % DM_BLOCKLIST_MAX_CPS].masked = true;
    }
    for (size_t k = seen > DM_BLOCKLIST_MAX_CPS ? seen - DM_BLOCKLIST_MAX_CPS : 0; k < seen; k++)
        settle(&m, &ring[k % DM_BLOCKLIST_MAX_CPS]);
    if (len > 0)
        copy_run(&m, len);
    m.dst[m.w] = '\0';
    if (outlen != NULL)
        *outlen = m.w;
    return m.masked;
}
