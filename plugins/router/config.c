/* router: the config schema (envoy.extensions.filters.http.router.v3.Router),
 * the factory, the per-cluster stats and the plugin descriptor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

static const struct herald_field router_fields[] = {
    {.name = "dynamic_stats", .kind = HERALD_FIELD_BOOL,
     .help = "count cluster.<name>.upstream_rq_<code>, _<N>xx and upstream_rq_time (default true)"},
    {.name = "start_child_span", .kind = HERALD_FIELD_BOOL,
     .help = "accepted for compatibility; herald does no tracing"},
    {.name = "suppress_envoy_headers", .kind = HERALD_FIELD_BOOL,
     .help = "do not add x-envoy-upstream-service-time and x-envoy-expected-rq-timeout-ms"},
    {.name = "suppress_grpc_request_failure_code_stats", .kind = HERALD_FIELD_BOOL,
     .help = "accepted; herald keeps no gRPC status stats"},
    {.name = "upstream_log", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED | HERALD_F_REPEATED,
     .help = "access logs per upstream request"},
    {.name = "upstream_log_options", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "when upstream logs are written"},
    {.name = "strict_check_headers", .kind = HERALD_FIELD_STRING,
     .flags = HERALD_F_UNSUPPORTED | HERALD_F_REPEATED,
     .help = "reject requests with malformed x-envoy-* headers"},
    {.name = "respect_expected_rq_timeout", .kind = HERALD_FIELD_BOOL, .flags = HERALD_F_UNSUPPORTED,
     .help = "take the timeout from a downstream x-envoy-expected-rq-timeout-ms"},
    {.name = "upstream_http_filters", .kind = HERALD_FIELD_ANY,
     .flags = HERALD_F_UNSUPPORTED | HERALD_F_REPEATED,
     .help = "HTTP filters run on upstream requests"},
    {NULL},
};

const struct herald_message router_schema = {
    .name = "envoy.extensions.filters.http.router.v3.Router",
    .fields = router_fields,
};

int router_config_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                         char **err)
{
    struct router_conf *conf = calloc(1, sizeof(*conf));
    if (!conf)
        abort();
    /* n is NULL when the filter has no typed_config: every default applies */
    conf->dynamic_stats = herald_cfg_bool(herald_cfg_get(n, "dynamic_stats"), true);
    conf->suppress_envoy_headers = herald_cfg_bool(herald_cfg_get(n, "suppress_envoy_headers"), false);
    conf->start_child_span = herald_cfg_bool(herald_cfg_get(n, "start_child_span"), false);
    pthread_mutex_init(&conf->lock, NULL);
    *out = conf;
    return 0;
}

static void free_stats_list(struct router_cluster_stats *cs)
{
    for (struct router_cluster_stats *next; cs; cs = next) {
        next = cs->next;
        free(cs->name);
        free(cs->prefix);
        free(cs);
    }
}

void router_config_destroy(void *p)
{
    struct router_conf *conf = p;
    if (!conf)
        return;
    free_stats_list(atomic_load(&conf->clusters));
    free_stats_list(atomic_load(&conf->vclusters));
    pthread_mutex_destroy(&conf->lock);
    free(conf);
}

static struct router_cluster_stats *stats_find(struct router_cluster_stats *cs, const char *name)
{
    for (; cs; cs = cs->next)
        if (!strcmp(cs->name, name))
            return cs;
    return NULL;
}

/* Finds or makes the stats under prefix_head + name in *list (name: the list's key). */
static struct router_cluster_stats *stats_for(struct router_conf *conf, _Atomic(struct router_cluster_stats *) *list,
                                              const char *name, const char *prefix_head, bool vcluster)
{
    struct router_cluster_stats *cs = stats_find(atomic_load_explicit(list, memory_order_acquire), name);
    if (cs)
        return cs;

    pthread_mutex_lock(&conf->lock);
    /* another worker may have made it since the lock-free look */
    if ((cs = stats_find(atomic_load_explicit(list, memory_order_relaxed), name)))
        goto out;
    cs = calloc(1, sizeof(*cs));
    if (!cs || !(cs->name = strdup(name)) || asprintf(&cs->prefix, "%s%s", prefix_head, name) < 0)
        abort();
    const char *p = cs->prefix;
    cs->rq_completed = herald_counter(p, "upstream_rq_completed");
    cs->rq_timeout = herald_counter(p, "upstream_rq_timeout");
    if (!vcluster)
        cs->rq_per_try_timeout = herald_counter(p, "upstream_rq_per_try_timeout");
    else
        cs->rq_total = herald_counter(p, "upstream_rq_total");
    cs->rq_retry = herald_counter(p, "upstream_rq_retry");
    cs->rq_retry_success = herald_counter(p, "upstream_rq_retry_success");
    cs->rq_retry_overflow = herald_counter(p, "upstream_rq_retry_overflow");
    cs->rq_retry_limit_exceeded = herald_counter(p, "upstream_rq_retry_limit_exceeded");
    if (conf->dynamic_stats) {
        cs->rq_time = herald_histogram(p, "upstream_rq_time");
        for (int i = 1; i <= 5; i++) {
            char name_xx[32];
            snprintf(name_xx, sizeof(name_xx), "upstream_rq_%dxx", i);
            cs->rq_xx[i] = herald_counter(p, name_xx);
        }
    }
    cs->next = atomic_load_explicit(list, memory_order_relaxed);
    /* release: a reader that sees cs sees it whole */
    atomic_store_explicit(list, cs, memory_order_release);
out:
    pthread_mutex_unlock(&conf->lock);
    return cs;
}

struct router_cluster_stats *router_cluster_stats(struct router_conf *conf, const char *cluster)
{
    return stats_for(conf, &conf->clusters, cluster, "cluster.", false);
}

struct router_cluster_stats *router_vcluster_stats(struct router_conf *conf, const char *stat_prefix)
{
    return stats_for(conf, &conf->vclusters, stat_prefix, "", true);
}

struct herald_stat *router_code_stat(struct router_cluster_stats *cs, int code, bool retried)
{
    if (code < 100 || code > 599)
        return NULL;
    _Atomic(struct herald_stat *) *slot = retried ? &cs->retry_code[code] : &cs->rq_code[code];
    struct herald_stat *st = atomic_load_explicit(slot, memory_order_acquire);
    if (!st) {
        char name[32], prefix[512];
        snprintf(name, sizeof(name), "upstream_rq_%d", code);
        snprintf(prefix, sizeof(prefix), "%s%s", cs->prefix, retried ? ".retry" : "");
        st = herald_counter(prefix, name);
        atomic_store_explicit(slot, st, memory_order_release);
    }
    return st;
}

static const char *const router_aliases[] = {"envoy.router", NULL};
static const char *const router_type_urls[] = {
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.config.filter.http.router.v2.Router",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.http.router",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .flags = HERALD_PLUGIN_TERMINAL,
              .aliases = router_aliases,
              .type_urls = router_type_urls,
              .version = "1.0.0",
              .description = "terminal HTTP filter: forwards requests to the route's cluster, with timeouts "
                             "and retries",
              .config_schema = &router_schema,
              .ops = &router_ops);
