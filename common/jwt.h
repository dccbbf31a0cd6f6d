/* JWT policy (DESIGN.md §4): pinned algorithm, keys selected by "kid" for
 * rotation, required exp, checked nbf/iat/iss/aud with a small leeway, and
 * our claims (sub, name, role, prio, rooms). The only user of libjwt
 * (<jwt.h>); nothing here exposes it or OpenSSL. */
#ifndef DM_COMMON_JWT_H
#define DM_COMMON_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

/* Largest token accepted (bytes, without "Bearer "); longer → "too_large". */
#define DM_JWT_MAX_TOKEN 8192
/* Shortest HS256/384/512 secret accepted (bytes). */
#define DM_JWT_MIN_SECRET 32
/* Largest key (secret or PEM) accepted (bytes). */
#define DM_JWT_MAX_KEY 65536
/* Largest clock leeway accepted by dm_jwt_verifier_new (seconds). */
#define DM_JWT_MAX_LEEWAY 3600
/* Most keys with a kid in one verifier (the default key comes on top). */
#define DM_JWT_MAX_KEYS 16
/* Longest kid (bytes); see dm_jwt_kid_valid. */
#define DM_JWT_MAX_KID 64
/* Bounds of the claims we copy out. */
#define DM_JWT_MAX_SUB   128
#define DM_JWT_MAX_NAME  128
#define DM_JWT_MAX_PRIO  9
#define DM_JWT_MAX_ROOMS 128

enum dm_role {
    DM_ROLE_VIEWER,
    DM_ROLE_MODERATOR,
    DM_ROLE_ADMIN,
};

/* The claims of a verified token. Embed it; fill it with dm_jwt_verify and
 * release it with dm_jwt_claims_fini. */
struct dm_jwt_claims {
    char sub[DM_JWT_MAX_SUB + 1];   /* 1..128 bytes, no control characters */
    char name[DM_JWT_MAX_NAME + 1]; /* the "name" claim, or sub when absent/empty */
    enum dm_role role;              /* viewer when absent */
    int prio;                       /* 0..9; at least 1 for moderators and admins */
    int64_t exp;                    /* Unix seconds */
    /* Room patterns the token is limited to: NULL when the token has no
     * "rooms" claim (every room allowed); otherwise a NULL-terminated array
     * of `nrooms` owned strings (nrooms may be 0: no room allowed). */
    char **rooms;
    size_t nrooms;
};

/* Opaque, immutable after creation: dm_jwt_verify may run on many threads
 * at once with the same verifier. */
struct dm_jwt_verifier;

/* One verification key, as given to dm_jwt_verifier_new_keys. */
struct dm_jwt_key {
    const char *kid;          /* borrowed; NULL: the default key (tokens without "kid") */
    const unsigned char *key; /* borrowed: HS* secret or PEM public key, as for verifier_new */
    size_t keylen;
};

/* Creates a verifier pinned to `alg` ("HS256", "HS384", "HS512", "RS256",
 * "ES256"; exact spelling). `key` (borrowed, copied) is the shared secret for
 * HS* (at least DM_JWT_MIN_SECRET bytes, not a PEM block) or a PEM public key
 * for RS256 (RSA, at least 2048 bits) / ES256 (EC P-256). `leeway_s`
 * (0..DM_JWT_MAX_LEEWAY) applies to exp, nbf and iat. `iss` and `aud`
 * (borrowed, copied; NULL = not checked) must match the token's when set.
 * Returns NULL and fills `err` on an empty, short or unparsable key, an
 * unknown algorithm or "none", or a bad leeway. Caller owns the result (free
 * with dm_jwt_verifier_free). */
struct dm_jwt_verifier *dm_jwt_verifier_new(const char *alg, const unsigned char *key,
                                            size_t keylen, int64_t leeway_s, const char *iss,
                                            const char *aud, char err[DM_ERRLEN]);

/* Like dm_jwt_verifier_new with several keys, all for the pinned `alg`:
 * keys[0..nkeys) (borrowed, copied) hold at most one default key (kid NULL)
 * and at most DM_JWT_MAX_KEYS keys with distinct kids, each valid for
 * dm_jwt_kid_valid. Every key is parsed and checked here, once (the same
 * bounds as dm_jwt_verifier_new); a token whose header has a "kid" is
 * verified with that key only, a token without one with the default key.
 * Returns NULL and fills `err` (naming the kid) when nkeys is 0 or any key is
 * unusable. Caller owns the result (free with dm_jwt_verifier_free). */
struct dm_jwt_verifier *dm_jwt_verifier_new_keys(const char *alg, const struct dm_jwt_key *keys,
                                                 size_t nkeys, int64_t leeway_s, const char *iss,
                                                 const char *aud, char err[DM_ERRLEN]);

/* Frees `v` and scrubs its keys; NULL is a no-op. */
void dm_jwt_verifier_free(struct dm_jwt_verifier *v);

/* Verifies token[0..len) (borrowed, need not be NUL-terminated) at time
 * `now_s` (Unix seconds, >= 0; injected so tests never sleep).
 * On success returns 0 and fills `out`, which the caller then owns (release
 * with dm_jwt_claims_fini). On rejection returns -1, leaves `out` empty (fini
 * is a harmless no-op) and sets `*reason` to one of these static strings:
 *   "too_large"     longer than DM_JWT_MAX_TOKEN
 *   "malformed"     not three base64url segments of JSON objects, bad header
 *                   (duplicate keys, "crit", typ other than JWT, no alg, kid
 *                   not a string)
 *   "alg_mismatch"  header alg is not exactly the pinned one ("none" included)
 *   "unknown_kid"   the header's "kid" names no key of the verifier, or the
 *                   token has no "kid" and the verifier no default key
 *   "bad_signature" signature does not verify with the selected key (for
 *                   ES256 it must be the 64-byte JWS form r||s, not DER)
 *   "missing_exp"   no "exp" claim
 *   "expired"       now >= exp + leeway
 *   "not_yet_valid" now < nbf - leeway, or iat > now + leeway
 *   "bad_issuer"    iss configured and the token's differs or is missing
 *   "bad_audience"  aud configured and not the token's aud (string) nor in it (array)
 *   "bad_claims"    a claim has the wrong type or is out of bounds: exp/nbf/iat
 *                   not integers; sub missing, empty, >128 bytes or with control
 *                   characters; name >128 bytes or with control characters;
 *                   unknown role; prio not an integer in 0..9; rooms not an
 *                   array of at most DM_JWT_MAX_ROOMS valid patterns
 * The header (alg first) is checked before anything else and the signature
 * before any claim, so the claim reasons are only reported for authentic
 * tokens. */
int dm_jwt_verify(const struct dm_jwt_verifier *v, const char *token, size_t len, int64_t now_s,
                  struct dm_jwt_claims *out, const char **reason);

/* Releases what dm_jwt_verify allocated in `c` and empties it; idempotent. */
void dm_jwt_claims_fini(struct dm_jwt_claims *c);

/* True when `room` (borrowed, NUL-terminated) is allowed by the claims: no
 * "rooms" claim allows every room; otherwise some pattern must match, where a
 * pattern is an exact room id or a prefix ending in '*' ("*" matches all). */
bool dm_jwt_claims_allow_room(const struct dm_jwt_claims *c, const char *room);

/* True when s[0..n) (borrowed) is a user id as a "sub" claim must be:
 * 1..DM_JWT_MAX_SUB bytes without control characters. */
bool dm_jwt_sub_valid(const char *s, size_t n);

/* True when s[0..n) (borrowed) is a valid "rooms" pattern: a room id, or a
 * room-id prefix (possibly empty) followed by one trailing '*'. */
bool dm_jwt_room_pattern_valid(const char *s, size_t n);

/* Signs `claims_json` (borrowed; must be a JSON object, e.g.
 * {"sub":"u1","exp":1700000000}) with `alg` and `key` (borrowed: the HS*
 * secret with the same bounds as the verifier, or a PEM private key for
 * RS256/ES256). Adds no claims of its own. Returns the compact token, which
 * the caller owns (free with free()), or NULL with `err` filled. For tests
 * and the token tool. */
char *dm_jwt_mint(const char *alg, const unsigned char *key, size_t keylen, const char *claims_json,
                  char err[DM_ERRLEN]);

/* dm_jwt_mint with a "kid" header: `kid` (borrowed) must satisfy
 * dm_jwt_kid_valid; NULL mints without one. */
char *dm_jwt_mint_kid(const char *alg, const char *kid, const unsigned char *key, size_t keylen,
                      const char *claims_json, char err[DM_ERRLEN]);

/* True when s[0..n) (borrowed) may name a key: 1..DM_JWT_MAX_KID bytes of
 * [A-Za-z0-9._-], not starting with '.' (the characters of a Kubernetes
 * Secret's keys, so a kid can be a file name). */
bool dm_jwt_kid_valid(const char *s, size_t n);

/* Reads the "kid" of token[0..len)'s header WITHOUT verifying anything, for
 * diagnostics (the token tool). Returns 1 and copies it to `kid` when the
 * header has a kid that satisfies dm_jwt_kid_valid, 0 when it has none, -1
 * when the header cannot be read or its kid is not such a string. */
int dm_jwt_peek_kid(const char *token, size_t len, char kid[DM_JWT_MAX_KID + 1]);

/* Reads a key file `path` (at most DM_JWT_MAX_KEY bytes) and strips trailing
 * CR/LF, so a secret written by `echo` or an editor is the same secret as
 * the bare string (a PEM block is unaffected). On success returns 0 and
 * stores the bytes (caller owns, free with free(); NUL-terminated for
 * convenience, not counted in *keylen). Returns -1 with `err` filled when the
 * file cannot be read, is empty or is too large. */
int dm_jwt_key_load(const char *path, unsigned char **key, size_t *keylen, char err[DM_ERRLEN]);

/* Parses "viewer", "moderator" or "admin" (exact); returns 0, or -1 with
 * *out untouched. */
int dm_jwt_role_parse(const char *s, enum dm_role *out);

/* The name of a role ("viewer", ...); static string. */
const char *dm_jwt_role_name(enum dm_role r);

#endif
