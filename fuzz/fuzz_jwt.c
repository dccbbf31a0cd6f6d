/* Fuzzes JWT verification (common/jwt.c): every input is a token given to
 * dm_jwt_verify of four fixed verifiers, as both nodes call it (HS256 with a
 * default key and kid "k2"; the same with leeway 0 and iss/aud required;
 * RS256 and ES256 with a default key and a kid each, from the PEM fixtures
 * in tests/fixtures when present), at a fixed time, and to dm_jwt_peek_kid.
 *
 * At start the harness signs its own tokens (the table below: valid ones,
 * and authentic ones the policy refuses: expired, no exp, bad claims, wrong
 * key for the kid, key confusion, "none", DER ES256) with OpenSSL directly,
 * checks each verifies exactly as the table says, and knows them from then
 * on. With FUZZ_JWT_WRITE_SEEDS=<dir> in the environment it writes them
 * there and exits: fuzz/make_corpus.py makes the seed corpus that way.
 *
 * Invariants checked beyond "no crash":
 *  - nothing verifies unless it is one of our tokens that is valid for that
 *    verifier: its signed part (header.payload) is one we signed, and its
 *    signature checks out with an independent OpenSSL verification (ES256
 *    signatures are randomized, so another valid signature of our own
 *    signed part is accepted; HS256/RS256 ones are the exact seed);
 *  - a claim reason (missing_exp, expired, not_yet_valid, bad_issuer,
 *    bad_audience, bad_claims) is only given for such an authentic token:
 *    the signature is checked before any claim;
 *  - a refusal's reason is one of the documented ones (too_large exactly
 *    when over DM_JWT_MAX_TOKEN) and leaves the claims empty; accepted
 *    claims are within their documented bounds;
 *  - dm_jwt_peek_kid returns -1, 0 or 1, a valid kid with 1, and never -1
 *    for a token that verified. */
#include "fuzz/fuzz.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "common/hash.h"
#include "common/jwt.h"
#include "common/util.h"

#define NOW      INT64_C(1700000000) /* fixed: expiry never changes with the clock */
#define EXP      "1700003600"
#define PAST     "1699990000"
#define LEEWAY   30
#define ISSUER   "https://auth.example"
#define AUDIENCE "danmaku"

/* ---- keys and verifiers ---- */

enum key_id {
    K_HS,     /* dev-secret.txt: HS256 default key */
    K_HS2,    /* dev-secret-kid2.txt: HS256 kid k2 */
    K_RS,     /* jwt_rs256(.pub).pem: RS256 default key */
    K_RS2,    /* jwt_rs256_kid2(.pub).pem: RS256 kid rk2 */
    K_ES,     /* jwt_es256(.pub).pem: ES256 default key */
    K_ES2,    /* jwt_es256_kid2(.pub).pem: ES256 kid ek2 */
    K_RS_PEM, /* the RS256 public PEM used as an HMAC secret (key confusion) */
    K_NONE,   /* empty signature */
    NKEYS,
};

struct key {
    const char *secret_file; /* HS: the secret; RS/ES: the private key */
    const char *public_file; /* RS/ES */
    unsigned char *bytes;    /* secret, or the public PEM */
    size_t len;
    EVP_PKEY *priv, *pub;
};

static struct key keys[NKEYS] = {
    [K_HS] = {"dev-secret.txt", NULL, NULL, 0, NULL, NULL},
    [K_HS2] = {"dev-secret-kid2.txt", NULL, NULL, 0, NULL, NULL},
    [K_RS] = {"jwt_rs256.pem", "jwt_rs256.pub.pem", NULL, 0, NULL, NULL},
    [K_RS2] = {"jwt_rs256_kid2.pem", "jwt_rs256_kid2.pub.pem", NULL, 0, NULL, NULL},
    [K_ES] = {"jwt_es256.pem", "jwt_es256.pub.pem", NULL, 0, NULL, NULL},
    [K_ES2] = {"jwt_es256_kid2.pem", "jwt_es256_kid2.pub.pem", NULL, 0, NULL, NULL},
};

enum verifier_id { V_HS, V_HS_STRICT, V_RS, V_ES, NVERIFIERS };

struct verifier {
    const char *alg;
    enum key_id dflt, second; /* the default key and the one named by kid */
    const char *kid;
    bool strict; /* leeway 0, iss and aud required */
    struct dm_jwt_verifier *v;
};

static struct verifier verifiers[NVERIFIERS] = {
    [V_HS] = {"HS256", K_HS, K_HS2, "k2", false, NULL},
    [V_HS_STRICT] = {"HS256", K_HS, K_HS2, "k2", true, NULL},
    [V_RS] = {"RS256", K_RS, K_RS2, "rk2", false, NULL},
    [V_ES] = {"ES256", K_ES, K_ES2, "ek2", false, NULL},
};

/* ---- our tokens ---- */

enum outcome {
    OK_ALL,   /* valid for the plain and the strict verifier of its alg */
    OK_PLAIN, /* valid for the plain verifier only (no iss/aud) */
    REFUSED,  /* refused by every verifier */
};

struct seed {
    const char *name;
    const char *alg;    /* the verifiers it is meant for */
    enum key_id signer; /* the key that signed it */
    bool authentic;     /* signed as the header asks, by the key its kid names */
    bool der;           /* ES256 signature in DER instead of r||s */
    enum outcome outcome;
    const char *reason; /* what the plain verifier of alg answers (NULL: ok) */
    const char *header, *payload;
    char *token;    /* made at start */
    size_t signing; /* length of header.payload */
};

#define HS_HDR    "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define HS_HDR_K2 "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"k2\"}"
#define RS_HDR    "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"
#define ES_HDR    "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"
#define FULL_CLAIMS                                                                                \
    "{\"sub\":\"mod-7\",\"name\":\"Mod Seven\",\"role\":\"moderator\",\"prio\":3,"                 \
    "\"rooms\":[\"r1\",\"live:*\"],\"iss\":\"" ISSUER "\",\"aud\":[\"other\",\"" AUDIENCE "\"],"   \
    "\"nbf\":1699999000,\"iat\":1699999000,\"exp\":" EXP "}"

static struct seed seeds[] = {
    {"hs256-valid", "HS256", K_HS, true, false, OK_PLAIN, NULL, HS_HDR,
     "{\"sub\":\"u1\",\"exp\":" EXP "}", NULL, 0},
    {"hs256-kid-full-claims", "HS256", K_HS2, true, false, OK_ALL, NULL, HS_HDR_K2, FULL_CLAIMS,
     NULL, 0},
    {"hs256-admin-rooms", "HS256", K_HS, true, false, OK_PLAIN, NULL, HS_HDR,
     "{\"sub\":\"a\",\"name\":\"\",\"role\":\"admin\",\"rooms\":[\"*\",\"room:1\"],\"exp\":" EXP
     "}",
     NULL, 0},
    {"hs256-kid-wrong-key", "HS256", K_HS, false, false, REFUSED, "bad_signature", HS_HDR_K2,
     "{\"sub\":\"u1\",\"exp\":" EXP "}", NULL, 0},
    {"hs256-unknown-kid", "HS256", K_HS, false, false, REFUSED, "unknown_kid",
     "{\"alg\":\"HS256\",\"kid\":\"nope\"}", "{\"sub\":\"u1\",\"exp\":" EXP "}", NULL, 0},
    {"hs256-expired", "HS256", K_HS, true, false, REFUSED, "expired", HS_HDR,
     "{\"sub\":\"u1\",\"exp\":" PAST "}", NULL, 0},
    {"hs256-no-exp", "HS256", K_HS, true, false, REFUSED, "missing_exp", HS_HDR, "{\"sub\":\"u1\"}",
     NULL, 0},
    {"hs256-not-yet", "HS256", K_HS, true, false, REFUSED, "not_yet_valid", HS_HDR,
     "{\"sub\":\"u1\",\"nbf\":1700009999,\"exp\":" EXP "}", NULL, 0},
    {"hs256-bad-role", "HS256", K_HS, true, false, REFUSED, "bad_claims", HS_HDR,
     "{\"sub\":\"u1\",\"role\":\"root\",\"prio\":12,\"exp\":" EXP "}", NULL, 0},
    {"hs256-bad-rooms", "HS256", K_HS, true, false, REFUSED, "bad_claims", HS_HDR,
     "{\"sub\":\"u1\",\"rooms\":[\"a*b\"],\"exp\":" EXP "}", NULL, 0},
    {"hs256-crit", "HS256", K_HS, true, false, REFUSED, "malformed",
     "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "{\"sub\":\"u1\",\"exp\":" EXP "}", NULL, 0},
    {"hs256-lowercase-alg", "HS256", K_HS, true, false, REFUSED, "alg_mismatch",
     "{\"alg\":\"hs256\"}", "{\"sub\":\"u1\",\"exp\":" EXP "}", NULL, 0},
    {"alg-none", "HS256", K_NONE, false, false, REFUSED, "alg_mismatch", "{\"alg\":\"none\"}",
     "{\"sub\":\"u1\",\"exp\":" EXP "}", NULL, 0},
    {"rs256-valid", "RS256", K_RS, true, false, OK_PLAIN, NULL, RS_HDR,
     "{\"sub\":\"viewer-9\",\"name\":\"Zo\\u00eb\",\"exp\":" EXP "}", NULL, 0},
    {"rs256-kid", "RS256", K_RS2, true, false, OK_PLAIN, NULL,
     "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"rk2\"}", FULL_CLAIMS, NULL, 0},
    {"rs256-as-hs256", "HS256", K_RS_PEM, false, false, REFUSED, "bad_signature", HS_HDR,
     "{\"sub\":\"u1\",\"exp\":" EXP "}", NULL, 0},
    {"es256-valid", "ES256", K_ES, true, false, OK_PLAIN, NULL, ES_HDR,
     "{\"sub\":\"u2\",\"rooms\":[\"*\"],\"exp\":" EXP "}", NULL, 0},
    {"es256-kid", "ES256", K_ES2, true, false, OK_PLAIN, NULL,
     "{\"alg\":\"ES256\",\"kid\":\"ek2\"}", "{\"sub\":\"u3\",\"exp\":" EXP "}", NULL, 0},
    {"es256-der", "ES256", K_ES, false, true, REFUSED, "bad_signature", ES_HDR,
     "{\"sub\":\"u2\",\"exp\":" EXP "}", NULL, 0},
};

#define NSEEDS DM_ARRAY_LEN(seeds)

/* ---- base64url (RFC 7515 §2), independent of jwt.c's ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = b64[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = b64[v & 63];
    }
    out[o] = '\0';
    return o;
}

/* Decodes in[0..n) into out (n * 3 / 4 bytes); false unless it is the one
 * canonical spelling (what our encoder gives back). */
static bool b64url_decode(const char *in, size_t n, unsigned char *out, size_t *outlen)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        const char *d = memchr(b64, in[i], 64);
        if (in[i] == '\0' || d == NULL)
            return false;
        acc = acc << 6 | (uint32_t)(d - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *outlen = o;
    char *again = dm_malloc(o / 3 * 4 + 8);
    bool same = b64url_encode(out, o, again) == n && memcmp(again, in, n) == 0;
    free(again);
    return same;
}

/* ---- signing and the independent check ---- */

/* Signature of in[0..n) by key k into sig[1024]; returns its length. */
static size_t sign(enum key_id k, bool der, const char *in, size_t n, unsigned char *sig)
{
    unsigned int hl = 0;
    size_t sl = 1024;

    if (k == K_NONE)
        return 0;
    if (keys[k].priv == NULL) {
        FUZZ_CHECK(HMAC(EVP_sha256(), keys[k].bytes, (int)keys[k].len, (const unsigned char *)in, n,
                        sig, &hl) != NULL,
                   "HMAC");
        return hl;
    }
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    FUZZ_CHECK(m != NULL && EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, keys[k].priv) == 1 &&
                   EVP_DigestSign(m, sig, &sl, (const unsigned char *)in, n) == 1,
               "sign");
    EVP_MD_CTX_free(m);
    if (EVP_PKEY_get_base_id(keys[k].priv) == EVP_PKEY_EC && !der) {
        const unsigned char *p = sig;
        const BIGNUM *r, *s;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
        FUZZ_CHECK(es != NULL, "DER signature");
        ECDSA_SIG_get0(es, &r, &s);
        BN_bn2binpad(r, sig, 32);
        BN_bn2binpad(s, sig + 32, 32);
        ECDSA_SIG_free(es);
        sl = 64;
    }
    return sl;
}

/* Whether sig (decoded) is a valid JWS signature of in[0..n) by key k. */
static bool signature_ok(enum key_id k, const char *in, size_t n, const unsigned char *sig,
                         size_t sl)
{
    unsigned char want[EVP_MAX_MD_SIZE], der[80];
    unsigned int hl = 0;
    bool good;

    if (k == K_NONE)
        return false;
    if (keys[k].pub == NULL) {
        HMAC(EVP_sha256(), keys[k].bytes, (int)keys[k].len, (const unsigned char *)in, n, want,
             &hl);
        return sl == hl && CRYPTO_memcmp(want, sig, hl) == 0;
    }
    if (EVP_PKEY_get_base_id(keys[k].pub) == EVP_PKEY_EC) {
        if (sl != 64)
            return false;
        ECDSA_SIG *es = ECDSA_SIG_new();
        ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
        unsigned char *p = der;
        int dl = i2d_ECDSA_SIG(es, NULL) <= (int)sizeof(der) ? i2d_ECDSA_SIG(es, &p) : 0;
        ECDSA_SIG_free(es);
        if (dl <= 0)
            return false;
        sig = der;
        sl = (size_t)dl;
    }
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    good = m != NULL && EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, keys[k].pub) == 1 &&
           EVP_DigestVerify(m, sig, sl, (const unsigned char *)in, n) == 1;
    EVP_MD_CTX_free(m);
    ERR_clear_error();
    return good;
}

static char *make_token(const struct seed *s, size_t *signing)
{
    size_t hl = strlen(s->header), pl = strlen(s->payload);
    char *t = dm_malloc((hl + pl) / 3 * 4 + 1500);
    unsigned char sig[1024];

    b64url_encode((const unsigned char *)s->header, hl, t);
    strcat(t, ".");
    b64url_encode((const unsigned char *)s->payload, pl, t + strlen(t));
    *signing = strlen(t);
    size_t sl = sign(s->signer, s->der, t, *signing, sig);
    strcat(t, ".");
    b64url_encode(sig, sl, t + strlen(t));
    return t;
}

/* ---- set-up ---- */

static const char *fixtures_dir(const char *argv0)
{
    static char dir[4096];
    const char *env = getenv("DM_FIXTURES");
    FILE *f;

    if (env != NULL)
        return env;
    snprintf(dir, sizeof(dir), "tests/fixtures");
    if ((f = fopen("tests/fixtures/dev-secret.txt", "rb")) != NULL) {
        fclose(f);
        return dir;
    }
    /* build/fuzz/fuzz_jwt -> the repository root is three levels up. */
    const char *slash = strrchr(argv0, '/');
    snprintf(dir, sizeof(dir), "%.*s/../../tests/fixtures", slash ? (int)(slash - argv0) : 1,
             slash ? argv0 : ".");
    return dir;
}

static bool load_key(const char *dir, struct key *k)
{
    char path[4200], err[DM_ERRLEN];
    unsigned char *raw;
    size_t len;

    snprintf(path, sizeof(path), "%s/%s", dir, k->secret_file);
    if (dm_jwt_key_load(path, &raw, &len, err) != 0)
        return false;
    if (k->public_file == NULL) {
        k->bytes = raw;
        k->len = len;
        return true;
    }
    BIO *b = BIO_new_mem_buf(raw, (int)len);
    k->priv = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    free(raw);
    snprintf(path, sizeof(path), "%s/%s", dir, k->public_file);
    if (k->priv == NULL || dm_jwt_key_load(path, &k->bytes, &k->len, err) != 0)
        return false;
    b = BIO_new_mem_buf(k->bytes, (int)k->len);
    k->pub = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    return k->pub != NULL;
}

static bool have_key(enum key_id k)
{
    return k == K_NONE || keys[k].bytes != NULL;
}

static bool seed_usable(const struct seed *s)
{
    for (size_t i = 0; i < NVERIFIERS; i++) {
        if (strcmp(verifiers[i].alg, s->alg) == 0 && verifiers[i].v != NULL)
            return have_key(s->signer);
    }
    return false;
}

static bool valid_for(const struct seed *s, const struct verifier *v)
{
    if (!s->authentic || strcmp(s->alg, v->alg) != 0)
        return false;
    return v->strict ? s->outcome == OK_ALL : s->outcome != REFUSED;
}

static void write_seeds(const char *dir)
{
    for (size_t i = 0; i < NSEEDS; i++) {
        char path[4200];
        if (seeds[i].token == NULL)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, seeds[i].name);
        FILE *f = fopen(path, "wb");
        if (f == NULL || fputs(seeds[i].token, f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "fuzz_jwt: cannot write %s\n", path);
            exit(1);
        }
    }
    fprintf(stderr, "fuzz_jwt: seeds written to %s\n", dir);
    exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = fixtures_dir(*argc > 0 ? (*argv)[0] : ".");
    char err[DM_ERRLEN];

    for (int k = 0; k < K_RS_PEM; k++) {
        if (!load_key(dir, &keys[k]) && (k == K_HS || k == K_HS2)) {
            fprintf(stderr,
                    "fuzz_jwt: cannot read %s/%s (run from the repository root or set "
                    "DM_FIXTURES)\n",
                    dir, keys[k].secret_file);
            exit(1);
        }
    }
    if (keys[K_RS].bytes != NULL) {
        keys[K_RS_PEM].bytes = keys[K_RS].bytes;
        keys[K_RS_PEM].len = keys[K_RS].len;
    }
    for (size_t i = 0; i < NVERIFIERS; i++) {
        struct verifier *v = &verifiers[i];
        if (!have_key(v->dflt) || !have_key(v->second))
            continue; /* RS256/ES256 fixtures absent: HS256 only */
        struct dm_jwt_key k[2] = {
            {NULL, keys[v->dflt].bytes, keys[v->dflt].len},
            {v->kid, keys[v->second].bytes, keys[v->second].len},
        };
        v->v =
            dm_jwt_verifier_new_keys(v->alg, k, 2, v->strict ? 0 : LEEWAY,
                                     v->strict ? ISSUER : NULL, v->strict ? AUDIENCE : NULL, err);
        FUZZ_CHECK(v->v != NULL, err);
    }
    /* Sign the seeds and check each is answered as the table says. */
    for (size_t i = 0; i < NSEEDS; i++) {
        struct seed *s = &seeds[i];
        if (!seed_usable(s))
            continue;
        s->token = make_token(s, &s->signing);
        for (size_t j = 0; j < NVERIFIERS; j++) {
            struct dm_jwt_claims c;
            const char *reason;
            if (verifiers[j].v == NULL)
                continue;
            int rc = dm_jwt_verify(verifiers[j].v, s->token, strlen(s->token), NOW, &c, &reason);
            dm_jwt_claims_fini(&c);
            if ((rc == 0) != valid_for(s, &verifiers[j]) ||
                (j != V_HS_STRICT && strcmp(s->alg, verifiers[j].alg) == 0 &&
                 (rc == 0 ? s->reason != NULL
                          : s->reason == NULL || strcmp(reason, s->reason) != 0))) {
                fprintf(stderr, "fuzz_jwt: seed %s: verifier %zu answered %s\n", s->name, j,
                        rc == 0 ? "ok" : reason);
                FUZZ_CHECK(false, "seed tokens verify as the table says");
            }
        }
    }
    const char *out = getenv("FUZZ_JWT_WRITE_SEEDS");
    if (out != NULL)
        write_seeds(out);
    return 0;
}

/* ---- per input ---- */

static const char *const reasons[] = {
    "too_large", "malformed",     "alg_mismatch", "unknown_kid",  "bad_signature", "missing_exp",
    "expired",   "not_yet_valid", "bad_issuer",   "bad_audience", "bad_claims",
};

static bool is_claim_reason(const char *r)
{
    for (size_t i = 5; i < DM_ARRAY_LEN(reasons); i++) {
        if (strcmp(r, reasons[i]) == 0)
            return true;
    }
    return false;
}

/* Whether the input is one of our authentic tokens for alg with a
 * signature an independent check accepts (another spelling of the same
 * signature bytes would not be canonical base64url: refused). If valid_v is
 * not NULL, the token must also be valid for that verifier. */
static bool ours(const char *t, size_t len, const char *alg, const struct verifier *valid_v)
{
    const char *dot = len > 0 ? memrchr(t, '.', len) : NULL;

    if (dot == NULL)
        return false;
    size_t signing = (size_t)(dot - t), siglen = len - signing - 1;
    for (size_t i = 0; i < NSEEDS; i++) {
        const struct seed *s = &seeds[i];
        unsigned char *sig;
        size_t sl;
        if (s->token == NULL || !s->authentic || strcmp(s->alg, alg) != 0 ||
            s->signing != signing || memcmp(s->token, t, signing) != 0)
            continue;
        if (valid_v != NULL && !valid_for(s, valid_v))
            continue;
        sig = dm_malloc(siglen + 1);
        bool good = b64url_decode(dot + 1, siglen, sig, &sl) &&
                    signature_ok(s->signer, t, signing, sig, sl);
        free(sig);
        if (good)
            return true;
    }
    return false;
}

static void check_claims(const struct dm_jwt_claims *c, const struct verifier *v)
{
    size_t n = strlen(c->sub);

    FUZZ_CHECK(dm_jwt_sub_valid(c->sub, n), "sub valid");
    FUZZ_CHECK(strlen(c->name) > 0 && strlen(c->name) <= DM_JWT_MAX_NAME, "name 1..128 bytes");
    FUZZ_CHECK(c->role >= DM_ROLE_VIEWER && c->role <= DM_ROLE_ADMIN, "known role");
    FUZZ_CHECK(c->prio >= 0 && c->prio <= DM_JWT_MAX_PRIO, "prio 0..9");
    FUZZ_CHECK(c->role == DM_ROLE_VIEWER || c->prio >= 1, "moderators and admins prio >= 1");
    FUZZ_CHECK(NOW - (v->strict ? 0 : LEEWAY) < c->exp, "not expired");
    FUZZ_CHECK(c->rooms != NULL || c->nrooms == 0, "rooms");
    for (size_t i = 0; c->rooms != NULL && i < c->nrooms; i++)
        FUZZ_CHECK(dm_jwt_room_pattern_valid(c->rooms[i], strlen(c->rooms[i])),
                   "room patterns valid");
    FUZZ_CHECK(c->rooms == NULL || c->rooms[c->nrooms] == NULL, "rooms NULL-terminated");
    (void)dm_jwt_claims_allow_room(c, "r1");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *t = (const char *)data;
    char kid[DM_JWT_MAX_KID + 1];
    bool verified = false;

    for (size_t i = 0; i < NVERIFIERS; i++) {
        const struct verifier *v = &verifiers[i];
        struct dm_jwt_claims c;
        const char *reason = "unset";
        if (v->v == NULL)
            continue;
        int rc = dm_jwt_verify(v->v, size > 0 ? t : NULL, size, NOW, &c, &reason);
        if (rc == 0) {
            FUZZ_CHECK(reason == NULL, "no reason on success");
            FUZZ_CHECK(ours(t, size, v->alg, v), "only our valid tokens verify");
            check_claims(&c, v);
            verified = true;
        } else {
            FUZZ_CHECK(rc == -1 && reason != NULL, "refusal has a reason");
            bool known = false;
            for (size_t j = 0; j < DM_ARRAY_LEN(reasons) && !known; j++)
                known = strcmp(reason, reasons[j]) == 0;
            FUZZ_CHECK(known, "documented reason");
            FUZZ_CHECK((strcmp(reason, "too_large") == 0) == (size > DM_JWT_MAX_TOKEN),
                       "too_large exactly over DM_JWT_MAX_TOKEN");
            FUZZ_CHECK(c.sub[0] == '\0' && c.rooms == NULL && c.nrooms == 0,
                       "refused: claims left empty");
            FUZZ_CHECK(!is_claim_reason(reason) || ours(t, size, v->alg, NULL),
                       "claims are only judged on authentic tokens");
        }
        dm_jwt_claims_fini(&c);
    }
    memset(kid, 0x55, sizeof(kid));
    int k = dm_jwt_peek_kid(size > 0 ? t : "", size, kid);
    FUZZ_CHECK(k >= -1 && k <= 1, "peek_kid result");
    FUZZ_CHECK(k != 1 || dm_jwt_kid_valid(kid, strnlen(kid, sizeof(kid))), "peeked kid valid");
    FUZZ_CHECK(k != 1 || memchr(kid, '\0', sizeof(kid)) != NULL, "peeked kid NUL-terminated");
    FUZZ_CHECK(!verified || k >= 0, "a verified token's header is readable");
    return 0;
}
