/* The cluster manager (main thread) and each worker's view of the clusters.
 *
 * Every endpoint to resolve is a target. A target's hosts are kept across
 * answers while their address stays (same struct herald_host, so per-host
 * stats survive), new addresses are appended and vanished ones dropped; the
 * order of DNS answers does not matter. When a cluster's membership changes
 * the main thread builds a new immutable host set, makes it the cluster's
 * `current` and tells every registered worker which cluster changed; the
 * worker takes a reference to `current` (under a mutex held for a pointer
 * copy) and rebuilds its load balancer. The message carries no pointer, so a
 * queue dropped at shutdown leaks nothing, and a burst of updates costs the
 * worker one swap to the latest set.
 *
 * Initialization follows Envoy: a cluster is initialized once every target
 * has answered once, successfully or not (a name that fails keeps being
 * retried at the refresh rate, but does not hold /ready back forever). */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "common.h"
#include "herald/stats.h"
#include "log.h"
#include "upstream/circuit_breaker.h"
#include "upstream/cluster.h"
#include "upstream/dns.h"
#include "upstream/lb_subset.h"
#include "worker.h"

#define DEFAULT_REFRESH_MS 5000

struct cluster_target {
    struct cluster *cl;
    const struct endpoint_cfg *ep;
    uint32_t priority;
    uint32_t locality;                 /* index in cfg->localities */
    const char *name;                  /* what is resolved (the endpoint's address) */
    bool literal;                      /* IP address or pipe: no DNS */
    bool answered;                     /* first answer in (success or failure) */
    bool first_only;                   /* LOGICAL_DNS: the first address only */
    bool failing;                      /* last lookup failed (warn once per outage) */
    struct dns_query *query;           /* in flight */
    struct event *timer;               /* next refresh */
    struct herald_host **hosts; size_t nhosts;
};

static struct {
    struct cluster *clusters; size_t n;
    struct event_base *base;
    struct evdns_base *dns;
    /* guards every cluster's `current` (written by main, read by workers on swap) */
    pthread_mutex_t lock;
    /* guards the registry; never held together with `lock` */
    pthread_mutex_t reg_lock;
    struct worker **workers; size_t nworkers, capworkers;
    struct herald_stat *cm_cluster_added, *cm_active_clusters, *cm_warming_clusters;
    void (*membership_cb)(struct cluster *cl);   /* health checker */
} cm = { .lock = PTHREAD_MUTEX_INITIALIZER, .reg_lock = PTHREAD_MUTEX_INITIALIZER };

/* ------------------------------------------------------------------ hosts */

void host_get(struct herald_host *h)
{
    ref_get(&h->ref);
}

void host_put(struct herald_host *h)
{
    if (!h || !ref_put(&h->ref))
        return;
    free(h->addr_str);
    free(h->hostname);
    free(h->outlier);                  /* outlier.c's per-host counters: plain memory */
    free(h);
}

/* "1.2.3.4:80", "[::1]:80", or a pipe's path. */
static void format_addr(const struct sockaddr *sa, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN];

    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(out, size, "%s:%u", ip, ntohs(in->sin_port));
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(out, size, "[%s]:%u", ip, ntohs(in6->sin6_port));
        break;
    }
    case AF_UNIX:
        snprintf(out, size, "%s", ((const struct sockaddr_un *)sa)->sun_path);
        break;
    default:
        snprintf(out, size, "?");
    }
}

static bool literal_addr(const struct address_cfg *a, struct sockaddr_storage *ss, socklen_t *len);

static struct herald_host *host_new(struct cluster_target *t, const struct sockaddr *sa, socklen_t len)
{
    struct herald_host *h = xcalloc(1, sizeof(*h));
    char buf[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
    const char *hostname = t->ep->hostname && *t->ep->hostname ? t->ep->hostname
                           : t->literal                        ? ""
                                                               : t->name;

    ref_init(&h->ref);
    memcpy(&h->addr, sa, len);
    h->addrlen = len;
    format_addr(sa, buf, sizeof(buf));
    h->addr_str = xstrdup(buf);
    h->hostname = xstrdup(hostname);
    h->weight = t->ep->weight ? t->ep->weight : 1;
    h->priority = t->priority;
    h->cluster = t->cl;
    h->hc_port = t->ep->hc_port;
    h->ep = t->ep;
    h->locality = t->locality;
    h->locality_weight = t->cl->cfg->localities[t->locality].weight;
    if (t->ep->hc_address.host)
        literal_addr(&t->ep->hc_address, &h->hc_addr, &h->hc_addrlen);
    /* as Envoy: a host of a health-checked cluster is unusable until its first check passes */
    if (t->cl->cfg->nhealth_checks)
        atomic_init(&h->health, HOST_FAILED_ACTIVE_HC | HOST_PENDING_ACTIVE_HC);
    return h;
}

static struct host_set *host_set_new(struct herald_host **hosts, size_t n)
{
    struct host_set *hs = xcalloc(1, sizeof(*hs));

    ref_init(&hs->ref);
    hs->hosts = n ? hosts : NULL;
    hs->nhosts = n;
    if (!n)
        free(hosts);
    for (size_t i = 0; i < n; i++) {
        host_get(hosts[i]);
        if (hosts[i]->priority + 1 > hs->npriorities)
            hs->npriorities = hosts[i]->priority + 1;
    }
    return hs;
}

static void host_set_put(struct host_set *hs)
{
    if (!hs || !ref_put(&hs->ref))
        return;
    for (size_t i = 0; i < hs->nhosts; i++)
        host_put(hs->hosts[i]);
    lb_subsets_free(hs->subsets);
    free(hs->hosts);
    free(hs);
}

/* ------------------------------------------------------------------ publishing */

static void gauge_set(struct herald_stat *g, int64_t *shown, int64_t v)
{
    if (v != *shown)
        herald_gauge_add(g, v - *shown);
    *shown = v;
}

static void on_cluster_changed(struct worker *w, void *arg);

/* Makes a new host set from the targets (by priority, then config order) and
 * hands it to the workers. */
static void publish(struct cluster *cl, bool membership)
{
    struct herald_host **hosts = NULL;
    size_t n = 0, cap = 0;
    uint32_t max_prio = 0;
    int64_t max_weight = 0;

    for (size_t i = 0; i < cl->ntargets; i++)
        if (cl->targets[i].priority > max_prio)
            max_prio = cl->targets[i].priority;
    for (uint32_t p = 0; p <= max_prio; p++)
        for (size_t i = 0; i < cl->ntargets; i++) {
            struct cluster_target *t = &cl->targets[i];
            if (t->priority != p)
                continue;
            for (size_t j = 0; j < t->nhosts; j++) {
                *VEC_PUSH(hosts, n, cap) = t->hosts[j];
                if (t->hosts[j]->weight > max_weight)
                    max_weight = t->hosts[j]->weight;
            }
        }
    struct host_set *hs = host_set_new(hosts, n), *old;
    bool was_empty;
    if (cl->cfg->subset)   /* part of the snapshot: every worker's subset balancers use the same */
        hs->subsets = lb_subsets_build(cl->cfg, hs);
    pthread_mutex_lock(&cm.lock);
    old = cl->current;
    cl->current = hs;
    pthread_mutex_unlock(&cm.lock);
    was_empty = !old || old->nhosts == 0;
    if (cl->cfg->subset)
        lb_subsets_account(&cl->stats, old ? old->subsets : NULL, hs->subsets, &cl->shown_subsets);
    host_set_put(old);

    int64_t healthy = 0;
    for (size_t i = 0; i < n; i++)
        healthy += host_healthy(hosts[i]);
    gauge_set(cl->stats.membership_healthy, &cl->shown_healthy, healthy);
    gauge_set(cl->stats.membership_total, &cl->shown_total, (int64_t)n);
    gauge_set(cl->stats.max_host_weight, &cl->shown_max_weight, max_weight);
    if (membership && (n || !was_empty))
        herald_stat_inc(cl->stats.membership_change);

    pthread_mutex_lock(&cm.reg_lock);
    for (size_t i = 0; i < cm.nworkers; i++) {
        struct worker *w = cm.workers[i];
        /* a worker not started yet, or already joined, runs nothing: its view is ours to update */
        if (w->base && w->wakeup)
            worker_post(w, on_cluster_changed, (void *)(uintptr_t)cl->index);
        else
            on_cluster_changed(w, (void *)(uintptr_t)cl->index);
    }
    pthread_mutex_unlock(&cm.reg_lock);
    if (membership && cm.membership_cb)
        cm.membership_cb(cl);
}

void cluster_set_membership_cb(void (*cb)(struct cluster *cl))
{
    cm.membership_cb = cb;
}

static void update_waiting(struct cluster *cl)
{
    free(cl->waiting_for);
    cl->waiting_for = NULL;
    for (size_t i = 0; i < cl->ntargets; i++)
        if (!cl->targets[i].answered) {
            cl->waiting_for = xasprintf("resolving %s", cl->targets[i].name);
            return;
        }
    if (!cl->initialized) {
        cl->initialized = true;
        log_info("upstream", "cluster '%s' initialized with %zu hosts", cl->cfg->name,
                 cl->current ? cl->current->nhosts : (size_t)0);
        herald_gauge_add(cm.cm_warming_clusters, -1);
    }
}

/* Sets a target's addresses; true when its membership changed. Hosts that
 * stay keep their place and identity; new ones go at the end. */
static bool target_set_addrs(struct cluster_target *t, const struct dns_addr *a, size_t n)
{
    struct herald_host **next = xcalloc(t->nhosts + n + 1, sizeof(*next));
    bool *kept = xcalloc(n + 1, sizeof(*kept));
    size_t nnext = 0;
    bool changed = false;
    char buf[INET6_ADDRSTRLEN + 16];

    for (size_t i = 0; i < t->nhosts; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++) {
            if (kept[j])
                continue;
            format_addr((const struct sockaddr *)&a[j].ss, buf, sizeof(buf));
            if (strcmp(buf, t->hosts[i]->addr_str) == 0)
                found = kept[j] = true;
        }
        if (found) {
            next[nnext++] = t->hosts[i];
        } else {
            host_put(t->hosts[i]);
            changed = true;
        }
    }
    for (size_t j = 0; j < n; j++)
        if (!kept[j]) {
            next[nnext++] = host_new(t, (const struct sockaddr *)&a[j].ss, a[j].len);
            changed = true;
        }
    free(kept);
    free(t->hosts);
    t->hosts = next;
    t->nhosts = nnext;
    return changed;
}

/* ------------------------------------------------------------------ DNS */

static void target_resolve(struct cluster_target *t);

static uint64_t refresh_ms(const struct cluster *cl)
{
    return cl->cfg->dns_refresh_rate_ms ? cl->cfg->dns_refresh_rate_ms : DEFAULT_REFRESH_MS;
}

static void on_refresh(evutil_socket_t fd, short what, void *arg)
{
    target_resolve(arg);
}

static void schedule_refresh(struct cluster_target *t)
{
    uint64_t ms = refresh_ms(t->cl);
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

    if (!t->timer)
        t->timer = evtimer_new(cm.base, on_refresh, t);
    evtimer_add(t->timer, &tv);
}

static void on_resolved(void *arg, int err, const struct dns_addr *addrs, size_t n)
{
    struct cluster_target *t = arg;
    struct cluster *cl = t->cl;

    t->query = NULL;
    if (err) {
        herald_stat_inc(cl->stats.update_failure);
        HERALD_LOGF(t->failing ? HERALD_LOG_DEBUG : HERALD_LOG_WARN, "upstream",
                    "cluster '%s': cannot resolve %s: %s%s", cl->cfg->name, t->name, dns_strerror(err),
                    t->nhosts ? " (keeping the previous hosts)" : "");
        t->failing = true;
    } else {
        if (t->failing)
            log_info("upstream", "cluster '%s': %s resolves again", cl->cfg->name, t->name);
        t->failing = false;
        herald_stat_inc(cl->stats.update_success);
        if (t->first_only)
            n = 1;
        if (target_set_addrs(t, addrs, n)) {
            log_debug("upstream", "cluster '%s': %s now has %zu addresses", cl->cfg->name, t->name,
                      t->nhosts);
            publish(cl, true);
        } else {
            herald_stat_inc(cl->stats.update_no_rebuild);
        }
    }
    t->answered = true;
    if (!cl->initialized)
        update_waiting(cl);
    schedule_refresh(t);
}

static void target_resolve(struct cluster_target *t)
{
    if (t->query || !cm.dns)
        return;
    herald_stat_inc(t->cl->stats.update_attempt);
    /* may answer (and reschedule) before it returns */
    t->query = dns_resolve(cm.dns, t->name, t->ep->address.port, t->cl->cfg->dns_lookup_family,
                           on_resolved, t);
}

/* ------------------------------------------------------------------ set-up */

/* An IP literal or pipe as a socket address; false for a DNS name. */
static bool literal_addr(const struct address_cfg *a, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (a->pipe) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        if (strlen(a->pipe) >= sizeof(un->sun_path))
            return false;
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, a->pipe);
        *len = (socklen_t)sizeof(*un);
        return true;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (a->host && inet_pton(AF_INET, a->host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(a->port);
        *len = sizeof(*in);
        return true;
    }
    if (a->host && inet_pton(AF_INET6, a->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(a->port);
        *len = sizeof(*in6);
        return true;
    }
    return false;
}

static void stats_init_cluster(struct cluster *cl)
{
    struct cluster_stats *s = &cl->stats;
    char *p = xasprintf("cluster.%s", cl->cfg->name);

#define C(f) s->f = herald_counter(p, #f)
#define G(f) s->f = herald_gauge(p, #f)
#define H(f) s->f = herald_histogram(p, #f)
    C(upstream_cx_total); G(upstream_cx_active); C(upstream_cx_connect_fail);
    C(upstream_cx_connect_timeout); C(upstream_cx_overflow); C(upstream_cx_none_healthy);
    C(upstream_cx_destroy); C(upstream_cx_destroy_local); C(upstream_cx_destroy_remote);
    C(upstream_cx_rx_bytes_total); C(upstream_cx_tx_bytes_total); H(upstream_cx_connect_ms);
    H(upstream_cx_length_ms); G(membership_healthy); G(membership_total); C(membership_change);
    C(update_attempt); C(update_success); C(update_failure); C(update_empty); C(lb_healthy_panic);
    G(max_host_weight);
    C(upstream_cx_http1_total); C(upstream_cx_http2_total); C(upstream_cx_idle_timeout);
    C(upstream_cx_max_requests); C(upstream_cx_protocol_error); C(upstream_cx_destroy_with_active_rq);
    C(upstream_cx_drained_after_cancel);
    C(upstream_flow_control_paused_reading_total); C(upstream_flow_control_resumed_reading_total);
    G(upstream_cx_rx_bytes_buffered); G(upstream_cx_tx_bytes_buffered);
    C(upstream_rq_total); G(upstream_rq_active); C(upstream_rq_pending_total);
    G(upstream_rq_pending_active); C(upstream_rq_pending_overflow); C(upstream_rq_timeout);
    C(upstream_rq_retry); C(upstream_rq_completed);
    G(membership_degraded); G(membership_excluded); C(update_no_rebuild);
    G(lb_subsets_active); C(lb_subsets_created); C(lb_subsets_removed); C(lb_subsets_selected);
    C(lb_subsets_fallback); C(lb_subsets_fallback_panic);
#undef C
#undef G
#undef H
    s->circuit_breakers_default_cx_open = herald_gauge(p, "circuit_breakers.default.cx_open");
    free(p);
}

static int cluster_setup(struct cluster *cl, struct cluster_cfg *cfg, unsigned index, struct cfg_diag *d)
{
    cl->cfg = cfg;
    cl->index = index;
    atomic_init(&cl->cx_active, 0);
    stats_init_cluster(cl);
    cl->cb = cb_new(cfg);
    if (cfg->respect_dns_ttl && cfg->type != CLUSTER_STATIC)
        diag_warn(d, cfg->node, "cluster '%s': respect_dns_ttl is not supported (the resolver does not "
                  "report TTLs); names are re-resolved every dns_refresh_rate (%llu ms)", cfg->name,
                  (unsigned long long)refresh_ms(cl));

    size_t n = 0;
    for (size_t i = 0; i < cfg->nlocalities; i++)
        n += cfg->localities[i].nendpoints;
    if (cfg->type == CLUSTER_LOGICAL_DNS && n > 1) {
        /* the schema should have said so already */
        diag_error(d, cfg->node, "cluster '%s': LOGICAL_DNS takes exactly one endpoint", cfg->name);
        return -1;
    }
    cl->targets = xcalloc(n ? n : 1, sizeof(*cl->targets));
    for (size_t i = 0; i < cfg->nlocalities; i++)
        for (size_t j = 0; j < cfg->localities[i].nendpoints; j++) {
            const struct endpoint_cfg *ep = &cfg->localities[i].endpoints[j];
            struct cluster_target *t = &cl->targets[cl->ntargets++];
            struct sockaddr_storage ss;
            socklen_t len;

            t->cl = cl;
            t->ep = ep;
            t->priority = cfg->localities[i].priority;
            t->locality = (uint32_t)i;
            t->name = ep->address.pipe ? ep->address.pipe : ep->address.host ? ep->address.host : "";
            t->first_only = cfg->type == CLUSTER_LOGICAL_DNS;
            t->literal = literal_addr(&ep->address, &ss, &len);
            if (t->literal) {
                t->answered = true;
                t->hosts = xcalloc(1, sizeof(*t->hosts));
                t->hosts[t->nhosts++] = host_new(t, (struct sockaddr *)&ss, len);
            } else if (cfg->type == CLUSTER_STATIC) {
                diag_error(d, ep->node, "cluster '%s': STATIC endpoint '%s' is not an IP address "
                           "(use type STRICT_DNS or LOGICAL_DNS for names)", cfg->name, t->name);
                return -1;
            }
        }
    publish(cl, true);   /* the literal hosts, or an empty set until DNS answers */
    update_waiting(cl);
    return 0;
}

int cluster_manager_init(const struct bootstrap *b, struct event_base *base, struct evdns_base *dns,
                         struct cfg_diag *d)
{
    cm.base = base;
    cm.dns = dns;
    cm.cm_cluster_added = herald_counter("cluster_manager", "cluster_added");
    cm.cm_active_clusters = herald_gauge("cluster_manager", "active_clusters");
    cm.cm_warming_clusters = herald_gauge("cluster_manager", "warming_clusters");
    herald_counter("cluster_manager", "cluster_modified");
    herald_counter("cluster_manager", "cluster_removed");
    herald_counter("cluster_manager", "cluster_updated");
    cm.clusters = xcalloc(b->nclusters ? b->nclusters : 1, sizeof(*cm.clusters));
    for (size_t i = 0; i < b->nclusters; i++) {
        herald_gauge_add(cm.cm_warming_clusters, 1);  /* until update_waiting says initialized */
        cm.n++;
        if (cluster_setup(&cm.clusters[i], &b->clusters[i], (unsigned)i, d) < 0)
            return -1;
        herald_stat_inc(cm.cm_cluster_added);
        herald_gauge_add(cm.cm_active_clusters, 1);
    }
    return 0;
}

void cluster_manager_start(void)
{
    for (size_t i = 0; i < cm.n; i++)
        for (size_t j = 0; j < cm.clusters[i].ntargets; j++)
            if (!cm.clusters[i].targets[j].literal)
                target_resolve(&cm.clusters[i].targets[j]);
}

void cluster_manager_shutdown(void)
{
    size_t cancelled = 0;

    for (size_t i = 0; i < cm.n; i++) {
        struct cluster *cl = &cm.clusters[i];
        for (size_t j = 0; j < cl->ntargets; j++) {
            struct cluster_target *t = &cl->targets[j];
            if (t->query) {
                dns_cancel(t->query);
                t->query = NULL;
                cancelled++;
            }
            if (t->timer)
                event_free(t->timer);
            for (size_t k = 0; k < t->nhosts; k++)
                host_put(t->hosts[k]);
            free(t->hosts);
        }
        free(cl->targets);
        host_set_put(cl->current);
        free(cl->waiting_for);
        cb_free(cl->cb);
    }
    /* libevent hands cancelled lookups back on its next turn; without one
     * their memory (ours and libevent's) would be left behind */
    for (int spins = 0; cancelled && dns_in_flight() && spins < 8; spins++)
        if (event_base_loop(cm.base, EVLOOP_NONBLOCK) < 0)
            break;
    free(cm.clusters);
    free(cm.workers);
    cm.clusters = NULL;
    cm.n = 0;
    cm.workers = NULL;
    cm.nworkers = cm.capworkers = 0;
}

void cluster_health_changed(struct cluster *cl)
{
    publish(cl, false);
}

struct cluster *cluster_manager_at(size_t i)
{
    return i < cm.n ? &cm.clusters[i] : NULL;
}

size_t cluster_manager_count(void)
{
    return cm.n;
}

struct cluster *cluster_manager_find(const char *name)
{
    for (size_t i = 0; i < cm.n; i++)
        if (strcmp(cm.clusters[i].cfg->name, name) == 0)
            return &cm.clusters[i];
    return NULL;
}

int cluster_manager_pending(struct evbuffer *why)
{
    int pending = 0;

    for (size_t i = 0; i < cm.n; i++) {
        struct cluster *cl = &cm.clusters[i];
        if (cl->initialized)
            continue;
        pending++;
        for (size_t j = 0; j < cl->ntargets; j++)
            if (!cl->targets[j].answered && why)
                evbuffer_add_printf(why, "cluster '%s': resolving %s\n", cl->cfg->name, cl->targets[j].name);
    }
    return pending;
}

/* ------------------------------------------------------------------ /clusters */

static void host_ip_port(const struct herald_host *h, char *ip, size_t size, unsigned *port)
{
    const struct sockaddr *sa = (const struct sockaddr *)&h->addr;

    *port = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, (socklen_t)size);
        *port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, (socklen_t)size);
        *port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    } else {
        snprintf(ip, size, "%s", h->addr_str);
    }
}

/* Envoy's order: counters and gauges merged, by name. */
struct host_stat { const char *name; bool gauge; size_t off; };
static const struct host_stat host_stats[] = {
    { "cx_active", true, offsetof(struct herald_host, cx_active) },
    { "cx_connect_fail", false, offsetof(struct herald_host, cx_connect_fail) },
    { "cx_total", false, offsetof(struct herald_host, cx_total) },
    { "rq_active", true, offsetof(struct herald_host, rq_active) },
    { "rq_error", false, offsetof(struct herald_host, rq_error) },
    { "rq_success", false, offsetof(struct herald_host, rq_success) },
    { "rq_timeout", false, offsetof(struct herald_host, rq_timeout) },
    { "rq_total", false, offsetof(struct herald_host, rq_total) },
};

static uint64_t host_stat_value(const struct herald_host *h, const struct host_stat *s)
{
    const atomic_uint_fast64_t *v = (const atomic_uint_fast64_t *)((const char *)h + s->off);

    return atomic_load_explicit(v, memory_order_relaxed);
}

/* Envoy's HostUtility::healthFlagsToString order. */
void host_health_flags_str(unsigned flags, char *out, size_t size)
{
    static const struct { unsigned bit; const char *name; } names[] = {
        { HOST_FAILED_ACTIVE_HC, "/failed_active_hc" },
        { HOST_FAILED_OUTLIER, "/failed_outlier_check" },
        { HOST_PENDING_ACTIVE_HC, "/pending_active_hc" },
    };
    size_t len = 0;

    out[0] = 0;
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (flags & names[i].bit && len < size)
            len += (size_t)snprintf(out + len, size - len, "%s", names[i].name);
    if (!len)
        snprintf(out, size, "healthy");
}

static void dump_text(struct evbuffer *out)
{
    static const char *const prio_names[2] = { "default_priority", "high_priority" };

    for (size_t i = 0; i < cm.n; i++) {
        const struct cluster *cl = &cm.clusters[i];
        const char *name = cl->cfg->name;
        evbuffer_add_printf(out, "%s::observability_name::%s\n", name, name);
        for (int p = 0; p < 2; p++) {
            const struct thresholds_cfg *th = &cl->cfg->thresholds[p];
            evbuffer_add_printf(out, "%s::%s::max_connections::%u\n", name, prio_names[p],
                                th->max_connections);
            evbuffer_add_printf(out, "%s::%s::max_pending_requests::%u\n", name, prio_names[p],
                                th->max_pending_requests);
            evbuffer_add_printf(out, "%s::%s::max_requests::%u\n", name, prio_names[p], th->max_requests);
            evbuffer_add_printf(out, "%s::%s::max_retries::%u\n", name, prio_names[p], th->max_retries);
        }
        evbuffer_add_printf(out, "%s::added_via_api::false\n", name);
        for (size_t j = 0; cl->current && j < cl->current->nhosts; j++) {
            const struct herald_host *h = cl->current->hosts[j];
            const char *a = h->addr_str;
            for (size_t k = 0; k < ARRAY_SIZE(host_stats); k++)
                evbuffer_add_printf(out, "%s::%s::%s::%llu\n", name, a, host_stats[k].name,
                                    (unsigned long long)host_stat_value(h, &host_stats[k]));
            evbuffer_add_printf(out, "%s::%s::hostname::%s\n", name, a, h->hostname ? h->hostname : "");
            char flags[256];
            host_health_flags_str(atomic_load(&h->health), flags, sizeof(flags));
            evbuffer_add_printf(out, "%s::%s::health_flags::%s\n", name, a, flags);
            evbuffer_add_printf(out, "%s::%s::weight::%u\n", name, a, h->weight);
            evbuffer_add_printf(out, "%s::%s::region::\n", name, a);
            evbuffer_add_printf(out, "%s::%s::zone::\n", name, a);
            evbuffer_add_printf(out, "%s::%s::sub_zone::\n", name, a);
            evbuffer_add_printf(out, "%s::%s::canary::false\n", name, a);
            evbuffer_add_printf(out, "%s::%s::priority::%u\n", name, a, h->priority);
            evbuffer_add_printf(out, "%s::%s::success_rate::-1\n", name, a);
            evbuffer_add_printf(out, "%s::%s::local_origin_success_rate::-1\n", name, a);
        }
    }
}

/* Envoy's admin.v3.Clusters, except that every field is present and stat
 * values are JSON numbers (Envoy's proto JSON omits zeros and quotes 64-bit
 * integers). */
static void dump_json(struct evbuffer *out)
{
    json_t *statuses = json_array();

    for (size_t i = 0; i < cm.n; i++) {
        const struct cluster *cl = &cm.clusters[i];
        json_t *hosts = json_array(), *thresholds = json_array();
        for (int p = 0; p < 2; p++) {
            const struct thresholds_cfg *th = &cl->cfg->thresholds[p];
            json_array_append_new(thresholds, json_pack("{s:s, s:I, s:I, s:I, s:I}",
                "priority", p ? "HIGH" : "DEFAULT", "max_connections", (json_int_t)th->max_connections,
                "max_pending_requests", (json_int_t)th->max_pending_requests,
                "max_requests", (json_int_t)th->max_requests, "max_retries", (json_int_t)th->max_retries));
        }
        for (size_t j = 0; cl->current && j < cl->current->nhosts; j++) {
            const struct herald_host *h = cl->current->hosts[j];
            char ip[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
            unsigned port;
            json_t *stats = json_array(), *address;

            host_ip_port(h, ip, sizeof(ip), &port);
            if (((const struct sockaddr *)&h->addr)->sa_family == AF_UNIX)
                address = json_pack("{s:{s:s}}", "pipe", "path", ip);
            else
                address = json_pack("{s:{s:s, s:I}}", "socket_address", "address", ip,
                                    "port_value", (json_int_t)port);
            for (size_t k = 0; k < ARRAY_SIZE(host_stats); k++)
                json_array_append_new(stats, json_pack("{s:s, s:I, s:s}", "name", host_stats[k].name,
                    "value", (json_int_t)host_stat_value(h, &host_stats[k]),
                    "type", host_stats[k].gauge ? "GAUGE" : "COUNTER"));
            unsigned hf = atomic_load(&h->health);
            /* Envoy's HostHealthStatus; every field present (Envoy's proto JSON drops false ones) */
            json_t *health = json_pack("{s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:s}",
                "failed_active_health_check", (hf & HOST_FAILED_ACTIVE_HC) != 0,
                "failed_outlier_check", (hf & HOST_FAILED_OUTLIER) != 0,
                "failed_active_degraded_check", 0, "pending_dynamic_removal", 0,
                "pending_active_hc", (hf & HOST_PENDING_ACTIVE_HC) != 0,
                "excluded_via_immediate_hc_fail", 0, "active_hc_timeout", 0,
                "eds_health_status", "HEALTHY");
            json_array_append_new(hosts, json_pack("{s:o, s:o, s:o, s:I, s:I, s:s, s:{}}",
                "address", address, "stats", stats, "health_status", health,
                "weight", (json_int_t)h->weight, "priority", (json_int_t)h->priority,
                "hostname", h->hostname ? h->hostname : "", "locality"));
        }
        json_array_append_new(statuses, json_pack("{s:s, s:s, s:b, s:{s:o}, s:o}",
            "name", cl->cfg->name, "observability_name", cl->cfg->name, "added_via_api", 0,
            "circuit_breakers", "thresholds", thresholds, "host_statuses", hosts));
    }
    json_t *root = json_pack("{s:o}", "cluster_statuses", statuses);
    char *s = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (s) {
        evbuffer_add(out, s, strlen(s));
        evbuffer_add(out, "\n", 1);
        free(s);
    }
    json_decref(root);
}

void cluster_manager_dump(struct evbuffer *out, bool json)
{
    if (json)
        dump_json(out);
    else
        dump_text(out);
}

/* ------------------------------------------------------------------ workers */

static void view_set(struct herald_cluster *v, struct cluster *cl, struct host_set *hs, unsigned seed)
{
    lb_free(v->lb);
    subset_lb_free(v->subset);
    host_set_put(v->hosts);
    v->cluster = cl;
    v->hosts = hs;
    v->lb = NULL;
    v->subset = NULL;
    if (cl->cfg->subset)
        v->subset = subset_lb_new(cl->cfg, hs, seed, &cl->stats);
    else
        v->lb = lb_new(cl->cfg, hs, seed);
}

static struct host_set *current_ref(struct cluster *cl)
{
    struct host_set *hs;

    pthread_mutex_lock(&cm.lock);
    hs = cl->current;
    if (hs)
        ref_get(&hs->ref);
    pthread_mutex_unlock(&cm.lock);
    return hs;
}

/* On the worker: swap in the cluster's latest host set. */
static void on_cluster_changed(struct worker *w, void *arg)
{
    size_t i = (uintptr_t)arg;
    struct cluster_worker *cw = w->clusters;

    if (!cw || i >= cw->nviews)
        return;
    struct herald_cluster *v = &cw->views[i];
    struct host_set *hs = current_ref(v->cluster);
    if (hs == v->hosts) {
        host_set_put(hs);   /* an earlier message already brought it */
        return;
    }
    view_set(v, v->cluster, hs, cw->seed);
}

void cluster_worker_init(struct worker *w)
{
    struct cluster_worker *cw = xcalloc(1, sizeof(*cw));

    pthread_mutex_lock(&cm.reg_lock);
    /* the order of registration, not w->index: worker_start may not have set it yet */
    cw->seed = (unsigned)cm.nworkers;
    cw->nviews = cm.n;
    cw->views = xcalloc(cm.n ? cm.n : 1, sizeof(*cw->views));
    for (size_t i = 0; i < cm.n; i++)
        view_set(&cw->views[i], &cm.clusters[i], current_ref(&cm.clusters[i]), cw->seed);
    w->clusters = cw;
    *VEC_PUSH(cm.workers, cm.nworkers, cm.capworkers) = w;
    pthread_mutex_unlock(&cm.reg_lock);
}

void cluster_worker_free(struct worker *w)
{
    struct cluster_worker *cw = w->clusters;

    pthread_mutex_lock(&cm.reg_lock);
    for (size_t i = 0; i < cm.nworkers; i++)
        if (cm.workers[i] == w) {
            cm.workers[i] = cm.workers[--cm.nworkers];
            break;
        }
    pthread_mutex_unlock(&cm.reg_lock);
    if (!cw)
        return;
    w->clusters = NULL;
    for (size_t i = 0; i < cw->nviews; i++) {
        lb_free(cw->views[i].lb);
        subset_lb_free(cw->views[i].subset);
        host_set_put(cw->views[i].hosts);
    }
    free(cw->views);
    free(cw);
}

/* ------------------------------------------------------------------ SDK */

struct herald_cluster *herald_cluster_get(const char *name)
{
    struct worker *w = worker_self();
    struct cluster_worker *cw = w ? w->clusters : NULL;

    if (!cw || !name)
        return NULL;
    for (size_t i = 0; i < cw->nviews; i++)
        if (strcmp(cw->views[i].cluster->cfg->name, name) == 0)
            return &cw->views[i];
    return NULL;
}

const char *herald_cluster_name(const struct herald_cluster *c)
{
    return c->cluster->cfg->name;
}

struct herald_host *herald_cluster_choose_host(struct herald_cluster *c, uint64_t hash)
{
    return herald_cluster_choose_host_attempt(c, hash, 0);
}

struct herald_host *herald_cluster_choose_host_attempt(struct herald_cluster *c, uint64_t hash, uint32_t attempt)
{
    /* a subset cluster asked without criteria (tcp_proxy, request mirrors,
     * ext_authz's service): its fallback policy decides, as in Envoy */
    struct herald_host *h = c->subset ? subset_lb_choose(c->subset, NULL, 0, hash, attempt)
                                      : lb_choose_attempt(c->lb, c->cluster->cfg, c->hosts, hash, attempt);

    if (!h)
        herald_stat_inc(c->cluster->stats.upstream_cx_none_healthy);
    return h;
}

struct herald_host *cluster_choose_host_matching(struct herald_cluster *c, uint64_t hash, uint32_t attempt,
                                                 const struct lb_kvs *route, const struct metadata *dyn)
{
    if (!c->subset)   /* the common case: nothing read, nothing built */
        return herald_cluster_choose_host_attempt(c, hash, attempt);
    struct lb_match m[LB_MATCH_MAX];
    size_t n = lb_match_build(m, LB_MATCH_MAX, route, dyn);
    struct herald_host *h = subset_lb_choose(c->subset, m, n == SIZE_MAX ? 0 : n, hash, attempt);
    if (!h)
        herald_stat_inc(c->cluster->stats.upstream_cx_none_healthy);
    return h;
}

const char *herald_host_hostname(const struct herald_host *h)
{
    return h && h->hostname && *h->hostname ? h->hostname : NULL;
}

const char *herald_host_address(const struct herald_host *h)
{
    return h->addr_str;
}
