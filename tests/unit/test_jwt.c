/* JWT policy: pinned algorithms, alg "none" and key confusion, time claims
 * at their leeway edges (injected clock), iss/aud, structure, claim types,
 * room patterns, RS256/ES256 with the PEM fixtures, concurrent verify.
 * Run from the repository root (fixtures in tests/fixtures, or $DM_FIXTURES). */
#include "common/jwt.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/util.h"
#include "tests/unit/tap.h"

#define NOW INT64_C(1700000000)

static unsigned char *secret; /* tests/fixtures/dev-secret.txt */
static size_t secretlen;
static struct dm_jwt_verifier *hs256; /* leeway 0, no iss/aud */

/* ---- helpers ------------------------------------------------------------ */

static const char *fixture(const char *name)
{
    static char path[512];
    const char *dir = getenv("DM_FIXTURES");
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/fixtures", name);
    return path;
}

static unsigned char *load(const char *name, size_t *len)
{
    char err[DM_ERRLEN];
    unsigned char *key = NULL;
    if (dm_jwt_key_load(fixture(name), &key, len, err) != 0) {
        printf("# %s\n", err);
        *len = 0;
    }
    return key;
}

static void b64url(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = tbl[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = tbl[v & 63];
    }
    out[o] = '\0';
}

/* A hand-made token: any header and payload text, signed with HMAC-`md`
 * over `key` (md NULL: empty signature). Caller frees. */
static char *craft(const char *header, const char *payload, const EVP_MD *md,
                   const unsigned char *key, size_t keylen)
{
    size_t hl = strlen(header), pl = strlen(payload);
    char *t = dm_malloc((hl + pl) / 3 * 4 + 200);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;

    b64url((const unsigned char *)header, hl, t);
    strcat(t, ".");
    b64url((const unsigned char *)payload, pl, t + strlen(t));
    if (md != NULL)
        HMAC(md, key, (int)keylen, (const unsigned char *)t, strlen(t), mac, &maclen);
    strcat(t, ".");
    b64url(mac, maclen, t + strlen(t));
    return t;
}

static char *craft_hs256(const char *header, const char *payload)
{
    return craft(header, payload, EVP_sha256(), secret, secretlen);
}

__attribute__((format(printf, 3, 4))) static char *mint(const char *alg, const char *keyname,
                                                        const char *fmt, ...)
{
    char claims[9000], err[DM_ERRLEN] = "";
    unsigned char *key = secret;
    size_t keylen = secretlen;
    char *t;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(claims, sizeof(claims), fmt, ap);
    va_end(ap);
    if (keyname != NULL)
        key = load(keyname, &keylen);
    t = dm_jwt_mint(alg, key, keylen, claims, err);
    if (t == NULL)
        printf("# mint %s failed: %s\n", alg, err);
    if (keyname != NULL)
        free(key);
    return t;
}

/* Verifies and returns the reason, or "ok"; the claims are discarded. */
static const char *check(const struct dm_jwt_verifier *v, const char *token, int64_t now)
{
    struct dm_jwt_claims c;
    const char *reason = "unset";
    if (token == NULL)
        return "no token";
    if (dm_jwt_verify(v, token, strlen(token), now, &c, &reason) != 0)
        return reason;
    dm_jwt_claims_fini(&c);
    return "ok";
}

/* Like check() on a token it frees. */
static const char *check_free(const struct dm_jwt_verifier *v, char *token, int64_t now)
{
    const char *r = check(v, token, now);
    free(token);
    return r;
}

static bool is(const char *got, const char *want)
{
    if (strcmp(got, want) == 0)
        return true;
    printf("#   got %s, want %s\n", got, want);
    return false;
}

static bool is_any(const char *got, const char *want1, const char *want2)
{
    if (strcmp(got, want1) == 0 || strcmp(got, want2) == 0)
        return true;
    printf("#   got %s, want %s or %s\n", got, want1, want2);
    return false;
}

/* Changes one base64url character into another valid one. */
static void flip(char *c)
{
    *c = *c == 'A' ? 'B' : 'A';
}

static struct dm_jwt_verifier *verifier(const char *alg, const char *keyname, int64_t leeway,
                                        const char *iss, const char *aud)
{
    char err[DM_ERRLEN] = "";
    size_t keylen = secretlen;
    unsigned char *key = keyname ? load(keyname, &keylen) : secret;
    struct dm_jwt_verifier *v = dm_jwt_verifier_new(alg, key, keylen, leeway, iss, aud, err);
    if (v == NULL)
        printf("# verifier %s: %s\n", alg, err);
    if (keyname != NULL)
        free(key);
    return v;
}

/* ---- verifier construction ---------------------------------------------- */

static bool refused(const char *alg, const unsigned char *key, size_t keylen, int64_t leeway)
{
    char err[DM_ERRLEN] = "";
    struct dm_jwt_verifier *v = dm_jwt_verifier_new(alg, key, keylen, leeway, NULL, NULL, err);
    if (v != NULL) {
        dm_jwt_verifier_free(v);
        return false;
    }
    printf("#   err: %s\n", err);
    return err[0] != '\0';
}

static void test_verifier_new(void)
{
    static const unsigned char k32[] = "0123456789abcdef0123456789abcdef";
    size_t publen, privlen, weaklen, p384len;
    unsigned char *pub = load("jwt_rs256.pub.pem", &publen);
    unsigned char *priv = load("jwt_rs256.pem", &privlen);
    unsigned char *weak = load("jwt_rs1024_weak.pub.pem", &weaklen);
    unsigned char *p384 = load("jwt_es384_wrongcurve.pub.pem", &p384len);
    unsigned char *espub;
    size_t espublen;
    char err[DM_ERRLEN];

    ok(secret != NULL && secretlen >= DM_JWT_MIN_SECRET, "dev-secret.txt loads (%zu bytes)",
       secretlen);
    ok(secret != NULL && secret[secretlen - 1] != '\n', "trailing newline stripped");
    ok(hs256 != NULL, "HS256 verifier from the dev secret");
    ok(refused("HS256", k32, 0, 0), "empty key refused");
    ok(refused("HS256", NULL, 0, 0), "NULL key refused");
    ok(refused("HS256", k32, 31, 0), "31-byte HS256 secret refused");
    ok(refused("HS512", k32, 31, 0), "31-byte HS512 secret refused");
    ok(!refused("HS256", k32, 32, 0), "32-byte HS256 secret accepted");
    ok(refused("none", k32, 32, 0), "alg none refused");
    ok(refused("None", k32, 32, 0), "alg None refused");
    ok(refused("hs256", k32, 32, 0), "lower-case hs256 refused (exact names only)");
    ok(refused("RS384", k32, 32, 0), "RS384 not offered");
    ok(refused(NULL, k32, 32, 0), "NULL alg refused");
    ok(refused("HS256", k32, 32, -1), "negative leeway refused");
    ok(refused("HS256", k32, 32, DM_JWT_MAX_LEEWAY + 1), "leeway above the bound refused");
    ok(refused("RS256", k32, 32, 0), "RS256 with a secret instead of a PEM refused");
    ok(refused("RS256", priv, privlen, 0), "RS256 with the private key refused (needs public)");
    ok(refused("RS256", weak, weaklen, 0), "RS256 with a 1024-bit key refused");
    ok(refused("ES256", pub, publen, 0), "ES256 with an RSA key refused");
    ok(refused("ES256", p384, p384len, 0), "ES256 with a P-384 key refused");
    ok(refused("HS256", pub, publen, 0), "HS256 with a PEM public key as secret refused");
    espub = load("jwt_es256.pub.pem", &espublen);
    ok(refused("RS256", espub, espublen, 0), "RS256 with an EC key refused");
    ok(!refused("RS256", pub, publen, 0), "RS256 with the RSA public key accepted");
    ok(!refused("ES256", espub, espublen, 0), "ES256 with the P-256 public key accepted");
    {
        unsigned char *none = NULL;
        size_t nonelen = 0;
        ok(dm_jwt_key_load(fixture("does-not-exist"), &none, &nonelen, err) == -1 && err[0] &&
               none == NULL,
           "missing key file: -1 and an error");
    }
    dm_jwt_verifier_free(NULL);
    ok(1, "dm_jwt_verifier_free(NULL) is a no-op");
    free(pub);
    free(weak);
    free(p384);
    free(espub);
    free(priv);
}

/* ---- acceptance --------------------------------------------------------- */

static void test_valid_hs256(void)
{
    struct dm_jwt_claims c;
    const char *reason = "unset";
    char *t = mint("HS256", NULL,
                   "{\"sub\":\"u1\",\"name\":\"Alice \\u5f39\",\"role\":\"moderator\",\"prio\":0,"
                   "\"exp\":%lld,\"iat\":%lld,\"rooms\":[\"lobby\",\"live:*\"]}",
                   (long long)NOW + 60, (long long)NOW);
    int rc = dm_jwt_verify(hs256, t, strlen(t), NOW, &c, &reason);

    ok(rc == 0, "valid HS256 token accepted");
    if (rc != 0)
        printf("#   reason %s\n", reason);
    ok(strcmp(c.sub, "u1") == 0, "sub extracted");
    ok(strcmp(c.name, "Alice \xe5\xbc\xb9") == 0, "name extracted (UTF-8)");
    ok(c.role == DM_ROLE_MODERATOR, "role moderator");
    ok(c.prio == 1, "moderator gets prio >= 1 (got %d)", c.prio);
    ok(c.exp == NOW + 60, "exp extracted");
    ok(c.nrooms == 2 && c.rooms && strcmp(c.rooms[0], "lobby") == 0 &&
           strcmp(c.rooms[1], "live:*") == 0 && c.rooms[2] == NULL,
       "rooms extracted, NULL-terminated");
    dm_jwt_claims_fini(&c);
    ok(c.rooms == NULL && c.nrooms == 0 && c.sub[0] == '\0', "fini empties the claims");
    dm_jwt_claims_fini(&c);
    ok(1, "fini twice is harmless");
    free(t);

    t = mint("HS256", NULL, "{\"sub\":\"u2\",\"exp\":%lld}", (long long)NOW + 1);
    rc = dm_jwt_verify(hs256, t, strlen(t), NOW, &c, &reason);
    ok(rc == 0 && strcmp(c.name, "u2") == 0 && c.role == DM_ROLE_VIEWER && c.prio == 0 &&
           c.rooms == NULL && c.nrooms == 0,
       "defaults: name = sub, viewer, prio 0, no rooms claim");
    dm_jwt_claims_fini(&c);
    /* The token need not be NUL-terminated: verify a prefix of a longer buffer. */
    {
        size_t n = strlen(t);
        char *longer = dm_malloc(n + 8);
        memcpy(longer, t, n);
        memcpy(longer + n, ".garbag", 8);
        rc = dm_jwt_verify(hs256, longer, n, NOW, &c, &reason);
        ok(rc == 0, "token given by (pointer, length) inside a larger buffer");
        dm_jwt_claims_fini(&c);
        free(longer);
    }
    free(t);
}

static void test_hs_family(void)
{
    struct dm_jwt_verifier *v384 = verifier("HS384", NULL, 0, NULL, NULL);
    struct dm_jwt_verifier *v512 = verifier("HS512", NULL, 0, NULL, NULL);
    char *t384 = mint("HS384", NULL, "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    char *t512 = mint("HS512", NULL, "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    char *t256 = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);

    ok(is(check(v384, t384, NOW), "ok"), "HS384 accepted when pinned");
    ok(is(check(v512, t512, NOW), "ok"), "HS512 accepted when pinned");
    ok(is(check(hs256, t512, NOW), "alg_mismatch"), "HS512 token vs HS256 config");
    ok(is(check(hs256, t384, NOW), "alg_mismatch"), "HS384 token vs HS256 config");
    ok(is(check(v512, t256, NOW), "alg_mismatch"), "HS256 token vs HS512 config");
    free(t384);
    free(t512);
    free(t256);
    dm_jwt_verifier_free(v384);
    dm_jwt_verifier_free(v512);
}

/* ---- signatures and algorithms ------------------------------------------ */

static void test_signature(void)
{
    static const unsigned char other[] = "another-secret-of-at-least-32-bytes!!";
    char claims[128], *t, *forged;
    char err[DM_ERRLEN];

    snprintf(claims, sizeof(claims), "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    t = dm_jwt_mint("HS256", other, sizeof(other) - 1, claims, err);
    ok(is(check_free(hs256, t, NOW), "bad_signature"), "wrong secret");

    /* Same signature, payload changed to another user. */
    t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    forged = craft_hs256("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"sub\":\"admin\",\"exp\":1}");
    strcpy(strrchr(forged, '.'), strrchr(t, '.'));
    ok(is(check_free(hs256, forged, NOW), "bad_signature"), "payload swapped under a signature");

    /* Signature with its last character changed: still valid base64url. */
    flip(strrchr(t, '.') + 5);
    ok(is(check(hs256, t, NOW), "bad_signature"), "altered signature");
    t[strlen(t) - 1] = '\0';
    ok(is_any(check(hs256, t, NOW), "bad_signature", "malformed"), "truncated signature");
    strcpy(strrchr(t, '.'), ".");
    ok(is(check(hs256, t, NOW), "bad_signature"), "empty signature");
    free(t);

    /* A hand-made HS256 token is accepted: the crafting below is sound. */
    t = craft_hs256("{\"alg\":\"HS256\"}", "{\"sub\":\"u\",\"exp\":1700000060}");
    ok(is(check_free(hs256, t, NOW), "ok"), "hand-crafted HS256 token accepted");
}

static void test_alg_none(void)
{
    static const char *const headers[] = {
        "{\"alg\":\"none\"}",
        "{\"alg\":\"None\"}",
        "{\"alg\":\"NONE\"}",
        "{\"alg\":\"nOnE\"}",
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
    };
    const char *payload = "{\"sub\":\"u\",\"exp\":1700000060}";

    for (size_t i = 0; i < DM_ARRAY_LEN(headers); i++) {
        char *t = craft(headers[i], payload, NULL, NULL, 0);
        ok(is(check(hs256, t, NOW), "alg_mismatch"), "unsigned %s rejected", headers[i]);
        /* The same with the trailing dot dropped (2 segments). */
        t[strlen(t) - 1] = '\0';
        ok(is(check_free(hs256, t, NOW), "malformed"), "unsigned %s without the dot", headers[i]);
        /* And carrying a valid HMAC of the right secret. */
        t = craft(headers[i], payload, EVP_sha256(), secret, secretlen);
        ok(is(check_free(hs256, t, NOW), "alg_mismatch"), "HMAC-signed %s rejected", headers[i]);
    }
    /* libjwt maps alg names case-insensitively; we do not. */
    ok(is(check_free(hs256, craft_hs256("{\"alg\":\"hs256\"}", payload), NOW), "alg_mismatch"),
       "alg \"hs256\" (valid HMAC) rejected");
    ok(is(check_free(hs256, craft_hs256("{\"alg\":\"HS256 \"}", payload), NOW), "alg_mismatch"),
       "alg \"HS256 \" rejected");
    /* jansson keeps the last duplicate; libjwt would verify "HS256". */
    ok(is(check_free(hs256, craft_hs256("{\"alg\":\"none\",\"alg\":\"HS256\"}", payload), NOW),
          "malformed"),
       "duplicate alg rejected");
    ok(is(check_free(hs256, craft_hs256("{\"typ\":\"JWT\"}", payload), NOW), "malformed"),
       "header without alg");
    ok(is(check_free(hs256, craft_hs256("{\"alg\":256}", payload), NOW), "malformed"),
       "alg not a string");
    ok(is(check_free(hs256,
                     craft_hs256("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", payload),
                     NOW),
          "malformed"),
       "crit header rejected");
    ok(is(check_free(hs256, craft_hs256("{\"alg\":\"HS256\",\"typ\":\"JOSE\"}", payload), NOW),
          "malformed"),
       "typ JOSE rejected");
    ok(is(check_free(hs256, craft_hs256("{\"alg\":\"HS256\",\"typ\":1}", payload), NOW),
          "malformed"),
       "typ not a string rejected");
    ok(is(check_free(hs256, craft_hs256("{\"alg\":\"HS256\",\"typ\":\"jwt\"}", payload), NOW),
          "ok"),
       "typ jwt accepted");
    ok(is(check_free(hs256, craft_hs256("{\"alg\":\"HS256\",\"kid\":\"k1\"}", payload), NOW), "ok"),
       "unknown non-critical header ignored");
}

/* ---- time claims -------------------------------------------------------- */

static void test_times(void)
{
    struct dm_jwt_verifier *v30 = verifier("HS256", NULL, 30, NULL, NULL);
    char *t;

    t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW);
    ok(is(check(hs256, t, NOW - 1), "ok"), "leeway 0: one second before exp");
    ok(is(check(hs256, t, NOW), "expired"), "leeway 0: exactly at exp");
    ok(is(check(v30, t, NOW + 29), "ok"), "leeway 30: exp + 29");
    ok(is(check(v30, t, NOW + 30), "expired"), "leeway 30: exactly exp + 30");
    free(t);

    t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld}", (long long)NOW + 3600,
             (long long)NOW);
    ok(is(check(hs256, t, NOW), "ok"), "leeway 0: exactly at nbf");
    ok(is(check(hs256, t, NOW - 1), "not_yet_valid"), "leeway 0: one second before nbf");
    ok(is(check(v30, t, NOW - 30), "ok"), "leeway 30: exactly nbf - 30");
    ok(is(check(v30, t, NOW - 31), "not_yet_valid"), "leeway 30: nbf - 31");
    free(t);

    t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"iat\":%lld}", (long long)NOW + 3600,
             (long long)NOW);
    ok(is(check(hs256, t, NOW), "ok"), "iat now");
    ok(is(check(hs256, t, NOW - 1), "not_yet_valid"), "iat one second in the future");
    ok(is(check(v30, t, NOW - 30), "ok"), "leeway 30: iat exactly 30 s ahead");
    ok(is(check(v30, t, NOW - 31), "not_yet_valid"), "leeway 30: iat 31 s ahead");
    free(t);

    ok(is(check_free(hs256, mint("HS256", NULL, "{\"sub\":\"u\"}"), NOW), "missing_exp"),
       "missing exp");
    ok(is(check_free(hs256, mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":\"1700000060\"}"), NOW),
          "bad_claims"),
       "exp as a string");
    ok(is(check_free(hs256, mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":1700000060.5}"), NOW),
          "bad_claims"),
       "exp as a real");
    ok(is(check_free(hs256, mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":null}"), NOW),
          "bad_claims"),
       "exp null");
    ok(is(check_free(hs256, mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":-5}"), NOW), "expired"),
       "negative exp");
    ok(is(check_free(hs256, mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":9223372036854775807}"),
                     NOW),
          "ok"),
       "exp at INT64_MAX (no overflow)");
    ok(is(check_free(v30,
                     mint("HS256", NULL,
                          "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":-9223372036854775807}",
                          (long long)NOW + 60),
                     NOW),
          "ok"),
       "nbf near INT64_MIN (no overflow)");
    ok(is(check_free(hs256,
                     mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":\"0\"}",
                          (long long)NOW + 60),
                     NOW),
          "bad_claims"),
       "nbf as a string");
    ok(is(check_free(
              hs256,
              mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"iat\":1.5}", (long long)NOW + 60),
              NOW),
          "bad_claims"),
       "iat as a real");
    /* Claims are only judged for authentic tokens. */
    t = craft("{\"alg\":\"HS256\"}", "{\"sub\":\"u\"}", EVP_sha256(),
              (const unsigned char *)"some-other-secret-that-is-long-enough", 37);
    ok(is(check_free(hs256, t, NOW), "bad_signature"), "forged token without exp: signature first");
    dm_jwt_verifier_free(v30);
}

static void test_iss_aud(void)
{
    struct dm_jwt_verifier *v = verifier("HS256", NULL, 0, "danmaku-auth", "danmaku");
    long long exp = (long long)NOW + 60;

    ok(v != NULL, "verifier with iss and aud");
    ok(is(check_free(
              v,
              mint("HS256", NULL,
                   "{\"sub\":\"u\",\"exp\":%lld,\"iss\":\"danmaku-auth\",\"aud\":\"danmaku\"}",
                   exp),
              NOW),
          "ok"),
       "matching iss and aud");
    ok(is(check_free(v,
                     mint("HS256", NULL,
                          "{\"sub\":\"u\",\"exp\":%lld,\"iss\":\"danmaku-auth\","
                          "\"aud\":[\"other\",\"danmaku\"]}",
                          exp),
                     NOW),
          "ok"),
       "aud array containing ours");
    ok(is(check_free(v,
                     mint("HS256", NULL,
                          "{\"sub\":\"u\",\"exp\":%lld,\"iss\":\"evil\",\"aud\":\"danmaku\"}", exp),
                     NOW),
          "bad_issuer"),
       "wrong iss");
    ok(is(check_free(
              v, mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"aud\":\"danmaku\"}", exp), NOW),
          "bad_issuer"),
       "missing iss");
    ok(is(check_free(v,
                     mint("HS256", NULL,
                          "{\"sub\":\"u\",\"exp\":%lld,\"iss\":\"danmaku-auth\",\"aud\":\"other\"}",
                          exp),
                     NOW),
          "bad_audience"),
       "wrong aud");
    ok(is(check_free(v,
                     mint("HS256", NULL,
                          "{\"sub\":\"u\",\"exp\":%lld,\"iss\":\"danmaku-auth\","
                          "\"aud\":[\"other\",1]}",
                          exp),
                     NOW),
          "bad_audience"),
       "aud array without ours");
    ok(is(check_free(
              v, mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"iss\":\"danmaku-auth\"}", exp),
              NOW),
          "bad_audience"),
       "missing aud");
    ok(is(check_free(v,
                     mint("HS256", NULL,
                          "{\"sub\":\"u\",\"exp\":%lld,\"iss\":\"danmaku-auth\",\"aud\":7}", exp),
                     NOW),
          "bad_audience"),
       "aud a number");
    ok(is(check_free(hs256,
                     mint("HS256", NULL,
                          "{\"sub\":\"u\",\"exp\":%lld,\"iss\":\"anyone\",\"aud\":\"any\"}", exp),
                     NOW),
          "ok"),
       "iss/aud ignored when not configured");
    dm_jwt_verifier_free(v);
}

/* ---- structure ---------------------------------------------------------- */

static void test_structure(void)
{
    const char *hdr = "{\"alg\":\"HS256\"}";
    char *t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    char buf[2048];
    struct dm_jwt_claims c;
    const char *reason = "unset";

    snprintf(buf, sizeof(buf), "%.*s", (int)(strrchr(t, '.') - t), t);
    ok(is(check(hs256, buf, NOW), "malformed"), "2 segments");
    snprintf(buf, sizeof(buf), "%s.%s", t, strrchr(t, '.') + 1);
    ok(is(check(hs256, buf, NOW), "malformed"), "4 segments");
    snprintf(buf, sizeof(buf), "%s.", t);
    ok(is(check(hs256, buf, NOW), "malformed"), "4 segments, last empty");
    ok(is(check(hs256, "", NOW), "malformed"), "empty token");
    ok(is(check(hs256, "..", NOW), "malformed"), "only dots");
    ok(is(check(hs256, "abc", NOW), "malformed"), "one segment");
    snprintf(buf, sizeof(buf), ".%s", strchr(t, '.') + 1);
    ok(is(check(hs256, buf, NOW), "malformed"), "empty header segment");

    static const struct {
        char to;
        const char *what;
    } subs[] = {{'+', "'+'"}, {'/', "'/'"}, {'=', "'='"}, {'!', "'!'"}, {' ', "space"}};
    for (size_t i = 0; i < DM_ARRAY_LEN(subs); i++) {
        strcpy(buf, t);
        strchr(buf, '.')[3] = subs[i].to;
        ok(is(check(hs256, buf, NOW), "malformed"), "%s in the payload", subs[i].what);
    }
    strcpy(buf, t);
    buf[2] = '*';
    ok(is(check(hs256, buf, NOW), "malformed"), "bad character in the header");
    snprintf(buf, sizeof(buf), "%s=", t);
    ok(is(check(hs256, buf, NOW), "malformed"), "padded signature");
    /* Non-canonical base64url: an unused low bit set in the last character. */
    strcpy(buf, t);
    {
        char *last = buf + strlen(buf) - 1; /* 43 chars for HS256: 2 unused bits */
        *last = *last == 'A' ? 'B' : (char)(*last ^ 1);
    }
    ok(is(check(hs256, buf, NOW), "malformed"), "non-canonical signature encoding");
    /* An embedded NUL inside the given length. */
    strcpy(buf, t);
    strchr(buf, '.')[2] = '\0';
    reason = "unset";
    ok(dm_jwt_verify(hs256, buf, strlen(t), NOW, &c, &reason) == -1 && is(reason, "malformed"),
       "embedded NUL");
    ok(c.rooms == NULL && c.sub[0] == '\0', "rejected: claims left empty");
    free(t);

    ok(is(check_free(hs256, craft_hs256(hdr, "[1,2]"), NOW), "malformed"), "payload array");
    ok(is(check_free(hs256, craft_hs256(hdr, "\"str\""), NOW), "malformed"), "payload string");
    ok(is(check_free(hs256, craft_hs256(hdr, "42"), NOW), "malformed"), "payload number");
    ok(is(check_free(hs256, craft_hs256(hdr, "null"), NOW), "malformed"), "payload null");
    ok(is(check_free(hs256, craft_hs256(hdr, "not json"), NOW), "malformed"), "payload not JSON");
    ok(is(check_free(hs256, craft_hs256(hdr, "{\"sub\":\"u\",\"exp\":1700000060} x"), NOW),
          "malformed"),
       "payload with trailing garbage");
    ok(is(check_free(hs256, craft_hs256(hdr, "{\"sub\":\"a\",\"sub\":\"b\",\"exp\":1700000060}"),
                     NOW),
          "malformed"),
       "duplicate claim");
    ok(is(check_free(hs256, craft_hs256(hdr, "{\"sub\":\"\xff\",\"exp\":1700000060}"), NOW),
          "malformed"),
       "invalid UTF-8");
    ok(is(check_free(hs256, craft_hs256(hdr, "{\"sub\":\"a\\u0000b\",\"exp\":1700000060}"), NOW),
          "malformed"),
       "NUL escape in a claim");
    ok(is(check_free(hs256, craft_hs256("[\"HS256\"]", "{}"), NOW), "malformed"), "header array");
    ok(is(check_free(hs256, craft_hs256("HS256", "{}"), NOW), "malformed"), "header not JSON");
}

static void test_size(void)
{
    size_t len = 0;
    char *t = NULL;
    char *pad = dm_malloc(DM_JWT_MAX_TOKEN);

    /* The largest padding that still fits, to verify right under the bound. */
    for (size_t n = 5900; n < 6200; n++) {
        memset(pad, 'a', n);
        pad[n] = '\0';
        char *c = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"x\":\"%s\"}",
                       (long long)NOW + 60, pad);
        if (strlen(c) > DM_JWT_MAX_TOKEN) {
            free(c);
            break;
        }
        free(t);
        t = c;
        len = strlen(c);
    }
    ok(t != NULL && len > DM_JWT_MAX_TOKEN - 4, "built a %zu-byte token", len);
    ok(is(check(hs256, t, NOW), "ok"), "token right under the bound accepted");
    free(t);
    memset(pad, 'a', 6200);
    pad[6200] = '\0';
    t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"x\":\"%s\"}", (long long)NOW + 60, pad);
    ok(is(check_free(hs256, t, NOW), "too_large"), "token over %d bytes: too_large",
       DM_JWT_MAX_TOKEN);
    {
        size_t huge = 1 << 20;
        char *h = dm_malloc(huge + 1);
        memset(h, 'A', huge);
        h[huge] = '\0';
        ok(is(check(hs256, h, NOW), "too_large"), "1 MiB of garbage: too_large");
        free(h);
    }
    free(pad);
}

/* ---- claims ------------------------------------------------------------- */

__attribute__((format(printf, 1, 2))) static const char *claims_reason(const char *fmt, ...)
{
    char extra[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(extra, sizeof(extra), fmt, ap);
    va_end(ap);
    return check_free(hs256, mint("HS256", NULL, "{\"exp\":%lld%s}", (long long)NOW + 60, extra),
                      NOW);
}

static void test_claims(void)
{
    struct dm_jwt_claims c;
    const char *reason = "unset";
    char s128[129], s129[130];
    char *t;

    memset(s128, 'x', 128);
    s128[128] = '\0';
    memset(s129, 'x', 129);
    s129[129] = '\0';

    ok(is(claims_reason("%s", ""), "bad_claims"), "sub missing");
    ok(is(claims_reason(",\"sub\":\"\""), "bad_claims"), "sub empty");
    ok(is(claims_reason(",\"sub\":42"), "bad_claims"), "sub a number");
    ok(is(claims_reason(",\"sub\":\"%s\"", s128), "ok"), "sub 128 bytes");
    ok(is(claims_reason(",\"sub\":\"%s\"", s129), "bad_claims"), "sub 129 bytes");
    ok(is(claims_reason(",\"sub\":\"a\\nb\""), "bad_claims"), "sub with a newline");
    ok(is(claims_reason(",\"sub\":\"u\",\"name\":\"%s\"", s128), "ok"), "name 128 bytes");
    ok(is(claims_reason(",\"sub\":\"u\",\"name\":\"%s\"", s129), "bad_claims"), "name 129 bytes");
    ok(is(claims_reason(",\"sub\":\"u\",\"name\":[\"a\"]"), "bad_claims"), "name an array");
    ok(is(claims_reason(",\"sub\":\"u\",\"name\":\"a\\u0007\""), "bad_claims"), "name with BEL");
    ok(is(claims_reason(",\"sub\":\"u\",\"role\":\"superuser\""), "bad_claims"), "unknown role");
    ok(is(claims_reason(",\"sub\":\"u\",\"role\":\"Admin\""), "bad_claims"), "role is exact");
    ok(is(claims_reason(",\"sub\":\"u\",\"role\":2"), "bad_claims"), "role a number");
    ok(is(claims_reason(",\"sub\":\"u\",\"prio\":9"), "ok"), "prio 9");
    ok(is(claims_reason(",\"sub\":\"u\",\"prio\":10"), "bad_claims"), "prio 10");
    ok(is(claims_reason(",\"sub\":\"u\",\"prio\":-1"), "bad_claims"), "prio -1");
    ok(is(claims_reason(",\"sub\":\"u\",\"prio\":\"1\""), "bad_claims"), "prio a string");
    ok(is(claims_reason(",\"sub\":\"u\",\"prio\":1.0"), "bad_claims"), "prio a real");
    ok(is(claims_reason(",\"sub\":\"u\",\"rooms\":\"lobby\""), "bad_claims"), "rooms a string");
    ok(is(claims_reason(",\"sub\":\"u\",\"rooms\":[1]"), "bad_claims"), "rooms of numbers");
    ok(is(claims_reason(",\"sub\":\"u\",\"rooms\":[\"bad room\"]"), "bad_claims"),
       "room pattern with a space");
    ok(is(claims_reason(",\"sub\":\"u\",\"rooms\":[\"a*b\"]"), "bad_claims"), "'*' not at the end");
    ok(is(claims_reason(",\"sub\":\"u\",\"rooms\":[\"\"]"), "bad_claims"), "empty pattern");
    ok(is(claims_reason(",\"sub\":\"u\",\"rooms\":null"), "bad_claims"), "rooms null");
    {
        char rooms[4096];
        size_t o = 0;
        for (int i = 0; i <= DM_JWT_MAX_ROOMS; i++)
            o += (size_t)snprintf(rooms + o, sizeof(rooms) - o, "%s\"r%d\"", i ? "," : "", i);
        ok(is(claims_reason(",\"sub\":\"u\",\"rooms\":[%s]", rooms), "bad_claims"),
           "%d room patterns", DM_JWT_MAX_ROOMS + 1);
    }

    t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"role\":\"admin\",\"prio\":5}",
             (long long)NOW + 60);
    ok(dm_jwt_verify(hs256, t, strlen(t), NOW, &c, &reason) == 0 && c.role == DM_ROLE_ADMIN &&
           c.prio == 5,
       "admin keeps prio 5");
    dm_jwt_claims_fini(&c);
    free(t);
    t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"role\":\"admin\"}", (long long)NOW + 60);
    ok(dm_jwt_verify(hs256, t, strlen(t), NOW, &c, &reason) == 0 && c.prio == 1,
       "admin without prio gets 1");
    dm_jwt_claims_fini(&c);
    free(t);
    t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"role\":\"viewer\",\"prio\":3}",
             (long long)NOW + 60);
    ok(dm_jwt_verify(hs256, t, strlen(t), NOW, &c, &reason) == 0 && c.prio == 3,
       "paid viewer prio 3");
    dm_jwt_claims_fini(&c);
    free(t);
    t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld,\"name\":\"\"}", (long long)NOW + 60);
    ok(dm_jwt_verify(hs256, t, strlen(t), NOW, &c, &reason) == 0 && strcmp(c.name, "u") == 0,
       "empty name falls back to sub");
    dm_jwt_claims_fini(&c);
    free(t);
}

/* ---- rooms -------------------------------------------------------------- */

static bool allow(const char *rooms_json, const char *room)
{
    struct dm_jwt_claims c;
    const char *reason = "unset";
    char *t = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld%s%s}", (long long)NOW + 60,
                   rooms_json ? ",\"rooms\":" : "", rooms_json ? rooms_json : "");
    bool r = false;

    if (dm_jwt_verify(hs256, t, strlen(t), NOW, &c, &reason) == 0) {
        r = dm_jwt_claims_allow_room(&c, room);
        dm_jwt_claims_fini(&c);
    } else {
        printf("#   rooms %s: %s\n", rooms_json, reason);
    }
    free(t);
    return r;
}

static void test_rooms(void)
{
    const char *p = "[\"lobby\",\"live:*\"]";

    ok(allow(NULL, "anything"), "no rooms claim: every room");
    ok(!allow("[]", "lobby"), "empty rooms claim: no room");
    ok(allow(p, "lobby"), "exact match");
    ok(!allow(p, "lobby2"), "exact pattern is not a prefix");
    ok(!allow(p, "lobb"), "exact pattern needs the whole id");
    ok(allow(p, "live:42"), "prefix match");
    ok(allow(p, "live:"), "prefix match with nothing after it");
    ok(!allow(p, "live"), "prefix needs its whole prefix");
    ok(!allow(p, "Live:42"), "case-sensitive");
    ok(!allow(p, "other"), "unlisted room");
    ok(allow("[\"*\"]", "whatever"), "\"*\" matches every room");
    ok(allow("[\"a\",\"b\",\"c*\"]", "cc"), "third pattern matches");

    static const struct {
        const char *p;
        bool valid;
    } pats[] = {{"lobby", true}, {"live:*", true}, {"*", true},    {"a_b.c:d-e*", true},
                {"", false},     {"**", false},    {"a*b", false}, {"a b", false},
                {"*a", false},   {"a/b*", false}};
    for (size_t i = 0; i < DM_ARRAY_LEN(pats); i++)
        ok(dm_jwt_room_pattern_valid(pats[i].p, strlen(pats[i].p)) == pats[i].valid,
           "pattern \"%s\" %s", pats[i].p, pats[i].valid ? "valid" : "invalid");
    {
        char p65[67];
        memset(p65, 'r', 64);
        strcpy(p65 + 64, "*");
        ok(dm_jwt_room_pattern_valid(p65, 65), "64-byte prefix plus '*'");
        p65[64] = 'r';
        strcpy(p65 + 65, "*");
        ok(!dm_jwt_room_pattern_valid(p65, 66), "65-byte prefix plus '*'");
    }
}

/* ---- RS256 / ES256 ------------------------------------------------------ */

static void test_rs256(void)
{
    struct dm_jwt_verifier *rs = verifier("RS256", "jwt_rs256.pub.pem", 0, NULL, NULL);
    size_t publen;
    unsigned char *pub = load("jwt_rs256.pub.pem", &publen);
    const char *payload = "{\"sub\":\"evil\",\"role\":\"admin\",\"exp\":1700000060}";
    char err[DM_ERRLEN];
    char *t;

    ok(rs != NULL, "RS256 verifier from the public key fixture");
    t = mint("RS256", "jwt_rs256.pem", "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    ok(t != NULL, "RS256 token minted with the private key");
    ok(is(check(rs, t, NOW), "ok"), "RS256 token accepted");
    ok(is(check(hs256, t, NOW), "alg_mismatch"), "RS256 token vs HS256 config");
    flip(strrchr(t, '.') + 100);
    ok(is(check_free(rs, t, NOW), "bad_signature"), "RS256 signature altered");

    /* Key confusion: HS256 keyed with the public key's PEM bytes. */
    t = craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, EVP_sha256(), pub, publen);
    ok(is(check(rs, t, NOW), "alg_mismatch"), "HS256 signed with the RSA public key: rejected");
    free(t);
    /* Same with the exact bytes of the file, trailing newline included. */
    {
        FILE *f = fopen(fixture("jwt_rs256.pub.pem"), "rb");
        unsigned char raw[4096];
        size_t n = f ? fread(raw, 1, sizeof(raw), f) : 0;
        if (f)
            fclose(f);
        t = craft("{\"alg\":\"HS256\"}", payload, EVP_sha256(), raw, n);
        ok(n > 0 && is(check_free(rs, t, NOW), "alg_mismatch"),
           "HS256 signed with the raw PEM file: rejected");
    }
    ok(dm_jwt_mint("HS256", pub, publen, "{\"sub\":\"u\"}", err) == NULL,
       "mint refuses a PEM key as HS secret (%s)", err);

    t = mint("ES256", "jwt_es256.pem", "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    ok(is(check_free(rs, t, NOW), "alg_mismatch"), "ES256 token vs RS256 config");
    free(pub);
    dm_jwt_verifier_free(rs);
}

static void test_es256(void)
{
    struct dm_jwt_verifier *es = verifier("ES256", "jwt_es256.pub.pem", 0, NULL, NULL);
    size_t enclen;
    unsigned char *enc = load("jwt_rs256.encrypted.pem", &enclen);
    char err[DM_ERRLEN] = "";
    char *t;

    ok(es != NULL, "ES256 verifier from the public key fixture");
    t = mint("ES256", "jwt_es256.pem", "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    ok(t != NULL, "ES256 token minted");
    ok(is(check(es, t, NOW), "ok"), "ES256 token accepted");
    ok(is(check(es, t, NOW + 60), "expired"), "ES256 token expires");
    flip(strrchr(t, '.') + 10);
    ok(is(check_free(es, t, NOW), "bad_signature"), "ES256 signature altered");
    t = mint("ES256", "jwt_es256.pem", "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    strcpy(strrchr(t, '.') + 1, "AAAA");
    ok(is(check_free(es, t, NOW), "bad_signature"), "ES256 signature of the wrong length");

    ok(dm_jwt_mint("RS256", enc, enclen, "{\"sub\":\"u\"}", err) == NULL && err[0],
       "encrypted private key refused without prompting (%s)", err);
    ok(dm_jwt_mint("RS256", (const unsigned char *)"x", 1, "{}", err) == NULL,
       "mint refuses a non-PEM RS256 key");
    free(enc);
    dm_jwt_verifier_free(es);
}

/* ---- minting ------------------------------------------------------------ */

static void test_mint(void)
{
    char err[DM_ERRLEN];
    char *t;

    ok(dm_jwt_mint("HS256", secret, secretlen, "[1]", err) == NULL, "claims array refused (%s)",
       err);
    ok(dm_jwt_mint("HS256", secret, secretlen, "{\"a\":", err) == NULL, "bad JSON refused (%s)",
       err);
    ok(dm_jwt_mint("HS256", secret, secretlen, "{\"a\":1,\"a\":2}", err) == NULL,
       "duplicate claims refused");
    ok(dm_jwt_mint("HS256", secret, 0, "{}", err) == NULL, "empty key refused");
    ok(dm_jwt_mint("HS256", secret, 31, "{}", err) == NULL, "short key refused");
    ok(dm_jwt_mint("none", secret, secretlen, "{}", err) == NULL, "alg none refused");
    t = dm_jwt_mint("HS256", secret, secretlen, "{\"sub\":\"u\",\"exp\":1700000060}", err);
    ok(t != NULL && strncmp(t, "eyJ", 3) == 0 && strchr(t, '=') == NULL,
       "mint gives a compact token");
    ok(is(check_free(hs256, t, NOW), "ok"), "and it verifies");
}

static void test_roles(void)
{
    enum dm_role r = DM_ROLE_ADMIN;

    ok(dm_jwt_role_parse("viewer", &r) == 0 && r == DM_ROLE_VIEWER, "parse viewer");
    ok(dm_jwt_role_parse("moderator", &r) == 0 && r == DM_ROLE_MODERATOR, "parse moderator");
    ok(dm_jwt_role_parse("admin", &r) == 0 && r == DM_ROLE_ADMIN, "parse admin");
    ok(dm_jwt_role_parse("root", &r) == -1 && r == DM_ROLE_ADMIN, "unknown role untouched");
    ok(dm_jwt_role_parse(NULL, &r) == -1, "NULL role");
    ok(strcmp(dm_jwt_role_name(DM_ROLE_MODERATOR), "moderator") == 0, "role name");
}

/* ---- threads ------------------------------------------------------------ */

struct worker {
    const struct dm_jwt_verifier *v;
    const char *token;
    int ok;
};

static void *verify_loop(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 200; i++) {
        struct dm_jwt_claims c;
        const char *reason;
        if (dm_jwt_verify(w->v, w->token, strlen(w->token), NOW, &c, &reason) == 0 &&
            strcmp(c.sub, "u") == 0)
            w->ok++;
        dm_jwt_claims_fini(&c);
    }
    return NULL;
}

static void test_threads(void)
{
    struct dm_jwt_verifier *rs = verifier("RS256", "jwt_rs256.pub.pem", 0, NULL, NULL);
    char *ths = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    char *trs = mint("RS256", "jwt_rs256.pem", "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    struct worker w[4];
    pthread_t th[4];
    int good = 0, started = 0;

    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){i % 2 ? rs : hs256, i % 2 ? trs : ths, 0};
        started += pthread_create(&th[i], NULL, verify_loop, &w[i]) == 0;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        good += w[i].ok;
    }
    ok(started == 4 && good == 800, "4 threads share 2 verifiers: %d/800 verified", good);
    free(ths);
    free(trs);
    dm_jwt_verifier_free(rs);
}

int main(void)
{
    char err[DM_ERRLEN] = "";

    secret = load("dev-secret.txt", &secretlen);
    if (secret != NULL)
        hs256 = dm_jwt_verifier_new("HS256", secret, secretlen, 0, NULL, NULL, err);
    if (hs256 == NULL) {
        printf("Bail out! no HS256 verifier from %s: %s\n", fixture("dev-secret.txt"), err);
        return 1;
    }
    subtest("verifier_new", test_verifier_new);
    subtest("valid HS256", test_valid_hs256);
    subtest("HS384/HS512 pinning", test_hs_family);
    subtest("signature", test_signature);
    subtest("alg none and header checks", test_alg_none);
    subtest("exp/nbf/iat with leeway", test_times);
    subtest("iss/aud", test_iss_aud);
    subtest("structure", test_structure);
    subtest("size bound", test_size);
    subtest("claims", test_claims);
    subtest("room patterns", test_rooms);
    subtest("RS256 and key confusion", test_rs256);
    subtest("ES256", test_es256);
    subtest("mint", test_mint);
    subtest("roles", test_roles);
    subtest("threads", test_threads);
    dm_jwt_verifier_free(hs256);
    free(secret);
    return done_testing();
}
