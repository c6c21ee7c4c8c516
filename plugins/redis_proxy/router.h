/* redis_proxy: prefix routes and the key hash. Pure: no SDK.
 *
 * A key goes to the route with the longest matching prefix (case-insensitive
 * when asked), else to the catch-all route, else nowhere. The host within the
 * route's cluster is picked by a 64-bit hash of the key (after remove_prefix;
 * with hash tagging only the part between the first '{' and the next '}'
 * when that part is not empty): libstdc++'s MurmurHash2 with seed 0xc70f6907,
 * the hash Envoy's redis proxy gives its RING_HASH / MAGLEV load balancers.
 * herald builds those the way Envoy does, so a key lands on the same server
 * behind herald as behind Envoy. */
#ifndef HERALD_PLUGIN_REDIS_ROUTER_H
#define HERALD_PLUGIN_REDIS_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct redis_mirror;             /* request_mirror_policy (redis_proxy.h) */

struct redis_route {
    char *prefix;
    size_t prefix_len;
    bool remove_prefix;
    size_t cluster;              /* index into the config's clusters */
    struct redis_mirror *mirrors;
    size_t nmirrors;
};

struct redis_router {
    struct redis_route *routes;  /* longest prefix first */
    size_t nroutes;
    struct redis_route *catch_all;
    bool case_insensitive;
};

/* Sorts the routes longest prefix first (call once routes are filled in). */
void redis_router_sort(struct redis_router *r);
/* The route for key, or NULL: "no upstream host". */
const struct redis_route *redis_route_match(const struct redis_router *r, const char *key, size_t len);
/* The part of key hashed: the hash tag when hashtagging and there is one. */
void redis_hash_part(const char *key, size_t len, bool hashtagging, size_t *off, size_t *n);
uint64_t redis_key_hash(const char *key, size_t len, bool hashtagging);

#endif
