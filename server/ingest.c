/* Ingest node wiring: verifier, producer, Redis, HTTP, in that order, and back. */
#include "server/ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/check.h"
#include "common/config.h"
#include "common/jwt.h"
#include "common/log.h"
#include "server/http.h"
#include "server/producer.h"
#include "server/store.h"

/* How long shutdown waits for Kafka to acknowledge what is in flight. */
#define INGEST_FLUSH_MS 10000

/* Reads the JWT key: jwt_key_file wins over jwt_secret. */
static struct dm_jwt_verifier *load_verifier(const struct dm_config *cfg, char err[DM_ERRLEN])
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
    memset(key, 0, keylen);
    free(key);
    return v;
}

struct dm_ingest *dm_ingest_new(struct event_base *base, const struct dm_config *cfg,
                                const char *node, char err[DM_ERRLEN])
{
    struct dm_ingest *in = dm_calloc(1, sizeof(*in));

    in->base = base;
    in->cfg = cfg;
    in->node = node;
    in->verifier = load_verifier(cfg, err);
    if (in->verifier == NULL)
        goto fail;
    in->producer = dm_producer_new(base, cfg, err);
    if (in->producer == NULL)
        goto fail;
    in->store = dm_store_new(base, cfg);
    in->http = dm_http_new(in, err);
    if (in->http == NULL)
        goto fail;
    return in;

fail:
    dm_ingest_free(in);
    return NULL;
}

void dm_ingest_stop_accepting(struct dm_ingest *in)
{
    if (in->http != NULL)
        dm_http_stop_accepting(in->http);
}

void dm_ingest_free(struct dm_ingest *in)
{
    if (in == NULL)
        return;
    /* The producer goes first: flushing fires the delivery callbacks, which
     * answer requests that still belong to the HTTP server. One more loop
     * pass then writes those answers out. */
    if (in->producer != NULL) {
        dm_producer_free(in->producer, INGEST_FLUSH_MS);
        event_base_loop(in->base, EVLOOP_NONBLOCK);
    }
    dm_http_free(in->http);
    dm_store_free(in->store);
    dm_jwt_verifier_free(in->verifier);
    free(in);
}
