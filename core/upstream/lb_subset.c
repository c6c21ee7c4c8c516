/* See lb_subset.h. A subset is named by its id: each key, '\0', the value's
 * canonical form, '\0', in key order; a request's criteria serialize the
 * same way, so finding its subset is one binary search over the sorted ids. */
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "herald/stats.h"
#include "upstream/cluster.h"
#include "upstream/lb_subset.h"

#define LB_NS "envoy.lb"

struct lb_subset {
    char *id; size_t idlen;
    struct host_set hs;                /* its hosts, in the host set's order; no references of its own */
};

struct lb_subsets {
    struct lb_subset *v; size_t n;     /* sorted by id */
    struct host_set dflt;              /* default_subset's hosts (only when a fallback may use it) */
    bool has_dflt;
};

struct subset_lb {
    const struct subset_cfg *cfg;
    const struct cluster_stats *st;
    const struct lb_subsets *ss;
    void **lbs;                        /* one balancer per subset */
    void *any;                         /* every host: ANY_ENDPOINT and panic_mode_any */
    void *dflt;                        /* the default subset */
};

/* ------------------------------------------------------------ ids */

/* heap: s is malloc'd (else it is the caller's stack buffer, or NULL) */
struct idbuf { char *s; size_t n, cap; bool heap; };

static void id_add(struct idbuf *b, const char *s, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        if (b->heap || !b->s) {
            b->s = xrealloc(b->s, b->cap);
        } else {
            char *h = xmalloc(b->cap);
            memcpy(h, b->s, b->n);
            b->s = h;
        }
        b->heap = true;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
}

static int cmp_id(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : alen < blen ? -1 : alen > blen;
}

/* ------------------------------------------------------------ building (main thread) */

struct entry { char *id; size_t idlen; size_t host; };

struct build {
    const struct cluster_cfg *cfg;
    struct entry *e; size_t n, cap;
};

/* Every combination of the selector's keys' values for host h (a list value
 * with list_as_any: one per element, as Envoy's extractSubsetMetadata). */
static void combine(struct build *b, const struct subset_selector_cfg *sel, const struct lb_kvs *meta,
                    size_t k, struct idbuf *id, size_t host)
{
    if (k == sel->nkeys) {
        struct entry *e = VEC_PUSH(b->e, b->n, b->cap);
        e->id = xmalloc(id->n ? id->n : 1);
        if (id->n)
            memcpy(e->id, id->s, id->n);
        e->idlen = id->n;
        e->host = host;
        return;
    }
    const struct lb_kv *kv = lbmd_kvs_find(meta, sel->keys[k]);
    if (!kv)
        return;                        /* the host lacks a key: not in this selector's subsets */
    size_t mark = id->n;
    bool expand = b->cfg->subset->list_as_any && kv->value[0] == 'l';
    for (size_t i = 0; i < (expand ? kv->nelems : 1); i++) {
        const char *v = expand ? kv->elems[i] : kv->value;
        id->n = mark;
        id_add(id, kv->key, strlen(kv->key) + 1);
        id_add(id, v, strlen(v) + 1);
        combine(b, sel, meta, k + 1, id, host);
    }
    id->n = mark;
}

static int cmp_entry(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = cmp_id(x->id, x->idlen, y->id, y->idlen);
    return c ? c : x->host < y->host ? -1 : x->host > y->host;
}

static void hs_push(struct host_set *hs, struct herald_host *h, size_t *cap)
{
    /* one host reaches a subset once, however many selectors or list elements lead there */
    if (hs->nhosts && hs->hosts[hs->nhosts - 1] == h)
        return;
    *VEC_PUSH(hs->hosts, hs->nhosts, *cap) = h;
    if (h->priority + 1 > hs->npriorities)
        hs->npriorities = h->priority + 1;
}

/* Envoy's metadataLabelMatch: every key of want is in the host's metadata
 * with an equal value (or, list_as_any, a list holding it). */
static bool host_matches(const struct herald_host *h, const struct lb_kvs *want, bool list_as_any)
{
    const struct lb_kvs *meta = h->ep ? &h->ep->lb_meta : NULL;
    for (size_t i = 0; i < want->n; i++) {
        const struct lb_kv *kv = meta ? lbmd_kvs_find(meta, want->v[i].key) : NULL;
        if (!kv)
            return false;
        bool eq = strcmp(kv->value, want->v[i].value) == 0;
        for (size_t j = 0; !eq && list_as_any && kv->value[0] == 'l' && j < kv->nelems; j++)
            eq = strcmp(kv->elems[j], want->v[i].value) == 0;
        if (!eq)
            return false;
    }
    return true;
}

static bool uses_default(const struct subset_cfg *s)
{
    bool used = s->fallback == SUBSET_DEFAULT_SUBSET;
    for (size_t i = 0; i < s->nselectors; i++)
        used |= s->selectors[i].fallback == SELECTOR_DEFAULT_SUBSET;
    return used;
}

struct lb_subsets *lb_subsets_build(const struct cluster_cfg *cfg, const struct host_set *hs)
{
    const struct subset_cfg *sc = cfg->subset;
    struct lb_subsets *out = xcalloc(1, sizeof(*out));
    struct build b = { .cfg = cfg };
    struct idbuf id = { 0 };
    static const struct lb_kvs none = { 0 };

    for (size_t h = 0; h < hs->nhosts; h++) {
        const struct lb_kvs *meta = hs->hosts[h]->ep ? &hs->hosts[h]->ep->lb_meta : &none;
        for (size_t s = 0; s < sc->nselectors; s++) {
            id.n = 0;
            combine(&b, &sc->selectors[s], meta, 0, &id, h);
        }
    }
    free(id.s);
    if (b.n)
        qsort(b.e, b.n, sizeof(*b.e), cmp_entry);
    size_t cap = 0, vcap = 0;
    for (size_t i = 0; i < b.n; i++) {
        struct lb_subset *cur = out->n ? &out->v[out->n - 1] : NULL;
        if (!cur || cmp_id(cur->id, cur->idlen, b.e[i].id, b.e[i].idlen) != 0) {
            cur = VEC_PUSH(out->v, out->n, vcap);
            memset(cur, 0, sizeof(*cur));
            cur->id = b.e[i].id;
            cur->idlen = b.e[i].idlen;
            cap = 0;
        } else {
            free(b.e[i].id);
        }
        hs_push(&cur->hs, hs->hosts[b.e[i].host], &cap);
    }
    free(b.e);
    if (uses_default(sc)) {
        out->has_dflt = true;
        cap = 0;
        for (size_t h = 0; h < hs->nhosts; h++)
            if (host_matches(hs->hosts[h], &sc->default_subset, sc->list_as_any))
                hs_push(&out->dflt, hs->hosts[h], &cap);
    }
    return out;
}

void lb_subsets_free(struct lb_subsets *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].id);
        free(s->v[i].hs.hosts);
    }
    free(s->v);
    free(s->dflt.hosts);
    free(s);
}

size_t lb_subsets_count(const struct lb_subsets *s)
{
    return s ? s->n : 0;
}

void lb_subsets_account(const struct cluster_stats *st, const struct lb_subsets *old,
                        const struct lb_subsets *now, int64_t *shown)
{
    size_t i = 0, j = 0, no = old ? old->n : 0, nn = now ? now->n : 0;
    while (i < no || j < nn) {
        int c = i == no ? 1 : j == nn ? -1 : cmp_id(old->v[i].id, old->v[i].idlen, now->v[j].id, now->v[j].idlen);
        if (c < 0) {
            herald_stat_inc(st->lb_subsets_removed);
            i++;
        } else if (c > 0) {
            herald_stat_inc(st->lb_subsets_created);
            j++;
        } else {
            i++;
            j++;
        }
    }
    if ((int64_t)nn != *shown)
        herald_gauge_add(st->lb_subsets_active, (int64_t)nn - *shown);
    *shown = (int64_t)nn;
}

/* ------------------------------------------------------------ balancers (worker) */

/* locality_weight_aware: the cluster's locality weights, each scaled (with
 * scale_locality_weight) by the share of that locality's hosts the subset
 * kept, as Envoy's determineLocalityWeights. */
static void *sub_lb_new(const struct cluster_cfg *cfg, const struct host_set *sub, const struct host_set *all,
                        unsigned seed)
{
    const struct subset_cfg *sc = cfg->subset;
    struct lb_opts o = { .locality_weighted = cfg->locality_weighted && sc->locality_weight_aware };
    double *scale = NULL;
    if (o.locality_weighted && sc->scale_locality_weight && cfg->nlocalities) {
        size_t *have = xcalloc(cfg->nlocalities, sizeof(*have)), *total = xcalloc(cfg->nlocalities, sizeof(*total));
        scale = xcalloc(cfg->nlocalities, sizeof(*scale));
        for (size_t i = 0; i < all->nhosts; i++)
            if (all->hosts[i]->locality < cfg->nlocalities)
                total[all->hosts[i]->locality]++;
        for (size_t i = 0; i < sub->nhosts; i++)
            if (sub->hosts[i]->locality < cfg->nlocalities)
                have[sub->hosts[i]->locality]++;
        for (size_t l = 0; l < cfg->nlocalities; l++)
            scale[l] = total[l] ? (double)have[l] / (double)total[l] : 0;
        o.locality_scale = scale;
        free(have);
        free(total);
    }
    void *lb = lb_new_opts(cfg, sub, seed, &o);
    free(scale);
    return lb;
}

static bool uses_any(const struct subset_cfg *s)
{
    bool used = s->fallback == SUBSET_ANY_ENDPOINT || s->panic_mode_any;
    for (size_t i = 0; i < s->nselectors; i++)
        used |= s->selectors[i].fallback == SELECTOR_ANY_ENDPOINT;
    return used;
}

struct subset_lb *subset_lb_new(const struct cluster_cfg *cfg, const struct host_set *hs, unsigned seed,
                                const struct cluster_stats *st)
{
    struct subset_lb *sl = xcalloc(1, sizeof(*sl));
    sl->cfg = cfg->subset;
    sl->st = st;
    sl->ss = hs->subsets;
    if (!sl->ss)
        return sl;
    sl->lbs = xcalloc(sl->ss->n ? sl->ss->n : 1, sizeof(*sl->lbs));
    for (size_t i = 0; i < sl->ss->n; i++)
        sl->lbs[i] = sub_lb_new(cfg, &sl->ss->v[i].hs, hs, seed);
    if (uses_any(sl->cfg))
        sl->any = sub_lb_new(cfg, hs, hs, seed);
    if (sl->ss->has_dflt)
        sl->dflt = sub_lb_new(cfg, &sl->ss->dflt, hs, seed);
    return sl;
}

void subset_lb_free(struct subset_lb *sl)
{
    if (!sl)
        return;
    for (size_t i = 0; sl->ss && i < sl->ss->n; i++)
        lb_free(sl->lbs[i]);
    free(sl->lbs);
    lb_free(sl->any);
    lb_free(sl->dflt);
    free(sl);
}

/* ------------------------------------------------------------ choosing (worker) */

static char meta_type(enum metadata_type t)
{
    switch (t) {
    case METADATA_NUMBER: return 'n';
    case METADATA_BOOL: return 'b';
    case METADATA_NULL: return 'z';
    default: return 's';
    }
}

size_t lb_match_build(struct lb_match *out, size_t cap, const struct lb_kvs *route, const struct metadata *dyn)
{
    size_t n = 0;
    for (size_t i = 0; route && i < route->n; i++) {
        if (n == cap)
            return SIZE_MAX;
        out[n++] = (struct lb_match){ route->v[i].key, route->v[i].value[0], route->v[i].value + 1 };
    }
    /* the stream's envoy.lb entries win over the route's (Envoy's mergeMatchCriteria) */
    for (size_t i = 0; dyn && i < dyn->n; i++) {
        const struct metadata_kv *kv = &dyn->v[i];
        if (strcmp(kv->ns, LB_NS) != 0)
            continue;
        struct lb_match m = { kv->key, meta_type(kv->type), kv->type == METADATA_NULL ? "" : kv->value };
        size_t at = 0;
        while (at < n && strcmp(out[at].key, m.key) < 0)
            at++;
        if (at < n && strcmp(out[at].key, m.key) == 0) {
            out[at] = m;
            continue;
        }
        if (n == cap)
            return SIZE_MAX;
        memmove(out + at + 1, out + at, (n - at) * sizeof(*out));
        out[at] = m;
        n++;
    }
    return n;
}

static const struct lb_subset *find_subset(const struct lb_subsets *ss, const struct lb_match *m, size_t n,
                                           size_t *index)
{
    char stack[512];                   /* a request's criteria fit here but for long values */
    struct idbuf id = { stack, 0, sizeof(stack), false };
    for (size_t i = 0; i < n; i++) {
        id_add(&id, m[i].key, strlen(m[i].key) + 1);
        id_add(&id, &m[i].type, 1);
        id_add(&id, m[i].text, strlen(m[i].text) + 1);
    }
    size_t lo = 0, hi = ss->n;
    const struct lb_subset *found = NULL;
    while (lo < hi && !found) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_id(ss->v[mid].id, ss->v[mid].idlen, id.s, id.n);
        if (c == 0) {
            found = &ss->v[mid];
            *index = mid;
        } else if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (id.heap)
        free(id.s);
    return found;
}

/* The selector whose keys are exactly the criteria's (its fallback_policy
 * decides when no subset matched), or NULL. */
static const struct subset_selector_cfg *find_selector(const struct subset_cfg *sc, const struct lb_match *m,
                                                       size_t n)
{
    for (size_t s = 0; s < sc->nselectors; s++) {
        const struct subset_selector_cfg *sel = &sc->selectors[s];
        bool same = sel->nkeys == n;
        for (size_t i = 0; same && i < n; i++)
            same = strcmp(sel->keys[i], m[i].key) == 0;
        if (same)
            return sel;
    }
    return NULL;
}

static struct herald_host *pick(void *lb, uint64_t hash, uint32_t attempt)
{
    return lb ? lb_choose_attempt(lb, NULL, NULL, hash, attempt) : NULL;
}

static void count(struct herald_stat *const *stat)
{
    if (stat)
        herald_stat_inc(*stat);
}

/* Envoy's chooseHostIteration. */
static struct herald_host *choose(struct subset_lb *sl, const struct lb_match *m, size_t n, uint64_t hash,
                                  uint32_t attempt)
{
    const struct subset_cfg *sc = sl->cfg;
    if (n) {
        size_t i;
        if (sl->ss && find_subset(sl->ss, m, n, &i)) {
            /* found: its answer stands, host or none */
            count(sl->st ? &sl->st->lb_subsets_selected : NULL);
            return pick(sl->lbs[i], hash, attempt);
        }
        const struct subset_selector_cfg *sel = find_selector(sc, m, n);
        switch (sel ? sel->fallback : SELECTOR_NOT_DEFINED) {
        case SELECTOR_NO_FALLBACK:
            return NULL;
        case SELECTOR_ANY_ENDPOINT:
            return pick(sl->any, hash, attempt);
        case SELECTOR_DEFAULT_SUBSET:
            return pick(sl->dflt, hash, attempt);
        case SELECTOR_KEYS_SUBSET: {
            /* again with only fallback_keys_subset's keys (fewer each time, so this ends) */
            struct lb_match fewer[LB_MATCH_MAX];
            size_t k = 0;
            for (size_t j = 0; j < n; j++)
                for (size_t f = 0; f < sel->nfallback_keys; f++)
                    if (strcmp(m[j].key, sel->fallback_keys[f]) == 0 && k < LB_MATCH_MAX)
                        fewer[k++] = m[j];
            return choose(sl, fewer, k, hash, attempt);
        }
        default:
            break;
        }
    }
    void *fallback = sc->fallback == SUBSET_ANY_ENDPOINT ? sl->any
                     : sc->fallback == SUBSET_DEFAULT_SUBSET ? sl->dflt : NULL;
    if (sc->fallback == SUBSET_NO_FALLBACK)
        return NULL;
    struct herald_host *h = pick(fallback, hash, attempt);
    if (h) {
        count(sl->st ? &sl->st->lb_subsets_fallback : NULL);
        return h;
    }
    if (sc->panic_mode_any && (h = pick(sl->any, hash, attempt)))
        count(sl->st ? &sl->st->lb_subsets_fallback_panic : NULL);
    return h;
}

struct herald_host *subset_lb_choose(struct subset_lb *sl, const struct lb_match *m, size_t n, uint64_t hash,
                                     uint32_t attempt)
{
    return sl ? choose(sl, m, n, hash, attempt) : NULL;
}
