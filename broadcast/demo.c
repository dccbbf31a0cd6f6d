/* The demo page: the embedded broadcast/demo.html with the node's settings
 * put into its one placeholder, once per worker at start-up (never per
 * request). */
#include "broadcast/demo.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/check.h"
#include "common/config.h"

/* Written by broadcast/embed.sh from broadcast/demo.html: the bytes of the
 * page and a terminating NUL (not counted in the length). */
extern const unsigned char dm_demo_html[];
extern const size_t dm_demo_html_len;

/* The attribute value in demo.html that receives demo_ingest_url. It sits in
 * a quoted attribute of a <meta> element, the one context where entity
 * escaping is the whole story: the script reads it as text through the DOM
 * and never evaluates it. */
#define INGEST_MARK "@DEMO_INGEST_URL@"

size_t dm_demo_escape_attr(const char *s, char *out)
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        const char *ent = NULL;
        switch (*p) {
        case '&':
            ent = "&amp;";
            break;
        case '<':
            ent = "&lt;";
            break;
        case '>':
            ent = "&gt;";
            break;
        case '"':
            ent = "&quot;";
            break;
        case '\'':
            ent = "&#39;";
            break;
        default:
            break;
        }
        if (ent != NULL) {
            memcpy(out + n, ent, strlen(ent));
            n += strlen(ent);
        } else if (*p < 0x20 || *p == 0x7f) {
            /* Controls would be stripped or normalised by the parser:
             * keep them visible as what they are. */
            n += (size_t)sprintf(out + n, "&#%u;", (unsigned)*p);
        } else {
            out[n++] = (char)*p;
        }
    }
    out[n] = '\0';
    return n;
}

/* An http(s) URL or an absolute path (a proxy in front of both nodes), so a
 * typo or a javascript: URL is refused at start-up rather than shown to
 * viewers. What the value may contain is the escaper's business. */
static bool ingest_url_valid(const char *url)
{
    /* Browsers read a backslash as a slash ("/\\host" is another host) and
     * drop controls: neither belongs in a URL given here. */
    for (const char *p = url; *p != '\0'; p++) {
        if (*p == '\\' || (unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    }
    return *url == '\0' || strncasecmp(url, "http://", 7) == 0 ||
           strncasecmp(url, "https://", 8) == 0 || (url[0] == '/' && url[1] != '/');
}

int dm_demo_page_build(const struct dm_config *cfg, char **page, size_t *len, char err[DM_ERRLEN])
{
    const char *tmpl = (const char *)dm_demo_html;
    const char *mark = strstr(tmpl, INGEST_MARK);
    size_t mlen = sizeof(INGEST_MARK) - 1;

    *page = NULL;
    *len = 0;
    if (!cfg->demo_page)
        return 0;
    if (!ingest_url_valid(cfg->demo_ingest_url)) {
        snprintf(err, DM_ERRLEN,
                 "demo_ingest_url must be empty, an http:// or https:// URL or an absolute path");
        return -1;
    }
    /* A page without its placeholder is a build bug, not a setting. */
    DM_AN(mark);
    size_t head = (size_t)(mark - tmpl), tail = dm_demo_html_len - head - mlen;
    char *out = dm_malloc(head + 6 * strlen(cfg->demo_ingest_url) + tail + 1);
    memcpy(out, tmpl, head);
    size_t n = head + dm_demo_escape_attr(cfg->demo_ingest_url, out + head);
    memcpy(out + n, mark + mlen, tail);
    n += tail;
    out[n] = '\0';
    *page = out;
    *len = n;
    return 0;
}
