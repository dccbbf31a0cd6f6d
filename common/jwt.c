/* JWT verification policy. Keys are parsed once, when the verifier is made,
 * and signatures checked here with OpenSSL (libjwt 1.10 re-parses a PEM key
 * on every jwt_decode); libjwt only signs (dm_jwt_mint). */
#include "common/jwt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "common/check.h"
#include "common/hash.h"

#define DM_JWT_VERIFIER_MAGIC 0x4a575456u /* "JWTV" */

/* Largest decoded header or payload: 3 bytes per 4 characters. */
#define MAX_DECODED (DM_JWT_MAX_TOKEN / 4 * 3 + 3)

/* An ES256 signature in a JWS is r||s, 32 bytes each (RFC 7518 §3.4); as
 * DER for OpenSSL it is at most 2 + 2 * (2 + 33) bytes. */
#define ES256_SIG_LEN 64
#define ES256_DER_MAX 72

static const char R_TOO_LARGE[] = "too_large";
static const char R_MALFORMED[] = "malformed";
static const char R_ALG_MISMATCH[] = "alg_mismatch";
static const char R_UNKNOWN_KID[] = "unknown_kid";
static const char R_BAD_SIGNATURE[] = "bad_signature";
static const char R_MISSING_EXP[] = "missing_exp";
static const char R_EXPIRED[] = "expired";
static const char R_NOT_YET_VALID[] = "not_yet_valid";
static const char R_BAD_ISSUER[] = "bad_issuer";
static const char R_BAD_AUDIENCE[] = "bad_audience";
static const char R_BAD_CLAIMS[] = "bad_claims";

enum key_kind {
    KEY_HMAC,
    KEY_RSA,
    KEY_EC_P256,
};

struct alg_info {
    const char *name;
    jwt_alg_t jalg;
    enum key_kind kind;
    const EVP_MD *(*md)(void);
    const char *mdname; /* for EVP_MAC's digest parameter */
};

/* The algorithms DESIGN.md §4 allows. "none" is deliberately absent. */
static const struct alg_info algs[] = {
    {"HS256", JWT_ALG_HS256, KEY_HMAC, EVP_sha256, "SHA256"},
    {"HS384", JWT_ALG_HS384, KEY_HMAC, EVP_sha384, "SHA384"},
    {"HS512", JWT_ALG_HS512, KEY_HMAC, EVP_sha512, "SHA512"},
    {"RS256", JWT_ALG_RS256, KEY_RSA, EVP_sha256, "SHA256"},
    {"ES256", JWT_ALG_ES256, KEY_EC_P256, EVP_sha256, "SHA256"},
};

/* One parsed key, never modified after dm_jwt_verifier_new_keys returns, so
 * threads may share it (openssl-threads(7)): each verification makes its own
 * EVP_MD_CTX over the EVP_PKEY, as every TLS connection does over its
 * SSL_CTX's key, and its own EVP_MAC_CTX_dup of the const HMAC context. */
struct vkey {
    char *kid; /* NULL: the default key */
    size_t kidlen;
    EVP_PKEY *pkey;   /* RS256/ES256 */
    EVP_MAC_CTX *mac; /* HS*: keyed once, duplicated per verification */
    size_t siglen;    /* the only decoded signature length that can verify */
};

struct dm_jwt_verifier {
    unsigned magic;
    const struct alg_info *alg;
    struct vkey keys[DM_JWT_MAX_KEYS + 1];
    size_t nkeys;
    const struct vkey *dflt; /* NULL: tokens must name a kid */
    int64_t leeway;
    char *iss; /* NULL: not checked */
    char *aud; /* NULL: not checked */
};

__attribute__((format(printf, 2, 3))) static void set_err(char *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(err, DM_ERRLEN, fmt, ap);
    va_end(ap);
}

static const struct alg_info *find_alg(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < DM_ARRAY_LEN(algs); i++) {
        if (strcmp(algs[i].name, name) == 0)
            return &algs[i];
    }
    return NULL;
}

/* OpenSSL's default would prompt on the terminal for an encrypted PEM key
 * (and libjwt passes no callback): refuse instead. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *arg)
{
    DM_UNUSED(buf);
    DM_UNUSED(size);
    DM_UNUSED(rwflag);
    DM_UNUSED(arg);
    return -1;
}

/* Parses and vets a PEM key for `a`; on success returns it (caller owns,
 * EVP_PKEY_free), else NULL with err filled. */
static EVP_PKEY *parse_pem_key(const struct alg_info *a, const unsigned char *key, size_t keylen,
                               bool private_key, char *err)
{
    BIO *bio = BIO_new_mem_buf(key, (int)keylen);
    EVP_PKEY *pkey = NULL;
    bool good = false;

    if (bio == NULL) {
        set_err(err, "out of memory reading the %s key", a->name);
        goto done;
    }
    if (private_key)
        pkey = PEM_read_bio_PrivateKey(bio, NULL, refuse_passphrase, NULL);
    else
        pkey = PEM_read_bio_PUBKEY(bio, NULL, refuse_passphrase, NULL);
    if (pkey == NULL) {
        set_err(err, "%s needs an unencrypted PEM %s (\"-----BEGIN %s-----\")", a->name,
                private_key ? "private key" : "public key",
                private_key ? "PRIVATE KEY" : "PUBLIC KEY");
        goto done;
    }
    if (a->kind == KEY_RSA) {
        if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
            set_err(err, "%s needs an RSA key", a->name);
            goto done;
        }
        if (EVP_PKEY_get_bits(pkey) < 2048) {
            set_err(err, "%s key has %d bits, at least 2048 are needed", a->name,
                    EVP_PKEY_get_bits(pkey));
            goto done;
        }
    } else {
        char group[64];
        if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC ||
            EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL) != 1 ||
            strcmp(group, SN_X9_62_prime256v1) != 0) {
            set_err(err, "%s needs an EC key on curve P-256", a->name);
            goto done;
        }
    }
    good = true;
done:
    if (!good) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    BIO_free(bio);
    ERR_clear_error();
    return pkey;
}

static bool looks_like_pem(const unsigned char *key, size_t keylen)
{
    static const char mark[] = "-----BEGIN";
    return memmem(key, keylen, mark, sizeof(mark) - 1) != NULL;
}

/* The checks every key passes; PEM keys are vetted by parse_pem_key. */
static int check_key(const struct alg_info *a, const unsigned char *key, size_t keylen, char *err)
{
    /* libjwt 1.10 silently skips verification when given an empty key. */
    if (key == NULL || keylen == 0) {
        set_err(err, "%s key is empty", a->name);
        return -1;
    }
    if (keylen > DM_JWT_MAX_KEY) {
        set_err(err, "%s key is %zu bytes, at most %d are allowed", a->name, keylen,
                DM_JWT_MAX_KEY);
        return -1;
    }
    if (a->kind != KEY_HMAC)
        return 0;
    if (keylen < DM_JWT_MIN_SECRET) {
        set_err(err, "%s secret is %zu bytes, at least %d are needed", a->name, keylen,
                DM_JWT_MIN_SECRET);
        return -1;
    }
    /* A PEM block as HMAC secret is the classic RS256→HS256 confusion. */
    if (looks_like_pem(key, keylen)) {
        set_err(err, "%s secret looks like a PEM key; use RS256/ES256 for key pairs", a->name);
        return -1;
    }
    return 0;
}

/* An HMAC context keyed with the secret, for EVP_MAC_CTX_dup. */
static EVP_MAC_CTX *new_hmac(const struct alg_info *a, const unsigned char *key, size_t keylen,
                             char *err)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)a->mdname, 0),
        OSSL_PARAM_construct_end(),
    };

    EVP_MAC_free(mac); /* the context holds its own reference */
    if (ctx == NULL || EVP_MAC_init(ctx, key, keylen, params) != 1) {
        set_err(err, "OpenSSL cannot set up HMAC-%s", a->mdname);
        EVP_MAC_CTX_free(ctx);
        ctx = NULL;
    }
    ERR_clear_error();
    return ctx;
}

/* Parses one key into k; -1 with err filled (prefixed with the kid). */
static int load_vkey(const struct alg_info *a, const struct dm_jwt_key *in, struct vkey *k,
                     char *err)
{
    char why[DM_ERRLEN] = "";

    if (check_key(a, in->key, in->keylen, why) != 0)
        goto fail;
    if (a->kind == KEY_HMAC) {
        if ((k->mac = new_hmac(a, in->key, in->keylen, why)) == NULL)
            goto fail;
        k->siglen = EVP_MAC_CTX_get_mac_size(k->mac);
    } else {
        if ((k->pkey = parse_pem_key(a, in->key, in->keylen, false, why)) == NULL)
            goto fail;
        k->siglen = a->kind == KEY_RSA ? (size_t)EVP_PKEY_get_size(k->pkey) : ES256_SIG_LEN;
    }
    if (in->kid != NULL) {
        k->kidlen = strlen(in->kid);
        k->kid = dm_strndup(in->kid, k->kidlen);
    }
    return 0;
fail:
    if (in->kid != NULL)
        set_err(err, "kid %s: %s", in->kid, why);
    else
        set_err(err, "%s", why);
    return -1;
}

/* The kids of keys[0..nkeys) are valid and distinct, with at most one
 * default key and DM_JWT_MAX_KEYS others. */
static int check_kids(const struct dm_jwt_key *keys, size_t nkeys, char *err)
{
    size_t ndefault = 0;

    for (size_t i = 0; i < nkeys; i++) {
        const char *kid = keys[i].kid;
        if (kid == NULL) {
            if (++ndefault > 1) {
                set_err(err, "more than one default JWT key (without kid)");
                return -1;
            }
            continue;
        }
        if (!dm_jwt_kid_valid(kid, strlen(kid))) {
            set_err(err,
                    "kid \"%.*s\" is not 1..%d characters of [A-Za-z0-9._-] (not "
                    "starting with '.')",
                    DM_JWT_MAX_KID + 1, kid, DM_JWT_MAX_KID);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (keys[j].kid != NULL && strcmp(keys[j].kid, kid) == 0) {
                set_err(err, "kid %s given twice", kid);
                return -1;
            }
        }
    }
    if (nkeys - ndefault > DM_JWT_MAX_KEYS) {
        set_err(err, "%zu JWT keys with a kid, at most %d are allowed", nkeys - ndefault,
                DM_JWT_MAX_KEYS);
        return -1;
    }
    return 0;
}

struct dm_jwt_verifier *dm_jwt_verifier_new_keys(const char *alg, const struct dm_jwt_key *keys,
                                                 size_t nkeys, int64_t leeway_s, const char *iss,
                                                 const char *aud, char err[DM_ERRLEN])
{
    const struct alg_info *a = find_alg(alg);
    struct dm_jwt_verifier *v;

    if (a == NULL) {
        set_err(err, "unsupported JWT algorithm \"%s\" (HS256, HS384, HS512, RS256, ES256)",
                alg ? alg : "(null)");
        return NULL;
    }
    if (keys == NULL || nkeys == 0) {
        set_err(err, "%s key is empty", a->name);
        return NULL;
    }
    if (check_kids(keys, nkeys, err) != 0)
        return NULL;
    if (leeway_s < 0 || leeway_s > DM_JWT_MAX_LEEWAY) {
        set_err(err, "JWT leeway %lld s is outside 0..%d", (long long)leeway_s, DM_JWT_MAX_LEEWAY);
        return NULL;
    }
    v = dm_calloc(1, sizeof(*v));
    v->magic = DM_JWT_VERIFIER_MAGIC;
    v->alg = a;
    for (size_t i = 0; i < nkeys; i++) {
        struct vkey *k = &v->keys[v->nkeys];
        if (load_vkey(a, &keys[i], k, err) != 0)
            goto fail;
        v->nkeys++;
        if (k->kid == NULL)
            v->dflt = k;
    }
    v->leeway = leeway_s;
    v->iss = iss ? dm_strdup(iss) : NULL;
    v->aud = aud ? dm_strdup(aud) : NULL;
    return v;

fail:
    dm_jwt_verifier_free(v);
    return NULL;
}

struct dm_jwt_verifier *dm_jwt_verifier_new(const char *alg, const unsigned char *key,
                                            size_t keylen, int64_t leeway_s, const char *iss,
                                            const char *aud, char err[DM_ERRLEN])
{
    struct dm_jwt_key k = {.kid = NULL, .key = key, .keylen = keylen};

    return dm_jwt_verifier_new_keys(alg, &k, 1, leeway_s, iss, aud, err);
}

void dm_jwt_verifier_free(struct dm_jwt_verifier *v)
{
    if (v == NULL)
        return;
    DM_CHECK_OBJ(v, DM_JWT_VERIFIER_MAGIC);
    for (size_t i = 0; i < v->nkeys; i++) {
        /* Both free functions cleanse the key material they hold. */
        EVP_MAC_CTX_free(v->keys[i].mac);
        EVP_PKEY_free(v->keys[i].pkey);
        free(v->keys[i].kid);
    }
    free(v->iss);
    free(v->aud);
    v->magic = 0;
    free(v);
}

bool dm_jwt_kid_valid(const char *s, size_t n)
{
    if (s == NULL || n == 0 || n > DM_JWT_MAX_KID || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---- token structure ---------------------------------------------------- */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Strict base64url without padding (RFC 7515 §2): only the 64 characters, no
 * '=', no impossible length, and zero unused bits, so every token has exactly
 * one spelling. Returns the decoded length or -1. `out` holds n / 4 * 3 + 2. */
static long b64url_decode(const char *in, size_t n, unsigned char *out)
{
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int d = b64url_value((unsigned char)in[i]);
        if (d < 0)
            return -1;
        acc = acc << 6 | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* non-zero padding bits */
        return -1;
    return (long)o;
}

struct segment {
    const char *p;
    size_t n;
};

/* Splits into exactly three segments; only the signature may be empty (so
 * that an unsigned "alg":"none" token is reported as alg_mismatch). */
static int split_token(const char *t, size_t len, struct segment seg[3])
{
    size_t start = 0, k = 0;

    for (size_t i = 0; i <= len; i++) {
        if (i < len && t[i] != '.')
            continue;
        if (k == 3 || (k < 2 && i == start))
            return -1;
        seg[k].p = t + start;
        seg[k].n = i - start;
        k++;
        start = i + 1;
    }
    return k == 3 ? 0 : -1;
}

/* Decodes one segment as a JSON object; duplicate keys are refused so that
 * no other parser can read a different claim set from the same bytes. */
static json_t *decode_object(const struct segment *s, unsigned char *buf)
{
    json_error_t jerr;
    json_t *o;
    long n = b64url_decode(s->p, s->n, buf);

    if (n < 0)
        return NULL;
    o = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (o != NULL && !json_is_object(o)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* Checks the header, alg first, and selects the key named by its kid. */
static const char *check_header(const struct dm_jwt_verifier *v, json_t *hdr,
                                const struct vkey **key)
{
    json_t *alg = json_object_get(hdr, "alg");
    json_t *typ = json_object_get(hdr, "typ");
    json_t *kid;

    if (!json_is_string(alg))
        return R_MALFORMED;
    /* Exact spelling: libjwt would map "hs256", "None", ... case-insensitively. */
    if (strcmp(json_string_value(alg), v->alg->name) != 0)
        return R_ALG_MISMATCH;
    /* We understand no critical extension (RFC 7515 §4.1.11). */
    if (json_object_get(hdr, "crit") != NULL)
        return R_MALFORMED;
    /* As libjwt did: typ, when present, is the string JWT in any case. */
    if (typ != NULL && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
        return R_MALFORMED;
    kid = json_object_get(hdr, "kid");
    if (kid == NULL) {
        *key = v->dflt;
        return *key != NULL ? NULL : R_UNKNOWN_KID;
    }
    if (!json_is_string(kid))
        return R_MALFORMED;
    /* A token naming a key never falls back to another one. By length and
     * bytes, not strcmp: should jansson ever pass "\u0000" through, "k1\0x"
     * must not match "k1". */
    for (size_t i = 0; i < v->nkeys; i++) {
        const struct vkey *k = &v->keys[i];
        if (k->kid != NULL && k->kidlen == json_string_length(kid) &&
            memcmp(k->kid, json_string_value(kid), k->kidlen) == 0) {
            *key = k;
            return NULL;
        }
    }
    return R_UNKNOWN_KID;
}

/* HMAC over the signing input, compared in constant time (libjwt used
 * strcmp(), which leaks how much of a forged signature is right). */
static bool hmac_ok(const struct vkey *k, const unsigned char *data, size_t n,
                    const unsigned char *sig, size_t siglen)
{
    unsigned char want[EVP_MAX_MD_SIZE];
    size_t wantlen = 0;
    EVP_MAC_CTX *ctx;
    bool good;

    if (siglen != k->siglen)
        return false;
    ctx = EVP_MAC_CTX_dup(k->mac);
    if (ctx == NULL)
        DM_PANIC("EVP_MAC_CTX_dup failed (out of memory)");
    good = EVP_MAC_update(ctx, data, n) == 1 &&
           EVP_MAC_final(ctx, want, &wantlen, sizeof(want)) == 1 && wantlen == siglen &&
           CRYPTO_memcmp(want, sig, siglen) == 0;
    EVP_MAC_CTX_free(ctx);
    return good;
}

/* JWS carries ES256 signatures as r||s; OpenSSL verifies DER. Any other
 * length (DER included) was rejected by the caller. Returns the DER length
 * written to der[ES256_DER_MAX], or 0. */
static size_t es256_to_der(const unsigned char sig[ES256_SIG_LEN], unsigned char *der)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, ES256_SIG_LEN / 2, NULL);
    BIGNUM *s = BN_bin2bn(sig + ES256_SIG_LEN / 2, ES256_SIG_LEN / 2, NULL);
    unsigned char *p = der;
    int n = 0;

    if (es == NULL || r == NULL || s == NULL)
        DM_PANIC("ECDSA_SIG/BIGNUM allocation failed (out of memory)");
    ECDSA_SIG_set0(es, r, s); /* es owns r and s now */
    if (i2d_ECDSA_SIG(es, NULL) <= ES256_DER_MAX)
        n = i2d_ECDSA_SIG(es, &p);
    ECDSA_SIG_free(es);
    return n > 0 ? (size_t)n : 0;
}

static bool pkey_ok(const struct alg_info *a, const struct vkey *k, const unsigned char *data,
                    size_t n, const unsigned char *sig, size_t siglen)
{
    unsigned char der[ES256_DER_MAX];
    EVP_MD_CTX *ctx;
    EVP_PKEY_CTX *pctx = NULL;
    bool good;

    if (siglen != k->siglen)
        return false;
    if (a->kind == KEY_EC_P256) {
        if ((siglen = es256_to_der(sig, der)) == 0)
            return false;
        sig = der;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        DM_PANIC("EVP_MD_CTX_new failed (out of memory)");
    good = EVP_DigestVerifyInit(ctx, &pctx, a->md(), NULL, k->pkey) == 1 &&
           (a->kind != KEY_RSA || EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1) &&
           EVP_DigestVerify(ctx, sig, siglen, data, n) == 1;
    EVP_MD_CTX_free(ctx);
    return good;
}

static const char *check_signature(const struct dm_jwt_verifier *v, const struct vkey *k,
                                   const char *token, const struct segment *sig, unsigned char *buf)
{
    const unsigned char *data = (const unsigned char *)token;
    size_t n = (size_t)(sig->p - 1 - token); /* header.payload */
    long siglen = b64url_decode(sig->p, sig->n, buf);
    bool good;

    if (siglen < 0)
        return R_MALFORMED;
    if (v->alg->kind == KEY_HMAC)
        good = hmac_ok(k, data, n, buf, (size_t)siglen);
    else
        good = pkey_ok(v->alg, k, data, n, buf, (size_t)siglen);
    /* Failed verifications leave entries on this thread's OpenSSL error
     * queue, where a TLS connection on the same thread would find them. */
    ERR_clear_error();
    return good ? NULL : R_BAD_SIGNATURE;
}

/* ---- claims ------------------------------------------------------------- */

/* An optional integer claim: NULL and *present=false when absent,
 * R_BAD_CLAIMS when present but not a JSON integer. */
static const char *get_int(json_t *claims, const char *name, bool *present, int64_t *val)
{
    json_t *j = json_object_get(claims, name);

    *present = j != NULL;
    if (j == NULL)
        return NULL;
    if (!json_is_integer(j))
        return R_BAD_CLAIMS;
    *val = (int64_t)json_integer_value(j);
    return NULL;
}

static bool has_control_chars(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return true;
    }
    return false;
}

bool dm_jwt_sub_valid(const char *s, size_t n)
{
    return s != NULL && n > 0 && n <= DM_JWT_MAX_SUB && !has_control_chars(s, n);
}

/* A printable string claim of 1..max bytes copied to out[max + 1]. */
static bool copy_string(json_t *j, char *out, size_t max)
{
    const char *s = json_string_value(j);
    size_t n = json_string_length(j);

    if (s == NULL || n == 0 || n > max || has_control_chars(s, n))
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

bool dm_jwt_room_pattern_valid(const char *s, size_t n)
{
    if (n > 0 && s[n - 1] == '*')
        return n == 1 || dm_room_id_valid(s, n - 1);
    return dm_room_id_valid(s, n);
}

static const char *check_times(const struct dm_jwt_verifier *v, json_t *claims, int64_t now,
                               struct dm_jwt_claims *out)
{
    int64_t exp = 0, nbf = 0, iat = 0;
    bool has_exp, has_nbf, has_iat;

    if (get_int(claims, "exp", &has_exp, &exp) || get_int(claims, "nbf", &has_nbf, &nbf) ||
        get_int(claims, "iat", &has_iat, &iat))
        return R_BAD_CLAIMS;
    if (!has_exp)
        return R_MISSING_EXP;
    /* RFC 7519: valid strictly before exp and from nbf on. `now` is bounded
     * by the caller's assertion, so neither side overflows. */
    if (now - v->leeway >= exp)
        return R_EXPIRED;
    if (has_nbf && now + v->leeway < nbf)
        return R_NOT_YET_VALID;
    if (has_iat && iat > now + v->leeway)
        return R_NOT_YET_VALID;
    out->exp = exp;
    return NULL;
}

static const char *check_iss_aud(const struct dm_jwt_verifier *v, json_t *claims)
{
    if (v->iss != NULL) {
        json_t *iss = json_object_get(claims, "iss");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), v->iss) != 0)
            return R_BAD_ISSUER;
    }
    if (v->aud != NULL) {
        json_t *aud = json_object_get(claims, "aud");
        bool found = false;
        if (json_is_string(aud)) {
            found = strcmp(json_string_value(aud), v->aud) == 0;
        } else if (json_is_array(aud)) {
            for (size_t i = 0; i < json_array_size(aud) && !found; i++) {
                json_t *a = json_array_get(aud, i);
                found = json_is_string(a) && strcmp(json_string_value(a), v->aud) == 0;
            }
        }
        if (!found)
            return R_BAD_AUDIENCE;
    }
    return NULL;
}

static const char *copy_rooms(json_t *rooms, struct dm_jwt_claims *out)
{
    size_t n;

    if (rooms == NULL)
        return NULL;
    if (!json_is_array(rooms) || json_array_size(rooms) > DM_JWT_MAX_ROOMS)
        return R_BAD_CLAIMS;
    n = json_array_size(rooms);
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(rooms, i);
        if (!json_is_string(r) ||
            !dm_jwt_room_pattern_valid(json_string_value(r), json_string_length(r)))
            return R_BAD_CLAIMS;
    }
    out->rooms = dm_calloc(n + 1, sizeof(*out->rooms));
    for (size_t i = 0; i < n; i++)
        out->rooms[i] = dm_strdup(json_string_value(json_array_get(rooms, i)));
    out->nrooms = n;
    return NULL;
}

static const char *check_claims(const struct dm_jwt_verifier *v, json_t *claims, int64_t now,
                                struct dm_jwt_claims *out)
{
    const char *r;
    json_t *name = json_object_get(claims, "name");
    json_t *role = json_object_get(claims, "role");
    int64_t prio = 0;
    bool has_prio;

    if ((r = check_times(v, claims, now, out)) != NULL)
        return r;
    if ((r = check_iss_aud(v, claims)) != NULL)
        return r;
    if (!copy_string(json_object_get(claims, "sub"), out->sub, DM_JWT_MAX_SUB))
        return R_BAD_CLAIMS;
    if (name == NULL || (json_is_string(name) && json_string_length(name) == 0))
        memcpy(out->name, out->sub, sizeof(out->name));
    else if (!copy_string(name, out->name, DM_JWT_MAX_NAME))
        return R_BAD_CLAIMS;
    out->role = DM_ROLE_VIEWER;
    if (role != NULL &&
        (!json_is_string(role) || dm_jwt_role_parse(json_string_value(role), &out->role) != 0))
        return R_BAD_CLAIMS;
    if (get_int(claims, "prio", &has_prio, &prio) != NULL || prio < 0 || prio > DM_JWT_MAX_PRIO)
        return R_BAD_CLAIMS;
    out->prio = (int)prio;
    if (out->role != DM_ROLE_VIEWER && out->prio < 1)
        out->prio = 1; /* DESIGN.md §4: moderators and admins get at least lane 1 */
    return copy_rooms(json_object_get(claims, "rooms"), out);
}

/* ---- verify ------------------------------------------------------------- */

int dm_jwt_verify(const struct dm_jwt_verifier *v, const char *token, size_t len, int64_t now_s,
                  struct dm_jwt_claims *out, const char **reason)
{
    unsigned char buf[MAX_DECODED];
    struct segment seg[3];
    json_t *hdr = NULL, *claims = NULL;
    const struct vkey *key = NULL;
    const char *r;

    DM_CHECK_OBJ(v, DM_JWT_VERIFIER_MAGIC);
    DM_AN(out);
    DM_AN(reason);
    DM_ASSERT(token != NULL || len == 0);
    DM_ASSERT(now_s >= 0 && now_s <= INT64_MAX / 2);
    memset(out, 0, sizeof(*out));

    if (len > DM_JWT_MAX_TOKEN) {
        r = R_TOO_LARGE;
        goto fail;
    }
    if (split_token(token, len, seg) != 0 || (hdr = decode_object(&seg[0], buf)) == NULL) {
        r = R_MALFORMED;
        goto fail;
    }
    if ((r = check_header(v, hdr, &key)) != NULL)
        goto fail;
    if ((claims = decode_object(&seg[1], buf)) == NULL) {
        r = R_MALFORMED;
        goto fail;
    }
    if ((r = check_signature(v, key, token, &seg[2], buf)) != NULL)
        goto fail;
    if ((r = check_claims(v, claims, now_s, out)) != NULL)
        goto fail;
    json_decref(hdr);
    json_decref(claims);
    *reason = NULL;
    return 0;

fail:
    json_decref(claims);
    json_decref(hdr);
    dm_jwt_claims_fini(out);
    *reason = r;
    return -1;
}

int dm_jwt_peek_kid(const char *token, size_t len, char kid[DM_JWT_MAX_KID + 1])
{
    unsigned char buf[MAX_DECODED];
    struct segment seg[3];
    json_t *hdr, *k;
    int ret = -1;

    DM_AN(kid);
    if (token == NULL || len > DM_JWT_MAX_TOKEN || split_token(token, len, seg) != 0 ||
        (hdr = decode_object(&seg[0], buf)) == NULL)
        return -1;
    k = json_object_get(hdr, "kid");
    if (k == NULL) {
        ret = 0;
    } else if (json_is_string(k) && dm_jwt_kid_valid(json_string_value(k), json_string_length(k))) {
        memcpy(kid, json_string_value(k), json_string_length(k) + 1);
        ret = 1;
    }
    json_decref(hdr);
    return ret;
}

void dm_jwt_claims_fini(struct dm_jwt_claims *c)
{
    if (c == NULL)
        return;
    if (c->rooms != NULL) {
        for (size_t i = 0; i < c->nrooms; i++)
            free(c->rooms[i]);
        free(c->rooms);
    }
    memset(c, 0, sizeof(*c));
}

bool dm_jwt_claims_allow_room(const struct dm_jwt_claims *c, const char *room)
{
    DM_AN(c);
    DM_AN(room);
    if (c->rooms == NULL)
        return true;
    for (size_t i = 0; i < c->nrooms; i++) {
        const char *p = c->rooms[i];
        size_t n = strlen(p);
        bool prefix = n > 0 && p[n - 1] == '*';
        if (prefix ? strncmp(room, p, n - 1) == 0 : strcmp(room, p) == 0)
            return true;
    }
    return false;
}

/* ---- minting ------------------------------------------------------------ */

char *dm_jwt_mint(const char *alg, const unsigned char *key, size_t keylen, const char *claims_json,
                  char err[DM_ERRLEN])
{
    return dm_jwt_mint_kid(alg, NULL, key, keylen, claims_json, err);
}

char *dm_jwt_mint_kid(const char *alg, const char *kid, const unsigned char *key, size_t keylen,
                      const char *claims_json, char err[DM_ERRLEN])
{
    const struct alg_info *a = find_alg(alg);
    json_error_t jerr;
    json_t *claims;
    jwt_t *jwt = NULL;
    char *token = NULL;
    int rc;

    if (a == NULL) {
        set_err(err, "unsupported JWT algorithm \"%s\"", alg ? alg : "(null)");
        return NULL;
    }
    if (kid != NULL && !dm_jwt_kid_valid(kid, strlen(kid))) {
        set_err(err,
                "kid \"%.*s\" is not 1..%d characters of [A-Za-z0-9._-] (not starting "
                "with '.')",
                DM_JWT_MAX_KID + 1, kid, DM_JWT_MAX_KID);
        return NULL;
    }
    if (check_key(a, key, keylen, err) != 0)
        return NULL;
    if (a->kind != KEY_HMAC) {
        EVP_PKEY *pkey = parse_pem_key(a, key, keylen, true, err);
        if (pkey == NULL)
            return NULL;
        EVP_PKEY_free(pkey);
    }
    /* libjwt's jwt_add_grants_json fails on a non-object but a caller that
     * ignores it would mint a token with an empty claim set: check first. */
    claims = json_loads(claims_json ? claims_json : "", JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(claims)) {
        set_err(err, "claims must be a JSON object: %s", claims ? "not an object" : jerr.text);
        json_decref(claims);
        return NULL;
    }
    json_decref(claims);
    if ((rc = jwt_new(&jwt)) != 0 || (rc = jwt_add_grants_json(jwt, claims_json)) != 0 ||
        (kid != NULL && (rc = jwt_add_header(jwt, "kid", kid)) != 0) ||
        (rc = jwt_set_alg(jwt, a->jalg, key, (int)keylen)) != 0) {
        set_err(err, "libjwt: %s", strerror(rc));
        goto done;
    }
    token = jwt_encode_str(jwt);
    if (token == NULL) {
        int e = errno;
        set_err(err, "libjwt could not sign with %s: %s", a->name, strerror(e));
    }
done:
    jwt_free(jwt);
    ERR_clear_error();
    return token;
}

/* ---- keys and roles ----------------------------------------------------- */

int dm_jwt_key_load(const char *path, unsigned char **key, size_t *keylen, char err[DM_ERRLEN])
{
    FILE *f;
    unsigned char *buf;
    size_t n;

    DM_AN(path);
    DM_AN(key);
    DM_AN(keylen);
    f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        set_err(err, "cannot open key file %s: %s", path, strerror(e));
        return -1;
    }
    buf = dm_malloc(DM_JWT_MAX_KEY + 2);
    n = fread(buf, 1, DM_JWT_MAX_KEY + 1, f);
    if (ferror(f)) {
        int e = errno;
        set_err(err, "cannot read key file %s: %s", path, strerror(e));
        goto fail;
    }
    if (n > DM_JWT_MAX_KEY) {
        set_err(err, "key file %s is larger than %d bytes", path, DM_JWT_MAX_KEY);
        goto fail;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0) {
        set_err(err, "key file %s is empty", path);
        goto fail;
    }
    buf[n] = '\0';
    fclose(f);
    *key = buf;
    *keylen = n;
    return 0;

fail:
    OPENSSL_cleanse(buf, DM_JWT_MAX_KEY + 2);
    free(buf);
    fclose(f);
    return -1;
}

int dm_jwt_role_parse(const char *s, enum dm_role *out)
{
    static const enum dm_role roles[] = {DM_ROLE_VIEWER, DM_ROLE_MODERATOR, DM_ROLE_ADMIN};

    DM_AN(out);
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < DM_ARRAY_LEN(roles); i++) {
        if (strcmp(s, dm_jwt_role_name(roles[i])) == 0) {
            *out = roles[i];
            return 0;
        }
    }
    return -1;
}

const char *dm_jwt_role_name(enum dm_role r)
{
    switch (r) {
    case DM_ROLE_VIEWER:
        return "viewer";
    case DM_ROLE_MODERATOR:
        return "moderator";
    case DM_ROLE_ADMIN:
        return "admin";
    }
    DM_PANIC("unknown dm_role");
}
