/* redis_proxy: prefix routes and the key hash (see router.h). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

static uint64_t shift_mix(uint64_t v)
{
    return v ^ (v >> 47);
}

uint64_t redis_murmur2_64(const void *data, size_t len, uint64_t seed)
{
    const uint64_t mul = 0xc6a4a7935bd1e995ull;
    const unsigned char *p = data;
    size_t whole = len & ~(size_t)7;
    uint64_t h = seed ^ (len * mul);

    for (size_t i = 0; i < whole; i += 8) {
        uint64_t w = 0;
        for (int b = 7; b >= 0; b--)    /* little-endian, whatever the machine */
            w = (w << 8) | p[i + (size_t)b];
        h ^= shift_mix(w * mul) * mul;
        h *= mul;
    }
    if (len & 7) {
        uint64_t tail = 0;
        for (size_t i = len; i > whole; i--)
            tail = (tail << 8) | p[i - 1];
        h ^= tail;
        h *= mul;
    }
    return shift_mix(shift_mix(h) * mul);
}

uint64_t redis_key_hash(const char *key, size_t len, bool hashtagging)
{
    size_t off, n;
    redis_hash_part(key, len, hashtagging, &off, &n);
    return redis_murmur2_64(key + off, n, STD_HASH_SEED);
}
