/* Load balancing over one worker's snapshot of a cluster. The state here is
 * per worker and rebuilt whenever the worker swaps in a new host set (also
 * when a host's health changes), so it needs no locking; host load
 * (rq_active + cx_active) is read with relaxed atomic loads from the upstream
 * code's counters.
 *
 * Hosts used (pick_level): the healthy hosts of the lowest priority level
 * that has any. Envoy's panic mode: when that level's healthy share is below
 * healthy_panic_threshold (default 50%) and the levels together are not 100%
 * available (Envoy's normalized total availability, with its overprovisioning
 * factor 1.4), every host of the level is used and each pick counts
 * cluster.<name>.lb_healthy_panic; with no healthy host anywhere, all hosts of
 * the lowest level, in panic. Envoy would also spill part of the load of a
 * partly healthy level to the next one (by overprovisioned health); herald
 * keeps to one level.
 * Locality-weighted LB (common_lb_config.locality_weighted_lb_config): within
 * that level, a locality is picked first, by its load_balancing_weight times
 * its availability (its healthy share, overprovisioned by 1.4, at most 1;
 * plain weights in panic), as Envoy does; then a host in it by lb_policy.
 * A locality without a weight gets nothing. Otherwise a host's weight is its
 * lb_endpoint's load_balancing_weight.
 * With lb_subset_config each subset gets a balancer of its own over its hosts
 * (lb_subset.c, through lb_new_opts: locality weighting only with the
 * subset config's locality_weight_aware). */
#include <string.h>

#include "common.h"
#include "herald/stats.h"
#include "upstream/cluster.h"
#include "upstream/lb_hash.h"

struct lb {
    enum lb_policy policy;
    struct herald_host **hosts; size_t n;  /* the level in use (no refs: the host set outlives us) */
    uint32_t *weight;
    bool weighted;                         /* weights differ */
    int64_t total;                         /* sum of weights */
    int64_t *cur;                          /* smooth weighted round robin */
    double *dcur;                          /* LEAST_REQUEST with weights */
    size_t next;                           /* round robin with equal weights */
    uint64_t rng;
    uint32_t choices;                      /* LEAST_REQUEST candidates */
    size_t *cand;
    struct lb_hash *hash;                  /* RING_HASH, MAGLEV */
    struct herald_stat *panic;             /* lb_healthy_panic while in panic mode, else NULL */
    /* locality-weighted: a balancer per locality of the level, picked by smooth WRR */
    struct lb **sub; size_t nsub;
    int64_t *sub_weight, *sub_cur, sub_total;
};

/* splitmix64, to turn a small seed into a well-mixed xorshift state */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* xorshift64* */
static uint64_t next_rand(struct lb *lb)
{
    uint64_t x = lb->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    lb->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* uniform in [0, n), by multiply-high (no modulo bias worth speaking of) */
static size_t rand_below(struct lb *lb, size_t n)
{
    return (size_t)(((unsigned __int128)next_rand(lb) * n) >> 64);
}

static uint64_t host_load(const struct herald_host *h)
{
    return atomic_load_explicit(&h->rq_active, memory_order_relaxed) +
           atomic_load_explicit(&h->cx_active, memory_order_relaxed);
}

#define OVERPROVISIONING 140   /* Envoy's default factor, percent */

/* The level in use and its hosts; see the top of the file. */
static void pick_level(struct lb *lb, const struct host_set *hs, double panic_threshold)
{
    uint32_t nlevels = 1, level = UINT32_MAX;

    for (size_t i = 0; i < hs->nhosts; i++)
        if (hs->hosts[i]->priority >= nlevels)
            nlevels = hs->hosts[i]->priority + 1;
    size_t *total = xcalloc(nlevels, sizeof(*total)), *healthy = xcalloc(nlevels, sizeof(*healthy));
    uint64_t availability = 0;
    bool panic;

    for (size_t i = 0; i < hs->nhosts; i++) {
        uint32_t p = hs->hosts[i]->priority;
        total[p]++;
        healthy[p] += host_healthy(hs->hosts[i]);
    }
    for (uint32_t p = 0; p < nlevels; p++) {
        if (total[p])
            availability += healthy[p] * OVERPROVISIONING / total[p] < 100
                                ? healthy[p] * OVERPROVISIONING / total[p] : 100;
        if (level == UINT32_MAX && healthy[p])
            level = p;
    }
    if (level == UINT32_MAX && panic_threshold <= 0) {
        panic = false;           /* panic mode disabled: nothing healthy, nothing chosen (503) */
    } else if (level == UINT32_MAX) {   /* nothing healthy: the lowest level with hosts, all of them */
        for (uint32_t p = 0; p < nlevels && level == UINT32_MAX; p++)
            if (total[p])
                level = p;
        panic = level != UINT32_MAX;
    } else {
        panic = availability < 100 && 100.0 * (double)healthy[level] / (double)total[level] < panic_threshold;
    }
    lb->hosts = xcalloc(hs->nhosts ? hs->nhosts : 1, sizeof(*lb->hosts));
    for (size_t i = 0; i < hs->nhosts; i++) {
        struct herald_host *h = hs->hosts[i];
        if (h->priority == level && (panic || host_healthy(h)))
            lb->hosts[lb->n++] = h;
    }
    if (panic && lb->n && lb->hosts[0]->cluster)
        lb->panic = lb->hosts[0]->cluster->stats.lb_healthy_panic;
    free(total);
    free(healthy);
}

/* nginx's smooth weighted round robin: everyone gains its weight, the
 * richest is picked and pays the total. Picks interleave evenly. */
static struct herald_host *pick_smooth_wrr(struct lb *lb)
{
    size_t best = 0;

    for (size_t i = 0; i < lb->n; i++) {
        lb->cur[i] += lb->weight[i];
        if (lb->cur[i] > lb->cur[best])
            best = i;
    }
    lb->cur[best] -= lb->total;
    return lb->hosts[best];
}

static struct herald_host *pick_round_robin(struct lb *lb)
{
    if (lb->weighted)
        return pick_smooth_wrr(lb);
    struct herald_host *h = lb->hosts[lb->next];
    if (++lb->next == lb->n)
        lb->next = 0;
    return h;
}

/* Envoy's RANDOM ignores weights; so does this. */
static struct herald_host *pick_random(struct lb *lb)
{
    return lb->hosts[rand_below(lb, lb->n)];
}

/* Equal weights: the least loaded of `choices` distinct random hosts (all of
 * them, from a random start, when there are no more hosts than choices). */
static struct herald_host *pick_p2c(struct lb *lb)
{
    size_t best;
    uint64_t best_load;

    if (lb->choices >= lb->n) {
        size_t start = rand_below(lb, lb->n);
        best = start;
        best_load = host_load(lb->hosts[start]);
        for (size_t k = 1; k < lb->n && best_load; k++) {
            size_t i = (start + k) % lb->n;
            uint64_t l = host_load(lb->hosts[i]);
            if (l < best_load) {
                best = i;
                best_load = l;
            }
        }
        return lb->hosts[best];
    }
    for (uint32_t k = 0; k < lb->choices; k++) {
        size_t i;
        bool seen;
        do {   /* choices < n, so this ends quickly */
            i = rand_below(lb, lb->n);
            seen = false;
            for (uint32_t j = 0; j < k && !seen; j++)
                seen = lb->cand[j] == i;
        } while (seen);
        lb->cand[k] = i;
    }
    best = lb->cand[0];
    best_load = host_load(lb->hosts[best]);
    for (uint32_t k = 1; k < lb->choices; k++) {
        uint64_t l = host_load(lb->hosts[lb->cand[k]]);
        if (l < best_load) {
            best = lb->cand[k];
            best_load = l;
        }
    }
    return lb->hosts[best];
}

/* Unequal weights: Envoy schedules by weight / (active + 1)^bias (bias 1.0)
 * with an EDF queue; smooth weighted round robin over those effective
 * weights, recomputed on every pick, gives the same shares. O(hosts). */
static struct herald_host *pick_weighted_least(struct lb *lb)
{
    double sum = 0;
    size_t best = 0;

    for (size_t i = 0; i < lb->n; i++) {
        double eff = (double)lb->weight[i] / (double)(host_load(lb->hosts[i]) + 1);
        sum += eff;
        lb->dcur[i] += eff;
        if (lb->dcur[i] > lb->dcur[best])
            best = i;
    }
    lb->dcur[best] -= sum;
    return lb->hosts[best];
}

static struct lb *lb_alloc(const struct cluster_cfg *cfg, unsigned seed)
{
    struct lb *lb = xcalloc(1, sizeof(*lb));
    lb->policy = cfg->lb_policy;
    lb->choices = cfg->least_request_choice_count >= 2 ? cfg->least_request_choice_count : 2;
    lb->rng = mix64(((uint64_t)seed << 32) ^ mono_ms() ^ (uintptr_t)lb);
    if (!lb->rng)
        lb->rng = 1;
    return lb;
}

static void init_weights(struct lb *lb, unsigned seed);

/* Locality-weighted LB: a sub-balancer per locality of lb's hosts, each with
 * its effective weight (see the top of the file). */
static void split_localities(struct lb *lb, const struct cluster_cfg *cfg, const struct host_set *hs, unsigned seed,
                             const double *scale)
{
    uint32_t level = lb->hosts[0]->priority, nloc = (uint32_t)cfg->nlocalities;
    size_t *total = xcalloc(nloc ? nloc : 1, sizeof(*total)), *healthy = xcalloc(nloc ? nloc : 1, sizeof(*healthy));
    for (size_t i = 0; i < hs->nhosts; i++) {
        const struct herald_host *h = hs->hosts[i];
        if (h->priority == level && h->locality < nloc) {
            total[h->locality]++;
            healthy[h->locality] += host_healthy(h);
        }
    }
    lb->sub = xcalloc(nloc ? nloc : 1, sizeof(*lb->sub));
    lb->sub_weight = xcalloc(nloc ? nloc : 1, sizeof(*lb->sub_weight));
    lb->sub_cur = xcalloc(nloc ? nloc : 1, sizeof(*lb->sub_cur));
    for (uint32_t l = 0; l < nloc; l++) {
        uint64_t avail = 100;   /* percent */
        if (!lb->panic && total[l])
            avail = healthy[l] * OVERPROVISIONING / total[l] < 100 ? healthy[l] * OVERPROVISIONING / total[l] : 100;
        int64_t w = (int64_t)cfg->localities[l].weight * (int64_t)avail;
        if (scale)   /* a subset's share of the locality (x1000: the shares are fractions) */
            w = (int64_t)((double)w * scale[l] * 1000.0 + 0.5);
        if (w <= 0)
            continue;
        struct lb *sub = lb_alloc(cfg, seed + l + 1);
        sub->hosts = xcalloc(lb->n, sizeof(*sub->hosts));
        for (size_t i = 0; i < lb->n; i++)
            if (lb->hosts[i]->locality == l)
                sub->hosts[sub->n++] = lb->hosts[i];
        if (sub->n == 0) {
            free(sub->hosts);
            free(sub);
            continue;
        }
        init_weights(sub, seed);
        lb->sub[lb->nsub] = sub;
        lb->sub_weight[lb->nsub++] = w;
        lb->sub_total += w;
    }
    if (lb->nsub == 0)
        lb->n = 0;   /* no locality has a weight: no host, as Envoy */
    free(total);
    free(healthy);
}

void *lb_new(const struct cluster_cfg *cfg, const struct host_set *hs, unsigned seed)
{
    return lb_new_opts(cfg, hs, seed, NULL);
}

void *lb_new_opts(const struct cluster_cfg *cfg, const struct host_set *hs, unsigned seed, const struct lb_opts *o)
{
    struct lb *lb = lb_alloc(cfg, seed);
    pick_level(lb, hs, cfg->healthy_panic_threshold);
    if (lb->n == 0)
        return lb;
    if (lb->policy == LB_RING_HASH || lb->policy == LB_MAGLEV) {
        lb->hash = lb_hash_new(cfg, lb->hosts, lb->n, hs);
        return lb;
    }
    if (o ? o->locality_weighted : cfg->locality_weighted)
        split_localities(lb, cfg, hs, seed, o ? o->locality_scale : NULL);
    else
        init_weights(lb, seed);
    return lb;
}

/* The per-host state of ROUND_ROBIN and LEAST_REQUEST over lb's hosts. */
static void init_weights(struct lb *lb, unsigned seed)
{
    lb->weight = xcalloc(lb->n, sizeof(*lb->weight));
    for (size_t i = 0; i < lb->n; i++) {
        lb->weight[i] = lb->hosts[i]->weight ? lb->hosts[i]->weight : 1;
        lb->total += lb->weight[i];
        lb->weighted |= lb->weight[i] != lb->weight[0];
    }
    lb->cur = xcalloc(lb->n, sizeof(*lb->cur));
    lb->dcur = xcalloc(lb->n, sizeof(*lb->dcur));
    lb->cand = xcalloc(lb->choices, sizeof(*lb->cand));
    /* Workers start at different points of the rotation, so N workers do not
     * all send their first connection to the same host. */
    if (lb->weighted)
        for (size_t i = 0; i < seed % lb->n; i++)
            pick_smooth_wrr(lb);
    else
        lb->next = seed % lb->n;
}

void lb_free(void *p)
{
    struct lb *lb = p;

    if (!lb)
        return;
    free(lb->hosts);
    free(lb->weight);
    free(lb->cur);
    free(lb->dcur);
    free(lb->cand);
    lb_hash_free(lb->hash);
    for (size_t i = 0; i < lb->nsub; i++)
        lb_free(lb->sub[i]);
    free(lb->sub);
    free(lb->sub_weight);
    free(lb->sub_cur);
    free(lb);
}

struct herald_host *lb_choose(void *p, const struct cluster_cfg *cfg, const struct host_set *hs,
                              uint64_t hash)
{
    return lb_choose_attempt(p, cfg, hs, hash, 0);
}

struct herald_host *lb_choose_attempt(void *p, const struct cluster_cfg *cfg, const struct host_set *hs,
                                      uint64_t hash, uint32_t attempt)
{
    struct lb *lb = p;

    if (!lb || lb->n == 0)
        return NULL;
    if (lb->panic)
        herald_stat_inc(lb->panic);
    if (lb->nsub) {
        /* the locality, by smooth weighted round robin over the effective weights */
        size_t best = 0;
        for (size_t i = 0; i < lb->nsub; i++) {
            lb->sub_cur[i] += lb->sub_weight[i];
            if (lb->sub_cur[i] > lb->sub_cur[best])
                best = i;
        }
        lb->sub_cur[best] -= lb->sub_total;
        lb = lb->sub[best];
    }
    if (lb->n == 1)
        return lb->hosts[0];
    if (lb->hash)
        return lb_hash_choose_attempt(lb->hash, hash ? hash : next_rand(lb), attempt);
    switch (lb->policy) {
    case LB_RANDOM: return pick_random(lb);
    case LB_LEAST_REQUEST: return lb->weighted ? pick_weighted_least(lb) : pick_p2c(lb);
    default: return pick_round_robin(lb);
    }
}
