/* JWT verifier from configuration. */
#include "common/auth.h"

#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/jwt.h"

bool dm_auth_configured(const struct dm_config *cfg)
{
    return *cfg->jwt_key_file != '\0' || *cfg->jwt_secret != '\0';
}

struct dm_jwt_verifier *dm_auth_verifier_new(const struct dm_config *cfg, char err[DM_ERRLEN])
{
    unsigned char *key = NULL;
    size_t keylen = 0;
    struct dm_jwt_verifier *v;

    if (*cfg->jwt_key_file != '\0') {
        if (dm_jwt_key_load(cfg->jwt_key_file, &key, &keylen, err) < 0)
            return NULL;
    } else {
        keylen = strlen(cfg->jwt_secret);
        key = (unsigned char *)dm_strndup(cfg->jwt_secret, keylen);
    }
    v = dm_jwt_verifier_new(cfg->jwt_alg, key, keylen, cfg->jwt_leeway_s,
                            *cfg->jwt_issuer != '\0' ? cfg->jwt_issuer : NULL,
                            *cfg->jwt_audience != '\0' ? cfg->jwt_audience : NULL, err);
    /* The secret leaves no copy behind in freed memory. */
    memset(key, 0, keylen);
    free(key);
    return v;
}
