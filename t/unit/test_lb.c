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
#include "upstream/cluster.h"
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
    test_cluster_manager();
    test_dns();
    test_dns_failure();
    return done_testing();
}
