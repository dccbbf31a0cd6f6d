/* The JWT verifier both nodes build from their configuration. */
#ifndef DM_COMMON_AUTH_H
#define DM_COMMON_AUTH_H

#include <stdbool.h>

#include "common/util.h"

struct dm_config;
struct dm_jwt_verifier;

/* True when cfg names a key (jwt_key_file or jwt_secret). */
bool dm_auth_configured(const struct dm_config *cfg);

/* Builds the verifier from jwt_alg, jwt_key_file (wins) or jwt_secret,
 * jwt_leeway_s, jwt_issuer and jwt_audience. Caller owns the result
 * (dm_jwt_verifier_free). NULL with err: no key, unreadable, too short, or
 * not usable with the pinned algorithm. */
struct dm_jwt_verifier *dm_auth_verifier_new(const struct dm_config *cfg, char err[DM_ERRLEN]);

#endif
