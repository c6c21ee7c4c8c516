/* Clusters. The cluster manager (main thread) owns each cluster's config and
 * discovery (STATIC, STRICT_DNS, LOGICAL_DNS via evdns). Whenever membership
 * changes it builds an immutable, refcounted host set and posts it to every
 * worker, which swaps it into its own view (struct cluster_worker) between
 * events. Load balancing runs on the worker over its view, with its own
 * state (round-robin weights, active request counts). */
#ifndef HERALD_CORE_UPSTREAM_CLUSTER_H
#define HERALD_CORE_UPSTREAM_CLUSTER_H

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "common.h"
#include "config/bootstrap.h"
#include "herald/upstream.h"
#include "metadata.h"

struct worker;
struct lb_subsets;
struct subset_lb;

/* One upstream host; shared by host sets across updates while its address
 * stays, so its stats survive re-resolution. */
struct herald_host {
    struct refcount ref;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *addr_str;                    /* "ip:port" */
    char *hostname;
    uint32_t weight;
    uint32_t priority;
    struct cluster *cluster;
    atomic_uint_fast64_t cx_total, cx_active, cx_connect_fail, rq_total, rq_error, rq_active;
    atomic_uint_fast64_t rq_success, rq_timeout;  /* shown by /clusters */
    /* HOST_* health bits. Written on the main thread (health checker, outlier
     * detector), read anywhere; a change is followed by cluster_health_changed()
     * so that workers rebuild their load balancers over the usable hosts. */
    atomic_uint health;
    void *hc;                          /* health_check.c's per-host state (main thread) */
    void *outlier;                     /* outlier.c's per-host state */
    uint16_t hc_port;                  /* active health checks go to this port (0: the host's) */
    struct sockaddr_storage hc_addr;   /* ... and this address (hc_addrlen 0: the host's) */
    socklen_t hc_addrlen;
    const struct endpoint_cfg *ep;     /* its lb_endpoint (the bootstrap outlives the host) */
    uint32_t locality;                 /* index of its LocalityLbEndpoints in the cluster */
    uint32_t locality_weight;          /* that locality's load_balancing_weight (0: unset) */
};

#define HOST_FAILED_ACTIVE_HC  0x1u    /* /failed_active_hc */
#define HOST_FAILED_OUTLIER    0x2u    /* /failed_outlier_check (ejected) */
#define HOST_PENDING_ACTIVE_HC 0x4u    /* /pending_active_hc: not checked yet (still used) */
#define HOST_UNUSABLE (HOST_FAILED_ACTIVE_HC | HOST_FAILED_OUTLIER)

static inline bool host_healthy(const struct herald_host *h)
{
    return (atomic_load_explicit(&h->health, memory_order_relaxed) & HOST_UNUSABLE) == 0;
}

/* Per-cluster stats handles (cluster.<name>.*), shared by all threads. */
struct cluster_stats {
    struct herald_stat *upstream_cx_total, *upstream_cx_active, *upstream_cx_connect_fail,
        *upstream_cx_connect_timeout, *upstream_cx_overflow, *upstream_cx_none_healthy,
        *upstream_cx_destroy, *upstream_cx_destroy_local, *upstream_cx_destroy_remote,
        *upstream_cx_rx_bytes_total, *upstream_cx_tx_bytes_total, *upstream_cx_connect_ms,
        *upstream_cx_length_ms, *membership_healthy, *membership_total, *membership_change,
        *update_attempt, *update_success, *update_failure, *update_empty, *lb_healthy_panic,
        *circuit_breakers_default_cx_open, *max_host_weight,
        /* created up front like Envoy's, for the connection and request code */
        *upstream_cx_http1_total, *upstream_cx_http2_total, *upstream_cx_idle_timeout,
        *upstream_cx_max_requests, *upstream_cx_protocol_error, *upstream_cx_destroy_with_active_rq,
        *upstream_cx_drained_after_cancel,
        *upstream_flow_control_paused_reading_total, *upstream_flow_control_resumed_reading_total,
        *upstream_cx_rx_bytes_buffered, *upstream_cx_tx_bytes_buffered,
        *upstream_rq_total, *upstream_rq_active, *upstream_rq_pending_total,
        *upstream_rq_pending_active, *upstream_rq_pending_overflow, *upstream_rq_timeout,
        *upstream_rq_retry, *upstream_rq_completed,
        *membership_degraded, *membership_excluded, *update_no_rebuild,
        /* subset load balancing (lb_subset.c); created for every cluster, as Envoy's */
        *lb_subsets_active, *lb_subsets_created, *lb_subsets_removed, *lb_subsets_selected,
        *lb_subsets_fallback, *lb_subsets_fallback_panic;
};

/* Immutable membership snapshot. */
struct host_set {
    struct refcount ref;
    struct herald_host **hosts; size_t nhosts;  /* sorted by priority, then config order */
    uint32_t npriorities;
    struct lb_subsets *subsets;        /* lb_subset.c: with lb_subset_config, else NULL */
};

struct cluster {
    struct cluster_cfg *cfg;           /* owned by the bootstrap */
    unsigned index;                    /* slot in every worker's view */
    struct cluster_stats stats;
    struct host_set *current;          /* main thread's latest */
    atomic_uint cx_active;             /* connections, across workers (all priorities) */
    struct circuit_breakers *cb;       /* circuit_breaker.c: per-priority limits, across workers */
    bool initialized;                  /* every endpoint answered once (or static) */
    char *waiting_for;                 /* what /ready reports while not initialized */
    /* discovery state, private to cluster.c: one target per endpoint to resolve */
    struct cluster_target *targets; size_t ntargets;
    int64_t shown_total, shown_healthy, shown_max_weight;  /* last values put in the membership gauges */
    int64_t shown_subsets;             /* ... and in lb_subsets_active */
};

/* A worker's view of one cluster (the SDK's struct herald_cluster). */
struct herald_cluster {
    struct cluster *cluster;
    struct host_set *hosts;            /* current snapshot (ref held) */
    void *lb;                          /* lb.c state for this worker, rebuilt on swap */
    struct subset_lb *subset;          /* instead of lb with lb_subset_config (lb_subset.c) */
};

struct cluster_worker {
    struct herald_cluster *views; size_t nviews;
    unsigned seed;                     /* where this worker's round robin starts */
};

/* Main thread. dns may be NULL under --mode validate (nothing resolved).
 * Call cluster_manager_shutdown after the workers are joined and the main
 * loop has returned, before evdns_base_free (it cancels lookups in flight and
 * runs the loop once, non-blocking, so libevent can hand them back). */
int cluster_manager_init(const struct bootstrap *b, struct event_base *base, struct evdns_base *dns,
                         struct cfg_diag *d);
void cluster_manager_start(void);          /* begins discovery */
void cluster_manager_shutdown(void);
size_t cluster_manager_count(void);
struct cluster *cluster_manager_find(const char *name);
/* Adds to `why` one line per cluster still waiting ("cluster 'x': resolving foo.example"). 0 = all ready. */
int cluster_manager_pending(struct evbuffer *why);
/* /clusters, Envoy's text format or JSON. */
void cluster_manager_dump(struct evbuffer *out, bool json);
/* Main thread: some host's health bits changed. Publishes a new host set (same
 * hosts) so every worker rebuilds its load balancer, and updates the
 * membership_healthy gauge. */
void cluster_health_changed(struct cluster *cl);
/* Main thread: iterate the clusters (health checker, outlier detector setup). */
struct cluster *cluster_manager_at(size_t i);
/* Main thread: cb runs after a cluster's membership changed (hosts added or
 * removed; cl->current is the new set). The health checker hooks it; cluster.c
 * knows nothing of health_check.c. NULL unregisters. */
void cluster_set_membership_cb(void (*cb)(struct cluster *cl));
/* Envoy's health_flags for /clusters: "healthy" or "/failed_active_hc/..." */
void host_health_flags_str(unsigned flags, char *out, size_t size);

/* Worker side: build the view when a worker starts (main thread, before the
 * worker runs; worker_start may come before or after), and drop it (main
 * thread after worker_stop_and_join, or the worker itself at exit) before
 * the main loop turns again. Updates reach registered workers by worker_post,
 * or directly while a worker is not running (w->base or w->wakeup NULL). */
void cluster_worker_init(struct worker *w);
void cluster_worker_free(struct worker *w);

/* Worker: the host for a request that brings subset criteria: route (a
 * route's metadata_match, may be NULL) with dyn's envoy.lb entries over it
 * (may be NULL). A cluster without lb_subset_config picks as
 * herald_cluster_choose_host_attempt, reading neither. NULL: no host
 * (counted as upstream_cx_none_healthy). */
struct herald_host *cluster_choose_host_matching(struct herald_cluster *c, uint64_t hash, uint32_t attempt,
                                                 const struct lb_kvs *route, const struct metadata *dyn);

/* Host references. */
void host_get(struct herald_host *h);
void host_put(struct herald_host *h);

/* lb.c: per-worker load-balancer state over a host set (which must outlive
 * it). seed: the worker index, so that workers start at different hosts. */
void *lb_new(const struct cluster_cfg *cfg, const struct host_set *hs, unsigned seed);
/* lb_new for a subset's hosts (lb_subset.c): locality weighting on or off
 * whatever the cluster says, and each locality's weight times
 * locality_scale[locality] (NULL: unscaled). */
struct lb_opts { bool locality_weighted; const double *locality_scale; };
void *lb_new_opts(const struct cluster_cfg *cfg, const struct host_set *hs, unsigned seed, const struct lb_opts *o);
void lb_free(void *lb);
struct herald_host *lb_choose(void *lb, const struct cluster_cfg *cfg, const struct host_set *hs,
                              uint64_t hash);
/* attempt > 0: a re-pick after a retry host predicate refused the earlier
 * picks; only the hashing policies use it (the others pick afresh anyway).
 * cfg and hs are not read (the balancer keeps what it needs). */
struct herald_host *lb_choose_attempt(void *lb, const struct cluster_cfg *cfg, const struct host_set *hs,
                                      uint64_t hash, uint32_t attempt);
/* LEAST_REQUEST compares hosts by their rq_active + cx_active (relaxed atomics
 * kept by the upstream code), so no per-request bookkeeping is needed here. */

#endif
