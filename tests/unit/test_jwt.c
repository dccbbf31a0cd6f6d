/* JWT policy: pinned algorithms, alg "none" and key confusion, time claims
 * at their leeway edges (injected clock), iss/aud, structure, claim types,
 * room patterns, RS256/ES256 with the PEM fixtures, the attacks repeated for
 * every algorithm, ES256/RS256 signature encodings, kid selection and
 * rotation, the key directory of common/auth.c, concurrent verify.
 * Run from the repository root (fixtures in tests/fixtures, or $DM_FIXTURES). */
#include "common/jwt.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "common/auth.h"
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
    ok(is(check_free(hs256, craft_hs256("{\"alg\":\"HS256\",\"x-trace\":\"k1\"}", payload), NOW),
          "ok"),
       "unknown non-critical header ignored");
    /* kid is not ignored: a verifier without keys by kid knows none. */
    ok(is(check_free(hs256, craft_hs256("{\"alg\":\"HS256\",\"kid\":\"k1\"}", payload), NOW),
          "unknown_kid"),
       "kid on a verifier with only a default key: unknown_kid (no fallback)");
    ok(is(check_free(hs256, craft_hs256("{\"alg\":\"HS256\",\"kid\":1}", payload), NOW),
          "malformed"),
       "kid not a string: malformed");
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

/* ---- every algorithm: signer, attacks ----------------------------------- */

/* Signs like an issuer would, under any header: HMAC with a secret, or
 * RS256/ES256 with a private key (ES256 as JWS r||s, or DER on request). */
struct signer {
    const EVP_MD *hmac_md; /* HS*: the digest; NULL for RS256/ES256 */
    const unsigned char *secret;
    size_t secretlen;
    EVP_PKEY *priv; /* RS256/ES256 */
    bool es256;
};

static EVP_PKEY *private_key(const char *name)
{
    FILE *f = fopen(fixture(name), "rb");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (k == NULL)
        printf("# cannot read private key %s\n", name);
    return k;
}

/* Signature of in[0..n) into sig[1024]; returns its length. */
static size_t sign_input(const struct signer *sg, const char *in, size_t n, unsigned char *sig,
                         bool der)
{
    unsigned int hl = 0;
    size_t sl = 1024;
    EVP_MD_CTX *m;

    if (sg->hmac_md != NULL) {
        HMAC(sg->hmac_md, sg->secret, (int)sg->secretlen, (const unsigned char *)in, n, sig, &hl);
        return hl;
    }
    m = EVP_MD_CTX_new();
    if (EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, sg->priv) != 1 ||
        EVP_DigestSign(m, sig, &sl, (const unsigned char *)in, n) != 1)
        sl = 0;
    EVP_MD_CTX_free(m);
    if (sg->es256 && !der && sl > 0) {
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
        const BIGNUM *r, *s;
        ECDSA_SIG_get0(es, &r, &s);
        BN_bn2binpad(r, sig, 32);
        BN_bn2binpad(s, sig + 32, 32);
        ECDSA_SIG_free(es);
        sl = 64;
    }
    return sl;
}

/* header.payload.b64url(sig[0..n)); caller frees. */
static char *craft_raw(const char *header, const char *payload, const unsigned char *sig, size_t n)
{
    size_t hl = strlen(header), pl = strlen(payload);
    char *t = dm_malloc((hl + pl + n) / 3 * 4 + 16);

    b64url((const unsigned char *)header, hl, t);
    strcat(t, ".");
    b64url((const unsigned char *)payload, pl, t + strlen(t));
    strcat(t, ".");
    b64url(sig, n, t + strlen(t));
    return t;
}

/* A token with any header and payload, signed by sg; caller frees. */
static char *craft_by(const struct signer *sg, const char *header, const char *payload, bool der)
{
    unsigned char sig[1024];
    char *t = craft_raw(header, payload, NULL, 0); /* "header.payload." */
    size_t n = sign_input(sg, t, strlen(t) - 1, sig, der);

    free(t);
    return craft_raw(header, payload, sig, n);
}

struct alg_case {
    const char *alg;
    const char *pub;  /* public key fixture (NULL for HS*) */
    const char *priv; /* private key fixture */
    const EVP_MD *md; /* HS* */
};

static const struct alg_case alg_cases[] = {
    {"HS256", NULL, NULL, NULL},
    {"HS384", NULL, NULL, NULL},
    {"HS512", NULL, NULL, NULL},
    {"RS256", "jwt_rs256.pub.pem", "jwt_rs256.pem", NULL},
    {"ES256", "jwt_es256.pub.pem", "jwt_es256.pem", NULL},
};

static struct signer signer_for(const struct alg_case *c)
{
    struct signer sg = {0};
    if (c->pub == NULL) {
        sg.hmac_md = strcmp(c->alg, "HS256") == 0   ? EVP_sha256()
                     : strcmp(c->alg, "HS384") == 0 ? EVP_sha384()
                                                    : EVP_sha512();
        sg.secret = secret;
        sg.secretlen = secretlen;
    } else {
        sg.priv = private_key(c->priv);
        sg.es256 = strcmp(c->alg, "ES256") == 0;
    }
    return sg;
}

/* The attacks of the HS256 subtests above, on verifier v pinned to c->alg.
 * `kid` (may be NULL) goes into every header, so that a key-map verifier
 * meets them too. */
static void attacks(const struct alg_case *c, const struct dm_jwt_verifier *v, const char *kid)
{
    static const char *const others[] = {"none",  "None",  "NONE",  "HS256", "HS384", "HS512",
                                         "RS256", "ES256", "RS384", "RS512", "PS256", "ES384",
                                         "ES512", "EdDSA", "hs256", "rs256", "es256", ""};
    const char *pl = "{\"sub\":\"u\",\"exp\":1700000060}";
    struct signer sg = signer_for(c);
    char kidpart[96] = "", hdr[256], what[64];
    char *t, *u;
    size_t n;

    if (kid != NULL)
        snprintf(kidpart, sizeof(kidpart), ",\"kid\":\"%s\"", kid);
    snprintf(what, sizeof(what), "%s%s%s", c->alg, kid ? " kid " : "", kid ? kid : "");
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"%s}", c->alg, kidpart);

    t = craft_by(&sg, hdr, pl, false);
    ok(is(check(v, t, NOW), "ok"), "%s: hand-crafted token accepted", what);
    ok(is(check(v, t, NOW + 60), "expired"), "%s: and it expires", what);
    u = dm_strdup(t);
    flip(strrchr(u, '.') + 5);
    ok(is(check_free(v, u, NOW), "bad_signature"), "%s: altered signature", what);
    u = dm_strdup(t);
    strrchr(u, '.')[1] = '\0';
    ok(is(check_free(v, u, NOW), "bad_signature"), "%s: empty signature", what);
    {
        unsigned char sig[1024];
        char *in = craft_raw(hdr, pl, NULL, 0);
        n = sign_input(&sg, in, strlen(in) - 1, sig, false);
        ok(is(check_free(v, craft_raw(hdr, pl, sig, n - 1), NOW), "bad_signature"),
           "%s: signature one byte short", what);
        sig[n] = sig[0];
        ok(is(check_free(v, craft_raw(hdr, pl, sig, n + 1), NOW), "bad_signature"),
           "%s: signature one byte long", what);
        free(in);
    }
    {
        char *forged =
            craft_by(&sg, hdr, "{\"sub\":\"admin\",\"role\":\"admin\",\"exp\":1700000060}", false);
        char *mix = dm_malloc(strlen(forged) + strlen(t) + 1);
        memcpy(mix, forged, (size_t)(strrchr(forged, '.') - forged));
        strcpy(mix + (strrchr(forged, '.') - forged), strrchr(t, '.'));
        ok(is(check_free(v, mix, NOW), "bad_signature"), "%s: payload swapped under a signature",
           what);
        free(forged);
    }

    /* Any other alg (none, other families, other spellings), signed with the
     * very key of the verifier or not signed at all. */
    for (size_t i = 0; i < DM_ARRAY_LEN(others); i++) {
        if (strcmp(others[i], c->alg) == 0)
            continue;
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"%s}", others[i], kidpart);
        ok(is(check_free(v, craft_by(&sg, hdr, pl, false), NOW), "alg_mismatch"),
           "%s: header alg \"%s\" signed with the right key", what, others[i]);
        ok(is(check_free(v, craft_raw(hdr, pl, NULL, 0), NOW), "alg_mismatch"),
           "%s: header alg \"%s\" unsigned", what, others[i]);
    }
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s \"%s}", c->alg, kidpart);
    ok(is(check_free(v, craft_by(&sg, hdr, pl, false), NOW), "alg_mismatch"),
       "%s: alg with a trailing space", what);

    /* Key confusion: HMAC keyed with the public key's PEM text. */
    if (c->pub != NULL) {
        size_t publen;
        unsigned char *pub = load(c->pub, &publen);
        struct signer hs = {.hmac_md = EVP_sha256(), .secret = pub, .secretlen = publen};
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"HS256\",\"typ\":\"JWT\"%s}", kidpart);
        ok(is(check_free(v, craft_by(&hs, hdr, pl, false), NOW), "alg_mismatch"),
           "%s: HS256 signed with the public key", what);
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"%s}", c->alg, kidpart);
        ok(is(check_free(v, craft_by(&hs, hdr, pl, false), NOW), "bad_signature"),
           "%s: HMAC with the public key under the pinned alg", what);
        free(pub);
    }

    /* Header shapes. */
    static const char *const bad_extras[] = {
        ",\"crit\":[\"b64\"],\"b64\":false",
        ",\"typ\":\"JOSE\"",
        ",\"typ\":1",
        ",\"alg\":\"none\"",
    };
    for (size_t i = 0; i < DM_ARRAY_LEN(bad_extras); i++) {
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"%s%s}", c->alg, bad_extras[i], kidpart);
        ok(is(check_free(v, craft_by(&sg, hdr, pl, false), NOW), "malformed"), "%s: header %s",
           what, hdr);
    }
    snprintf(hdr, sizeof(hdr), "{\"typ\":\"JWT\"%s}", kidpart);
    ok(is(check_free(v, craft_by(&sg, hdr, pl, false), NOW), "malformed"), "%s: no alg", what);
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"kid\":[\"k\"]}", c->alg);
    ok(is(check_free(v, craft_by(&sg, hdr, pl, false), NOW), "malformed"), "%s: kid an array",
       what);
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"kid\":\"no-such-kid\"}", c->alg);
    ok(is(check_free(v, craft_by(&sg, hdr, pl, false), NOW), "unknown_kid"), "%s: unknown kid",
       what);
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"%s}", c->alg, kidpart);

    /* Structure. */
    {
        char buf[4096];
        snprintf(buf, sizeof(buf), "%.*s", (int)(strrchr(t, '.') - t), t);
        ok(is(check(v, buf, NOW), "malformed"), "%s: 2 segments", what);
        snprintf(buf, sizeof(buf), "%s.%s", t, strrchr(t, '.') + 1);
        ok(is(check(v, buf, NOW), "malformed"), "%s: 4 segments", what);
        snprintf(buf, sizeof(buf), "%s=", t);
        ok(is(check(v, buf, NOW), "malformed"), "%s: padded signature", what);
        strcpy(buf, t);
        strrchr(buf, '.')[3] = '+';
        ok(is(check(v, buf, NOW), "malformed"), "%s: '+' in the signature", what);
        strcpy(buf, t);
        strchr(buf, '.')[3] = '/';
        ok(is(check(v, buf, NOW), "malformed"), "%s: '/' in the payload", what);
        strcpy(buf, t);
        buf[3] = '!';
        ok(is(check(v, buf, NOW), "malformed"), "%s: '!' in the header", what);
    }
    static const char *const bad_payloads[] = {
        "[1,2]", "\"s\"",    "42",
        "null",  "not json", "{\"sub\":\"a\",\"sub\":\"b\",\"exp\":1700000060}"};
    for (size_t i = 0; i < DM_ARRAY_LEN(bad_payloads); i++)
        ok(is(check_free(v, craft_by(&sg, hdr, bad_payloads[i], false), NOW), "malformed"),
           "%s: payload %s", what, bad_payloads[i]);
    ok(is(check_free(v, craft_by(&sg, "[\"x\"]", pl, false), NOW), "malformed"), "%s: header array",
       what);
    {
        char *big = dm_malloc(DM_JWT_MAX_TOKEN + 64);
        char *p;
        snprintf(big, DM_JWT_MAX_TOKEN + 64, "{\"sub\":\"u\",\"exp\":1700000060,\"x\":\"");
        p = big + strlen(big);
        memset(p, 'a', DM_JWT_MAX_TOKEN / 4 * 3);
        strcpy(p + DM_JWT_MAX_TOKEN / 4 * 3, "\"}");
        ok(is(check_free(v, craft_by(&sg, hdr, big, false), NOW), "too_large"),
           "%s: signed token over %d bytes", what, DM_JWT_MAX_TOKEN);
        free(big);
    }
    /* Claims are judged only for authentic tokens. */
    u = craft_by(&sg, hdr, "{\"sub\":\"u\"}", false);
    flip(strrchr(u, '.') + 5);
    ok(is(check_free(v, u, NOW), "bad_signature"), "%s: forged token without exp", what);
    free(t);
    EVP_PKEY_free(sg.priv);
}

static struct dm_jwt_verifier *verifier_keys(const char *alg, const char *const *kids,
                                             const char *const *files, size_t n)
{
    struct dm_jwt_key keys[DM_JWT_MAX_KEYS + 1];
    unsigned char *bufs[DM_JWT_MAX_KEYS + 1];
    char err[DM_ERRLEN] = "";
    struct dm_jwt_verifier *v;

    for (size_t i = 0; i < n; i++) {
        size_t len = secretlen;
        bufs[i] = files[i] ? load(files[i], &len) : NULL;
        keys[i] = (struct dm_jwt_key){kids[i], files[i] ? bufs[i] : secret, len};
    }
    v = dm_jwt_verifier_new_keys(alg, keys, n, 0, NULL, NULL, err);
    if (v == NULL)
        printf("# verifier_keys %s: %s\n", alg, err);
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    return v;
}

static void test_attacks_every_alg(void)
{
    for (size_t i = 0; i < DM_ARRAY_LEN(alg_cases); i++) {
        const struct alg_case *c = &alg_cases[i];
        struct dm_jwt_verifier *v = verifier(c->alg, c->pub, 0, NULL, NULL);
        /* The same key behind a kid, next to another kid and no default. */
        const char *kids[] = {"other", "k1"};
        const char *files[] = {c->pub ? c->pub : "dev-secret-kid2.txt", c->pub};
        struct dm_jwt_verifier *vk = verifier_keys(c->alg, kids, files, 2);

        ok(v != NULL && vk != NULL, "%s: verifiers", c->alg);
        if (v != NULL)
            attacks(c, v, NULL);
        if (vk != NULL)
            attacks(c, vk, "k1");
        dm_jwt_verifier_free(v);
        dm_jwt_verifier_free(vk);
    }
}

/* ---- ES256 / RS256 signature encodings ---------------------------------- */

static void test_signature_encodings(void)
{
    struct dm_jwt_verifier *es = verifier("ES256", "jwt_es256.pub.pem", 0, NULL, NULL);
    struct dm_jwt_verifier *rs = verifier("RS256", "jwt_rs256.pub.pem", 0, NULL, NULL);
    struct signer ses = {.priv = private_key("jwt_es256.pem"), .es256 = true};
    struct signer srs = {.priv = private_key("jwt_rs256.pem")};
    const char *hes = "{\"alg\":\"ES256\"}", *hrs = "{\"alg\":\"RS256\"}";
    const char *pl = "{\"sub\":\"u\",\"exp\":1700000060}";
    unsigned char sig[1024];
    char *in = craft_raw(hes, pl, NULL, 0);
    size_t inlen = strlen(in) - 1; /* without the trailing '.' */
    size_t n;

    n = sign_input(&ses, in, inlen, sig, false);
    ok(n == 64 && is(check_free(es, craft_raw(hes, pl, sig, n), NOW), "ok"),
       "ES256 r||s (64 bytes) accepted");
    ok(is(check_free(es, craft_raw(hes, pl, sig, 63), NOW), "bad_signature"),
       "ES256 signature of 63 bytes");
    sig[64] = 0;
    ok(is(check_free(es, craft_raw(hes, pl, sig, 65), NOW), "bad_signature"),
       "ES256 signature of 65 bytes");
    ok(is(check_free(es, craft_raw(hes, pl, sig, 32), NOW), "bad_signature"),
       "ES256 signature of 32 bytes (r only)");
    {
        unsigned char two[128];
        memcpy(two, sig, 64);
        memcpy(two + 64, sig, 64);
        ok(is(check_free(es, craft_raw(hes, pl, two, 128), NOW), "bad_signature"),
           "ES256 signature of 128 bytes");
    }
    n = sign_input(&ses, in, inlen, sig, true);
    ok(n >= 68 && n <= 72 && sig[0] == 0x30, "DER signature made (%zu bytes)", n);
    ok(is(check_free(es, craft_raw(hes, pl, sig, n), NOW), "bad_signature"),
       "ES256 DER-encoded signature rejected");
    memset(sig, 0, 64);
    ok(is(check_free(es, craft_raw(hes, pl, sig, 64), NOW), "bad_signature"), "ES256 r = s = 0");
    memset(sig, 0xff, 64);
    ok(is(check_free(es, craft_raw(hes, pl, sig, 64), NOW), "bad_signature"),
       "ES256 r, s above the group order");
    {
        /* The curve order n as r and s: out of range [1, n-1]. */
        static const unsigned char order[32] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
                                                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84,
                                                0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};
        memcpy(sig, order, 32);
        memcpy(sig + 32, order, 32);
        ok(is(check_free(es, craft_raw(hes, pl, sig, 64), NOW), "bad_signature"),
           "ES256 r = s = n");
    }
    free(in);

    in = craft_raw(hrs, pl, NULL, 0);
    inlen = strlen(in) - 1;
    n = sign_input(&srs, in, inlen, sig, false);
    ok(n == 256 && is(check_free(rs, craft_raw(hrs, pl, sig, n), NOW), "ok"),
       "RS256 256-byte signature accepted");
    ok(is(check_free(rs, craft_raw(hrs, pl, sig, 255), NOW), "bad_signature"),
       "RS256 signature of 255 bytes");
    {
        unsigned char longer[257];
        longer[0] = 0;
        memcpy(longer + 1, sig, 256);
        ok(is(check_free(rs, craft_raw(hrs, pl, longer, 257), NOW), "bad_signature"),
           "RS256 signature with a leading zero byte (257 bytes)");
    }
    {
        /* RSA-PSS with the same key must not pass as RS256 (PKCS#1 v1.5). */
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;
        size_t sl = sizeof(sig);
        int rc = EVP_DigestSignInit(m, &pctx, EVP_sha256(), NULL, srs.priv) == 1 &&
                 EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                 EVP_DigestSign(m, sig, &sl, (const unsigned char *)in, inlen) == 1;
        EVP_MD_CTX_free(m);
        ok(rc && sl == 256 && is(check_free(rs, craft_raw(hrs, pl, sig, sl), NOW), "bad_signature"),
           "RS256 header with an RSA-PSS signature");
    }
    free(in);
    EVP_PKEY_free(ses.priv);
    EVP_PKEY_free(srs.priv);
    dm_jwt_verifier_free(es);
    dm_jwt_verifier_free(rs);
}

/* ---- kid: construction, selection, rotation ----------------------------- */

static bool refused_keys(const char *alg, const struct dm_jwt_key *keys, size_t n,
                         const char *must_name)
{
    char err[DM_ERRLEN] = "";
    struct dm_jwt_verifier *v = dm_jwt_verifier_new_keys(alg, keys, n, 0, NULL, NULL, err);
    if (v != NULL) {
        dm_jwt_verifier_free(v);
        return false;
    }
    printf("#   err: %s\n", err);
    return err[0] != '\0' && (must_name == NULL || strstr(err, must_name) != NULL);
}

static void test_kid_new(void)
{
    static const unsigned char k32[] = "0123456789abcdef0123456789abcdef";
    struct dm_jwt_key keys[DM_JWT_MAX_KEYS + 2];
    char kidbuf[DM_JWT_MAX_KEYS + 2][16];
    size_t publen, eslen, privlen;
    unsigned char *pub = load("jwt_rs256.pub.pem", &publen);
    unsigned char *espub = load("jwt_es256.pub.pem", &eslen);
    unsigned char *priv = load("jwt_rs256.pem", &privlen);
    char kid65[DM_JWT_MAX_KID + 2];
    struct dm_jwt_verifier *v;
    char err[DM_ERRLEN];

    for (size_t i = 0; i < DM_ARRAY_LEN(keys); i++) {
        snprintf(kidbuf[i], sizeof(kidbuf[i]), "k%zu", i);
        keys[i] = (struct dm_jwt_key){kidbuf[i], k32, 32};
    }
    v = dm_jwt_verifier_new_keys("HS256", keys, DM_JWT_MAX_KEYS, 0, NULL, NULL, err);
    ok(v != NULL, "%d keys with a kid accepted", DM_JWT_MAX_KEYS);
    dm_jwt_verifier_free(v);
    keys[DM_JWT_MAX_KEYS].kid = NULL;
    v = dm_jwt_verifier_new_keys("HS256", keys, DM_JWT_MAX_KEYS + 1, 0, NULL, NULL, err);
    ok(v != NULL, "%d keys with a kid plus a default accepted", DM_JWT_MAX_KEYS);
    dm_jwt_verifier_free(v);
    keys[DM_JWT_MAX_KEYS].kid = kidbuf[DM_JWT_MAX_KEYS];
    ok(refused_keys("HS256", keys, DM_JWT_MAX_KEYS + 1, NULL), "%d keys with a kid refused",
       DM_JWT_MAX_KEYS + 1);
    keys[0].kid = NULL;
    keys[1].kid = NULL;
    ok(refused_keys("HS256", keys, 2, NULL), "two default keys refused");
    keys[0].kid = "same";
    keys[1].kid = "same";
    ok(refused_keys("HS256", keys, 2, "same"), "the same kid twice refused");
    ok(refused_keys("HS256", keys, 0, NULL), "no key refused");
    ok(refused_keys("HS256", NULL, 1, NULL), "NULL keys refused");

    memset(kid65, 'a', DM_JWT_MAX_KID + 1);
    kid65[DM_JWT_MAX_KID + 1] = '\0';
    {
        const char *bad[] = {"", ".hidden", "..data", "a/b", "a b", "k\xc3\xa9", "a:b", kid65};
        for (size_t i = 0; i < DM_ARRAY_LEN(bad); i++) {
            keys[0] = (struct dm_jwt_key){bad[i], k32, 32};
            ok(refused_keys("HS256", keys, 1, NULL), "kid \"%.20s\" refused", bad[i]);
            ok(!dm_jwt_kid_valid(bad[i], strlen(bad[i])), "dm_jwt_kid_valid(\"%.20s\") false",
               bad[i]);
        }
        kid65[DM_JWT_MAX_KID] = '\0';
        ok(dm_jwt_kid_valid(kid65, DM_JWT_MAX_KID), "a %d-byte kid is valid", DM_JWT_MAX_KID);
        ok(dm_jwt_kid_valid("2025-06_rsa.v2", 14), "kid with - _ . is valid");
    }

    /* Every key is checked, and the error names its kid. */
    keys[0] = (struct dm_jwt_key){NULL, k32, 32};
    keys[1] = (struct dm_jwt_key){"short-one", k32, 31};
    ok(refused_keys("HS256", keys, 2, "short-one"), "31-byte secret under a kid refused");
    keys[1] = (struct dm_jwt_key){"empty-one", k32, 0};
    ok(refused_keys("HS256", keys, 2, "empty-one"), "empty key under a kid refused");
    keys[1] = (struct dm_jwt_key){"pem-one", pub, publen};
    ok(refused_keys("HS256", keys, 2, "pem-one"),
       "PEM public key as HS secret under a kid refused");
    keys[0] = (struct dm_jwt_key){"rsa", pub, publen};
    keys[1] = (struct dm_jwt_key){"ec", espub, eslen};
    ok(refused_keys("RS256", keys, 2, "kid ec:"), "RS256 with an EC key under kid ec refused");
    ok(refused_keys("ES256", keys, 2, "kid rsa:"), "ES256 with an RSA key under kid rsa refused");
    keys[1] = (struct dm_jwt_key){"secret", k32, 32};
    ok(refused_keys("RS256", keys, 2, "kid secret:"), "RS256 with a secret under a kid refused");
    keys[1] = (struct dm_jwt_key){"private", priv, privlen};
    ok(refused_keys("RS256", keys, 2, "kid private:"),
       "RS256 with a private key under a kid refused");
    ok(refused_keys("none", keys, 1, NULL), "alg none with keys refused");
    free(pub);
    free(espub);
    free(priv);
}

struct rot_case {
    const char *alg;
    const char *pub_a, *priv_a; /* NULL: dev-secret.txt */
    const char *pub_b, *priv_b;
};

/* Mints with the key in `file` (NULL: the dev secret) and kid (NULL: none). */
static char *mint_kid(const char *alg, const char *kid, const char *file)
{
    char claims[128], err[DM_ERRLEN] = "";
    size_t len = secretlen;
    unsigned char *key = file ? load(file, &len) : secret;
    char *t;

    snprintf(claims, sizeof(claims), "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    t = dm_jwt_mint_kid(alg, kid, key, len, claims, err);
    if (t == NULL)
        printf("# mint %s kid %s: %s\n", alg, kid ? kid : "-", err);
    if (file != NULL)
        free(key);
    return t;
}

static void test_kid_rotation(void)
{
    static const struct rot_case cases[] = {
        {"HS256", NULL, NULL, "dev-secret-kid2.txt", "dev-secret-kid2.txt"},
        {"RS256", "jwt_rs256.pub.pem", "jwt_rs256.pem", "jwt_rs256_kid2.pub.pem",
         "jwt_rs256_kid2.pem"},
        {"ES256", "jwt_es256.pub.pem", "jwt_es256.pem", "jwt_es256_kid2.pub.pem",
         "jwt_es256_kid2.pem"},
    };

    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        const struct rot_case *c = &cases[i];
        const char *both_kids[] = {"2025-01", "2025-06"};
        const char *both_files[] = {c->pub_a, c->pub_b};
        const char *new_kids[] = {"2025-06"};
        const char *new_files[] = {c->pub_b};
        const char *dflt_kids[] = {NULL, "2025-06"};
        struct dm_jwt_verifier *both = verifier_keys(c->alg, both_kids, both_files, 2);
        struct dm_jwt_verifier *newonly = verifier_keys(c->alg, new_kids, new_files, 1);
        struct dm_jwt_verifier *dflt = verifier_keys(c->alg, dflt_kids, both_files, 2);
        char *old_t = mint_kid(c->alg, "2025-01", c->priv_a);
        char *new_t = mint_kid(c->alg, "2025-06", c->priv_b);
        char *liar = mint_kid(c->alg, "2025-01", c->priv_b);
        char *nokid_a = mint_kid(c->alg, NULL, c->priv_a);
        char *nokid_b = mint_kid(c->alg, NULL, c->priv_b);
        char *unknown = mint_kid(c->alg, "2024-12", c->priv_a);
        const char *a = c->alg;
        char kid[DM_JWT_MAX_KID + 1] = "";

        ok(both && newonly && dflt, "%s: verifiers with kids", a);
        ok(dm_jwt_peek_kid(old_t, strlen(old_t), kid) == 1 && strcmp(kid, "2025-01") == 0,
           "%s: minted token carries kid 2025-01", a);
        ok(dm_jwt_peek_kid(nokid_a, strlen(nokid_a), kid) == 0, "%s: and without --kid none", a);
        ok(is(check(both, old_t, NOW), "ok"), "%s: rotation: old kid valid", a);
        ok(is(check(both, new_t, NOW), "ok"), "%s: rotation: new kid valid", a);
        ok(is(check(both, liar, NOW), "bad_signature"),
           "%s: signed with the new key, labelled old: no fallback", a);
        ok(is(check(both, nokid_a, NOW), "unknown_kid"), "%s: no kid and no default key", a);
        ok(is(check(both, unknown, NOW), "unknown_kid"), "%s: unknown kid", a);
        ok(is(check(newonly, old_t, NOW), "unknown_kid"), "%s: old kid retired: unknown_kid", a);
        ok(is(check(newonly, new_t, NOW), "ok"), "%s: new kid still valid", a);
        ok(is(check(dflt, nokid_a, NOW), "ok"), "%s: no kid: the default key", a);
        ok(is(check(dflt, nokid_b, NOW), "bad_signature"),
           "%s: no kid, signed with a kid's key: not the default", a);
        ok(is(check(dflt, new_t, NOW), "ok"), "%s: kid next to a default key", a);
        ok(is(check(dflt, old_t, NOW), "unknown_kid"),
           "%s: unknown kid never falls back to the default key", a);
        free(old_t);
        free(new_t);
        free(liar);
        free(nokid_a);
        free(nokid_b);
        free(unknown);
        dm_jwt_verifier_free(both);
        dm_jwt_verifier_free(newonly);
        dm_jwt_verifier_free(dflt);
    }
    /* kid spelled differently in the header. */
    {
        const char *kids[] = {"k1"};
        const char *files[] = {NULL};
        struct dm_jwt_verifier *v = verifier_keys("HS256", kids, files, 1);
        const char *pl = "{\"sub\":\"u\",\"exp\":1700000060}";
        ok(is(check_free(v, craft_hs256("{\"alg\":\"HS256\",\"kid\":\"k1\"}", pl), NOW), "ok"),
           "hand-made kid k1");
        ok(is(check_free(v, craft_hs256("{\"alg\":\"HS256\",\"kid\":\"K1\"}", pl), NOW),
              "unknown_kid"),
           "kid is case-sensitive");
        ok(is(check_free(v, craft_hs256("{\"alg\":\"HS256\",\"kid\":\"k1\\u0000x\"}", pl), NOW),
              "malformed"),
           "kid with an escaped NUL (jansson refuses \\u0000)");
        ok(is(check_free(v, craft_hs256("{\"alg\":\"HS256\",\"kid\":\"k1 \"}", pl), NOW),
              "unknown_kid"),
           "kid with a trailing space");
        ok(is(check_free(v, craft_hs256("{\"alg\":\"HS256\",\"kid\":\"\"}", pl), NOW),
              "unknown_kid"),
           "empty kid");
        ok(is(check_free(v, craft_hs256("{\"alg\":\"HS256\",\"kid\":null}", pl), NOW), "malformed"),
           "kid null");
        ok(is(check_free(v, craft_hs256("{\"alg\":\"HS256\",\"kid\":\"x\",\"kid\":\"k1\"}", pl),
                         NOW),
              "malformed"),
           "duplicate kid");
        ok(is(check_free(v, craft_hs256("{\"alg\":\"HS256\"}", pl), NOW), "unknown_kid"),
           "no kid and no default key");
        dm_jwt_verifier_free(v);
    }
    {
        char err[DM_ERRLEN] = "";
        ok(dm_jwt_mint_kid("HS256", "../etc", secret, secretlen, "{}", err) == NULL && err[0],
           "mint refuses an unsafe kid (%s)", err);
        ok(dm_jwt_peek_kid("x.y.z", 5, (char[DM_JWT_MAX_KID + 1]){0}) == -1, "peek on garbage: -1");
    }
}

/* ---- key directory (common/auth.c) -------------------------------------- */

static char tmpdir[256];

static void put_file(const char *dir, const char *name, const char *fixture_name, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL)
        return;
    if (fixture_name != NULL) {
        size_t n;
        unsigned char *k = load(fixture_name, &n);
        fwrite(k, 1, n, f);
        fputc('\n', f);
        free(k);
    } else {
        fputs(text, f);
    }
    fclose(f);
}

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
}

/* A fresh directory under tmpdir. */
static const char *subdir(const char *name)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    mkdir(path, 0700);
    return path;
}

static struct dm_jwt_verifier *from_dir(const char *alg, const char *key_file, const char *dir,
                                        char *err)
{
    struct dm_auth_params p = {.alg = alg, .key_file = key_file, .key_dir = dir, .leeway_s = 0};
    err[0] = '\0';
    return dm_auth_verifier_build(&p, err);
}

static bool dir_refused(const char *alg, const char *dir, const char *must_name)
{
    char err[DM_ERRLEN];
    struct dm_jwt_verifier *v = from_dir(alg, NULL, dir, err);
    if (v != NULL) {
        dm_jwt_verifier_free(v);
        return false;
    }
    printf("#   err: %s\n", err);
    return err[0] != '\0' && (must_name == NULL || strstr(err, must_name) != NULL);
}

static void test_key_dir(void)
{
    char err[DM_ERRLEN], path[600], target[600];
    const char *d;
    struct dm_jwt_verifier *v;
    char *t1, *t2, *t0;

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/dm_test_jwt.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        ok(0, "mkdtemp");
        return;
    }

    /* A Kubernetes Secret volume: files are symlinks through ..data into a
     * hidden timestamped directory. */
    d = subdir("k8s");
    snprintf(path, sizeof(path), "%s/..2025_06_01_00_00_00.1", d);
    mkdir(path, 0700);
    put_file(path, "2025-01.pem", "jwt_rs256.pub.pem", NULL);
    put_file(path, "2025-06.pem", "jwt_rs256_kid2.pub.pem", NULL);
    snprintf(path, sizeof(path), "%s/..data", d);
    ok(symlink("..2025_06_01_00_00_00.1", path) == 0, "..data symlink");
    for (int i = 0; i < 2; i++) {
        const char *name = i ? "2025-06.pem" : "2025-01.pem";
        snprintf(path, sizeof(path), "%s/%s", d, name);
        snprintf(target, sizeof(target), "..data/%s", name);
        ok(symlink(target, path) == 0, "symlink %s", name);
    }
    v = from_dir("RS256", NULL, d, err);
    ok(v != NULL, "RS256 keys from a Secret-like directory (%s)", err);
    t1 = mint_kid("RS256", "2025-01", "jwt_rs256.pem");
    t2 = mint_kid("RS256", "2025-06", "jwt_rs256_kid2.pem");
    t0 = mint_kid("RS256", NULL, "jwt_rs256.pem");
    ok(v && is(check(v, t1, NOW), "ok"), "kid 2025-01 verifies");
    ok(v && is(check(v, t2, NOW), "ok"), "kid 2025-06 verifies");
    ok(v && is(check(v, t0, NOW), "unknown_kid"), "no kid, no default key: unknown_kid");
    dm_jwt_verifier_free(v);
    snprintf(path, sizeof(path), "%s", fixture("jwt_rs256.pub.pem"));
    v = from_dir("RS256", path, d, err);
    ok(v && is(check(v, t0, NOW), "ok"), "no kid, jwt_key_file as default key");
    ok(v && is(check(v, t2, NOW), "ok"), "and kids next to it");
    dm_jwt_verifier_free(v);
    ok(dir_refused("ES256", d, "kid 2025-01:"), "ES256 pinned, RSA keys in the directory");
    ok(dir_refused("HS256", d, "kid 2025-01:"), "HS256 pinned, PEM keys in the directory");

    /* HS secrets as <kid>.key. */
    d = subdir("hs");
    put_file(d, "a.key", "dev-secret.txt", NULL);
    put_file(d, "b.key", "dev-secret-kid2.txt", NULL);
    v = from_dir("HS256", NULL, d, err);
    ok(v != NULL, "HS256 secrets from <kid>.key files (%s)", err);
    free(t0);
    t0 = mint_kid("HS256", "b", "dev-secret-kid2.txt");
    ok(v && is(check(v, t0, NOW), "ok"), "HS256 kid b verifies");
    free(t0);
    t0 = mint_kid("HS256", "a", "dev-secret-kid2.txt");
    ok(v && is(check(v, t0, NOW), "bad_signature"), "HS256 kid a with b's secret");
    dm_jwt_verifier_free(v);
    put_file(d, "short.key", NULL, "0123456789abcdef0123456789abcde\n");
    ok(dir_refused("HS256", d, "kid short:"), "31-byte secret file refused, naming its kid");
    snprintf(path, sizeof(path), "%s/short.key", d);
    unlink(path);
    put_file(d, "empty.key", NULL, "\n");
    ok(dir_refused("HS256", d, "empty.key"), "empty key file refused, naming it");
    snprintf(path, sizeof(path), "%s/empty.key", d);
    unlink(path);
    put_file(d, "a.pem", "dev-secret.txt", NULL);
    ok(dir_refused("HS256", d, "kid a given twice"), "a.key and a.pem: kid a twice");
    snprintf(path, sizeof(path), "%s/a.pem", d);
    unlink(path);
    put_file(d, "README", NULL, "notes\n");
    ok(dir_refused("HS256", d, "README"), "a stray file is an error, not ignored");
    snprintf(path, sizeof(path), "%s/README", d);
    unlink(path);
    put_file(d, "bad kid.key", "dev-secret.txt", NULL);
    ok(dir_refused("HS256", d, "bad kid.key"), "a file name that is no kid");
    snprintf(path, sizeof(path), "%s/bad kid.key", d);
    unlink(path);
    snprintf(path, sizeof(path), "%s/gone.key", d);
    ok(symlink("/nonexistent/dm-test", path) == 0 && dir_refused("HS256", d, "gone.key"),
       "dangling symlink (unreadable key) refused");
    unlink(path);
    snprintf(path, sizeof(path), "%s/sub.key", d);
    mkdir(path, 0700);
    ok(dir_refused("HS256", d, "sub.key"), "a directory named like a key refused");
    rmdir(path);
    v = from_dir("HS256", NULL, d, err);
    ok(v != NULL, "clean again: accepted");
    dm_jwt_verifier_free(v);

    /* Bounds and emptiness. */
    d = subdir("many");
    for (int i = 0; i <= DM_JWT_MAX_KEYS; i++) {
        char name[32];
        snprintf(name, sizeof(name), "k%02d.key", i);
        put_file(d, name, "dev-secret.txt", NULL);
        if (i == DM_JWT_MAX_KEYS - 1) {
            v = from_dir("HS256", NULL, d, err);
            ok(v != NULL, "%d key files accepted", DM_JWT_MAX_KEYS);
            dm_jwt_verifier_free(v);
        }
    }
    ok(dir_refused("HS256", d, NULL), "%d key files refused", DM_JWT_MAX_KEYS + 1);
    d = subdir("empty");
    put_file(d, ".hidden.key", "dev-secret.txt", NULL);
    ok(dir_refused("HS256", d, NULL), "a directory with no key file refused");
    snprintf(path, sizeof(path), "%s/missing", tmpdir);
    ok(dir_refused("HS256", path, "missing"), "a missing directory refused");
    {
        struct dm_auth_params p = {.alg = "HS256"};
        ok(dm_auth_verifier_build(&p, err) == NULL && strstr(err, "no JWT key") != NULL,
           "no key at all refused (%s)", err);
        p.secret = (const char *)secret;
        v = dm_auth_verifier_build(&p, err);
        ok(v != NULL, "jwt_secret alone still works");
        dm_jwt_verifier_free(v);
    }
    free(t0);
    free(t1);
    free(t2);
    rm_rf(tmpdir);
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
    const char *token[2]; /* used in turn: two kids of one verifier */
    int ok;
};

static void *verify_loop(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 200; i++) {
        struct dm_jwt_claims c;
        const char *reason;
        const char *t = w->token[i % 2];
        if (dm_jwt_verify(w->v, t, strlen(t), NOW, &c, &reason) == 0 && strcmp(c.sub, "u") == 0)
            w->ok++;
        dm_jwt_claims_fini(&c);
    }
    return NULL;
}

/* Pre-parsed keys are shared read-only: many threads, one verifier each
 * for HS256, RS256 and ES256 (the last two with two kids). */
static void test_threads(void)
{
    const char *kids[] = {"a", "b"};
    const char *rs_files[] = {"jwt_rs256.pub.pem", "jwt_rs256_kid2.pub.pem"};
    const char *es_files[] = {"jwt_es256.pub.pem", "jwt_es256_kid2.pub.pem"};
    struct dm_jwt_verifier *rs = verifier_keys("RS256", kids, rs_files, 2);
    struct dm_jwt_verifier *es = verifier_keys("ES256", kids, es_files, 2);
    char *ths = mint("HS256", NULL, "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW + 60);
    char *trs[2] = {mint_kid("RS256", "a", "jwt_rs256.pem"),
                    mint_kid("RS256", "b", "jwt_rs256_kid2.pem")};
    char *tes[2] = {mint_kid("ES256", "a", "jwt_es256.pem"),
                    mint_kid("ES256", "b", "jwt_es256_kid2.pem")};
    struct worker w[6];
    pthread_t th[6];
    int good = 0, started = 0;

    for (int i = 0; i < 6; i++) {
        switch (i % 3) {
        case 0:
            w[i] = (struct worker){hs256, {ths, ths}, 0};
            break;
        case 1:
            w[i] = (struct worker){rs, {trs[0], trs[1]}, 0};
            break;
        default:
            w[i] = (struct worker){es, {tes[0], tes[1]}, 0};
            break;
        }
        started += pthread_create(&th[i], NULL, verify_loop, &w[i]) == 0;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        good += w[i].ok;
    }
    ok(started == 6 && good == 1200, "6 threads share 3 verifiers: %d/1200 verified", good);
    free(ths);
    for (int i = 0; i < 2; i++) {
        free(trs[i]);
        free(tes[i]);
    }
    dm_jwt_verifier_free(rs);
    dm_jwt_verifier_free(es);
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
    subtest("every algorithm: the attacks, with and without kid", test_attacks_every_alg);
    subtest("ES256/RS256 signature encodings", test_signature_encodings);
    subtest("kid: verifier construction", test_kid_new);
    subtest("kid: selection and rotation", test_kid_rotation);
    subtest("key directory (auth)", test_key_dir);
    subtest("mint", test_mint);
    subtest("roles", test_roles);
    subtest("threads", test_threads);
    dm_jwt_verifier_free(hs256);
    free(secret);
    return done_testing();
}
