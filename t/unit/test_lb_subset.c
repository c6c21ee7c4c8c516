/* Subset load balancing (upstream/lb_subset.c): clusters read from YAML by
 * the real config loader, hosts made by hand over their endpoints, subsets
 * built as the main thread builds them and picked from as a worker does. */
#include <event2/thread.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "metadata.h"
#include "stats.h"
#include "tap.h"
#include "config/bootstrap.h"
#include "config/tree.h"
#include "upstream/cluster.h"
#include "upstream/lb_subset.h"

#define MAXH 16

struct sfix {
    struct bootstrap *b;
    struct cluster_cfg *cfg;
    struct herald_host hosts[MAXH];
    struct herald_host *ptrs[MAXH];
    struct host_set hs;
    struct cluster_stats st;
    struct subset_lb *sl;
};

static const char *head =
    "static_resources:\n"
    "  clusters:\n"
    "  - name: c\n";

/* A cluster from YAML (the text after "- name: c"), its hosts h0..hN in
 * config order (addr_str "hN"), their subsets and a worker's balancers. */
static int sfix_load(struct sfix *f, const char *cluster_yaml, const char *stat_prefix)
{
    memset(f, 0, sizeof(*f));
    char *y = xasprintf("%s%s", head, cluster_yaml), *err = NULL;
    struct cfg_diag d = { 0 };
    struct cfg_doc *doc = cfg_load_string(y, strlen(y), "s.yaml", &err);
    free(y);
    if (!doc) {
        printf("# %s\n", err);
        free(err);
        return -1;
    }
    f->b = bootstrap_load(doc, &d);
    if (!f->b) {
        printf("# %s\n", d.nerrors ? d.errors[0] : "?");
        diag_free(&d);
        return -1;
    }
    diag_free(&d);
    f->cfg = &f->b->clusters[0];
    size_t n = 0;
    for (size_t l = 0; l < f->cfg->nlocalities; l++)
        for (size_t e = 0; e < f->cfg->localities[l].nendpoints && n < MAXH; e++, n++) {
            struct herald_host *h = &f->hosts[n];
            ref_init(&h->ref);
            h->addr_str = xasprintf("h%zu", n);
            h->ep = &f->cfg->localities[l].endpoints[e];
            h->weight = h->ep->weight;
            h->priority = f->cfg->localities[l].priority;
            h->locality = (uint32_t)l;
            h->locality_weight = f->cfg->localities[l].weight;
            f->ptrs[n] = h;
        }
    ref_init(&f->hs.ref);
    f->hs.hosts = f->ptrs;
    f->hs.nhosts = n;
    if (stat_prefix) {
        f->st.lb_subsets_active = herald_gauge(stat_prefix, "lb_subsets_active");
        f->st.lb_subsets_created = herald_counter(stat_prefix, "lb_subsets_created");
        f->st.lb_subsets_removed = herald_counter(stat_prefix, "lb_subsets_removed");
        f->st.lb_subsets_selected = herald_counter(stat_prefix, "lb_subsets_selected");
        f->st.lb_subsets_fallback = herald_counter(stat_prefix, "lb_subsets_fallback");
        f->st.lb_subsets_fallback_panic = herald_counter(stat_prefix, "lb_subsets_fallback_panic");
    }
    return 0;
}

/* (Re)builds the subsets and the balancers, as a host set change does. */
static void sfix_build(struct sfix *f)
{
    subset_lb_free(f->sl);
    lb_subsets_free(f->hs.subsets);
    f->hs.subsets = f->cfg->subset ? lb_subsets_build(f->cfg, &f->hs) : NULL;
    f->sl = subset_lb_new(f->cfg, &f->hs, 0, f->st.lb_subsets_selected ? &f->st : NULL);
}

static void sfix_free(struct sfix *f)
{
    subset_lb_free(f->sl);
    lb_subsets_free(f->hs.subsets);
    for (size_t i = 0; i < MAXH; i++)
        free(f->hosts[i].addr_str);
    if (f->b)
        bootstrap_free(f->b);
}

/* Criteria from a YAML flow mapping (the route's) and an optional dynamic
 * entry "key=value" of a kind (the stream's envoy.lb). */
struct crit { struct lb_kvs route; struct metadata dyn; struct lb_match m[LB_MATCH_MAX]; size_t n; };

static void crit_make(struct crit *c, const char *route_yaml, const char *dkey, const char *dval,
                      enum metadata_type dtype)
{
    memset(c, 0, sizeof(*c));
    if (route_yaml) {
        char *err = NULL;
        struct cfg_doc *doc = cfg_load_string(route_yaml, strlen(route_yaml), "crit.yaml", &err);
        if (!doc || lbmd_kvs_from_struct(doc->root, &c->route) < 0)
            printf("# bad criteria %s: %s\n", route_yaml, err ? err : "not a mapping");
        free(err);
        cfg_doc_free(doc);
    }
    if (dkey)
        metadata_set_typed(&c->dyn, "envoy.lb", dkey, dval, dtype);
    metadata_set(&c->dyn, "other.ns", "version", "9.9");   /* other namespaces never count */
    c->n = lb_match_build(c->m, LB_MATCH_MAX, &c->route, &c->dyn);
}

static void crit_free(struct crit *c)
{
    lbmd_kvs_free(&c->route);
    metadata_free(&c->dyn);
}

static int index_of(struct sfix *f, const struct herald_host *h)
{
    for (int i = 0; i < MAXH; i++)
        if (h == &f->hosts[i])
            return i;
    return -1;
}

/* The set of hosts (bit i: host i) n picks with these criteria reach; bit 31:
 * some pick found no host. */
static unsigned picks(struct sfix *f, const char *route_yaml, const char *dkey, const char *dval,
                      enum metadata_type dtype, int n, int *counts)
{
    struct crit c;
    unsigned set = 0;
    crit_make(&c, route_yaml, dkey, dval, dtype);
    for (int i = 0; i < n; i++) {
        int k = index_of(f, subset_lb_choose(f->sl, c.m, c.n, 0, 0));
        set |= k < 0 ? 1u << 31 : 1u << k;
        if (counts && k >= 0)
            counts[k]++;
    }
    crit_free(&c);
    return set;
}

#define ROUTE(y) picks(f, (y), NULL, NULL, METADATA_STRING, 40, NULL)

static int64_t stat_of(const char *name)
{
    bool found = false;
    int64_t v = stats_lookup(name, &found);
    return found ? v : -1;
}

#define EP(port, md)                                                                                    \
    "        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: " #port "}}}\n"   \
    "          metadata: {filter_metadata: {envoy.lb: " md "}}\n"

#define ENDPOINTS(...)                                                                                  \
    "    load_assignment:\n"                                                                            \
    "      cluster_name: c\n"                                                                           \
    "      endpoints:\n"                                                                                \
    "      - lb_endpoints:\n" __VA_ARGS__

/* Envoy's documented example (subsets.rst): hosts v1.0/prod x2, v1.1/canary,
 * v1.2-pre/dev; selectors [v, stage] and [stage] (NO_FALLBACK); fallback
 * DEFAULT_SUBSET stage: prod. */
static void test_envoy_example(void)
{
    struct sfix fx, *f = &fx;
    int ok_load = sfix_load(f,
        "    lb_policy: ROUND_ROBIN\n"
        "    lb_subset_config:\n"
        "      fallback_policy: DEFAULT_SUBSET\n"
        "      default_subset: {stage: prod}\n"
        "      subset_selectors:\n"
        "      - keys: [v, stage]\n"
        "      - keys: [stage]\n"
        "        fallback_policy: NO_FALLBACK\n"
        ENDPOINTS(EP(1, "{v: '1.0', stage: prod}") EP(2, "{v: '1.0', stage: prod}")
                  EP(3, "{v: '1.1', stage: canary}") EP(4, "{v: 1.2-pre, stage: dev}")),
        "cluster.subset_example");
    ok(ok_load == 0, "example: the config loads");
    if (ok_load)
        return;
    sfix_build(f);
    /* subsets: v+stage x3 (1.0/prod, 1.1/canary, 1.2-pre/dev) and stage x3 */
    is_int((int)lb_subsets_count(f->hs.subsets), 6, "example: 6 subsets");
    is_int((int)ROUTE("{stage: canary}"), 0x4, "example: stage: canary -> host3");
    is_int((int)ROUTE("{v: 1.2-pre, stage: dev}"), 0x8, "example: v: 1.2-pre, stage: dev -> host4");
    is_int((int)ROUTE("{v: '1.0'}"), 0x3, "example: v: 1.0 alone -> fallback host1, host2");
    is_int((int)ROUTE("{other: x}"), 0x3, "example: other: x -> fallback host1, host2");
    is_int((int)picks(f, NULL, NULL, NULL, METADATA_STRING, 40, NULL), 0x3, "example: no criteria -> fallback");
    is_int((int)ROUTE("{stage: test}"), (int)(1u << 31), "example: stage: test -> the selector's NO_FALLBACK");
    int counts[MAXH] = { 0 };
    picks(f, "{v: '1.0', stage: prod}", NULL, NULL, METADATA_STRING, 100, counts);
    is_int(counts[0], 50, "example: round robin in a subset: host1 half");
    is_int(counts[1], 50, "example: ... host2 the other half");
    ok(stat_of("cluster.subset_example.lb_subsets_selected") >= 4, "example: selections counted (%lld)",
       (long long)stat_of("cluster.subset_example.lb_subsets_selected"));
    ok(stat_of("cluster.subset_example.lb_subsets_fallback") >= 120, "example: fallbacks counted (%lld)",
       (long long)stat_of("cluster.subset_example.lb_subsets_fallback"));
    is_int((int)stat_of("cluster.subset_example.lb_subsets_fallback_panic"), 0, "example: no panic fallback");
    sfix_free(f);
}

/* The request's envoy.lb dynamic metadata over the route's criteria; kinds
 * matter (the string "1" is not the number 1; 1 is 1.0). */
static void test_criteria(void)
{
    struct sfix fx, *f = &fx;
    int rc = sfix_load(f,
        "    lb_subset_config:\n"
        "      subset_selectors:\n"
        "      - keys: [version]\n"
        "      - keys: [version, stage]\n"
        ENDPOINTS(EP(1, "{version: '1.0', stage: prod}") EP(2, "{version: 2, stage: canary}")
                  EP(3, "{version: true}")),
        NULL);
    ok(rc == 0, "criteria: the config loads");
    if (rc)
        return;
    sfix_build(f);
    is_int((int)ROUTE("{version: '1.0'}"), 0x1, "criteria: string 1.0");
    is_int((int)ROUTE("{version: 1.0}"), (int)(1u << 31), "criteria: the number 1.0 is not the string (NO_FALLBACK)");
    is_int((int)ROUTE("{version: 2.0}"), 0x2, "criteria: the number 2.0 is the number 2");
    is_int((int)ROUTE("{version: '2'}"), (int)(1u << 31), "criteria: the string '2' is not the number 2");
    is_int((int)ROUTE("{version: true}"), 0x4, "criteria: a bool");
    is_int((int)picks(f, "{version: '1.0'}", "version", "2", METADATA_NUMBER, 10, NULL), 0x2,
           "criteria: dynamic metadata (number 2) replaces the route's version");
    is_int((int)picks(f, "{version: '1.0'}", "version", "2", METADATA_STRING, 10, NULL), (int)(1u << 31),
           "criteria: ... as a string it selects nothing");
    is_int((int)picks(f, "{version: '1.0'}", "stage", "prod", METADATA_STRING, 10, NULL), 0x1,
           "criteria: dynamic metadata adds stage to the route's version");
    is_int((int)picks(f, NULL, "version", "true", METADATA_BOOL, 10, NULL), 0x4,
           "criteria: dynamic metadata alone (a bool)");
    is_int((int)picks(f, "{version: '1.0', stage: canary}", NULL, NULL, METADATA_STRING, 10, NULL), (int)(1u << 31),
           "criteria: keys and values must all match one subset");
    struct lb_kvs a = { 0 }, b = { 0 }, m = { 0 };
    char *err = NULL;
    const char *ya = "{v: '1.0', stage: prod}", *yb = "{stage: canary, x: [1, 'a']}";
    struct cfg_doc *da = cfg_load_string(ya, strlen(ya), "a.yaml", &err);
    struct cfg_doc *db = cfg_load_string(yb, strlen(yb), "b.yaml", &err);
    lbmd_kvs_from_struct(da->root, &a);
    lbmd_kvs_from_struct(db->root, &b);
    lbmd_kvs_merge(&m, &a, &b);
    is_int((int)m.n, 3, "merge: v, stage and x");
    is_str(m.n == 3 ? m.v[0].key : NULL, "stage", "merge: sorted by key");
    is_str(m.n == 3 ? m.v[0].value : NULL, "scanary", "merge: the weighted cluster's stage wins");
    is_str(m.n == 3 ? m.v[1].value : NULL, "s1.0", "merge: the route's v stays");
    is_str(m.n == 3 ? m.v[2].value : NULL, "l2:n12:sa", "merge: a list, canonical");
    lbmd_kvs_free(&a);
    lbmd_kvs_free(&b);
    lbmd_kvs_free(&m);
    cfg_doc_free(da);
    cfg_doc_free(db);
    sfix_free(f);
}

/* Per-selector fallback policies (ANY_ENDPOINT, DEFAULT_SUBSET, KEYS_SUBSET)
 * over the cluster's, panic_mode_any, list_as_any. */
static void test_fallbacks(void)
{
    struct sfix fx, *f = &fx;
    int rc = sfix_load(f,
        "    lb_subset_config:\n"
        "      fallback_policy: NO_FALLBACK\n"
        "      default_subset: {stage: prod}\n"
        "      list_as_any: true\n"
        "      subset_selectors:\n"
        "      - keys: [version]\n"
        "        fallback_policy: ANY_ENDPOINT\n"
        "      - keys: [stage]\n"
        "        fallback_policy: DEFAULT_SUBSET\n"
        "      - keys: [version, hw]\n"
        "        fallback_policy: KEYS_SUBSET\n"
        "        fallback_keys_subset: [version]\n"
        ENDPOINTS(EP(1, "{version: ['1.0', '1.1'], stage: prod, hw: c64}") EP(2, "{version: '1.1', stage: dev}")
                  EP(3, "{version: '2.0', stage: prod}")),
        "cluster.subset_fb");
    ok(rc == 0, "fallbacks: the config loads");
    if (rc)
        return;
    sfix_build(f);
    is_int((int)ROUTE("{version: '1.0'}"), 0x1, "list_as_any: host1 is in the 1.0 subset ...");
    is_int((int)ROUTE("{version: '1.1'}"), 0x3, "list_as_any: ... and in 1.1's");
    is_int((int)ROUTE("{version: '9'}"), 0x7, "selector ANY_ENDPOINT: any host");
    is_int((int)ROUTE("{stage: test}"), 0x5, "selector DEFAULT_SUBSET: the stage: prod hosts");
    is_int((int)ROUTE("{version: '1.1', hw: c64}"), 0x1, "version + hw: its subset");
    is_int((int)ROUTE("{version: '1.1', hw: c32}"), 0x3, "selector KEYS_SUBSET: again with version only");
    is_int((int)ROUTE("{other: x}"), (int)(1u << 31), "no selector with these keys: the cluster's NO_FALLBACK");
    is_int((int)stat_of("cluster.subset_fb.lb_subsets_fallback"), 0, "a selector's fallback is not lb_subsets_fallback");
    sfix_free(f);

    /* panic_mode_any: the default subset has no host */
    rc = sfix_load(f,
        "    lb_subset_config:\n"
        "      fallback_policy: DEFAULT_SUBSET\n"
        "      default_subset: {stage: none}\n"
        "      panic_mode_any: true\n"
        "      subset_selectors: [{keys: [version]}]\n"
        ENDPOINTS(EP(1, "{version: '1.0'}") EP(2, "{version: '2.0'}")),
        "cluster.subset_panic");
    ok(rc == 0, "panic_mode_any: the config loads");
    if (rc)
        return;
    sfix_build(f);
    is_int((int)ROUTE("{version: '3'}"), 0x3, "panic_mode_any: an empty default subset gives any host");
    is_int((int)stat_of("cluster.subset_panic.lb_subsets_fallback_panic"), 40, "panic_mode_any: counted");
    is_int((int)stat_of("cluster.subset_panic.lb_subsets_fallback"), 0, "panic_mode_any: no plain fallback");
    sfix_free(f);
}

/* Health: a subset keeps its unhealthy hosts (Envoy's); its balancer
 * panics, or finds none with healthy_panic_threshold 0, and then no fallback
 * is taken. The default subset emptied of healthy hosts falls to
 * panic_mode_any. */
static void test_health(void)
{
    struct sfix fx, *f = &fx;
    int rc = sfix_load(f,
        "    common_lb_config: {healthy_panic_threshold: {value: 0}}\n"
        "    lb_subset_config:\n"
        "      fallback_policy: DEFAULT_SUBSET\n"
        "      default_subset: {default: 'true'}\n"
        "      panic_mode_any: true\n"
        "      subset_selectors: [{keys: [version]}]\n"
        ENDPOINTS(EP(1, "{version: '1.0'}") EP(2, "{version: '1.0'}") EP(3, "{default: 'true'}")
                  EP(4, "{version: '2.0'}")),
        "cluster.subset_health");
    ok(rc == 0, "health: the config loads");
    if (rc)
        return;
    atomic_store(&f->hosts[0].health, HOST_FAILED_ACTIVE_HC);
    sfix_build(f);
    is_int((int)ROUTE("{version: '1.0'}"), 0x2, "health: the subset's unhealthy host gets nothing");
    atomic_store(&f->hosts[1].health, HOST_FAILED_OUTLIER);
    sfix_build(f);
    is_int((int)ROUTE("{version: '1.0'}"), (int)(1u << 31),
           "health: all of a subset unhealthy, panic threshold 0: no host, and no fallback");
    atomic_store(&f->hosts[2].health, HOST_FAILED_ACTIVE_HC);
    sfix_build(f);
    is_int((int)ROUTE("{version: 'x'}"), 0x8, "health: default subset all unhealthy: panic_mode_any's healthy host");
    is_int((int)stat_of("cluster.subset_health.lb_subsets_fallback_panic"), 40, "health: counted as fallback_panic");
    sfix_free(f);

    rc = sfix_load(f,
        "    lb_subset_config:\n"
        "      fallback_policy: ANY_ENDPOINT\n"
        "      subset_selectors: [{keys: [version]}]\n"
        ENDPOINTS(EP(1, "{version: '1.0'}") EP(2, "{version: '2.0'}")),
        NULL);
    if (rc)
        return;
    f->cfg->healthy_panic_threshold = 50;
    atomic_store(&f->hosts[0].health, HOST_FAILED_ACTIVE_HC);
    sfix_build(f);
    is_int((int)ROUTE("{version: '1.0'}"), 0x1, "health: default panic threshold: the subset's only host, in panic");
    sfix_free(f);
}

/* Every lb_policy balances inside a subset, over its hosts only. */
static void test_policies(void)
{
    static const char *const policies[] = { "ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV" };
    for (size_t p = 0; p < ARRAY_SIZE(policies); p++) {
        struct sfix fx, *f = &fx;
        char *y = xasprintf(
            "    lb_policy: %s\n"
            "    lb_subset_config:\n"
            "      subset_selectors: [{keys: [version]}]\n"
            ENDPOINTS(EP(1, "{version: a}") EP(2, "{version: b}") EP(3, "{version: a}") EP(4, "{version: b}")
                      EP(5, "{version: a}")),
            policies[p]);
        int rc = sfix_load(f, y, NULL);
        free(y);
        ok(rc == 0, "%s: the config loads", policies[p]);
        if (rc)
            continue;
        sfix_build(f);
        struct crit c;
        crit_make(&c, "{version: a}", NULL, NULL, METADATA_STRING);
        unsigned set = 0;
        for (uint64_t i = 0; i < 300; i++) {
            int k = index_of(f, subset_lb_choose(f->sl, c.m, c.n, i * 0x9e3779b97f4a7c15ull + 1, 0));
            set |= k < 0 ? 1u << 31 : 1u << k;
        }
        is_int((int)set, 0x15, "%s: only (and every one of) the subset's hosts", policies[p]);
        if (p >= 3) {   /* a hash always lands on the same host of the subset */
            struct herald_host *h1 = subset_lb_choose(f->sl, c.m, c.n, 42, 0), *h2 = subset_lb_choose(f->sl, c.m, c.n, 42, 0);
            ok(h1 && h1 == h2, "%s: the same hash, the same host", policies[p]);
        }
        crit_free(&c);
        sfix_free(f);
    }
}

/* Membership changes: subsets appear and go with their hosts (counted), a
 * subset's hosts follow. */
static void test_rebuild(void)
{
    struct sfix fx, *f = &fx;
    int rc = sfix_load(f,
        "    lb_subset_config:\n"
        "      subset_selectors: [{keys: [version]}]\n"
        ENDPOINTS(EP(1, "{version: a}") EP(2, "{version: b}") EP(3, "{version: c}")),
        "cluster.subset_rebuild");
    ok(rc == 0, "rebuild: the config loads");
    if (rc)
        return;
    int64_t shown = 0;
    struct lb_subsets *first = lb_subsets_build(f->cfg, &f->hs);
    lb_subsets_account(&f->st, NULL, first, &shown);
    is_int((int)stat_of("cluster.subset_rebuild.lb_subsets_active"), 3, "rebuild: 3 active");
    is_int((int)stat_of("cluster.subset_rebuild.lb_subsets_created"), 3, "rebuild: 3 created");
    f->hs.nhosts = 2;   /* host c gone (a DNS answer) */
    struct lb_subsets *second = lb_subsets_build(f->cfg, &f->hs);
    lb_subsets_account(&f->st, first, second, &shown);
    is_int((int)stat_of("cluster.subset_rebuild.lb_subsets_active"), 2, "rebuild: 2 active");
    is_int((int)stat_of("cluster.subset_rebuild.lb_subsets_removed"), 1, "rebuild: 1 removed");
    f->hs.nhosts = 3;
    struct lb_subsets *third = lb_subsets_build(f->cfg, &f->hs);
    lb_subsets_account(&f->st, second, third, &shown);
    is_int((int)stat_of("cluster.subset_rebuild.lb_subsets_created"), 4, "rebuild: c's subset created again");
    lb_subsets_account(&f->st, third, third, &shown);
    is_int((int)stat_of("cluster.subset_rebuild.lb_subsets_created"), 4, "rebuild: same subsets, nothing counted");
    is_int((int)stat_of("cluster.subset_rebuild.lb_subsets_active"), 3, "rebuild: 3 active again");
    f->hs.nhosts = 0;   /* every host gone */
    struct lb_subsets *none = lb_subsets_build(f->cfg, &f->hs);
    lb_subsets_account(&f->st, third, none, &shown);
    is_int((int)lb_subsets_count(none), 0, "rebuild: no hosts, no subsets");
    is_int((int)stat_of("cluster.subset_rebuild.lb_subsets_active"), 0, "rebuild: none active");
    is_int((int)stat_of("cluster.subset_rebuild.lb_subsets_removed"), 4, "rebuild: all three removed");
    struct subset_lb *empty = subset_lb_new(f->cfg, &f->hs, 0, NULL);
    f->hs.subsets = none;
    subset_lb_free(empty);
    empty = subset_lb_new(f->cfg, &f->hs, 0, NULL);
    ok(subset_lb_choose(empty, NULL, 0, 0, 0) == NULL, "rebuild: an empty cluster picks nothing");
    subset_lb_free(empty);
    f->hs.subsets = NULL;
    lb_subsets_free(none);
    lb_subsets_free(first);
    lb_subsets_free(second);
    lb_subsets_free(third);
    sfix_free(f);
}

/* locality_weight_aware: the cluster's locality weights in a subset;
 * scale_locality_weight: times the share of the locality's hosts kept. */
static void test_localities(void)
{
    static const char *const cfgs[3] = { "", "      locality_weight_aware: true\n",
                                         "      locality_weight_aware: true\n      scale_locality_weight: true\n" };
    /* of 800, to host 0 (locality 0, weight 3, 1 of its 2 hosts in the subset) against hosts 2-4
     * (locality 1, weight 1, 3 of its 4): plain round robin 1/4; weights 3:1; scaled 1.5:0.75 */
    int expect_l0[3] = { 200, 600, 533 };
    for (int k = 0; k < 3; k++) {
        struct sfix fx, *f = &fx;
        char *y = xasprintf(
            "    common_lb_config: {locality_weighted_lb_config: {}}\n"
            "    lb_subset_config:\n"
            "%s"
            "      subset_selectors: [{keys: [v]}]\n"
            "    load_assignment:\n"
            "      cluster_name: c\n"
            "      endpoints:\n"
            "      - load_balancing_weight: 3\n"
            "        lb_endpoints:\n" EP(1, "{v: a}") EP(2, "{v: b}")
            "      - load_balancing_weight: 1\n"
            "        lb_endpoints:\n" EP(3, "{v: a}") EP(4, "{v: a}") EP(5, "{v: a}") EP(6, "{v: b}"),
            cfgs[k]);
        int rc = sfix_load(f, y, NULL);
        free(y);
        ok(rc == 0, "localities %d: the config loads", k);
        if (rc)
            continue;
        f->cfg->healthy_panic_threshold = 50;
        sfix_build(f);
        int counts[MAXH] = { 0 };
        picks(f, "{v: a}", NULL, NULL, METADATA_STRING, 800, counts);
        ok(counts[0] >= expect_l0[k] - 10 && counts[0] <= expect_l0[k] + 10 &&
           counts[0] + counts[2] + counts[3] + counts[4] == 800,
           "localities %d: host 0 gets %d of 800 (%d; %d, %d, %d)", k, expect_l0[k], counts[0], counts[2], counts[3],
           counts[4]);
        sfix_free(f);
    }
}

static void expect_error(const char *name, const char *cluster_yaml, const char *want)
{
    char *y = xasprintf("%s%s", head, cluster_yaml), *err = NULL;
    struct cfg_diag d = { 0 };
    struct cfg_doc *doc = cfg_load_string(y, strlen(y), "s.yaml", &err);
    struct bootstrap *b = doc ? bootstrap_load(doc, &d) : NULL;
    const char *first = err ? err : d.nerrors ? d.errors[0] : NULL;
    if (want)
        like(first, want, "config: %s", name);
    else
        ok(b && !first, "config: %s (%s)", name, first ? first : "");
    if (b)
        bootstrap_free(b);
    diag_free(&d);
    free(err);
    free(y);
}

static void test_config(void)
{
    expect_error("KEYS_SUBSET without fallback_keys_subset",
                 "    lb_subset_config:\n      subset_selectors: [{keys: [a, b], fallback_policy: KEYS_SUBSET}]\n",
                 "fallback_keys_subset cannot be empty");
    expect_error("fallback_keys_subset not in keys",
                 "    lb_subset_config:\n      subset_selectors: [{keys: [a, b], fallback_policy: KEYS_SUBSET, "
                 "fallback_keys_subset: [c]}]\n",
                 "must be a subset of the selector's keys");
    expect_error("fallback_keys_subset equal to keys",
                 "    lb_subset_config:\n      subset_selectors: [{keys: [a, b], fallback_policy: KEYS_SUBSET, "
                 "fallback_keys_subset: [b, a]}]\n",
                 "cannot be equal to keys");
    expect_error("FALLBACK_LIST", "    lb_subset_config:\n      metadata_fallback_policy: FALLBACK_LIST\n"
                 "      subset_selectors: [{keys: [a]}]\n", "not supported: metadata_fallback_policy FALLBACK_LIST");
    expect_error("single_host_per_subset", "    lb_subset_config:\n      subset_selectors: [{keys: [a], "
                 "single_host_per_subset: true}]\n", "not supported");
    expect_error("allow_redundant_keys", "    lb_subset_config:\n      allow_redundant_keys: true\n"
                 "      subset_selectors: [{keys: [a]}]\n", "not supported");
    expect_error("with load_balancing_policy", "    load_balancing_policy: {policies: [{typed_extension_config: "
                 "{name: envoy.load_balancing_policies.random}}]}\n"
                 "    lb_subset_config:\n      subset_selectors: [{keys: [a]}]\n",
                 "not supported: lb_subset_config with load_balancing_policy");
    expect_error("a bad fallback_policy", "    lb_subset_config:\n      fallback_policy: ANY\n",
                 "unknown value 'ANY'");
    expect_error("endpoint metadata not a mapping", "    lb_subset_config:\n      subset_selectors: [{keys: [a]}]\n"
                 ENDPOINTS(EP(1, "[1, 2]")), "must be a mapping");
    expect_error("a full config", "    lb_subset_config:\n      fallback_policy: any_endpoint\n"
                 "      default_subset: {a: 1}\n      panic_mode_any: true\n      list_as_any: true\n"
                 "      locality_weight_aware: false\n      scale_locality_weight: false\n"
                 "      metadata_fallback_policy: METADATA_NO_FALLBACK\n"
                 "      subset_selectors: [{keys: [a]}, {keys: [a, b], fallback_policy: KEYS_SUBSET, "
                 "fallback_keys_subset: [a]}]\n" ENDPOINTS(EP(1, "{a: 1, b: [x]}")), NULL);

    /* without selectors there is no subset load balancing at all (Envoy's isEnabled) */
    struct sfix fx;
    if (sfix_load(&fx, "    lb_subset_config: {fallback_policy: ANY_ENDPOINT}\n" ENDPOINTS(EP(1, "{a: 1}")), NULL) == 0)
        ok(fx.cfg->subset == NULL, "config: lb_subset_config without selectors is off");
    sfix_free(&fx);
}

/* Criteria past LB_MATCH_MAX do not fit: as none. */
static void test_many_criteria(void)
{
    struct lb_kvs route = { 0 };
    struct lb_match m[2];
    char *err = NULL;
    struct cfg_doc *doc = cfg_load_string("{a: 1, b: 2, c: 3}", strlen("{a: 1, b: 2, c: 3}"), "m.yaml", &err);
    lbmd_kvs_from_struct(doc->root, &route);
    ok(lb_match_build(m, 2, &route, NULL) == SIZE_MAX, "three criteria do not fit in two");
    ok(lb_match_build(m, 2, NULL, NULL) == 0, "no criteria: none");
    lbmd_kvs_free(&route);
    cfg_doc_free(doc);
}

int main(void)
{
    evthread_use_pthreads();
    stats_init();
    test_envoy_example();
    test_criteria();
    test_fallbacks();
    test_health();
    test_policies();
    test_rebuild();
    test_localities();
    test_config();
    test_many_criteria();
    return done_testing();
}
