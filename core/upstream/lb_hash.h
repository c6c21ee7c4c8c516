/* Consistent-hashing load balancers: RING_HASH (ketama-style ring with
 * ring_hash_lb_config's minimum/maximum_ring_size) and MAGLEV (Google's
 * Maglev lookup table, maglev_lb_config.table_size). Built over the hosts a
 * worker's lb.c uses (one priority level, healthy ones), immutable after. */
#ifndef HERALD_CORE_UPSTREAM_LB_HASH_H
#define HERALD_CORE_UPSTREAM_LB_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "config/bootstrap.h"

struct herald_host;
struct lb_hash;

/* cfg->lb_policy is LB_RING_HASH or LB_MAGLEV; n > 0. */
struct lb_hash *lb_hash_new(const struct cluster_cfg *cfg, struct herald_host *const *hosts, size_t n);
/* The host for a request hash (the caller passes a random value when the
 * request had no hash key, as Envoy does). */
struct herald_host *lb_hash_choose(const struct lb_hash *h, uint64_t hash);
void lb_hash_free(struct lb_hash *h);

#endif
