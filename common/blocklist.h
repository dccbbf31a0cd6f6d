/* Blocked-words filter for comment text: a list of words and phrases loaded
 * once at start, matched as substrings of the normalized text (CJK has no
 * word boundaries), for ingest to reject (`400 blocked`) or mask a comment.
 * Pure: no I/O except reading the list file, no globals, no event loop. */
#ifndef DM_COMMON_BLOCKLIST_H
#define DM_COMMON_BLOCKLIST_H

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

/* Bounds of a list; loading refuses anything larger. */
#define DM_BLOCKLIST_MAX_ENTRIES 100000     /* entry lines (duplicates included) */
#define DM_BLOCKLIST_MAX_CPS     64         /* code points of one trimmed entry */
#define DM_BLOCKLIST_MAX_BYTES   (4u << 20) /* size of the list file or buffer */

/* Normalization, applied to every entry at load and to every text at match
 * time, one code point at a time (never expands, so a normalized entry has
 * at most DM_BLOCKLIST_MAX_CPS code points):
 *
 *   1. Ignored (dropped, so "b a d", "b\u200Bad" and "b\u3000ad" all contain
 *      "bad"):
 *      - whitespace: U+0009..U+000D, U+0020, U+0085, U+00A0, U+1680,
 *        U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000;
 *      - invisible format characters: U+00AD soft hyphen, U+034F, U+061C,
 *        U+180E, U+200B..U+200F (zero-width space/non-joiner/joiner, LRM,
 *        RLM), U+202A..U+202E and U+2066..U+2069 (bidi controls),
 *        U+2060..U+2064 (word joiner, invisible operators), U+FE00..U+FE0F
 *        (variation selectors), U+FEFF (BOM / zero-width no-break space).
 *   2. Fullwidth forms U+FF01..U+FF5E become ASCII U+0021..U+007E.
 *   3. Simple case folding to lower case:
 *      - ASCII A-Z (after step 2, so fullwidth Ａ-Ｚ too);
 *      - Latin-1 U+00C0..U+00DE except U+00D7 (+0x20); U+00B5 micro -> U+03BC;
 *      - Latin Extended-A U+0100..U+017E upper/lower pairs (+1), U+0178 -> U+00FF,
 *        U+017F long s -> 's' (U+0130, U+0131, U+0138, U+0149 unchanged);
 *      - Greek U+0391..U+03AB except U+03A2 (+0x20), U+0386 -> U+03AC,
 *        U+0388..U+038A (+0x25), U+038C -> U+03CC, U+038E..U+038F (+0x3F),
 *        final sigma U+03C2 -> U+03C3;
 *      - Cyrillic U+0400..U+040F (+0x50), U+0410..U+042F (+0x20).
 *   Everything else (CJK, kana, emoji, punctuation, digits, accents) is
 *   compared as is. No decomposition: "é" does not match "e".
 *
 * Matching is plain substring search over the normalized sequences, so
 * Latin entries also match inside longer words ("ass" in "class"). */

struct dm_blocklist;

/* Builds a list from data[0..len) (borrowed; NUL bytes are ordinary
 * characters; data may be NULL when len is 0) in the list-file format:
 *   - UTF-8, one word or phrase per line ('\n'; a '\r' before it is
 *     whitespace);
 *   - each line is trimmed of the ignored code points of normalization step
 *     1 at both ends (so a leading BOM or CRLF is harmless);
 *   - a line empty after trimming, or starting with '#' after trimming, is
 *     skipped (so an entry cannot start with '#'); '#' elsewhere is literal;
 *   - an entry is at most DM_BLOCKLIST_MAX_CPS code points after trimming,
 *     there are at most DM_BLOCKLIST_MAX_ENTRIES entries, and len is at most
 *     DM_BLOCKLIST_MAX_BYTES;
 *   - entries are normalized as above; duplicates are harmless.
 * A list without entries is valid and matches nothing.
 * Returns the list (caller owns; dm_blocklist_free), or NULL with err set,
 * naming the 1-based line for invalid UTF-8, an over-long entry or the
 * entry past DM_BLOCKLIST_MAX_ENTRIES (or saying len is too large). */
struct dm_blocklist *dm_blocklist_new(const char *data, size_t len, char err[DM_ERRLEN]);

/* dm_blocklist_new over the contents of the file at path (borrowed). Reads
 * it once, blocking: call at start-up, not from an event loop. Returns the
 * list (caller owns; dm_blocklist_free), or NULL with err set to
 * "<path>: <reason>" (cannot open/read, larger than DM_BLOCKLIST_MAX_BYTES,
 * or a dm_blocklist_new error with its line number). */
struct dm_blocklist *dm_blocklist_load(const char *path, char err[DM_ERRLEN]);

/* Frees b (takes ownership); NULL is a no-op. */
void dm_blocklist_free(struct dm_blocklist *b);

/* The list is immutable: the functions below only read it and keep their
 * state on the stack, so any number of threads may call them concurrently
 * on the same list (b is borrowed and must outlive the call). Cost is
 * linear in len (Aho-Corasick), independent of the number of entries. */

/* True when some entry occurs in the normalized text[0..len) (borrowed;
 * need not be NUL-terminated; text may be NULL when len is 0). text should
 * be valid UTF-8; each invalid byte counts as one character that no entry
 * contains. */
bool dm_blocklist_match(const struct dm_blocklist *b, const char *text, size_t len);

/* Copies text[0..len) (borrowed, as for dm_blocklist_match) to out
 * (borrowed, outcap bytes, outcap must be >= len + 1: anything smaller is
 * a bug and aborts), replacing every code point of every occurrence of an
 * entry with one '*' (overlapping and adjacent occurrences both masked).
 * Only code points that take part in the match are replaced: ignored ones
 * (spaces, zero-width characters) inside an occurrence are copied as they
 * are, so "b a d" becomes "* * *" and the spacing is kept. The result is
 * NUL-terminated, never longer than len bytes (*outlen, may be NULL, gets
 * its length without the NUL), and valid UTF-8 when the text was (invalid
 * bytes are copied unchanged). out may be text itself (masking in place) or
 * a buffer that does not overlap it.
 * Returns the number of code points replaced: 0 when nothing matched (out
 * then equals the text). */
size_t dm_blocklist_mask(const struct dm_blocklist *b, const char *text, size_t len, char *out,
                         size_t outcap, size_t *outlen);

/* Number of entry lines loaded (duplicates counted), for the start-up log. */
size_t dm_blocklist_count(const struct dm_blocklist *b);

#endif
