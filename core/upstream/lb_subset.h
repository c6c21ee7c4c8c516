/* Subset load balancing (Envoy's Cluster.lb_subset_config).
 *
 * The hosts of a cluster are divided into subsets by their endpoint metadata
 * (filter_metadata["envoy.lb"]): every subset selector's keys, with each
 * combination of values some host has, make one subset. A request brings
 * match criteria (its route's metadata_match merged with the envoy.lb
 * dynamic metadata filters set on its stream); the subset with exactly
 * those keys and values gets the request, balanced over its hosts by the
 * cluster's lb_policy (its own priority levels, panic threshold, weights).
 * No such subset: the selector's fallback_policy for those keys, else the
 * cluster's (NO_FALLBACK, ANY_ENDPOINT, DEFAULT_SUBSET), then panic_mode_any.
 *
 * As in Envoy, a subset holds its hosts whatever their health: a subset whose
 * hosts all fail health checks stays selected and its balancer panics (or,
 * with healthy_panic_threshold 0, finds no host: 503); the fallback serves
 * only criteria no subset has.
 *
 * The subsets are built on the main thread with every host set it publishes
 * (so DNS answers, health changes and reloads rebuild them) and are part of
 * that immutable snapshot; each worker builds a balancer per subset when it
 * swaps the snapshot in, as it does for the cluster's own balancer. */
#ifndef HERALD_CORE_UPSTREAM_LB_SUBSET_H
#define HERALD_CORE_UPSTREAM_LB_SUBSET_H

#include <stddef.h>
#include <stdint.h>

#include "config/bootstrap.h"
#include "metadata.h"

struct host_set;
struct herald_host;
struct cluster_stats;

/* One criterion of a request: its value is the type letter of
 * config/lb_metadata.h and the text after it. */
struct lb_match { const char *key; char type; const char *text; };
/* the most criteria a request may bring (more: as if it brought none) */
#define LB_MATCH_MAX 32

/* Main thread: the subsets of hs (a host set of a cluster with cfg->subset),
 * freed with it. */
struct lb_subsets;
struct lb_subsets *lb_subsets_build(const struct cluster_cfg *cfg, const struct host_set *hs);
void lb_subsets_free(struct lb_subsets *s);
size_t lb_subsets_count(const struct lb_subsets *s);
/* Counts lb_subsets_created / lb_subsets_removed going from old (may be
 * NULL) to now, and sets lb_subsets_active (*shown: its last value). */
void lb_subsets_account(const struct cluster_stats *st, const struct lb_subsets *old,
                        const struct lb_subsets *now, int64_t *shown);

/* Worker: balancers over hs's subsets (hs outlives it). st: where
 * lb_subsets_selected / _fallback / _fallback_panic are counted (NULL: not). */
struct subset_lb;
struct subset_lb *subset_lb_new(const struct cluster_cfg *cfg, const struct host_set *hs, unsigned seed,
                                const struct cluster_stats *st);
void subset_lb_free(struct subset_lb *sl);

/* The request's criteria: route (a route's metadata_match, may be NULL) with
 * dyn's envoy.lb entries (may be NULL) added or replacing its keys, sorted
 * by key, into out (room for cap); how many, or SIZE_MAX when they do not
 * fit. */
size_t lb_match_build(struct lb_match *out, size_t cap, const struct lb_kvs *route, const struct metadata *dyn);
/* The host for criteria m[0..n) (n 0: none), or NULL. hash and attempt as
 * lb_choose_attempt. */
struct herald_host *subset_lb_choose(struct subset_lb *sl, const struct lb_match *m, size_t n, uint64_t hash,
                                     uint32_t attempt);

#endif
