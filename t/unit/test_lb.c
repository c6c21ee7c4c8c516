/* Load balancing and the cluster manager, without the config parser: host
 * sets and cluster configs are built by hand. */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "stats.h"
#include "tap.h"
#include "config/tree.h"
#include "upstream/cluster.h"
#include "upstream/lb_hash.h"
#include "worker.h"

#define MAXH 8

struct fixture {
    struct herald_host hosts[MAXH];
    struct herald_host *ptrs[MAXH];
    struct host_set hs;
    struct cluster_cfg cfg;
};

/* n hosts 10.0.0.<i+1>:80 with the given weights and priorities (NULL: 1 and 0). */
static void fixture_init(struct fixture *f, size_t n, const uint32_t *weights, const uint32_t *prios,
                         enum lb_policy policy)
{
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < n; i++) {
        struct herald_host *h = &f->hosts[i];
        ref_init(&h->ref);
        h->addr_str = xasprintf("10.0.0.%zu:80", i + 1);
        h->weight = weights ? weights[i] : 1;
        h->priority = prios ? prios[i] : 0;
        f->ptrs[i] = h;
    }
    ref_init(&f->hs.ref);
    f->hs.hosts = f->ptrs;
    f->hs.nhosts = n;
    f->cfg.name = "test";
    f->cfg.lb_policy = policy;
    f->cfg.least_request_choice_count = 2;
}

static void fixture_free(struct fixture *f)
{
    for (size_t i = 0; i < MAXH; i++)
        free(f->hosts[i].addr_str);
}

static int index_of(struct fixture *f, const struct herald_host *h)
{
    for (int i = 0; i < MAXH; i++)
        if (h == &f->hosts[i])
            return i;
    return -1;
}

static void test_round_robin_equal(void)
{
    struct fixture f;
    int counts[4] = { 0 }, in_order = 1;

    fixture_init(&f, 4, NULL, NULL, LB_ROUND_ROBIN);
    void *lb = lb_new(&f.cfg, &f.hs, 0);
    for (int i = 0; i < 400; i++) {
        int k = index_of(&f, lb_choose(lb, &f.cfg, &f.hs, 0));
        if (k < 0)
            break;
        counts[k]++;
        in_order &= k == i % 4;
    }
    for (int k = 0; k < 4; k++)
        is_int(counts[k], 100, "round robin, equal weights: host %d picked 100 times of 400", k);
    ok(in_order, "round robin, equal weights: strict rotation 0,1,2,3,...");
    lb_free(lb);

    lb = lb_new(&f.cfg, &f.hs, 1);
    is_int(index_of(&f, lb_choose(lb, &f.cfg, &f.hs, 0)), 1, "worker 1 starts at host 1");
    is_int(index_of(&f, lb_choose(lb, &f.cfg, &f.hs, 0)), 2, "... then host 2");
    lb_free(lb);
    lb = lb_new(&f.cfg, &f.hs, 6);
    is_int(index_of(&f, lb_choose(lb, &f.cfg, &f.hs, 0)), 2, "worker 6 of 4 hosts starts at host 2");
    lb_free(lb);
    fixture_free(&f);
}

static void test_round_robin_weighted(unsigned seed)
{
    static const uint32_t w[4] = { 1, 2, 3, 4 };
    struct fixture f;
    int counts[4] = { 0 }, seq[1000], smooth = 1;

    fixture_init(&f, 4, w, NULL, LB_ROUND_ROBIN);
    void *lb = lb_new(&f.cfg, &f.hs, seed);
    for (int i = 0; i < 1000; i++) {
        seq[i] = index_of(&f, lb_choose(lb, &f.cfg, &f.hs, 0));
        if (seq[i] >= 0)
            counts[seq[i]]++;
    }
    for (int k = 0; k < 4; k++)
        is_int(counts[k], 100 * (k + 1), "weights 1:2:3:4 (worker %u): host %d picked %d times", seed, k,
               100 * (k + 1));
    /* in every window of 10 picks, no host more than ceil(w/10*10)+1 = w+1 times */
    for (int s = 0; s + 10 <= 1000 && smooth; s++) {
        int c[4] = { 0 };
        for (int i = s; i < s + 10; i++)
            if (seq[i] >= 0)
                c[seq[i]]++;
        for (int k = 0; k < 4; k++)
            if (c[k] > (int)w[k] + 1) {
                smooth = 0;
                printf("# window at %d: host %d picked %d times\n", s, k, c[k]);
            }
    }
    ok(smooth, "weights 1:2:3:4 (worker %u): picks interleave smoothly", seed);
    lb_free(lb);
    fixture_free(&f);
}

static void test_random(void)
{
    struct fixture f;
    int counts[4] = { 0 };

    fixture_init(&f, 4, NULL, NULL, LB_RANDOM);
    void *lb = lb_new(&f.cfg, &f.hs, 3);
    for (int i = 0; i < 100000; i++) {
        int k = index_of(&f, lb_choose(lb, &f.cfg, &f.hs, 0));
        if (k >= 0)
            counts[k]++;
    }
    for (int k = 0; k < 4; k++)
        ok(abs(counts[k] - 25000) <= 750, "random: host %d picked %d times of 100000 (25000 +- 3%%)", k,
           counts[k]);
    lb_free(lb);
    fixture_free(&f);
}

static void test_least_request(void)
{
    struct fixture f;
    int counts[4] = { 0 };

    fixture_init(&f, 4, NULL, NULL, LB_LEAST_REQUEST);
    atomic_store(&f.hosts[0].rq_active, 50);
    void *lb = lb_new(&f.cfg, &f.hs, 0);
    for (int i = 0; i < 10000; i++) {
        int k = index_of(&f, lb_choose(lb, &f.cfg, &f.hs, 0));
        if (k >= 0)
            counts[k]++;
    }
    ok(counts[0] < 500, "least request: the busy host is picked rarely (%d of 10000)", counts[0]);
    for (int k = 1; k < 4; k++)
        ok(counts[k] > 2800, "least request: idle host %d gets its share (%d)", k, counts[k]);
    lb_free(lb);

    /* load counts connections too */
    atomic_store(&f.hosts[0].rq_active, 0);
    atomic_store(&f.hosts[2].cx_active, 7);
    memset(counts, 0, sizeof(counts));
    lb = lb_new(&f.cfg, &f.hs, 0);
    for (int i = 0; i < 10000; i++) {
        int k = index_of(&f, lb_choose(lb, &f.cfg, &f.hs, 0));
        if (k >= 0)
            counts[k]++;
    }
    ok(counts[2] < 500, "least request: a host busy with connections is picked rarely (%d)", counts[2]);
    lb_free(lb);
    fixture_free(&f);

    /* two hosts, two choices: the busy one is never picked */
    fixture_init(&f, 2, NULL, NULL, LB_LEAST_REQUEST);
    atomic_store(&f.hosts[1].rq_active, 1);
    lb = lb_new(&f.cfg, &f.hs, 0);
    int busy = 0;
    for (int i = 0; i < 1000; i++)
        busy += lb_choose(lb, &f.cfg, &f.hs, 0) == &f.hosts[1];
    is_int(busy, 0, "least request, 2 hosts: the busier is never picked");
    atomic_store(&f.hosts[1].rq_active, 0);
    busy = 0;
    for (int i = 0; i < 1000; i++)
        busy += lb_choose(lb, &f.cfg, &f.hs, 0) == &f.hosts[1];
    ok(busy > 350 && busy < 650, "least request, 2 idle hosts: both used (%d of 1000)", busy);
    lb_free(lb);
    fixture_free(&f);

    /* weights: weight / (active + 1) */
    static const uint32_t w[2] = { 1, 3 };
    fixture_init(&f, 2, w, NULL, LB_LEAST_REQUEST);
    lb = lb_new(&f.cfg, &f.hs, 0);
    int heavy = 0;
    for (int i = 0; i < 4000; i++)
        heavy += lb_choose(lb, &f.cfg, &f.hs, 0) == &f.hosts[1];
    ok(heavy >= 2900 && heavy <= 3100, "least request, weights 1:3, idle: 3/4 to the heavier (%d of 4000)",
       heavy);
    atomic_store(&f.hosts[1].rq_active, 11);   /* 3/12 = 0.25 against 1/1 */
    heavy = 0;
    for (int i = 0; i < 5000; i++)
        heavy += lb_choose(lb, &f.cfg, &f.hs, 0) == &f.hosts[1];
    ok(heavy >= 900 && heavy <= 1100, "least request, weights 1:3, heavier busy: 1/5 to it (%d of 5000)",
       heavy);
    lb_free(lb);
    fixture_free(&f);
}

static void test_priorities(void)
{
    static const uint32_t prios[4] = { 0, 1, 0, 1 };
    static const uint32_t only_p1[2] = { 1, 2 };
    static const enum lb_policy policies[3] = { LB_ROUND_ROBIN, LB_RANDOM, LB_LEAST_REQUEST };
    struct fixture f;

    for (int p = 0; p < 3; p++) {
        int low = 0, c0 = 0;
        fixture_init(&f, 4, NULL, prios, policies[p]);
        void *lb = lb_new(&f.cfg, &f.hs, 0);
        for (int i = 0; i < 200; i++) {
            const struct herald_host *h = lb_choose(lb, &f.cfg, &f.hs, 0);
            low += h && h->priority != 0;
            c0 += h == &f.hosts[0];
        }
        is_int(low, 0, "policy %d: priority 1 hosts unused while priority 0 has hosts", (int)policies[p]);
        ok(c0 > 50 && c0 < 150, "policy %d: both priority 0 hosts used (%d of 200 on the first)",
           (int)policies[p], c0);
        lb_free(lb);
        fixture_free(&f);
    }

    fixture_init(&f, 2, NULL, only_p1, LB_ROUND_ROBIN);
    void *lb = lb_new(&f.cfg, &f.hs, 0);
    ok(lb_choose(lb, &f.cfg, &f.hs, 0) == &f.hosts[0], "no priority 0 hosts: priority 1 is used");
    ok(lb_choose(lb, &f.cfg, &f.hs, 0) == &f.hosts[0], "... and only it (priority 2 unused)");
    lb_free(lb);
    fixture_free(&f);
}

static void test_empty(void)
{
    static const enum lb_policy policies[5] = { LB_ROUND_ROBIN, LB_LEAST_REQUEST, LB_RANDOM, LB_RING_HASH,
                                                LB_MAGLEV };
    struct fixture f;

    for (int p = 0; p < 5; p++) {
        fixture_init(&f, 0, NULL, NULL, policies[p]);
        void *lb = lb_new(&f.cfg, &f.hs, 2);
        ok(lb_choose(lb, &f.cfg, &f.hs, 0) == NULL, "policy %d: empty host set gives NULL", (int)policies[p]);
        lb_free(lb);
    }
    ok(lb_choose(NULL, &f.cfg, &f.hs, 0) == NULL, "no lb state gives NULL");
    fixture_init(&f, 1, NULL, NULL, LB_RING_HASH);
    void *lb = lb_new(&f.cfg, &f.hs, 0);
    ok(lb_choose(lb, &f.cfg, &f.hs, 42) == &f.hosts[0], "RING_HASH falls back to round robin");
    lb_free(lb);
    fixture_free(&f);
}

/* ------------------------------------------------------------------ cluster manager */

static struct endpoint_cfg *endpoints(size_t n, const char *const *hosts, const uint16_t *ports,
                                      const uint32_t *weights)
{
    struct endpoint_cfg *e = xcalloc(n, sizeof(*e));
    for (size_t i = 0; i < n; i++) {
        e[i].address.host = (char *)hosts[i];
        e[i].address.port = ports[i];
        e[i].weight = weights ? weights[i] : 1;
    }
    return e;
}

static void cluster_cfg_init(struct cluster_cfg *c, const char *name, enum cluster_type type,
                             struct locality_cfg *loc, size_t nloc)
{
    memset(c, 0, sizeof(*c));
    c->name = (char *)name;
    c->type = type;
    c->lb_policy = LB_ROUND_ROBIN;
    c->connect_timeout_ms = 5000;
    c->dns_refresh_rate_ms = 5000;
    c->localities = loc;
    c->nlocalities = nloc;
    c->least_request_choice_count = 2;
    for (int p = 0; p < 2; p++)
        c->thresholds[p] = (struct thresholds_cfg){ 1024, 1024, 1024, 3 };
}

static char *drain(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = xmalloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = 0;
    return s;
}

static int64_t stat_of(const char *name)
{
    bool found = false;
    int64_t v = stats_lookup(name, &found);
    return found ? v : -1;
}

static void test_cluster_manager(void)
{
    static const char *const sh[3] = { "127.0.0.1", "::1", "127.0.0.2" };
    static const uint16_t sp[3] = { 8080, 8081, 8082 };
    static const uint32_t sw[3] = { 2, 1, 1 };
    static const char *const dh[1] = { "backend.invalid" };
    static const uint16_t dp[1] = { 80 };
    struct locality_cfg sloc[2] = {
        { .priority = 0, .endpoints = endpoints(2, sh, sp, sw), .nendpoints = 2 },
        { .priority = 1, .endpoints = endpoints(1, sh + 2, sp + 2, sw + 2), .nendpoints = 1 },
    };
    struct locality_cfg dloc[1] = { { .endpoints = endpoints(1, dh, dp, NULL), .nendpoints = 1 } };
    struct cluster_cfg clusters[2];
    struct bootstrap b = { .clusters = clusters, .nclusters = 2 };
    struct cfg_diag d = { 0 };
    struct evbuffer *out = evbuffer_new();

    cluster_cfg_init(&clusters[0], "static_c", CLUSTER_STATIC, sloc, 2);
    cluster_cfg_init(&clusters[1], "dns_c", CLUSTER_STRICT_DNS, dloc, 1);
    is_int(cluster_manager_init(&b, NULL, NULL, &d), 0, "cluster_manager_init (validate mode, no DNS)");
    cluster_manager_start();
    is_int(cluster_manager_count(), 2, "two clusters");
    struct cluster *sc = cluster_manager_find("static_c");
    ok(sc && sc->index == 0 && sc->initialized, "static cluster found, index 0, initialized");
    ok(sc && sc->current && sc->current->nhosts == 3, "static cluster has 3 hosts");
    ok(cluster_manager_find("nope") == NULL, "unknown cluster: NULL");
    is_int(stat_of("cluster.static_c.membership_total"), 3, "membership_total gauge");
    is_int(stat_of("cluster.static_c.membership_healthy"), 3, "membership_healthy gauge");
    is_int(stat_of("cluster.static_c.max_host_weight"), 2, "max_host_weight gauge");
    is_int(stat_of("cluster.static_c.membership_change"), 1, "membership_change counted once");
    is_int(stat_of("cluster.dns_c.membership_total"), 0, "DNS cluster empty before resolution");

    ok(cluster_manager_pending(out) == 1, "one cluster pending");
    char *s = drain(out);
    is_str(s, "cluster 'dns_c': resolving backend.invalid\n", "pending names what it waits for");
    free(s);

    ok(herald_cluster_get("static_c") == NULL, "herald_cluster_get off a worker: NULL");

    cluster_manager_dump(out, false);
    s = drain(out);
    like(s, "static_c::default_priority::max_connections::1024\n", "/clusters: thresholds");
    like(s, "static_c::high_priority::max_retries::3\n", "/clusters: high priority thresholds");
    like(s, "static_c::added_via_api::false\n", "/clusters: added_via_api");
    like(s, "static_c::127.0.0.1:8080::cx_active::0\n", "/clusters: host cx_active");
    like(s, "static_c::127.0.0.1:8080::weight::2\n", "/clusters: host weight");
    like(s, "static_c::[::1]:8081::health_flags::healthy\n", "/clusters: IPv6 host, health flags");
    like(s, "static_c::127.0.0.2:8082::priority::1\n", "/clusters: host priority");
    like(s, "static_c::127.0.0.1:8080::local_origin_success_rate::-1\n", "/clusters: success rates");
    ok(strstr(s, "dns_c::added_via_api::false\n") && !strstr(s, "dns_c::1"),
       "/clusters: DNS cluster, no hosts");
    free(s);
    cluster_manager_dump(out, true);
    s = drain(out);
    like(s, "\"cluster_statuses\"", "/clusters?format=json: cluster_statuses");
    like(s, "\"port_value\": 8081", "/clusters?format=json: port_value");
    like(s, "\"eds_health_status\": \"HEALTHY\"", "/clusters?format=json: health status");
    free(s);

    /* workers' views, as the lead builds them before starting the workers */
    struct worker w0 = { .index = 0 }, w = { .index = 1 };
    cluster_worker_init(&w0);
    cluster_worker_init(&w);
    ok(w.clusters && w.clusters->nviews == 2, "worker view has both clusters");
    if (w0.clusters && w.clusters && w.clusters->nviews == 2) {
        struct herald_cluster *v = &w.clusters->views[0];
        is_str(herald_cluster_name(v), "static_c", "herald_cluster_name");
        struct herald_host *h = herald_cluster_choose_host(&w0.clusters->views[0], 0);
        is_str(h ? herald_host_address(h) : NULL, "127.0.0.1:8080", "worker 0 starts at the first host");
        h = herald_cluster_choose_host(v, 0);
        is_str(h ? herald_host_address(h) : NULL, "[::1]:8081", "worker 1 starts at the second host");
        h = herald_cluster_choose_host(v, 0);
        is_str(h ? herald_host_address(h) : NULL, "127.0.0.1:8080", "weights 2:1, then the first");
        h = herald_cluster_choose_host(v, 0);
        is_str(h ? herald_host_address(h) : NULL, "127.0.0.1:8080", "... twice");
        ok(herald_cluster_choose_host(&w.clusters->views[1], 0) == NULL, "empty DNS cluster: no host");
        is_int(stat_of("cluster.dns_c.upstream_cx_none_healthy"), 1, "upstream_cx_none_healthy counted");
    }
    cluster_worker_free(&w);
    cluster_worker_free(&w0);
    ok(w.clusters == NULL, "cluster_worker_free clears the view");

    cluster_manager_shutdown();
    is_int(cluster_manager_count(), 0, "shutdown");
    evbuffer_free(out);
    for (int i = 0; i < 2; i++)
        free(sloc[i].endpoints);
    free(dloc[0].endpoints);
    diag_free(&d);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

struct probe { size_t nhosts; const char *first; bool on_worker; };

static void probe_on_worker(struct worker *w, void *arg)
{
    struct probe *p = arg;
    struct herald_cluster *c = herald_cluster_get("dns2");

    p->on_worker = worker_self() == w;
    p->nhosts = c ? c->hosts->nhosts : 0;
    struct herald_host *h = c ? herald_cluster_choose_host(c, 0) : NULL;
    p->first = h ? herald_host_address(h) : NULL;
}

/* STRICT_DNS through evdns with no name servers: /etc/hosts and literals only. */
static void test_dns(void)
{
    static const char *const dh[2] = { "localhost", "192.0.2.7" };
    static const uint16_t dp[2] = { 9000, 9001 };
    struct locality_cfg loc[1] = { { .endpoints = endpoints(2, dh, dp, NULL), .nendpoints = 2 } };
    struct cluster_cfg c;
    struct bootstrap b = { .clusters = &c, .nclusters = 1 };
    struct cfg_diag d = { 0 };
    struct event_base *base = event_base_new();
    struct evdns_base *dns = evdns_base_new(base, 0);

    evdns_base_load_hosts(dns, "/etc/hosts");
    cluster_cfg_init(&c, "dns2", CLUSTER_STRICT_DNS, loc, 1);
    c.dns_lookup_family = DNS_V4_ONLY;
    c.dns_refresh_rate_ms = 10;
    is_int(cluster_manager_init(&b, base, dns, &d), 0, "STRICT_DNS cluster init");
    struct cluster *cl = cluster_manager_find("dns2");
    ok(cl && cl->current->nhosts == 1, "the literal endpoint is a host before any lookup");
    struct worker w;
    struct probe probe = { 0 };
    memset(&w, 0, sizeof(w));
    cluster_worker_init(&w);
    is_int(worker_start(&w, 0), 0, "a worker runs");
    cluster_manager_start();
    worker_post(&w, probe_on_worker, &probe);
    worker_stop_and_join(&w);
    cluster_worker_free(&w);
    ok(probe.on_worker, "the probe ran on the worker");
    is_int(probe.nhosts, 2, "the worker swapped in the resolved host set");
    is_str(probe.first, "127.0.0.1:9000", "and balances over it");
    ok(cl && cl->initialized, "localhost answered from /etc/hosts");
    ok(cl && cl->current->nhosts == 2, "two hosts");
    if (cl && cl->current->nhosts == 2) {
        struct herald_host *first = cl->current->hosts[0], *second = cl->current->hosts[1];
        is_str(first->addr_str, "127.0.0.1:9000", "localhost:9000 resolved");
        is_str(first->hostname, "localhost", "its hostname is the DNS name");
        is_str(second->addr_str, "192.0.2.7:9001", "literal endpoint");
        struct event *stop = evtimer_new(base, on_stop, base);
        struct timeval tv = { 0, 120000 };
        evtimer_add(stop, &tv);
        event_base_dispatch(base);
        event_free(stop);
        ok(stat_of("cluster.dns2.update_success") >= 3, "re-resolved every 10 ms (%lld successes)",
           (long long)stat_of("cluster.dns2.update_success"));
        is_int(stat_of("cluster.dns2.membership_change"), 2, "unchanged answers are no membership change");
        ok(stat_of("cluster.dns2.update_no_rebuild") >= 2, "update_no_rebuild counted");
        ok(cl->current->hosts[0] == first, "the host keeps its identity across re-resolution");
    }
    cluster_manager_shutdown();
    evdns_base_free(dns, 0);
    event_base_free(base);
    free(loc[0].endpoints);
    diag_free(&d);
}

/* A name that cannot be resolved (no name servers): failures are counted, the
 * cluster stays empty, and shutdown with a lookup in flight leaks nothing. */
static void test_dns_failure(void)
{
    static const char *const dh[1] = { "nothing-here.invalid" };
    static const uint16_t dp[1] = { 80 };
    struct locality_cfg loc[1] = { { .endpoints = endpoints(1, dh, dp, NULL), .nendpoints = 1 } };
    struct cluster_cfg c;
    struct bootstrap b = { .clusters = &c, .nclusters = 1 };
    struct cfg_diag d = { 0 };

    for (int round = 0; round < 2; round++) {
        struct event_base *base = event_base_new();
        struct evdns_base *dns = evdns_base_new(base, 0);
        /* a name server that is not there, and impatience */
        evdns_base_nameserver_ip_add(dns, "127.0.0.1:1");
        evdns_base_set_option(dns, "timeout:", "0.02");
        evdns_base_set_option(dns, "attempts:", "1");
        evdns_base_set_option(dns, "getaddrinfo-allow-skew:", "0.02");
        cluster_cfg_init(&c, round ? "dns4" : "dns3", CLUSTER_LOGICAL_DNS, loc, 1);
        c.dns_refresh_rate_ms = 10;
        is_int(cluster_manager_init(&b, base, dns, &d), 0, "LOGICAL_DNS cluster init (round %d)", round);
        cluster_manager_start();
        if (round == 0) {
            struct event *stop = evtimer_new(base, on_stop, base);
            struct timeval tv = { 0, 300000 };
            evtimer_add(stop, &tv);
            event_base_dispatch(base);
            event_free(stop);
            ok(stat_of("cluster.dns3.update_failure") >= 1, "failed lookups counted (%lld)",
               (long long)stat_of("cluster.dns3.update_failure"));
            is_int(stat_of("cluster.dns3.membership_total"), 0, "no hosts");
            struct evbuffer *why = evbuffer_new();
            is_int(cluster_manager_pending(why), 0, "a failed answer still initializes (as in Envoy)");
            evbuffer_free(why);
        }
        cluster_manager_shutdown();   /* round 1: with the first lookup in flight */
        evdns_base_free(dns, 0);
        event_base_free(base);
    }
    free(loc[0].endpoints);
    diag_free(&d);
}

/* ------------------------------------------------------------ RING_HASH and MAGLEV */

#define NKEYS 10000

/* well-spread request hashes, never 0 (0 means "no hash": random) */
static uint64_t key_hash(int k)
{
    uint64_t x = (uint64_t)k * 0x9e3779b97f4a7c15ull + 1;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x ? x : 1;
}

static const char *hash_name(const struct cluster_cfg *c)
{
    return c->lb_policy == LB_MAGLEV ? "maglev" : c->ring_murmur2 ? "ring hash (murmur2)" : "ring hash";
}

/* Where each key goes over the usable hosts[0..n) of f, as host indexes;
 * all: the cluster's host set (NULL: just those hosts). */
static void map_keys(struct fixture *f, struct herald_host **hosts, size_t n, const struct host_set *all,
                     int *owner)
{
    struct host_set hs = { .hosts = hosts, .nhosts = n };
    ref_init(&hs.ref);
    struct lb_hash *h = lb_hash_new(&f->cfg, hosts, n, all ? all : &hs);
    for (int k = 0; k < NKEYS; k++)
        owner[k] = index_of(f, lb_hash_choose(h, key_hash(k)));
    lb_hash_free(h);
}

/* Keys that changed host between before and after: how many, and how many
 * of those were not on host `gone` (should stay put) or went to it. */
static void count_moves(const int *before, const int *after, int gone, int *moved, int *stray, int *to_gone)
{
    *moved = *stray = *to_gone = 0;
    for (int k = 0; k < NKEYS; k++) {
        if (after[k] == gone)
            (*to_gone)++;
        if (after[k] == before[k])
            continue;
        (*moved)++;
        if (before[k] != gone)
            (*stray)++;
    }
}

/* One of 4 hosts fails (it stays in the host set, lb.c leaves it out): only
 * its keys move (about a quarter), the rest stay put. Then the host is
 * removed from the cluster: the ring or table is rebuilt over the 3 left as
 * Envoy does, which also moves some keys of the others (RING_HASH: the ring
 * is rescaled; MAGLEV: a few, the table being refilled). */
static void test_hash_stability(enum lb_policy policy, bool murmur)
{
    static int before[NKEYS], again[NKEYS], after[NKEYS];
    struct fixture f;

    fixture_init(&f, 4, NULL, NULL, policy);
    f.cfg.ring_murmur2 = murmur;
    const char *name = hash_name(&f.cfg);
    map_keys(&f, f.ptrs, 4, &f.hs, before);
    map_keys(&f, f.ptrs, 4, &f.hs, again);
    int counts[4] = { 0 }, same = 1;
    for (int k = 0; k < NKEYS; k++) {
        same &= before[k] == again[k];
        if (before[k] >= 0 && before[k] < 4)
            counts[before[k]]++;
    }
    ok(same, "%s: the same key always goes to the same host", name);
    for (int i = 0; i < 4; i++)
        ok(counts[i] > NKEYS / 8 && counts[i] < NKEYS * 3 / 8, "%s: host %d has a fair share (%d of %d)",
           name, i, counts[i], NKEYS);

    for (int gone = 0; gone < 4; gone++) {
        struct herald_host *rest[3];
        size_t n = 0;
        for (int i = 0; i < 4; i++)
            if (i != gone)
                rest[n++] = f.ptrs[i];
        int moved, stray, to_gone;
        map_keys(&f, rest, 3, &f.hs, after);
        count_moves(before, after, gone, &moved, &stray, &to_gone);
        ok((double)moved / NKEYS <= 0.34, "%s: host %d of 4 fails: %.3f of the keys move (<= 0.34)", name,
           gone, (double)moved / NKEYS);
        is_int(stray, 0, "%s: host %d fails: only its keys move, the rest stay put", name, gone);
        is_int(to_gone, 0, "%s: no key goes to the failed host %d", name, gone);

        map_keys(&f, rest, 3, NULL, after);
        count_moves(before, after, gone, &moved, &stray, &to_gone);
        ok((double)moved / NKEYS <= 0.40 && stray <= NKEYS * 15 / 100,
           "%s: host %d removed from the cluster: %.3f of the keys move, %d of them from other hosts "
           "(Envoy rebuilds over the hosts left)", name, gone,
           (double)moved / NKEYS, stray);
        is_int(to_gone, 0, "%s: no key goes to the removed host %d", name, gone);
    }
    fixture_free(&f);
}

/* The same through lb.c: a host whose health check fails leaves the
 * balancer, and only its keys move. */
static void test_hash_unhealthy_host(enum lb_policy policy)
{
    static int before[NKEYS], after[NKEYS];
    struct fixture f;
    int moved, stray, to_gone;

    fixture_init(&f, 4, NULL, NULL, policy);
    f.cfg.healthy_panic_threshold = 50;
    const char *name = hash_name(&f.cfg);
    void *lb = lb_new(&f.cfg, &f.hs, 0);
    for (int k = 0; k < NKEYS; k++)
        before[k] = index_of(&f, lb_choose(lb, &f.cfg, &f.hs, key_hash(k)));
    lb_free(lb);
    atomic_store(&f.hosts[1].health, HOST_FAILED_ACTIVE_HC);
    lb = lb_new(&f.cfg, &f.hs, 1);
    for (int k = 0; k < NKEYS; k++)
        after[k] = index_of(&f, lb_choose(lb, &f.cfg, &f.hs, key_hash(k)));
    lb_free(lb);
    count_moves(before, after, 1, &moved, &stray, &to_gone);
    ok((double)moved / NKEYS <= 0.34 && to_gone == 0, "%s via lb.c: host 1 fails its health check: %.3f of "
       "the keys move, none to it", name, (double)moved / NKEYS);
    is_int(stray, 0, "%s via lb.c: the keys of the other hosts stay put", name);
    int share[4] = { 0 };
    for (int k = 0; k < NKEYS; k++)
        if (after[k] >= 0 && after[k] < 4)
            share[after[k]]++;
    ok(share[0] > NKEYS / 4 && share[2] > NKEYS / 4 && share[3] > NKEYS / 4 && share[0] < NKEYS * 42 / 100 &&
       share[2] < NKEYS * 42 / 100 && share[3] < NKEYS * 42 / 100,
       "%s via lb.c: the failed host's keys spread over the 3 others (%d %d %d)", name, share[0], share[2],
       share[3]);
    fixture_free(&f);
}

/* Weights 1:1:1:3 give the heavy host about half of the keys. */
static void test_hash_weights(enum lb_policy policy)
{
    static const uint32_t w[4] = { 1, 1, 1, 3 };
    static int owner[NKEYS];
    struct fixture f;
    int counts[4] = { 0 };

    fixture_init(&f, 4, w, NULL, policy);
    const char *name = hash_name(&f.cfg);
    map_keys(&f, f.ptrs, 4, NULL, owner);
    for (int k = 0; k < NKEYS; k++)
        if (owner[k] >= 0 && owner[k] < 4)
            counts[owner[k]]++;
    ok(counts[3] > NKEYS * 40 / 100 && counts[3] < NKEYS * 60 / 100,
       "%s: weight 3 of 6 takes about half the keys (%d of %d)", name, counts[3], NKEYS);
    for (int i = 0; i < 3; i++)
        ok(counts[i] > NKEYS * 10 / 100 && counts[i] < NKEYS * 25 / 100,
           "%s: weight 1 of 6 takes about a sixth (host %d: %d)", name, i, counts[i]);
    fixture_free(&f);
}

static void test_hash_tables(void)
{
    struct fixture f;
    static const uint32_t w[4] = { 1, 2, 3, 4 };

    fixture_init(&f, 4, NULL, NULL, LB_RING_HASH);
    struct lb_hash *h = lb_hash_new(&f.cfg, f.ptrs, 4, NULL);
    is_int((long long)lb_hash_size(h), 1024, "ring hash: 4 equal hosts, default minimum_ring_size: 1024");
    lb_hash_free(h);
    f.cfg.ring_min_size = 1000;
    f.cfg.ring_max_size = 100;
    h = lb_hash_new(&f.cfg, f.ptrs, 4, NULL);
    is_int((long long)lb_hash_size(h), 100, "ring hash: maximum_ring_size caps the ring");
    lb_hash_free(h);
    fixture_free(&f);

    /* weights 1:2:3:4: the lightest host's 0.1 of 100 points is already whole */
    fixture_init(&f, 4, w, NULL, LB_RING_HASH);
    f.cfg.ring_min_size = 100;
    h = lb_hash_new(&f.cfg, f.ptrs, 4, NULL);
    is_int((long long)lb_hash_size(h), 100, "ring hash: weights 1:2:3:4, minimum 100: 100 points");
    int pts[4] = { 0 };
    for (int k = 0; k < 20000; k++) {
        int i = index_of(&f, lb_hash_choose(h, key_hash(k)));
        if (i >= 0 && i < 4)
            pts[i]++;
    }
    ok(pts[0] < pts[1] && pts[1] < pts[2] && pts[2] < pts[3], "ring hash: shares follow weights 1:2:3:4 "
       "(%d %d %d %d)", pts[0], pts[1], pts[2], pts[3]);
    lb_hash_free(h);
    fixture_free(&f);

    fixture_init(&f, 4, NULL, NULL, LB_MAGLEV);
    h = lb_hash_new(&f.cfg, f.ptrs, 4, NULL);
    is_int((long long)lb_hash_size(h), 65537, "maglev: default table_size 65537");
    lb_hash_free(h);
    f.cfg.maglev_table_size = 13;
    h = lb_hash_new(&f.cfg, f.ptrs, 4, NULL);
    int slots[4] = { 0 };
    for (uint64_t k = 0; k < 13; k++) {
        int i = index_of(&f, lb_hash_choose(h, k));
        if (i >= 0 && i < 4)
            slots[i]++;
    }
    ok(slots[0] >= 3 && slots[1] >= 3 && slots[2] >= 3 && slots[3] >= 3,
       "maglev: table_size 13 over 4 equal hosts: 3 or 4 slots each (%d %d %d %d)", slots[0], slots[1],
       slots[2], slots[3]);
    lb_hash_free(h);
    fixture_free(&f);

    ok(lb_hash_is_prime(65537) && lb_hash_is_prime(5000011) && lb_hash_is_prime(2) && lb_hash_is_prime(13),
       "primes: 2, 13, 65537, 5000011");
    ok(!lb_hash_is_prime(65536) && !lb_hash_is_prime(1) && !lb_hash_is_prime(0) &&
       !lb_hash_is_prime(65539 * 3ull),
       "not primes: 0, 1, 65536, 196617");

    /* libstdc++'s std::_Hash_bytes(s, len, 0xc70f6907), which Envoy's MURMUR_HASH_2 is */
    const uint64_t seed = 0xc70f6907;
    is_int((long long)herald_murmur2_64("", 0, seed), (long long)0x553e93901e462a6eull, "murmur2 of \"\"");
    is_int((long long)herald_murmur2_64("a", 1, seed), (long long)0x454ddee488c1ed6bull, "murmur2 of a");
    is_int((long long)herald_murmur2_64("10.0.0.1:80_0", 13, seed), (long long)0xbd8f6461ecffb28cull,
           "murmur2 of 10.0.0.1:80_0");
    is_int((long long)herald_murmur2_64("hello world, murmur", 19, seed), (long long)0x4fa263ebd02a97eaull,
           "murmur2 of 19 bytes");
}

static char *load_error(const char *yaml)
{
    char *err = NULL;
    struct cfg_diag d = { 0 };
    struct cfg_doc *doc = cfg_load_string(yaml, strlen(yaml), "hash.yaml", &err);
    if (!doc)
        return err;
    struct bootstrap *b = bootstrap_load(doc, &d);
    char *first = d.nerrors ? xstrdup(d.errors[0]) : NULL;
    if (b)
        bootstrap_free(b);
    diag_free(&d);
    return first;
}

static void test_hash_config(void)
{
    static const char *const base =
        "static_resources:\n"
        "  clusters:\n"
        "  - name: c\n"
        "    lb_policy: %s\n"
        "%s"
        "    load_assignment:\n"
        "      cluster_name: c\n"
        "      endpoints:\n"
        "      - lb_endpoints:\n"
        "        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}\n";
    char *y = xasprintf(base, "MAGLEV", "    maglev_lb_config: {table_size: 65536}\n");
    char *e = load_error(y);
    like(e ? e : "", "table_size 65536 is not a prime number", "non-prime table_size rejected");
    ok(e && strncmp(e, "hash.yaml:5:", 12) == 0, "... at its file:line (%s)", e ? e : "");
    free(e);
    free(y);
    y = xasprintf(base, "MAGLEV", "    maglev_lb_config: {table_size: 5000011}\n");
    e = load_error(y);
    ok(e == NULL, "table_size 5000011 accepted");
    free(e);
    free(y);
    y = xasprintf(base, "RING_HASH",
                  "    ring_hash_lb_config: {minimum_ring_size: 2000, maximum_ring_size: 1000}\n");
    e = load_error(y);
    like(e ? e : "", "minimum_ring_size (2000) is more than maximum_ring_size", "minimum > maximum rejected");
    free(e);
    free(y);
    y = xasprintf(base, "RING_HASH",
                  "    ring_hash_lb_config: {minimum_ring_size: 16, hash_function: MURMUR_HASH_2}\n"
                  "    common_lb_config: {consistent_hashing_lb_config: {use_hostname_for_hashing: true}}\n");
    e = load_error(y);
    ok(e == NULL, "RING_HASH, ring_hash_lb_config and consistent_hashing_lb_config accepted (%s)",
       e ? e : "");
    free(e);
    free(y);
}

/* Host health (active health checks, outlier ejection) and Envoy's panic mode. */
static unsigned picked_set(void *lb, struct fixture *f, int n)
{
    unsigned set = 0;

    for (int i = 0; i < n; i++) {
        int k = index_of(f, lb_choose(lb, &f->cfg, &f->hs, 0));
        if (k >= 0)
            set |= 1u << k;
    }
    return set;
}

static void test_health_panic(void)
{
    static const uint32_t prios[4] = { 0, 0, 1, 1 };
    struct fixture f;
    struct cluster cl;
    void *lb;

    memset(&cl, 0, sizeof(cl));
    cl.stats.lb_healthy_panic = herald_counter("cluster.hc_test", "lb_healthy_panic");
    fixture_init(&f, 4, NULL, NULL, LB_ROUND_ROBIN);
    f.cfg.healthy_panic_threshold = 50;
    for (int i = 0; i < 4; i++)
        f.hosts[i].cluster = &cl;

    atomic_store(&f.hosts[1].health, HOST_FAILED_ACTIVE_HC);
    lb = lb_new(&f.cfg, &f.hs, 0);
    is_int((int)picked_set(lb, &f, 40), 0xd, "health: a failed host gets no traffic");
    lb_free(lb);
    is_int((int)stat_of("cluster.hc_test.lb_healthy_panic"), 0, "health: 3 of 4 healthy is no panic");

    atomic_store(&f.hosts[2].health, HOST_FAILED_OUTLIER);
    lb = lb_new(&f.cfg, &f.hs, 0);
    is_int((int)picked_set(lb, &f, 40), 0x9, "health: 2 of 4 healthy (50%%) is no panic either");
    lb_free(lb);

    atomic_store(&f.hosts[3].health, HOST_FAILED_ACTIVE_HC | HOST_PENDING_ACTIVE_HC);
    lb = lb_new(&f.cfg, &f.hs, 0);
    is_int((int)picked_set(lb, &f, 40), 0xf, "panic: 1 of 4 healthy (< 50%%) uses every host");
    lb_free(lb);
    is_int((int)stat_of("cluster.hc_test.lb_healthy_panic"), 40,
           "panic: every pick counted in lb_healthy_panic");

    atomic_store(&f.hosts[0].health, HOST_FAILED_ACTIVE_HC);
    lb = lb_new(&f.cfg, &f.hs, 0);
    is_int((int)picked_set(lb, &f, 40), 0xf, "panic: no healthy host uses every host");
    lb_free(lb);
    f.cfg.healthy_panic_threshold = 0;
    lb = lb_new(&f.cfg, &f.hs, 0);
    ok(lb_choose(lb, &f.cfg, &f.hs, 0) == NULL, "panic threshold 0: no healthy host, no host");
    lb_free(lb);
    fixture_free(&f);

    /* priorities: level 0 = hosts 0,1; level 1 = hosts 2,3 */
    fixture_init(&f, 4, NULL, prios, LB_ROUND_ROBIN);
    f.cfg.healthy_panic_threshold = 50;
    for (int i = 0; i < 4; i++)
        f.hosts[i].cluster = &cl;
    atomic_store(&f.hosts[0].health, HOST_FAILED_ACTIVE_HC);
    lb = lb_new(&f.cfg, &f.hs, 0);
    is_int((int)picked_set(lb, &f, 40), 0x2, "priorities: the healthy host of level 0");
    lb_free(lb);
    atomic_store(&f.hosts[1].health, HOST_FAILED_ACTIVE_HC);
    lb = lb_new(&f.cfg, &f.hs, 0);
    is_int((int)picked_set(lb, &f, 40), 0xc, "priorities: level 0 all failed, level 1 takes over");
    lb_free(lb);
    int64_t before = stat_of("cluster.hc_test.lb_healthy_panic");
    atomic_store(&f.hosts[2].health, HOST_FAILED_ACTIVE_HC);
    lb = lb_new(&f.cfg, &f.hs, 0);
    is_int((int)picked_set(lb, &f, 40), 0x8, "priorities: level 1 half healthy: its healthy host "
           "(50%% is not below the threshold)");
    lb_free(lb);
    is_int((int)(stat_of("cluster.hc_test.lb_healthy_panic") - before), 0,
           "priorities: 50%% healthy, no panic count");
    atomic_store(&f.hosts[3].health, HOST_FAILED_ACTIVE_HC);
    lb = lb_new(&f.cfg, &f.hs, 0);
    is_int((int)picked_set(lb, &f, 40), 0x3, "priorities: nothing healthy: all of level 0, in panic");
    lb_free(lb);
    fixture_free(&f);
}

/* Re-picks for a retry host predicate: attempt 0 is the plain pick; the
 * attempts after it reach another host for almost every key within a few
 * tries, and are as stable as the pick itself (same key, same attempt, same
 * host). */
static void test_hash_attempts(enum lb_policy policy)
{
    struct fixture f;
    fixture_init(&f, 4, NULL, NULL, policy);
    struct lb_hash *h = lb_hash_new(&f.cfg, f.ptrs, 4, NULL);
    int same0 = 0, moved = 0, stable = 0, tries = 0;
    for (int k = 0; k < NKEYS; k++) {
        uint64_t kh = key_hash(k);
        struct herald_host *first = lb_hash_choose(h, kh);
        same0 += lb_hash_choose_attempt(h, kh, 0) == first;
        for (uint32_t a = 1; a <= 4; a++) {
            struct herald_host *again = lb_hash_choose_attempt(h, kh, a);
            stable += again == lb_hash_choose_attempt(h, kh, a);
            tries++;
            if (again != first) {
                moved++;
                break;
            }
        }
    }
    const char *name = hash_name(&f.cfg);
    ok(same0 == NKEYS, "%s: attempt 0 is the plain pick", name);
    ok(moved > NKEYS * 97 / 100, "%s: within 4 re-picks, %d of %d keys reach another host", name, moved, NKEYS);
    ok(stable == tries, "%s: a re-pick is deterministic (%d of %d)", name, stable, tries);
    lb_hash_free(h);
    fixture_free(&f);
}

/* Locality-weighted LB: localities share the traffic by their weights,
 * each host of one by the policy; a locality with unhealthy hosts loses its
 * share (its availability, overprovisioned by 1.4), one without a weight
 * gets nothing. */
static void test_locality_weighted(enum lb_policy policy)
{
    const char *name = policy == LB_ROUND_ROBIN ? "RR" : policy == LB_RANDOM ? "RANDOM" : "LR";
    struct locality_cfg locs[3] = {{.weight = 1}, {.weight = 3}, {.weight = 0}};
    struct fixture f;
    int count[MAXH];
    fixture_init(&f, 7, NULL, NULL, policy);
    /* hosts 0-1 in locality 0 (weight 1), 2-5 in locality 1 (weight 3), 6 in locality 2 (no weight) */
    static const uint32_t loc_of[7] = {0, 0, 1, 1, 1, 1, 2};
    for (int i = 0; i < 7; i++)
        f.hosts[i].locality = loc_of[i];
    f.cfg.localities = locs;
    f.cfg.nlocalities = 3;
    f.cfg.locality_weighted = true;
    f.cfg.healthy_panic_threshold = 50;

    void *lb = lb_new(&f.cfg, &f.hs, 1);
    memset(count, 0, sizeof(count));
    for (int i = 0; i < 4000; i++)
        count[index_of(&f, lb_choose(lb, &f.cfg, &f.hs, 0))]++;
    lb_free(lb);
    int l0 = count[0] + count[1], l1 = count[2] + count[3] + count[4] + count[5];
    ok(l0 >= 950 && l0 <= 1050 && l1 >= 2950 && l1 <= 3050, "locality %s: weights 1:3 give %d:%d of 4000", name, l0,
       l1);
    is_int(count[6], 0, "locality %s: a locality without a weight gets nothing", name);
    ok(count[0] > 300 && count[1] > 300 && count[2] > 500 && count[5] > 500,
       "locality %s: every host of a locality gets some (%d %d %d %d %d %d)", name, count[0], count[1], count[2],
       count[3], count[4], count[5]);

    /* half of locality 1 unhealthy: availability 2/4 * 1.4 = 70%, so 1 : 3 * 0.7 */
    atomic_store(&f.hosts[2].health, HOST_FAILED_ACTIVE_HC);
    atomic_store(&f.hosts[3].health, HOST_FAILED_ACTIVE_HC);
    lb = lb_new(&f.cfg, &f.hs, 1);
    memset(count, 0, sizeof(count));
    for (int i = 0; i < 3100; i++)
        count[index_of(&f, lb_choose(lb, &f.cfg, &f.hs, 0))]++;
    lb_free(lb);
    l0 = count[0] + count[1];
    l1 = count[4] + count[5];
    ok(l0 >= 950 && l0 <= 1050 && l1 >= 2050 && l1 <= 2150 && count[2] + count[3] == 0,
       "locality %s: a half-healthy locality weighs 70%% (%d:%d, %d to its failed hosts)", name, l0, l1,
       count[2] + count[3]);
    atomic_store(&f.hosts[2].health, 0);
    atomic_store(&f.hosts[3].health, 0);

    locs[0].weight = locs[1].weight = 0;
    lb = lb_new(&f.cfg, &f.hs, 1);
    ok(lb_choose(lb, &f.cfg, &f.hs, 0) == NULL, "locality %s: no locality with a weight, no host", name);
    lb_free(lb);
    fixture_free(&f);
}

int main(void)
{
    evthread_use_pthreads();   /* worker_post wakes another thread's loop */
    stats_init();
    test_round_robin_equal();
    test_round_robin_weighted(0);
    test_round_robin_weighted(3);
    test_random();
    test_least_request();
    test_priorities();
    test_empty();
    test_health_panic();
    test_cluster_manager();
    test_dns();
    test_dns_failure();
    test_hash_stability(LB_RING_HASH, false);
    test_hash_stability(LB_RING_HASH, true);
    test_hash_stability(LB_MAGLEV, false);
    test_hash_unhealthy_host(LB_RING_HASH);
    test_hash_unhealthy_host(LB_MAGLEV);
    test_hash_weights(LB_RING_HASH);
    test_hash_weights(LB_MAGLEV);
    test_hash_tables();
    test_hash_attempts(LB_RING_HASH);
    test_hash_attempts(LB_MAGLEV);
    test_hash_config();
    test_locality_weighted(LB_ROUND_ROBIN);
    test_locality_weighted(LB_RANDOM);
    test_locality_weighted(LB_LEAST_REQUEST);
    return done_testing();
}
