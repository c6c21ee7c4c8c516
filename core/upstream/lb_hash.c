/* RING_HASH and MAGLEV, built the way Envoy builds them so that a request
 * hash lands on the same host as it would behind Envoy given the same hosts:
 *
 * Ring: every host gets scale * (weight / total weight) points, scale being
 * the smallest number that gives the lightest host a whole number of points
 * at minimum_ring_size, capped at maximum_ring_size. Point i of a host is
 * hash("<address>_<i>") (xxHash64 seed 0, or libstdc++'s 64-bit MurmurHash2
 * with seed 0xc70f6907). Running sums spread fractional points across hosts.
 * A request goes to the first point at or after its hash, wrapping around.
 *
 * One difference: Envoy builds the ring over the healthy hosts only, so when
 * one fails the others' shares are rescaled and they gain points, which moves
 * some keys between hosts that stayed. Here the scale and the running sums
 * come from every host of the level (healthy or not) and only the usable
 * hosts' points are placed: with all hosts usable the ring is Envoy's, and a
 * failing host's keys move to the next points while the rest stay put. A host
 * removed from the cluster rescales the ring as in Envoy.
 *
 * Maglev (Eisenbud et al., NSDI 2016, pseudocode listing 1): each host
 * walks its own permutation of the table, (offset + skip * j) mod M with
 * offset = xxHash64(address) mod M and skip = xxHash64(address, seed 1)
 * mod (M - 1) + 1, taking the first free slot on its turn; a host of weight
 * w takes a turn in w / max_weight of the rounds. A request goes to
 * table[hash mod M]. The same difference as for the ring: the table is built
 * over the whole level, and the slots of hosts that are not usable are then
 * handed out among the others, whose own slots do not change. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common.h"
#include "upstream/cluster.h"
#include "upstream/lb_hash.h"

#define RING_MIN_DEFAULT 1024
#define RING_MAX_DEFAULT (8u * 1024 * 1024)
#define MAGLEV_SIZE_DEFAULT 65537
#define MURMUR_STD_SEED 0xc70f6907ull

struct ring_entry {
    uint64_t hash;
    struct herald_host *host;
};

struct lb_hash {
    struct ring_entry *ring; size_t nring;     /* RING_HASH, sorted by hash */
    struct herald_host **table; uint64_t size; /* MAGLEV */
};

bool lb_hash_is_prime(uint64_t n)
{
    if (n < 2)
        return false;
    if (n % 2 == 0)
        return n == 2;
    for (uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0)
            return false;
    return true;
}

/* What a host is known by on the ring / in the table: its "ip:port" (Envoy's
 * address()->asString()), or its hostname with use_hostname_for_hashing. */
static const char *host_key(const struct cluster_cfg *cfg, const struct herald_host *h)
{
    if (cfg->hash_use_hostname && h->hostname && *h->hostname)
        return h->hostname;
    return h->addr_str ? h->addr_str : "";
}

static uint32_t host_weight(const struct herald_host *h)
{
    return h->weight ? h->weight : 1;
}

static int ring_cmp(const void *a, const void *b)
{
    const struct ring_entry *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash;
}

static int ptr_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

static bool is_used(struct herald_host *h, struct herald_host **used, size_t n)
{
    return bsearch(&h, used, n, sizeof(*used), ptr_cmp) != NULL;
}

/* The hosts the ring is scaled (the table built) over: those of all (the
 * host set) at the priority of the usable hosts, as long as every usable host
 * is among them; else just the usable ones. */
static struct herald_host **level_hosts(struct herald_host *const *hosts, size_t n,
                                           struct herald_host **used, const struct host_set *all,
                                           size_t *nref)
{
    struct herald_host **ref = xcalloc(n + (all ? all->nhosts : 0), sizeof(*ref));
    size_t m = 0, found = 0;

    for (size_t i = 0; all && i < all->nhosts; i++) {
        if (all->hosts[i]->priority != hosts[0]->priority)
            continue;
        ref[m++] = all->hosts[i];
        found += is_used(all->hosts[i], used, n);
    }
    if (found != n) {
        memcpy(ref, hosts, n * sizeof(*ref));
        m = n;
    }
    *nref = m;
    return ref;
}

/* ref[0..nref): the level's hosts; used[0..n): the usable ones, sorted by pointer. */
static void build_ring(struct lb_hash *lh, const struct cluster_cfg *cfg, struct herald_host **ref,
                       size_t nref, struct herald_host **used, size_t n)
{
    uint64_t min_size = cfg->ring_min_size ? cfg->ring_min_size : RING_MIN_DEFAULT;
    uint64_t max_size = cfg->ring_max_size ? cfg->ring_max_size : RING_MAX_DEFAULT;
    double total = 0, min_w = 1.0;

    for (size_t i = 0; i < nref; i++)
        total += host_weight(ref[i]);
    for (size_t i = 0; i < nref; i++)
        if (host_weight(ref[i]) / total < min_w)
            min_w = host_weight(ref[i]) / total;
    double scale = fmin(ceil(min_w * (double)min_size) / min_w, (double)max_size);
    size_t cap = (size_t)ceil(scale) + nref;   /* running sums may round one over per host */

    lh->ring = xcalloc(cap, sizeof(*lh->ring));
    double have = 0, want = 0;
    for (size_t i = 0; i < nref; i++) {
        want += scale * (host_weight(ref[i]) / total);
        if (!is_used(ref[i], used, n)) {
            /* not usable: its share of the running sums is kept, its points are not placed */
            while (have < want)
                have++;
            continue;
        }
        const char *key = host_key(cfg, ref[i]);
        size_t klen = strlen(key);
        char *buf = xmalloc(klen + 24);
        memcpy(buf, key, klen);
        buf[klen] = '_';
        for (uint64_t j = 0; have < want && lh->nring < cap; j++, have++) {
            int dl = snprintf(buf + klen + 1, 23, "%llu", (unsigned long long)j);
            size_t len = klen + 1 + (size_t)dl;
            uint64_t h = cfg->ring_murmur2 ? herald_murmur2_64(buf, len, MURMUR_STD_SEED)
                                           : XXH64(buf, len, 0);
            lh->ring[lh->nring++] = (struct ring_entry){ h, ref[i] };
        }
        free(buf);
    }
    qsort(lh->ring, lh->nring, sizeof(*lh->ring), ring_cmp);
}

struct maglev_entry {
    uint64_t offset, skip, next;
    uint64_t weight, target;   /* integer weights keep the turn-taking exact */
    bool used;
};

/* Rounds of turns until the table is full; hosts that are not used sit out. */
static uint64_t maglev_fill(struct lb_hash *lh, struct maglev_entry *e, struct herald_host **ref, size_t nref,
                            uint64_t max_w, uint64_t filled, uint64_t round)
{
    uint64_t m = lh->size;
    for (; filled < m; round++) {
        for (size_t i = 0; i < nref && filled < m; i++) {
            if (!e[i].used || round * e[i].weight < e[i].target)
                continue;
            e[i].target += max_w;
            uint64_t c;
            /* m is prime, so each host's permutation visits every slot */
            while (lh->table[c = (e[i].offset + e[i].skip * (e[i].next % m)) % m])
                e[i].next++;
            lh->table[c] = ref[i];
            e[i].next++;
            filled++;
        }
    }
    return round;
}

/* Like the ring: the table is first built over every host of the level, as
 * Envoy builds it when all are healthy; the slots of hosts that are not
 * usable are then handed out by more rounds among the usable ones, so their
 * own slots stay theirs. */
static void build_maglev(struct lb_hash *lh, const struct cluster_cfg *cfg, struct herald_host **ref,
                         size_t nref, struct herald_host **used, size_t n)
{
    uint64_t m = cfg->maglev_table_size ? cfg->maglev_table_size : MAGLEV_SIZE_DEFAULT;
    struct maglev_entry *e = xcalloc(nref, sizeof(*e));
    uint64_t max_w = 0;

    lh->size = m;
    lh->table = xcalloc(m, sizeof(*lh->table));
    for (size_t i = 0; i < nref; i++) {
        const char *key = host_key(cfg, ref[i]);
        e[i].offset = XXH64(key, strlen(key), 0) % m;
        e[i].skip = XXH64(key, strlen(key), 1) % (m - 1) + 1;
        e[i].weight = host_weight(ref[i]);
        e[i].used = true;
        if (e[i].weight > max_w)
            max_w = e[i].weight;
    }
    uint64_t round = maglev_fill(lh, e, ref, nref, max_w, 0, 1);
    if (nref != n) {
        uint64_t filled = m;
        for (size_t i = 0; i < nref; i++)
            e[i].used = is_used(ref[i], used, n);
        for (uint64_t c = 0; c < m; c++)
            if (!is_used(lh->table[c], used, n)) {
                lh->table[c] = NULL;
                filled--;
            }
        maglev_fill(lh, e, ref, nref, max_w, filled, round);
    }
    free(e);
}

struct lb_hash *lb_hash_new(const struct cluster_cfg *cfg, struct herald_host *const *hosts, size_t n,
                            const struct host_set *all)
{
    struct lb_hash *lh = xcalloc(1, sizeof(*lh));
    size_t nref;

    if (n == 0)
        return lh;
    struct herald_host **used = xcalloc(n, sizeof(*used));
    memcpy(used, hosts, n * sizeof(*used));
    qsort(used, n, sizeof(*used), ptr_cmp);
    struct herald_host **ref = level_hosts(hosts, n, used, all, &nref);
    if (cfg->lb_policy == LB_MAGLEV)
        build_maglev(lh, cfg, ref, nref, used, n);
    else
        build_ring(lh, cfg, ref, nref, used, n);
    free(ref);
    free(used);
    return lh;
}

struct herald_host *lb_hash_choose(const struct lb_hash *lh, uint64_t hash)
{
    return lb_hash_choose_attempt(lh, hash, 0);
}

/* splitmix64's finalizer: one attempt number changes every bit of the hash */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* As Envoy when a retry host predicate rejected the pick: the ring steps
 * `attempt` points past the hash's own (so a rejected host's neighbour on
 * the ring answers, unless the same host owns that point too), Maglev looks
 * the hash up again mixed with the attempt. Attempt 0 is the plain pick. */
struct herald_host *lb_hash_choose_attempt(const struct lb_hash *lh, uint64_t hash, uint32_t attempt)
{
    if (!lh)
        return NULL;
    if (lh->table)
        return lh->table[(attempt ? hash ^ mix(attempt) : hash) % lh->size];
    if (lh->nring == 0)
        return NULL;
    /* the first point at or after hash; past the last one, the first */
    size_t lo = 0, hi = lh->nring;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (lh->ring[mid].hash < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lh->ring[((lo == lh->nring ? 0 : lo) + attempt) % lh->nring].host;
}

size_t lb_hash_size(const struct lb_hash *lh)
{
    return !lh ? 0 : lh->table ? (size_t)lh->size : lh->nring;
}

void lb_hash_free(struct lb_hash *lh)
{
    if (!lh)
        return;
    free(lh->ring);
    free(lh->table);
    free(lh);
}
