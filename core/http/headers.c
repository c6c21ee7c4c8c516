/* The header map: an ordered vector of (name, value) pairs. Names are stored
 * lower-case, so lookups compare bytes after lower-casing the key once; a
 * linear scan beats hashing for the ~20 entries of a typical request. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "http/headers.h"

struct header_entry {
    char *name, *value;
};

struct herald_headers {
    struct header_entry *e;
    size_t n, cap;
};

static char *lower_dup(const char *s)
{
    size_t len = strlen(s);
    char *d = xmalloc(len + 1);
    for (size_t i = 0; i < len; i++)
        d[i] = (char)tolower((unsigned char)s[i]);
    d[len] = '\0';
    return d;
}

struct herald_headers *herald_headers_new(void)
{
    return xcalloc(1, sizeof(struct herald_headers));
}

void herald_headers_free(struct herald_headers *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++) {
        free(h->e[i].name);
        free(h->e[i].value);
    }
    free(h->e);
    free(h);
}

size_t herald_headers_count(const struct herald_headers *h)
{
    return h ? h->n : 0;
}

bool herald_headers_at(const struct herald_headers *h, size_t i, const char **name, const char **value)
{
    if (!h || i >= h->n)
        return false;
    if (name)
        *name = h->e[i].name;
    if (value)
        *value = h->e[i].value;
    return true;
}

const char *herald_headers_get(const struct herald_headers *h, const char *name)
{
    if (!h || !name)
        return NULL;
    for (size_t i = 0; i < h->n; i++)
        if (strcasecmp(h->e[i].name, name) == 0)
            return h->e[i].value;
    return NULL;
}

void headers_add_owned(struct herald_headers *h, char *name, char *value)
{
    struct header_entry *e = VEC_PUSH(h->e, h->n, h->cap);
    e->name = name;
    e->value = value;
}

void herald_headers_add(struct herald_headers *h, const char *name, const char *value)
{
    if (!h || !name)
        return;
    headers_add_owned(h, lower_dup(name), xstrdup(value ? value : ""));
}

void headers_append_move(struct herald_headers *dst, struct herald_headers *src)
{
    for (size_t i = 0; i < src->n; i++)
        *VEC_PUSH(dst->e, dst->n, dst->cap) = src->e[i];
    src->n = 0;
}

bool headers_remove_at(struct herald_headers *h, size_t i)
{
    if (!h || i >= h->n)
        return false;
    free(h->e[i].name);
    free(h->e[i].value);
    memmove(&h->e[i], &h->e[i + 1], (h->n - i - 1) * sizeof(h->e[0]));
    h->n--;
    return true;
}

size_t herald_headers_remove(struct herald_headers *h, const char *name)
{
    size_t removed = 0;
    if (!h || !name)
        return 0;
    for (size_t i = 0; i < h->n;) {
        if (strcasecmp(h->e[i].name, name) == 0) {
            headers_remove_at(h, i);
            removed++;
        } else {
            i++;
        }
    }
    return removed;
}

void herald_headers_set(struct herald_headers *h, const char *name, const char *value)
{
    if (!h || !name)
        return;
    /* Keep the position of the first entry so a rewritten header does not
     * jump to the end (order matters for :pseudo-headers and for diffs). */
    for (size_t i = 0; i < h->n; i++) {
        if (strcasecmp(h->e[i].name, name) == 0) {
            char *v = xstrdup(value ? value : "");
            free(h->e[i].value);
            h->e[i].value = v;
            for (size_t j = i + 1; j < h->n;) {
                if (strcasecmp(h->e[j].name, name) == 0)
                    headers_remove_at(h, j);
                else
                    j++;
            }
            return;
        }
    }
    herald_headers_add(h, name, value);
}

size_t headers_byte_size(const struct herald_headers *h)
{
    size_t n = 0;
    for (size_t i = 0; h && i < h->n; i++)
        n += strlen(h->e[i].name) + strlen(h->e[i].value);
    return n;
}

struct herald_headers *headers_clone(const struct herald_headers *h)
{
    struct herald_headers *c = herald_headers_new();
    for (size_t i = 0; h && i < h->n; i++)
        headers_add_owned(c, xstrdup(h->e[i].name), xstrdup(h->e[i].value));
    return c;
}

size_t headers_count_name(const struct herald_headers *h, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; h && i < h->n; i++)
        if (strcasecmp(h->e[i].name, name) == 0)
            n++;
    return n;
}

bool headers_has_token(const struct herald_headers *h, const char *name, const char *tok)
{
    size_t tlen = strlen(tok);
    for (size_t i = 0; h && i < h->n; i++) {
        if (strcasecmp(h->e[i].name, name) != 0)
            continue;
        const char *p = h->e[i].value;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *start = p;
            while (*p && *p != ',')
                p++;
            const char *end = p;
            while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            if ((size_t)(end - start) == tlen && strncasecmp(start, tok, tlen) == 0)
                return true;
        }
    }
    return false;
}
