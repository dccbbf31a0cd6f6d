/* The JWT verifier both nodes (and danmaku-token check) build from their
 * configuration: a default key and/or a directory of keys named by kid. */
#ifndef DM_COMMON_AUTH_H
#define DM_COMMON_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"

struct dm_config;
struct dm_jwt_verifier;

/* Where the keys come from. Strings are borrowed; NULL and "" both mean
 * "not set". */
struct dm_auth_params {
    const char *alg;      /* pinned algorithm (jwt_alg) */
    const char *key_file; /* default key: HS* secret or PEM public key file (wins) */
    const char *secret;   /* default key: HS* secret itself */
    const char *key_dir;  /* directory of <kid>.pem / <kid>.key files */
    int64_t leeway_s;
    const char *issuer;   /* required iss */
    const char *audience; /* required aud */
};

/* True when cfg names a key (jwt_key_file, jwt_secret or jwt_key_dir). */
bool dm_auth_configured(const struct dm_config *cfg);

/* Builds the verifier from p. The default key, for tokens without a "kid",
 * is key_file's content or else secret (neither: tokens must carry a kid).
 * key_dir holds one key per regular file (symlinks followed) named
 * <kid>.pem or <kid>.key, the kid satisfying dm_jwt_kid_valid and the
 * content being what the pinned algorithm needs; names starting with '.'
 * are skipped (".", "..", Kubernetes' "..data" of a mounted Secret), any
 * other name is an error. At most DM_JWT_MAX_KEYS key files. Reads files:
 * for startup only. Caller owns the result (dm_jwt_verifier_free). NULL with
 * err (naming the file or kid): no key at all, an unreadable, empty, short
 * or wrong-type key, an unexpected file, too many keys. */
struct dm_jwt_verifier *dm_auth_verifier_build(const struct dm_auth_params *p, char err[DM_ERRLEN]);

/* dm_auth_verifier_build from jwt_alg, jwt_key_file, jwt_secret,
 * jwt_key_dir, jwt_leeway_s, jwt_issuer and jwt_audience; logs the kids
 * it loaded (info, once). */
struct dm_jwt_verifier *dm_auth_verifier_new(const struct dm_config *cfg, char err[DM_ERRLEN]);

#endif
