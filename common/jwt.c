/* JWT verification policy on top of libjwt 1.10.2. libjwt only checks the
 * signature; everything it is lax about (alg spelling, empty keys, duplicate
 * keys, non-object payloads, claim types) is decided here first. */
#include "common/jwt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

#include "common/check.h"
#include "common/hash.h"

#define DM_JWT_VERIFIER_MAGIC 0x4a575456u /* "JWTV" */

/* Largest decoded header or payload: 3 bytes per 4 characters. */
#define MAX_DECODED (DM_JWT_MAX_TOKEN / 4 * 3 + 3)

static const char R_TOO_LARGE[] = "too_large";
static const char R_MALFORMED[] = "malformed";
static const char R_ALG_MISMATCH[] = "alg_mismatch";
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
};

/* The algorithms DESIGN.md §4 allows. "none" is deliberately absent. */
static const struct alg_info algs[] = {
    {"HS256", JWT_ALG_HS256, KEY_HMAC, EVP_sha256},
    {"HS384", JWT_ALG_HS384, KEY_HMAC, EVP_sha384},
    {"HS512", JWT_ALG_HS512, KEY_HMAC, EVP_sha512},
    {"RS256", JWT_ALG_RS256, KEY_RSA, EVP_sha256},
    {"ES256", JWT_ALG_ES256, KEY_EC_P256, EVP_sha256},
};

struct dm_jwt_verifier {
    unsigned magic;
    const struct alg_info *alg;
    unsigned char *key;
    size_t keylen;
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

/* Parses the PEM key libjwt will parse again per call, so a bad key fails at
 * startup rather than as "bad_signature" on every token. */
static int check_pem_key(const struct alg_info *a, const unsigned char *key, size_t keylen,
                         bool private_key, char *err)
{
    BIO *bio = BIO_new_mem_buf(key, (int)keylen);
    EVP_PKEY *pkey = NULL;
    int ret = -1;

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
    ret = 0;
done:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    ERR_clear_error();
    return ret;
}

static bool looks_like_pem(const unsigned char *key, size_t keylen)
{
    static const char mark[] = "-----BEGIN";
    return memmem(key, keylen, mark, sizeof(mark) - 1) != NULL;
}

static int check_key(const struct alg_info *a, const unsigned char *key, size_t keylen,
                     bool private_key, char *err)
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
        return check_pem_key(a, key, keylen, private_key, err);
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

struct dm_jwt_verifier *dm_jwt_verifier_new(const char *alg, const unsigned char *key,
                                            size_t keylen, int64_t leeway_s, const char *iss,
                                            const char *aud, char err[DM_ERRLEN])
{
    const struct alg_info *a = find_alg(alg);
    struct dm_jwt_verifier *v;

    if (a == NULL) {
        set_err(err, "unsupported JWT algorithm \"%s\" (HS256, HS384, HS512, RS256, ES256)",
                alg ? alg : "(null)");
        return NULL;
    }
    if (check_key(a, key, keylen, false, err) != 0)
        return NULL;
    if (leeway_s < 0 || leeway_s > DM_JWT_MAX_LEEWAY) {
        set_err(err, "JWT leeway %lld s is outside 0..%d", (long long)leeway_s, DM_JWT_MAX_LEEWAY);
        return NULL;
    }
    v = dm_calloc(1, sizeof(*v));
    v->magic = DM_JWT_VERIFIER_MAGIC;
    v->alg = a;
    v->key = dm_malloc(keylen);
    memcpy(v->key, key, keylen);
    v->keylen = keylen;
    v->leeway = leeway_s;
    v->iss = iss ? dm_strdup(iss) : NULL;
    v->aud = aud ? dm_strdup(aud) : NULL;
    return v;
}

void dm_jwt_verifier_free(struct dm_jwt_verifier *v)
{
    if (v == NULL)
        return;
    DM_CHECK_OBJ(v, DM_JWT_VERIFIER_MAGIC);
    OPENSSL_cleanse(v->key, v->keylen);
    free(v->key);
    free(v->iss);
    free(v->aud);
    v->magic = 0;
    free(v);
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

static const char *check_header(const struct dm_jwt_verifier *v, json_t *hdr)
{
    json_t *alg = json_object_get(hdr, "alg");
    json_t *typ = json_object_get(hdr, "typ");

    if (!json_is_string(alg))
        return R_MALFORMED;
    /* Exact spelling: libjwt would map "hs256", "None", ... case-insensitively. */
    if (strcmp(json_string_value(alg), v->alg->name) != 0)
        return R_ALG_MISMATCH;
    /* We understand no critical extension (RFC 7515 §4.1.11). */
    if (json_object_get(hdr, "crit") != NULL)
        return R_MALFORMED;
    /* libjwt refuses any typ but JWT as a string and ignores other types. */
    if (typ != NULL && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
        return R_MALFORMED;
    return NULL;
}

/* libjwt compares HMACs with strcmp(), which leaks how much of a forged
 * signature is right; check in constant time first so that only authentic
 * tokens reach it. */
static bool hmac_ok(const struct dm_jwt_verifier *v, const char *token, const struct segment *sig)
{
    unsigned char want[EVP_MAX_MD_SIZE], got[EVP_MAX_MD_SIZE + 3];
    unsigned int wantlen = 0;
    size_t signed_len = (size_t)(sig->p - 1 - token);
    long gotlen;

    if (sig->n > (EVP_MAX_MD_SIZE + 2) / 3 * 4)
        return false;
    gotlen = b64url_decode(sig->p, sig->n, got);
    if (HMAC(v->alg->md(), v->key, (int)v->keylen, (const unsigned char *)token, signed_len, want,
             &wantlen) == NULL) {
        ERR_clear_error();
        return false;
    }
    return gotlen == (long)wantlen && CRYPTO_memcmp(want, got, wantlen) == 0;
}

static const char *check_signature(const struct dm_jwt_verifier *v, const char *token, size_t len,
                                   const struct segment *sig)
{
    char copy[DM_JWT_MAX_TOKEN + 1];
    jwt_t *jwt = NULL;
    const char *reason = NULL;
    int rc;

    if (v->alg->kind == KEY_HMAC && !hmac_ok(v, token, sig))
        return R_BAD_SIGNATURE;
    /* libjwt wants a C string; the key is never empty (verifier_new). */
    memcpy(copy, token, len);
    copy[len] = '\0';
    rc = jwt_decode(&jwt, copy, v->key, (int)v->keylen);
    if (rc != 0)
        reason = R_BAD_SIGNATURE;
    else if (jwt_get_alg(jwt) != v->alg->jalg)
        reason = R_ALG_MISMATCH;
    jwt_free(jwt);
    /* Failed verifications leave entries on this thread's OpenSSL error
     * queue, where a TLS connection on the same thread would find them. */
    ERR_clear_error();
    return reason;
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
    if (split_token(token, len, seg) != 0 || (hdr = decode_object(&seg[0], buf)) == NULL ||
        (claims = decode_object(&seg[1], buf)) == NULL ||
        b64url_decode(seg[2].p, seg[2].n, buf) < 0) {
        r = R_MALFORMED;
        goto fail;
    }
    if ((r = check_header(v, hdr)) != NULL)
        goto fail;
    if ((r = check_signature(v, token, len, &seg[2])) != NULL)
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
    if (check_key(a, key, keylen, true, err) != 0)
        return NULL;
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
