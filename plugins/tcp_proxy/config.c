/* tcp_proxy: the config schema (envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy),
 * the factory and the plugin descriptor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcp_proxy.h"

static const struct herald_field cluster_weight_fields[] = {
    {.name = "name", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "name of an upstream cluster"},
    {.name = "weight", .kind = HERALD_FIELD_UINT, .flags = HERALD_F_REQUIRED,
     .help = "share of connections (at least 1), relative to the sum of all weights"},
    {.name = "metadata_match", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "subset load balancing criteria"},
    {NULL},
};

static const struct herald_message cluster_weight_msg = {
    .name = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight",
    .fields = cluster_weight_fields,
};

static const struct herald_field weighted_cluster_fields[] = {
    {.name = "clusters", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &cluster_weight_msg, .help = "the clusters and their weights"},
    {NULL},
};

static const struct herald_message weighted_cluster_msg = {
    .name = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster",
    .fields = weighted_cluster_fields,
};

static const struct herald_field empty_fields[] = {{NULL}};

static const struct herald_message source_ip_msg = {
    .name = "envoy.type.v3.HashPolicy.SourceIp",
    .fields = empty_fields,
};

static const struct herald_field hash_policy_fields[] = {
    {.name = "source_ip", .kind = HERALD_FIELD_MESSAGE, .message = &source_ip_msg,
     .oneof = "policy_specifier",
     .help = "hash the downstream remote IP address (for ring_hash and maglev clusters)"},
    {.name = "filter_state", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .oneof = "policy_specifier",
     .help = "hash a filter state object"},
    {NULL},
};

static const struct herald_message hash_policy_msg = {
    .name = "envoy.type.v3.HashPolicy",
    .fields = hash_policy_fields,
};

static const struct herald_field access_log_fields[] = {
    {.name = "name", .kind = HERALD_FIELD_STRING,
     .help = "envoy.access_loggers.file, envoy.access_loggers.stdout or envoy.access_loggers.stderr"},
    {.name = "typed_config", .kind = HERALD_FIELD_TYPED, .oneof = "config_type",
     .help = "FileAccessLog, StdoutAccessLog or StderrAccessLog"},
    {.name = "filter", .kind = HERALD_FIELD_ANY,
     .help = "an AccessLogFilter (checked when the log is made): status_code_filter, duration_filter, "
             "response_flag_filter, and_filter, or_filter, log_type_filter, ..."},
    {.name = "config", .kind = HERALD_FIELD_REMOVED, .oneof = "config_type",
     .hint = "use typed_config with \"@type\": type.googleapis.com/"
             "envoy.extensions.access_loggers.file.v3.FileAccessLog"},
    {NULL},
};

static const struct herald_message access_log_msg = {
    .name = "envoy.config.accesslog.v3.AccessLog",
    .fields = access_log_fields,
};

/* TcpProxy.TunnelingConfig */
static int check_tunneling(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *h = herald_cfg_get(n, "hostname");
    if (h && !*herald_cfg_str(h, ""))
        return herald_cfg_errorf(h, err, "hostname must not be empty");
    const struct herald_cfg *pp = herald_cfg_get(n, "post_path");
    if (pp && !herald_cfg_bool(herald_cfg_get(n, "use_post"), false))
        return herald_cfg_errorf(pp, err, "post_path is only for use_post: true");
    if (pp && herald_cfg_str(pp, "")[0] != '/')
        return herald_cfg_errorf(pp, err, "post_path must start with '/'");
    static const char *const later[] = {"propagate_response_headers", "propagate_response_trailers"};
    for (size_t i = 0; i < 2; i++) {
        const struct herald_cfg *v = herald_cfg_get(n, later[i]);
        if (herald_cfg_bool(v, false))
            return herald_cfg_errorf(v, err, "not supported: %s: true (herald has no filter state)", later[i]);
    }
    return 0;
}

static const struct herald_field tunneling_fields[] = {
    {.name = "hostname", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "the CONNECT's authority (the POST's Host), e.g. host.com:443; may hold %OPERATORS% such as "
             "%DOWNSTREAM_LOCAL_PORT%"},
    {.name = "use_post", .kind = HERALD_FIELD_BOOL, .help = "a POST carries the bytes instead of a CONNECT"},
    {.name = "post_path", .kind = HERALD_FIELD_STRING, .help = "the POST's path (default /)"},
    {.name = "headers_to_add", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED,
     .message = &herald_header_value_option_schema,
     .help = "headers of the CONNECT or POST; values may hold %OPERATORS%"},
    {.name = "propagate_response_headers", .kind = HERALD_FIELD_BOOL, .help = "only false"},
    {.name = "propagate_response_trailers", .kind = HERALD_FIELD_BOOL, .help = "only false"},
    {.name = "request_id_extension", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "x-request-id on the tunnel request"},
    {NULL},
};

static const struct herald_message tunneling_msg = {
    .name = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.TunnelingConfig",
    .fields = tunneling_fields,
    .check = check_tunneling,
};

static const struct herald_field tcp_proxy_fields[] = {
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "stats are named tcp.<stat_prefix>.*"},
    {.name = "cluster", .kind = HERALD_FIELD_STRING, .oneof = "cluster_specifier",
     .help = "the upstream cluster to connect to"},
    {.name = "weighted_clusters", .kind = HERALD_FIELD_MESSAGE, .oneof = "cluster_specifier",
     .message = &weighted_cluster_msg, .help = "several clusters, each picked in proportion to its weight"},
    {.name = "idle_timeout", .kind = HERALD_FIELD_DURATION,
     .help = "close both connections after this long without bytes in either direction "
             "(default 1h; 0s disables)"},
    {.name = "max_connect_attempts", .kind = HERALD_FIELD_UINT,
     .help = "upstream connect attempts, each on a freshly chosen host, before giving up (default 1)"},
    {.name = "max_downstream_connection_duration", .kind = HERALD_FIELD_DURATION,
     .help = "close the connection after this long, whatever it is doing (default: no limit)"},
    {.name = "access_log", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED,
     .message = &access_log_msg, .help = "access logs written when the connection closes"},
    {.name = "hash_policy", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED,
     .message = &hash_policy_msg, .help = "at most one: source_ip"},
    {.name = "downstream_idle_timeout", .kind = HERALD_FIELD_DURATION, .flags = HERALD_F_UNSUPPORTED,
     .help = "not implemented by Envoy either; use idle_timeout"},
    {.name = "upstream_idle_timeout", .kind = HERALD_FIELD_DURATION, .flags = HERALD_F_UNSUPPORTED,
     .help = "not implemented by Envoy either; use idle_timeout"},
    {.name = "metadata_match", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "subset load balancing criteria"},
    {.name = "on_demand", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "on-demand cluster discovery (ODCDS)"},
    {.name = "tunneling_config", .kind = HERALD_FIELD_MESSAGE, .message = &tunneling_msg,
     .help = "the bytes go to the host inside an HTTP CONNECT (or POST) request: HTTP/2 when the cluster "
             "speaks it"},
    {.name = "access_log_flush_interval", .kind = HERALD_FIELD_DURATION, .flags = HERALD_F_UNSUPPORTED,
     .help = "periodic access log lines for long connections"},
    {.name = "flush_access_log_on_connected", .kind = HERALD_FIELD_BOOL, .flags = HERALD_F_UNSUPPORTED,
     .help = "an access log line when the upstream connects"},
    {.name = "access_log_options", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "periodic and on-connect access log lines"},
    {.name = "backoff_options", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "back-off between connect attempts"},
    {.name = "proxy_protocol_tlvs", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "PROXY protocol TLVs to send upstream"},
    {.name = "max_early_data_bytes", .kind = HERALD_FIELD_UINT, .flags = HERALD_F_UNSUPPORTED,
     .help = "bytes read before the upstream connects"},
    {.name = "deprecated_v1", .kind = HERALD_FIELD_REMOVED,
     .hint = "the v1 route table is gone; use cluster or weighted_clusters"},
    {NULL},
};

static int check_tcp_proxy(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *wc = herald_cfg_get(n, "weighted_clusters");

    if (!herald_cfg_get(n, "cluster") && !wc)
        return herald_cfg_errorf(n, err, "one of cluster or weighted_clusters is required");
    if (wc) {
        const struct herald_cfg *list = herald_cfg_get(wc, "clusters");
        for (size_t i = 0; i < herald_cfg_len(list); i++) {
            const struct herald_cfg *w = herald_cfg_get(herald_cfg_at(list, i), "weight");
            if (herald_cfg_int(w, 0) < 1)
                return herald_cfg_errorf(w, err, "weight must be at least 1");
        }
    }
    const struct herald_cfg *mca = herald_cfg_get(n, "max_connect_attempts");
    if (mca && herald_cfg_int(mca, 0) < 1)
        return herald_cfg_errorf(mca, err, "max_connect_attempts must be at least 1");
    if (herald_cfg_len(herald_cfg_get(n, "hash_policy")) > 1)
        return herald_cfg_errorf(herald_cfg_get(n, "hash_policy"), err, "at most one hash_policy is allowed");
    const struct herald_cfg *sp = herald_cfg_get(n, "stat_prefix");
    if (sp && !*herald_cfg_str(sp, ""))
        return herald_cfg_errorf(sp, err, "stat_prefix must not be empty");
    return 0;
}

const struct herald_message tcp_proxy_schema = {
    .name = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    .fields = tcp_proxy_fields,
    .check = check_tcp_proxy,
};

static char *dupstr(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

static void make_stats(struct tcp_proxy_stats *st, const char *p)
{
    st->downstream_cx_total = herald_counter(p, "downstream_cx_total");
    st->downstream_cx_no_route = herald_counter(p, "downstream_cx_no_route");
    st->downstream_cx_tx_bytes_total = herald_counter(p, "downstream_cx_tx_bytes_total");
    st->downstream_cx_rx_bytes_total = herald_counter(p, "downstream_cx_rx_bytes_total");
    st->downstream_cx_tx_bytes_buffered = herald_gauge(p, "downstream_cx_tx_bytes_buffered");
    st->downstream_cx_rx_bytes_buffered = herald_gauge(p, "downstream_cx_rx_bytes_buffered");
    st->downstream_flow_control_paused_reading_total =
        herald_counter(p, "downstream_flow_control_paused_reading_total");
    st->downstream_flow_control_resumed_reading_total =
        herald_counter(p, "downstream_flow_control_resumed_reading_total");
    st->idle_timeout = herald_counter(p, "idle_timeout");
    st->max_downstream_connection_duration = herald_counter(p, "max_downstream_connection_duration");
    st->upstream_flush_total = herald_counter(p, "upstream_flush_total");
    st->upstream_flush_active = herald_gauge(p, "upstream_flush_active");
}

void tcp_proxy_config_destroy(void *p)
{
    struct tcp_proxy_conf *conf = p;

    if (!conf)
        return;
    for (size_t i = 0; i < conf->nclusters; i++)
        free(conf->clusters[i].name);
    free(conf->clusters);
    for (size_t i = 0; i < conf->nlogs; i++)
        herald_access_log_destroy(conf->logs[i]);
    free(conf->logs);
    if (conf->tunneling) {
        herald_format_free(conf->tunneling->hostname);
        free(conf->tunneling->post_path);
        herald_header_options_free(conf->tunneling->headers);
        free(conf->tunneling);
    }
    free(conf->stat_prefix);
    free(conf);
}

static void warn_unknown_cluster(const struct herald_filter_env *env, const struct herald_cfg *at,
                                 const char *name)
{
    if (!herald_env_cluster_exists(env, name))
        herald_env_warn(env, at, "cluster '%s' is not defined: its connections will be closed "
                        "(counted in downstream_cx_no_route)", name);
}

int tcp_proxy_config_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                            char **err)
{
    struct tcp_proxy_conf *conf = calloc(1, sizeof(*conf));
    if (!conf)
        abort();

    /* the schema has been checked, but keep the semantic check in case the
     * core ran an older table */
    if (check_tcp_proxy(n, err) < 0)
        goto fail;

    const char *sp = herald_cfg_str(herald_cfg_get(n, "stat_prefix"), "");
    size_t splen = strlen(sp);
    conf->stat_prefix = malloc(splen + 5);
    if (!conf->stat_prefix)
        abort();
    /* Envoy's "tcp.<stat_prefix>." with or without a trailing dot in the prefix */
    int keep = (int)(splen && sp[splen - 1] == '.' ? splen - 1 : splen);
    snprintf(conf->stat_prefix, splen + 5, "tcp.%.*s", keep, sp);

    const struct herald_cfg *cl = herald_cfg_get(n, "cluster");
    if (cl) {
        conf->clusters = calloc(1, sizeof(*conf->clusters));
        if (!conf->clusters)
            abort();
        conf->clusters[0].name = dupstr(herald_cfg_str(cl, ""));
        conf->clusters[0].weight = 1;
        conf->nclusters = 1;
        conf->total_weight = 1;
        warn_unknown_cluster(env, cl, conf->clusters[0].name);
    } else {
        const struct herald_cfg *list = herald_cfg_get(herald_cfg_get(n, "weighted_clusters"), "clusters");
        size_t k = herald_cfg_len(list);
        conf->clusters = calloc(k ? k : 1, sizeof(*conf->clusters));
        if (!conf->clusters)
            abort();
        for (size_t i = 0; i < k; i++) {
            const struct herald_cfg *w = herald_cfg_at(list, i);
            struct tcp_proxy_cluster *tc = &conf->clusters[conf->nclusters++];
            tc->name = dupstr(herald_cfg_str(herald_cfg_get(w, "name"), ""));
            int64_t wt = herald_cfg_int(herald_cfg_get(w, "weight"), 1);
            tc->weight = wt > UINT32_MAX ? UINT32_MAX : (uint32_t)wt;
            conf->total_weight += tc->weight;
            warn_unknown_cluster(env, herald_cfg_get(w, "name"), tc->name);
        }
        if (conf->total_weight == 0) {
            herald_cfg_errorf(list, err, "weighted_clusters needs at least one cluster with a weight");
            goto fail;
        }
    }

    conf->idle_timeout_ms = herald_cfg_duration_ms(herald_cfg_get(n, "idle_timeout"), 3600 * 1000);
    conf->max_duration_ms =
        herald_cfg_duration_ms(herald_cfg_get(n, "max_downstream_connection_duration"), 0);
    int64_t mca = herald_cfg_int(herald_cfg_get(n, "max_connect_attempts"), 1);
    conf->max_connect_attempts = mca < 1 ? 1 : mca > 1000000 ? 1000000 : (uint32_t)mca;
    conf->no_splice = getenv("HERALD_NO_SPLICE") != NULL;
    const struct herald_cfg *hp = herald_cfg_at(herald_cfg_get(n, "hash_policy"), 0);
    conf->hash_source_ip = herald_cfg_get(hp, "source_ip") != NULL;

    const struct herald_cfg *logs = herald_cfg_get(n, "access_log");
    size_t nl = herald_cfg_len(logs);
    if (nl) {
        conf->logs = calloc(nl, sizeof(*conf->logs));
        if (!conf->logs)
            abort();
        for (size_t i = 0; i < nl; i++) {
            struct herald_access_log *l =
                herald_access_log_create(herald_cfg_at(logs, i), env, HERALD_DEFAULT_ACCESS_LOG_FORMAT, err);
            if (!l)
                goto fail;
            conf->logs[conf->nlogs++] = l;
        }
    }

    const struct herald_cfg *tn = herald_cfg_get(n, "tunneling_config");
    if (tn) {
        struct tcp_proxy_tunneling *t = conf->tunneling = calloc(1, sizeof(*t));
        if (!t)
            abort();
        if (!(t->hostname = herald_format_new(herald_cfg_get(tn, "hostname"), err)))
            goto fail;
        t->use_post = herald_cfg_bool(herald_cfg_get(tn, "use_post"), false);
        t->post_path = dupstr(herald_cfg_str(herald_cfg_get(tn, "post_path"), "/"));
        if (herald_header_options_new(herald_cfg_get(tn, "headers_to_add"), &t->headers, err) < 0)
            goto fail;
    }

    make_stats(&conf->stats, conf->stat_prefix);
    *out = conf;
    return 0;

fail:
    tcp_proxy_config_destroy(conf);
    return -1;
}

static const char *const tcp_proxy_aliases[] = {"envoy.tcp_proxy", NULL};
static const char *const tcp_proxy_type_urls[] = {
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "envoy.config.filter.network.tcp_proxy.v2.TcpProxy",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.network.tcp_proxy",
              .kind = HERALD_PLUGIN_NETWORK_FILTER,
              .flags = HERALD_PLUGIN_TERMINAL,
              .aliases = tcp_proxy_aliases,
              .type_urls = tcp_proxy_type_urls,
              .version = "1.0.0",
              .description = "L4 proxy: forwards bytes both ways between the downstream and an "
                             "upstream cluster",
              .config_schema = &tcp_proxy_schema,
              .ops = &tcp_proxy_ops);
