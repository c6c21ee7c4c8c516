/* router: Envoy's envoy.filters.http.router, the terminal HTTP filter.
 * config.c parses the (optional) typed_config into a struct router_conf,
 * shared by all workers; router.c runs one session per request: it answers
 * from the route (404, direct responses, redirects) or forwards the request
 * to a host of the route's cluster, with timeouts, retries and flow control,
 * and streams the response back. */
#ifndef HERALD_PLUGIN_ROUTER_H
#define HERALD_PLUGIN_ROUTER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "herald/herald.h"

/* cluster.<name>.* stats the router counts, made on first use per cluster
 * (clusters are not known when the router is configured) and kept until the
 * config goes. The per-code counters are made on first use too; two workers
 * racing get the same handle from herald_counter(), so a plain atomic store
 * is enough. */
struct router_cluster_stats {
    char *name;
    char *prefix;                          /* "cluster.<name>", or a virtual cluster's */
    struct herald_stat *rq_completed, *rq_time, *rq_timeout, *rq_per_try_timeout, *rq_retry,
        *rq_retry_success, *rq_retry_overflow, *rq_retry_limit_exceeded;
    struct herald_stat *rq_total;          /* virtual clusters only (the core counts a cluster's) */
    struct herald_stat *rq_xx[6];          /* upstream_rq_1xx .. 5xx */
    _Atomic(struct herald_stat *) rq_code[600];
    _Atomic(struct herald_stat *) retry_code[600]; /* retry.upstream_rq_<code> */
    struct router_cluster_stats *next;
};

struct router_conf {
    bool dynamic_stats;                    /* upstream_rq_<code>, _<N>xx, _time (default true) */
    bool suppress_envoy_headers;           /* no x-envoy-upstream-service-time and
                                              x-envoy-expected-rq-timeout-ms */
    bool start_child_span;                 /* accepted; herald does no tracing */
    /* The lists only grow (at the head) until the config goes, so a request
     * finds its entry with acquire loads and no lock: the lock serialises
     * makers only, which every worker would otherwise take per request. */
    pthread_mutex_t lock;
    _Atomic(struct router_cluster_stats *) clusters;
    _Atomic(struct router_cluster_stats *) vclusters; /* "vhost.<vh>.vcluster.<name>": Envoy's virtual cluster stats */
};

/* config.c */
int router_config_create(const struct herald_cfg *typed_config, const struct herald_filter_env *env,
                         void **conf, char **err);
void router_config_destroy(void *conf);
struct router_cluster_stats *router_cluster_stats(struct router_conf *conf, const char *cluster);
/* Those of a virtual cluster, by its stat prefix (Envoy's set: no per-try
 * timeouts; upstream_rq_total counted here, once per request). */
struct router_cluster_stats *router_vcluster_stats(struct router_conf *conf, const char *stat_prefix);
struct herald_stat *router_code_stat(struct router_cluster_stats *cs, int code, bool retried);
extern const struct herald_message router_schema;

/* router.c */
extern const struct herald_http_filter_ops router_ops;
void router_buf_copy(struct herald_buf *dst, const struct herald_buf *src); /* appends src, leaves it */

/* shadow.c: request_mirror_policies. A copy of the request (headers taken
 * from request, copied) to a host of cluster; NULL when none is healthy. */
struct shadow;
struct shadow *shadow_start(struct herald_http_stream *s, const struct herald_route *route, size_t policy,
                            const char *cluster,
                            const struct herald_headers *request, bool end_stream, uint64_t timeout_ms);
void shadow_data(struct shadow *sh, const struct herald_buf *data, bool end_stream);
void shadow_trailers(struct shadow *sh, const struct herald_headers *trailers);
/* The session ends: the shadow goes on alone if its request is complete. */
void shadow_release(struct shadow *sh);

/* connect.c: a CONNECT the route ends here (connect_config): a TCP
 * connection to h that answers through cbs as an HTTP upstream request
 * would: on_headers with a 200 once connected, on_data with the host's bytes
 * (end_stream: its half-close), on_reset, on_watermark. NULL with *why when
 * it cannot even start. */
struct connect_tunnel;
struct connect_tunnel *connect_tunnel_start(struct herald_cluster *c, struct herald_host *h,
                                            const struct herald_conn *d, const struct herald_http_upstream_cbs *cbs,
                                            void *arg, enum herald_upstream_reset *why);
/* Client bytes to the host (kept until the connection is up); end_stream half-closes. */
void connect_tunnel_send(struct connect_tunnel *t, struct herald_buf *data, bool end_stream);
void connect_tunnel_pause_reading(struct connect_tunnel *t, bool pause);
/* No callback follows; the connection closes (flushed when both sides ended). */
void connect_tunnel_free(struct connect_tunnel *t);

#endif
