/* JWT verifier from configuration: an optional default key plus a directory
 * of keys named by kid, so that a mounted Kubernetes Secret is the key set. */
#include "common/auth.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/check.h"
#include "common/config.h"
#include "common/jwt.h"
#include "common/log.h"

/* The keys read so far; buffers owned, scrubbed by keyset_fini. */
struct keyset {
    struct dm_jwt_key keys[DM_JWT_MAX_KEYS + 1];
    unsigned char *bufs[DM_JWT_MAX_KEYS + 1];
    char kids[DM_JWT_MAX_KEYS][DM_JWT_MAX_KID + 1];
    size_t n;
};

/* vsnprintf: a long path is cut short in the message, which is fine. */
__attribute__((format(printf, 2, 3))) static void set_err(char *err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, DM_ERRLEN, fmt, ap);
    va_end(ap);
}

static bool is_set(const char *s)
{
    return s != NULL && *s != '\0';
}

/* Takes ownership of buf; kid borrowed from ks->kids or NULL. */
static void keyset_add(struct keyset *ks, const char *kid, unsigned char *buf, size_t len)
{
    DM_ASSERT(ks->n < DM_ARRAY_LEN(ks->keys));
    ks->bufs[ks->n] = buf;
    ks->keys[ks->n] = (struct dm_jwt_key){.kid = kid, .key = buf, .keylen = len};
    ks->n++;
}

static void keyset_fini(struct keyset *ks)
{
    /* Secrets leave no copy behind in freed memory. */
    for (size_t i = 0; i < ks->n; i++) {
        explicit_bzero(ks->bufs[i], ks->keys[i].keylen);
        free(ks->bufs[i]);
    }
    ks->n = 0;
}

/* The length of the kid in "<kid>.pem" / "<kid>.key", or 0 for any other name. */
static size_t kid_len(const char *name)
{
    size_t n = strlen(name);

    if (n <= 4 || (strcmp(name + n - 4, ".pem") != 0 && strcmp(name + n - 4, ".key") != 0))
        return 0;
    return dm_jwt_kid_valid(name, n - 4) ? n - 4 : 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the key files of dir into names[DM_JWT_MAX_KEYS] (owned strings),
 * sorted so that errors and key order do not depend on readdir. */
static int list_dir(const char *dir, char **names, size_t *nnames, char *err)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int ret = -1;

    if (d == NULL) {
        int e = errno;
        set_err(err, "jwt_key_dir %s: %s", dir, strerror(e));
        return -1;
    }
    for (;;) {
        errno = 0;
        if ((de = readdir(d)) == NULL) {
            int e = errno;
            if (e == 0)
                break;
            set_err(err, "jwt_key_dir %s: %s", dir, strerror(e));
            goto done;
        }
        /* ".", "..", and a mounted Secret's "..data" and "..<timestamp>". */
        if (de->d_name[0] == '.')
            continue;
        if (kid_len(de->d_name) == 0) {
            snprintf(err, DM_ERRLEN,
                     "jwt_key_dir %s: \"%.80s\" is not named <kid>.pem or <kid>.key (kid: 1..%d "
                     "characters of [A-Za-z0-9._-])",
                     dir, de->d_name, DM_JWT_MAX_KID);
            goto done;
        }
        if (*nnames == DM_JWT_MAX_KEYS) {
            set_err(err, "jwt_key_dir %s holds more than %d keys", dir, DM_JWT_MAX_KEYS);
            goto done;
        }
        names[(*nnames)++] = dm_strdup(de->d_name);
    }
    if (*nnames == 0) {
        set_err(err, "jwt_key_dir %s holds no <kid>.pem or <kid>.key file", dir);
        goto done;
    }
    qsort(names, *nnames, sizeof(*names), cmp_names);
    ret = 0;
done:
    closedir(d);
    return ret;
}

static int load_dir(const char *dir, struct keyset *ks, char *err)
{
    char *names[DM_JWT_MAX_KEYS];
    size_t nnames = 0;
    int ret = -1;

    if (list_dir(dir, names, &nnames, err) != 0)
        goto done;
    for (size_t i = 0; i < nnames; i++) {
        char path[PATH_MAX];
        struct stat st;
        unsigned char *buf;
        size_t len, klen = kid_len(names[i]);

        if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= (int)sizeof(path)) {
            set_err(err, "jwt_key_dir %s: path too long", dir);
            goto done;
        }
        if (stat(path, &st) != 0) {
            int e = errno;
            set_err(err, "jwt_key_dir: %s: %s", path, strerror(e));
            goto done;
        }
        if (!S_ISREG(st.st_mode)) {
            set_err(err, "jwt_key_dir: %s is not a regular file", path);
            goto done;
        }
        if (dm_jwt_key_load(path, &buf, &len, err) != 0)
            goto done;
        memcpy(ks->kids[i], names[i], klen);
        ks->kids[i][klen] = '\0';
        keyset_add(ks, ks->kids[i], buf, len);
    }
    ret = 0;
done:
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    return ret;
}

bool dm_auth_configured(const struct dm_config *cfg)
{
    return is_set(cfg->jwt_key_file) || is_set(cfg->jwt_secret) || is_set(cfg->jwt_key_dir);
}

/* Builds the verifier; when `log`, says once which keys it holds (kids
 * only, never key material), so operators can see a rotation took. */
static struct dm_jwt_verifier *build(const struct dm_auth_params *p, bool log, char *err)
{
    struct keyset ks = {.n = 0};
    struct dm_jwt_verifier *v = NULL;
    unsigned char *buf;
    size_t len;
    bool has_default = false;

    if (is_set(p->key_file)) {
        if (dm_jwt_key_load(p->key_file, &buf, &len, err) != 0)
            goto done;
        keyset_add(&ks, NULL, buf, len);
        has_default = true;
    } else if (is_set(p->secret)) {
        len = strlen(p->secret);
        keyset_add(&ks, NULL, (unsigned char *)dm_strndup(p->secret, len), len);
        has_default = true;
    }
    if (is_set(p->key_dir) && load_dir(p->key_dir, &ks, err) != 0)
        goto done;
    if (ks.n == 0) {
        set_err(err, "no JWT key: set jwt_key_file, jwt_secret or jwt_key_dir");
        goto done;
    }
    v = dm_jwt_verifier_new_keys(p->alg, ks.keys, ks.n, p->leeway_s,
                                 is_set(p->issuer) ? p->issuer : NULL,
                                 is_set(p->audience) ? p->audience : NULL, err);
    if (v != NULL && log) {
        char kids[DM_JWT_MAX_KEYS * (DM_JWT_MAX_KID + 1) + 1] = "";
        size_t o = 0;
        for (size_t i = has_default; i < ks.n; i++)
            o += (size_t)snprintf(kids + o, sizeof(kids) - o, "%s%s", o ? "," : "", ks.keys[i].kid);
        DM_LOG(DM_LOG_INFO, "msg=\"jwt keys\" alg=%s default_key=%s kids=\"%s\"", p->alg,
               has_default ? "yes" : "no", kids);
    }
done:
    keyset_fini(&ks);
    return v;
}

struct dm_jwt_verifier *dm_auth_verifier_build(const struct dm_auth_params *p, char err[DM_ERRLEN])
{
    return build(p, false, err);
}

struct dm_jwt_verifier *dm_auth_verifier_new(const struct dm_config *cfg, char err[DM_ERRLEN])
{
    struct dm_auth_params p = {
        .alg = cfg->jwt_alg,
        .key_file = cfg->jwt_key_file,
        .secret = cfg->jwt_secret,
        .key_dir = cfg->jwt_key_dir,
        .leeway_s = cfg->jwt_leeway_s,
        .issuer = cfg->jwt_issuer,
        .audience = cfg->jwt_audience,
    };

    return build(&p, true, err);
}
