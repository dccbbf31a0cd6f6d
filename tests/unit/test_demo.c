/* broadcast/demo.c: the page template gets demo_ingest_url escaped into its
 * attribute, and only valid values are taken. A small template stands in
 * for the embedded broadcast/demo.html. */
#include "broadcast/demo.c"

#include <stdlib.h>
#include <string.h>

#include "tests/unit/tap.h"

const unsigned char dm_demo_html[] =
    "<head><meta name=\"dm-ingest\" content=\"" INGEST_MARK "\"></head><body>x</body>";
const size_t dm_demo_html_len = sizeof(dm_demo_html) - 1;

static char *build(bool on, const char *url, size_t *len, int *rc)
{
    struct dm_config cfg;
    char err[DM_ERRLEN] = "";
    char *page = NULL;

    memset(&cfg, 0, sizeof(cfg));
    cfg.demo_page = on;
    cfg.demo_ingest_url = (char *)url;
    *rc = dm_demo_page_build(&cfg, &page, len, err);
    return page;
}

static void test_escape(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"https://api.example.com:8443/x?a=1", "https://api.example.com:8443/x?a=1"},
        {"a&b", "a&amp;b"},
        {"\"><script>", "&quot;&gt;&lt;script&gt;"},
        {"it's", "it&#39;s"},
        {"&amp;", "&amp;amp;"},
        {"\r\n\t\x01\x7f", "&#13;&#10;&#9;&#1;&#127;"},
        {"\xe5\xbc\xbe", "\xe5\xbc\xbe"}, /* UTF-8 passes as it is */
    };
    char out[256];

    for (size_t i = 0; i < DM_ARRAY_LEN(cases); i++) {
        size_t n = dm_demo_escape_attr(cases[i].in, out);
        ok(n == strlen(cases[i].out) && strcmp(out, cases[i].out) == 0, "escape %zu: \"%s\"", i,
           out);
    }
    /* The bound the header promises, 6 bytes out per byte in, for every
     * byte value, into a heap buffer of exactly that size (ASan watches). */
    char all[256];
    for (int b = 1; b < 256; b++)
        all[b - 1] = (char)b;
    all[255] = '\0';
    char *exact = malloc(6 * strlen(all) + 1);
    size_t n = dm_demo_escape_attr(all, exact);
    ok(n <= 6 * strlen(all) && strlen(exact) == n, "escape stays within 6x for every byte");
    ok(strpbrk(exact, "\"'<>") == NULL, "no quote or angle bracket survives");
    free(exact);
}

static void test_build(void)
{
    size_t len;
    int rc;
    char *page = build(true, "", &len, &rc);
    ok(rc == 0 && page != NULL &&
           strcmp(page, "<head><meta name=\"dm-ingest\" content=\"\">"
                        "</head><body>x</body>") == 0,
       "empty url: the placeholder is emptied");
    ok(page != NULL && len == strlen(page), "length matches");
    free(page);

    page = build(true, "https://x/\"><script>alert(1)</script>", &len, &rc);
    ok(rc == 0 && page != NULL &&
           strstr(page, "content=\"https://x/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\">"
                        "</head>") != NULL,
       "a hostile url stays inside its attribute");
    ok(page != NULL && strstr(page, "<script") == NULL, "no markup gets in");
    free(page);

    page = build(true, "/ingest", &len, &rc);
    ok(rc == 0 && page != NULL && strstr(page, "content=\"/ingest\"") != NULL,
       "an absolute path is taken");
    free(page);

    page = build(false, "https://x", &len, &rc);
    ok(rc == 0 && page == NULL && len == 0, "demo_page off: no page");

    page = build(true, "HTTPS://api.example", &len, &rc);
    ok(rc == 0 && page != NULL, "the scheme is case-insensitive, as in browsers");
    free(page);

    static const char *const bad[] = {"javascript:alert(1)",
                                      "//evil.example",
                                      "ftp://x",
                                      "data:text/html,x",
                                      "example.com",
                                      "/\\evil.example",
                                      "http:",
                                      "https://x/\ty",
                                      "/a\x7f"};
    for (size_t i = 0; i < DM_ARRAY_LEN(bad); i++) {
        page = build(true, bad[i], &len, &rc);
        ok(rc == -1 && page == NULL, "refused: %s", bad[i]);
    }
}

int main(void)
{
    subtest("escape", test_escape);
    subtest("build", test_build);
    return done_testing();
}
