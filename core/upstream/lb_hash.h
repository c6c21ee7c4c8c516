/* Consistent-hashing load balancers: RING_HASH (ketama-style ring with
 * ring_hash_lb_config's minimum/maximum_ring_size) and MAGLEV (Google's
 * Maglev lookup table, maglev_lb_config.table_size). Built over the hosts a
 * worker's lb.c uses (one priority level, healthy ones), immutable after. */
#ifndef HERALD_CORE_UPSTREAM_LB_HASH_H
#define HERALD_CORE_UPSTREAM_LB_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/bootstrap.h"

struct herald_host;
struct lb_hash;

struct host_set;

/* cfg->lb_policy is LB_RING_HASH or LB_MAGLEV; hosts: the usable hosts of one
 * priority level. all (may be NULL): the whole host set, so that RING_HASH
 * scales its ring over every host of that level, usable or not, and a host
 * that fails moves only its own keys (see lb_hash.c). */
struct lb_hash *lb_hash_new(const struct cluster_cfg *cfg, struct herald_host *const *hosts, size_t n,
                            const struct host_set *all);
/* The host for a request hash (the caller passes a random value when the
 * request had no hash key, as Envoy does). */
struct herald_host *lb_hash_choose(const struct lb_hash *h, uint64_t hash);
/* The same for the attempt-th re-pick after a retry host predicate refused
 * the earlier ones (0: lb_hash_choose). */
struct herald_host *lb_hash_choose_attempt(const struct lb_hash *h, uint64_t hash, uint32_t attempt);
void lb_hash_free(struct lb_hash *h);
/* Ring points or table slots (for tests and /clusters). */
size_t lb_hash_size(const struct lb_hash *h);

bool lb_hash_is_prime(uint64_t n);

#endif
