/* danmaku-token: mint and check the JWTs the ingest and broadcast nodes
 * accept, with the same policy code (common/jwt.c). For operators and tests. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/auth.h"
#include "common/jwt.h"
#include "common/util.h"

#define PROG           "danmaku-token"
#define EXIT_USAGE     2
#define SHOW_HELP      (-1) /* parse_args: --help was given */
#define ENV_SECRET     "DANMAKU_JWT_SECRET"
#define DEFAULT_TTL    3600
#define MAX_TTL        (10 * 365 * 86400LL)
#define MAX_TOKEN_READ (DM_JWT_MAX_TOKEN + 2)

static const char usage_text[] =
    "usage: " PROG " mint  [--alg ALG] KEY [--kid KID] --sub USER [--name NAME] [--role ROLE]\n"
    "                      [--rooms 'a,b*'] [--prio N] [--ttl SECONDS] [--iss I] [--aud A]\n"
    "       " PROG " check [--alg ALG] [KEY] [--key-dir DIR] [--leeway SECONDS] [--iss I]\n"
    "                      [--aud A] TOKEN\n"
    "       " PROG " --help\n"
    "\n"
    "Mints a token on stdout, or checks one and prints its claims as key=value lines.\n"
    "\n"
    "  --alg ALG            HS256 (default), HS384, HS512, RS256 or ES256\n"
    "  KEY is one of:\n"
    "    --secret S         HS* shared secret (at least 32 bytes; visible in ps: prefer a file)\n"
    "    --secret-file F    file holding the HS* secret (trailing newline ignored)\n"
    "    --key-file F       PEM key: private for mint, public for check (RS256/ES256)\n"
    "    (none)             the HS* secret from $" ENV_SECRET "\n"
    "  --kid KID            put \"kid\":KID in the header (1..64 of [A-Za-z0-9._-]) [mint]\n"
    "  --key-dir DIR        the nodes' jwt_key_dir: <kid>.pem/<kid>.key files, one per kid;\n"
    "                       KEY is then the default key (tokens without kid), optional [check]\n"
    "  --sub USER           user id (\"sub\", 1..128 bytes)             [mint]\n"
    "  --name NAME          display name (default: the user id)       [mint]\n"
    "  --role ROLE          viewer (default), moderator or admin      [mint]\n"
    "  --rooms LIST         comma-separated room patterns; a trailing '*' matches a prefix [mint]\n"
    "  --prio N             priority lane 0..9 for paid comments      [mint]\n"
    "  --ttl SECONDS        lifetime, default 3600; negative mints an expired token [mint]\n"
    "  --leeway SECONDS     clock leeway for exp/nbf/iat, default 0   [check]\n"
    "  --iss I, --aud A     issuer and audience to set (mint) or require (check)\n"
    "  --now SECONDS        Unix time to use instead of the clock (reproducible tests)\n"
    "  TOKEN                the token, optionally prefixed by \"Bearer \", or - for stdin\n"
    "\n"
    "Exit status: 0 minted / valid, 1 invalid token or error, 2 usage error.\n";

struct opts {
    const char *alg;
    const char *secret;
    const char *secret_file;
    const char *key_file;
    const char *key_dir;
    const char *kid;
    const char *sub;
    const char *name;
    const char *role;
    const char *rooms;
    const char *iss;
    const char *aud;
    long long prio; /* -1: not given */
    long long ttl;
    long long leeway;
    long long now; /* -1: the clock */
};

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(try " PROG " --help)\n");
    return EXIT_USAGE;
}

static int parse_ll(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return usage_error("%s wants an integer in %lld..%lld, not \"%s\"", opt, lo, hi, s);
    *out = v;
    return 0;
}

static const char *option_name(const struct option *opts, int val)
{
    for (; opts->name != NULL; opts++) {
        if (opts->val == val)
            return opts->name;
    }
    return "?";
}

/* Returns 0, SHOW_HELP, or the exit status of a usage error. `*first_operand`
 * is the index of the first operand in argv. */
static int parse_args(int argc, char **argv, bool mint, struct opts *o, int *first_operand)
{
    enum {
        O_ALG = 256,
        O_SECRET,
        O_SECRET_FILE,
        O_KEY_FILE,
        O_KEY_DIR,
        O_KID,
        O_SUB,
        O_NAME,
        O_ROLE,
        O_ROOMS,
        O_PRIO,
        O_TTL,
        O_LEEWAY,
        O_ISS,
        O_AUD,
        O_NOW
    };
    static const struct option longopts[] = {
        {"alg", required_argument, NULL, O_ALG},
        {"secret", required_argument, NULL, O_SECRET},
        {"secret-file", required_argument, NULL, O_SECRET_FILE},
        {"key-file", required_argument, NULL, O_KEY_FILE},
        {"key-dir", required_argument, NULL, O_KEY_DIR},
        {"kid", required_argument, NULL, O_KID},
        {"sub", required_argument, NULL, O_SUB},
        {"name", required_argument, NULL, O_NAME},
        {"role", required_argument, NULL, O_ROLE},
        {"rooms", required_argument, NULL, O_ROOMS},
        {"prio", required_argument, NULL, O_PRIO},
        {"ttl", required_argument, NULL, O_TTL},
        {"leeway", required_argument, NULL, O_LEEWAY},
        {"iss", required_argument, NULL, O_ISS},
        {"aud", required_argument, NULL, O_AUD},
        {"now", required_argument, NULL, O_NOW},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, rc = 0;

    *o = (struct opts){.alg = "HS256", .prio = -1, .ttl = DEFAULT_TTL, .now = -1};
    opterr = 0;
    optind = 1;
    while (rc == 0 && (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (!mint && (c == O_SUB || c == O_NAME || c == O_ROLE || c == O_ROOMS || c == O_PRIO ||
                      c == O_TTL || c == O_KID))
            return usage_error("--%s is for mint, not check", option_name(longopts, c));
        if (mint && (c == O_LEEWAY || c == O_KEY_DIR))
            return usage_error("--%s is for check, not mint", option_name(longopts, c));
        switch (c) {
        case O_ALG:
            o->alg = optarg;
            break;
        case O_SECRET:
            o->secret = optarg;
            break;
        case O_SECRET_FILE:
            o->secret_file = optarg;
            break;
        case O_KEY_FILE:
            o->key_file = optarg;
            break;
        case O_KEY_DIR:
            o->key_dir = optarg;
            break;
        case O_KID:
            o->kid = optarg;
            break;
        case O_SUB:
            o->sub = optarg;
            break;
        case O_NAME:
            o->name = optarg;
            break;
        case O_ROLE:
            o->role = optarg;
            break;
        case O_ROOMS:
            o->rooms = optarg;
            break;
        case O_PRIO:
            rc = parse_ll("--prio", optarg, 0, DM_JWT_MAX_PRIO, &o->prio);
            break;
        case O_TTL:
            rc = parse_ll("--ttl", optarg, -MAX_TTL, MAX_TTL, &o->ttl);
            break;
        case O_LEEWAY:
            rc = parse_ll("--leeway", optarg, 0, DM_JWT_MAX_LEEWAY, &o->leeway);
            break;
        case O_ISS:
            o->iss = optarg;
            break;
        case O_AUD:
            o->aud = optarg;
            break;
        case O_NOW:
            rc = parse_ll("--now", optarg, 0, INT64_MAX / 4, &o->now);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return SHOW_HELP;
        case ':':
            return usage_error("%s needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (rc != 0)
        return rc;
    if (!!o->secret + !!o->secret_file + !!o->key_file > 1)
        return usage_error("give only one of --secret, --secret-file and --key-file");
    *first_operand = optind;
    return 0;
}

/* Fills key/keylen from the options or the environment; exit status on error. */
static int load_key(const struct opts *o, unsigned char **key, size_t *keylen)
{
    char err[DM_ERRLEN];
    const char *s = o->secret;
    const char *file = o->secret_file ? o->secret_file : o->key_file;

    if (file != NULL) {
        if (dm_jwt_key_load(file, key, keylen, err) != 0) {
            fprintf(stderr, PROG ": %s\n", err);
            return 1;
        }
        return 0;
    }
    if (s == NULL)
        s = getenv(ENV_SECRET);
    if (s == NULL || *s == '\0')
        return usage_error("no key: give --secret, --secret-file or --key-file, or set %s",
                           ENV_SECRET);
    *keylen = strlen(s);
    *key = (unsigned char *)dm_strdup(s);
    return 0;
}

/* ---- JSON building (strings only need escaping) ------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = dm_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_json_string(struct buf *b, const char *s, size_t n)
{
    buf_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            buf_add(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            buf_str(b, esc);
        } else {
            buf_add(b, (const char *)&c, 1);
        }
    }
    buf_str(b, "\"");
}

static void buf_member(struct buf *b, const char *key, const char *val)
{
    buf_str(b, ",\"");
    buf_str(b, key);
    buf_str(b, "\":");
    buf_json_string(b, val, strlen(val));
}

static void buf_int_member(struct buf *b, const char *key, long long v)
{
    char num[32];
    snprintf(num, sizeof(num), ",\"%s\":%lld", key, v);
    buf_str(b, num);
}

/* Appends ,"rooms":[...] from a comma list; exit status on a bad pattern. */
static int buf_rooms(struct buf *b, const char *list)
{
    const char *p = list;
    size_t count = 0;

    buf_str(b, ",\"rooms\":[");
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (!dm_jwt_room_pattern_valid(p, n))
            return usage_error("bad room pattern \"%.*s\" (room id chars [A-Za-z0-9_.:-], "
                               "optional trailing '*')",
                               (int)n, p);
        if (++count > DM_JWT_MAX_ROOMS)
            return usage_error("more than %d room patterns", DM_JWT_MAX_ROOMS);
        if (count > 1)
            buf_str(b, ",");
        buf_json_string(b, p, n);
        p += n + (comma != NULL);
        if (comma != NULL && *p == '\0')
            return usage_error("empty room pattern at the end of --rooms");
    }
    buf_str(b, "]");
    return 0;
}

/* ---- commands ----------------------------------------------------------- */

/* The verifier refuses these in sub and name; refuse to mint them. */
static bool has_control_chars(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    }
    return false;
}

static long long clock_now(const struct opts *o)
{
    return o->now >= 0 ? o->now : (long long)time(NULL);
}

static int cmd_mint(int argc, char **argv)
{
    struct opts o;
    struct buf b = {0};
    enum dm_role role = DM_ROLE_VIEWER;
    unsigned char *key = NULL;
    size_t keylen = 0;
    char err[DM_ERRLEN];
    char *token;
    int first, rc;
    long long now;

    if ((rc = parse_args(argc, argv, true, &o, &first)) != 0)
        return rc == SHOW_HELP ? 0 : rc;
    if (first < argc)
        return usage_error("mint takes no operands (\"%s\")", argv[first]);
    if (o.sub == NULL || o.sub[0] == '\0' || strlen(o.sub) > DM_JWT_MAX_SUB)
        return usage_error("mint needs --sub USER (1..%d bytes)", DM_JWT_MAX_SUB);
    if (has_control_chars(o.sub))
        return usage_error("--sub has control characters");
    if (o.name != NULL && (strlen(o.name) > DM_JWT_MAX_NAME || has_control_chars(o.name)))
        return usage_error("--name is longer than %d bytes or has control characters",
                           DM_JWT_MAX_NAME);
    if (o.role != NULL && dm_jwt_role_parse(o.role, &role) != 0)
        return usage_error("--role is viewer, moderator or admin, not \"%s\"", o.role);
    if (o.kid != NULL && !dm_jwt_kid_valid(o.kid, strlen(o.kid)))
        return usage_error("--kid wants 1..%d characters of [A-Za-z0-9._-], not starting with '.'",
                           DM_JWT_MAX_KID);

    now = clock_now(&o);
    buf_str(&b, "{");
    buf_json_string(&b, "sub", 3);
    buf_str(&b, ":");
    buf_json_string(&b, o.sub, strlen(o.sub));
    if (o.name != NULL)
        buf_member(&b, "name", o.name);
    if (o.role != NULL)
        buf_member(&b, "role", dm_jwt_role_name(role));
    if (o.prio >= 0)
        buf_int_member(&b, "prio", o.prio);
    if (o.rooms != NULL && (rc = buf_rooms(&b, o.rooms)) != 0)
        goto done;
    if (o.iss != NULL)
        buf_member(&b, "iss", o.iss);
    if (o.aud != NULL)
        buf_member(&b, "aud", o.aud);
    buf_int_member(&b, "iat", now);
    buf_int_member(&b, "exp", now + o.ttl);
    buf_str(&b, "}");

    if ((rc = load_key(&o, &key, &keylen)) != 0)
        goto done;
    token = dm_jwt_mint_kid(o.alg, o.kid, key, keylen, b.p, err);
    if (token == NULL) {
        fprintf(stderr, PROG ": %s\n", err);
        rc = 1;
        goto done;
    }
    printf("%s\n", token);
    free(token);
done:
    free(key);
    free(b.p);
    return rc;
}

/* key=value, quoted when the value has spaces, quotes, '=' or is empty. */
static void print_kv(const char *key, const char *val)
{
    bool quote = val[0] == '\0' || strpbrk(val, " \t\"=\\") != NULL;

    printf("%s=", key);
    if (!quote) {
        printf("%s\n", val);
        return;
    }
    putchar('"');
    for (const char *p = val; *p; p++) {
        if (*p == '"' || *p == '\\')
            putchar('\\');
        putchar(*p);
    }
    printf("\"\n");
}

static void print_claims(const struct dm_jwt_claims *c, long long now)
{
    printf("valid=true\n");
    print_kv("sub", c->sub);
    print_kv("name", c->name);
    printf("role=%s\nprio=%d\nexp=%" PRId64 "\nexpires_in=%lld\n", dm_jwt_role_name(c->role),
           c->prio, c->exp, (long long)c->exp - now);
    if (c->rooms == NULL) {
        printf("rooms=(any)\n");
        return;
    }
    printf("rooms=");
    for (size_t i = 0; i < c->nrooms; i++)
        printf("%s%s", i ? "," : "", c->rooms[i]);
    printf("\n");
}

/* Reads the token operand: "-" means stdin; "Bearer " and surrounding
 * whitespace are dropped. Returns an owned string or NULL (message printed). */
static char *read_token(const char *arg)
{
    char *t;
    size_t n;

    if (strcmp(arg, "-") == 0) {
        t = dm_malloc(MAX_TOKEN_READ + 1);
        n = fread(t, 1, MAX_TOKEN_READ, stdin);
        t[n] = '\0';
    } else {
        t = dm_strdup(arg);
    }
    n = strlen(t);
    while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' '))
        t[--n] = '\0';
    if (strncmp(t, "Bearer ", 7) == 0)
        memmove(t, t + 7, n - 7 + 1);
    return t;
}

/* The verifier of the options: like the nodes' (common/auth.c), a default
 * key and/or a key directory. Exit status on error. */
static int make_verifier(const struct opts *o, struct dm_jwt_verifier **v)
{
    struct dm_auth_params p = {
        .alg = o->alg,
        .key_file = o->secret_file ? o->secret_file : o->key_file,
        .secret = o->secret,
        .key_dir = o->key_dir,
        .leeway_s = o->leeway,
        .issuer = o->iss,
        .audience = o->aud,
    };
    char err[DM_ERRLEN];

    if (p.key_file == NULL && p.secret == NULL)
        p.secret = getenv(ENV_SECRET);
    if ((p.key_file == NULL && (p.secret == NULL || *p.secret == '\0')) && o->key_dir == NULL)
        return usage_error("no key: give --secret, --secret-file, --key-file or --key-dir, or "
                           "set %s",
                           ENV_SECRET);
    if ((*v = dm_auth_verifier_build(&p, err)) == NULL) {
        fprintf(stderr, PROG ": %s\n", err);
        return 1;
    }
    return 0;
}

static int cmd_check(int argc, char **argv)
{
    struct opts o;
    struct dm_jwt_verifier *v = NULL;
    struct dm_jwt_claims c;
    const char *reason = NULL;
    char kid[DM_JWT_MAX_KID + 1];
    char *token;
    int first, rc;
    long long now;

    if ((rc = parse_args(argc, argv, false, &o, &first)) != 0)
        return rc == SHOW_HELP ? 0 : rc;
    if (argc - first != 1)
        return usage_error("check takes exactly one TOKEN");
    if ((rc = make_verifier(&o, &v)) != 0)
        return rc;
    now = clock_now(&o);
    token = read_token(argv[first]);
    if (dm_jwt_verify(v, token, strlen(token), now, &c, &reason) == 0) {
        print_claims(&c, now);
        dm_jwt_claims_fini(&c);
        rc = 0;
    } else {
        printf("valid=false\nreason=%s\n", reason);
        fprintf(stderr, PROG ": invalid token: %s\n", reason);
        rc = 1;
    }
    /* Which key the token names: the first question after "unknown_kid". */
    if (dm_jwt_peek_kid(token, strlen(token), kid) == 1)
        printf("kid=%s\n", kid);
    free(token);
    dm_jwt_verifier_free(v);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("missing command (mint or check)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(argv[1], "mint") == 0)
        return cmd_mint(argc - 1, argv + 1);
    if (strcmp(argv[1], "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    return usage_error("unknown command \"%s\" (mint or check)", argv[1]);
}
