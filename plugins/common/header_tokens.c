/* See header_tokens.h. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "header_tokens.h"

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

bool header_next_token(const char **p, const char **tok, size_t *len, const char **params, size_t *params_len)
{
    const char *s = *p;
    while (*s == ',' || is_space(*s))
        s++;
    if (!*s)
        return false;
    const char *end = s + strcspn(s, ",");
    const char *semi = memchr(s, ';', (size_t)(end - s));
    const char *tend = semi ? semi : end;
    while (tend > s && is_space(tend[-1]))
        tend--;
    *tok = s;
    *len = (size_t)(tend - s);
    *params = semi ? semi + 1 : NULL;
    *params_len = semi ? (size_t)(end - semi - 1) : 0;
    *p = end;
    return true;
}

static bool list_has(const char *list, const char *token)
{
    const char *tok, *params;
    size_t len, plen, want = strlen(token);
    while (header_next_token(&list, &tok, &len, &params, &plen))
        if (len == want && !strncasecmp(tok, token, len))
            return true;
    return false;
}

bool header_has_token(const struct herald_headers *h, const char *name, const char *token)
{
    const char *n, *v;
    for (size_t i = 0; herald_headers_at(h, i, &n, &v); i++)
        if (!strcasecmp(n, name) && list_has(v, token))
            return true;
    return false;
}

void header_append_token(struct herald_headers *h, const char *name, const char *token)
{
    if (header_has_token(h, name, token))
        return;
    size_t total = strlen(token) + 1;
    const char *n, *v;
    for (size_t i = 0; herald_headers_at(h, i, &n, &v); i++)
        if (!strcasecmp(n, name) && *v)
            total += strlen(v) + 2;
    char *joined = malloc(total);
    if (!joined)
        abort();
    joined[0] = '\0';
    for (size_t i = 0; herald_headers_at(h, i, &n, &v); i++)
        if (!strcasecmp(n, name) && *v) {
            strcat(joined, v);
            strcat(joined, ", ");
        }
    strcat(joined, token);
    herald_headers_set(h, name, joined);
    free(joined);
}
