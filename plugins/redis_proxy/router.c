/* redis_proxy: prefix routes and the key hash (see router.h). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/upstream.h"
#include "router.h"

#define STD_HASH_SEED 0xc70f6907ull   /* libstdc++'s std::hash seed, Envoy's MurmurHash::STD_HASH_SEED */

static int longer_first(const void *a, const void *b)
{
    const struct redis_route *x = a, *y = b;
    return x->prefix_len < y->prefix_len ? 1 : x->prefix_len > y->prefix_len ? -1 : 0;
}

void redis_router_sort(struct redis_router *r)
{
    if (r->nroutes > 1)
        qsort(r->routes, r->nroutes, sizeof(*r->routes), longer_first);
}

const struct redis_route *redis_route_match(const struct redis_router *r, const char *key, size_t len)
{
    /* a scan, longest first: route tables are a handful of entries */
    for (size_t i = 0; i < r->nroutes; i++) {
        const struct redis_route *rt = &r->routes[i];
        if (rt->prefix_len > len)
            continue;
        if (r->case_insensitive ? strncasecmp(key, rt->prefix, rt->prefix_len) == 0
                                : memcmp(key, rt->prefix, rt->prefix_len) == 0)
            return rt;
    }
    return r->catch_all;
}

void redis_hash_part(const char *key, size_t len, bool hashtagging, size_t *off, size_t *n)
{
    *off = 0;
    *n = len;
    if (!hashtagging)
        return;
    /* Redis Cluster's rule: the first '{', the first '}' after it, and
     * something between them; else the whole key */
    const char *open = memchr(key, '{', len);
    if (!open)
        return;
    size_t start = (size_t)(open - key) + 1;
    const char *close = memchr(key + start, '}', len - start);
    if (!close || close == key + start)
        return;
    *off = start;
    *n = (size_t)(close - (key + start));
}

uint64_t redis_key_hash(const char *key, size_t len, bool hashtagging)
{
    size_t off, n;
    redis_hash_part(key, len, hashtagging, &off, &n);
    return herald_murmur2_64(key + off, n, STD_HASH_SEED);
}
