/* Allocation for plugins, which treat running out of memory as the end, as
 * the core does (its xmalloc family is not part of the SDK): header-only, so
 * a plugin's pure files (and their unit tests) need nothing else. */
#ifndef HERALD_PLUGIN_COMMON_XALLOC_H
#define HERALD_PLUGIN_COMMON_XALLOC_H

#include <stdlib.h>
#include <string.h>

/* Zeroed; never NULL (a zero size still gets a unique block). */
static inline void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        abort();
    return p;
}

/* s's first n bytes and a NUL. */
static inline char *xstrndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        abort();
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static inline char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

#endif
