/* The Envoy v3 bootstrap as schema tables: every field Envoy has at the
 * places herald reads, so that a field herald does not implement is a clear
 * "not supported" rather than silently ignored, and a misspelt one an
 * "unknown field" with a suggestion. */
#include <string.h>
#include <strings.h>

#include "common.h"
#include "config/schema.h"
#include "config/tree.h"
#include "herald/http.h"
#include "http/h2_keepalive.h"

#include "config/data_source.h"
#include "config/schema_tables.h"

/* ------------------------------------------------------------ core.v3 */

static const struct herald_field locality_fields[] = {
    STR("region"), STR("zone"), STR("sub_zone"), END,
};
static const struct herald_message locality_msg = { "envoy.config.core.v3.Locality", locality_fields, NULL };

static const struct herald_field node_fields[] = {
    STR("id", .help = "the node id (--service-node overrides it)"),
    STR("cluster", .help = "the local service cluster (--service-cluster overrides it)"),
    STRUCT("metadata"),
    ANY("dynamic_parameters"),
    MSG("locality", locality_msg),
    STR("user_agent_name"),
    STR("user_agent_version", .oneof = "user_agent_version_type"),
    ANY("user_agent_build_version", .oneof = "user_agent_version_type"),
    ANY("extensions"),
    F_("client_features", STRING, HERALD_F_REPEATED),
    F_("listening_addresses", ANY, HERALD_F_DEPRECATED | HERALD_F_REPEATED,
       .hint = "Envoy ignores it"),
    REMOVED("build_version", "v2 field: use user_agent_version or user_agent_build_version"),
    END,
};
static const struct herald_message node_msg = { "envoy.config.core.v3.Node", node_fields, NULL };

static const char *const protocol_values[] = { "TCP", "UDP", NULL };

static int socket_address_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *port = herald_cfg_get(n, "port_value");
    if (port && herald_cfg_int(port, 0) > 65535)
        return herald_cfg_errorf(port, err, "port %lld is out of range (0-65535)",
                                 (long long)herald_cfg_int(port, 0));
    const struct herald_cfg *proto = herald_cfg_get(n, "protocol");
    if (proto && strcmp(herald_cfg_str(proto, ""), "UDP") == 0)
        return herald_cfg_errorf(proto, err, "not supported: UDP sockets (herald proxies TCP only)");
    return 0;
}

static const struct herald_field socket_address_fields[] = {
    ENUM("protocol", protocol_values, .help = "TCP (default) or UDP"),
    F_("address", STRING, HERALD_F_REQUIRED, .help = "an IP address, or a DNS name for DNS clusters"),
    UINT("port_value", .oneof = "port_specifier"),
    UNSUP("named_port", .oneof = "port_specifier", .hint = "use port_value"),
    UNSUP("resolver_name"),
    BOOL("ipv4_compat", .help = "accept IPv4 on an IPv6 socket"),
    UNSUP("network_namespace_filepath"),
    END,
};
static const struct herald_message socket_address_msg = {
    "envoy.config.core.v3.SocketAddress", socket_address_fields, socket_address_check,
};

static const struct herald_field pipe_fields[] = {
    F_("path", STRING, HERALD_F_REQUIRED, .help = "the unix socket path ('@' for the abstract namespace)"),
    UINT("mode", .help = "file mode of the socket"),
    END,
};
static const struct herald_message pipe_msg = { "envoy.config.core.v3.Pipe", pipe_fields, NULL };

static int address_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "socket_address") && !herald_cfg_get(n, "pipe"))
        return herald_cfg_errorf(n, err, "an address needs socket_address (or pipe)");
    return 0;
}

static const struct herald_field address_fields[] = {
    MSG("socket_address", socket_address_msg, .oneof = "address"),
    MSG("pipe", pipe_msg, .oneof = "address"),
    UNSUP("envoy_internal_address", .oneof = "address"),
    END,
};
static const struct herald_message address_msg = {
    "envoy.config.core.v3.Address", address_fields, address_check,
};

static const struct herald_field cidr_fields[] = {
    F_("address_prefix", STRING, HERALD_F_REQUIRED),
    UINT("prefix_len"),
    END,
};
static const struct herald_message cidr_msg = { "envoy.config.core.v3.CidrRange", cidr_fields, NULL };

/* ------------------------------------------------------------ listener.v3 */

static const char *const source_type_values[] = { "ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL", NULL };

static const struct herald_field filter_chain_match_fields[] = {
    UINT("destination_port"),
    LIST("prefix_ranges", cidr_msg),
    UNSUP("address_suffix"),
    UNSUP("suffix_len"),
    LIST("direct_source_prefix_ranges", cidr_msg),
    F_("source_type", ENUM, HERALD_F_UNSUPPORTED, .enum_values = source_type_values),
    LIST("source_prefix_ranges", cidr_msg),
    F_("source_ports", UINT, HERALD_F_REPEATED),
    F_("server_names", STRING, HERALD_F_REPEATED),
    STR("transport_protocol", .help = "raw_buffer or tls (set by tls_inspector)"),
    F_("application_protocols", STRING, HERALD_F_REPEATED),
    REMOVED("sni_domains", "v2 field: use server_names"),
    END,
};
static const struct herald_message filter_chain_match_msg = {
    "envoy.config.listener.v3.FilterChainMatch", filter_chain_match_fields, NULL,
};

static const struct herald_field filter_fields[] = {
    STR("name", .help = "a label; the typed_config \"@type\" picks the filter"),
    TYPED("typed_config", .oneof = "config_type"),
    UNSUP("config_discovery", .oneof = "config_type", .hint = "ECDS"),
    REMOVED("config", "v2 field: use typed_config with an \"@type\""),
    END,
};
static const struct herald_message filter_msg = { "envoy.config.listener.v3.Filter", filter_fields, NULL };

static const struct herald_field filter_chain_fields[] = {
    MSG("filter_chain_match", filter_chain_match_msg),
    LIST("filters", filter_msg),
    REMOVED("use_proxy_proto", "v2 field: add the envoy.filters.listener.proxy_protocol listener filter"),
    STRUCT("metadata"),
    TYPED("transport_socket", .help = "{name, typed_config}: TLS (envoy.transport_sockets.tls) or none"),
    DUR("transport_socket_connect_timeout"),
    STR("name"),
    UNSUP("on_demand_configuration"),
    REMOVED("tls_context", "v2 field: use transport_socket with envoy.transport_sockets.tls"),
    END,
};
static const struct herald_message filter_chain_msg = {
    "envoy.config.listener.v3.FilterChain", filter_chain_fields, NULL,
};

static const struct herald_field listener_filter_fields[] = {
    STR("name"),
    TYPED("typed_config", .oneof = "config_type"),
    UNSUP("config_discovery", .oneof = "config_type", .hint = "ECDS"),
    UNSUP("filter_disabled"),
    REMOVED("config", "v2 field: use typed_config with an \"@type\""),
    END,
};
static const struct herald_message listener_filter_msg = {
    "envoy.config.listener.v3.ListenerFilter", listener_filter_fields, NULL,
};

static const char *const drain_type_values[] = { "DEFAULT", "MODIFY_ONLY", NULL };
static const char *const traffic_direction_values[] = { "UNSPECIFIED", "INBOUND", "OUTBOUND", NULL };

static int listener_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *b = herald_cfg_get(n, "bind_to_port");
    if (b && !herald_cfg_bool(b, true))
        return herald_cfg_errorf(b, err, "not supported: bind_to_port: false (herald binds every listener)");
    return 0;
}

static const struct herald_field listener_fields[] = {
    STR("name", .help = "unique among listeners; names the listener in stats and /listeners"),
    F_("address", MESSAGE, HERALD_F_REQUIRED, .message = &address_msg),
    UNSUP("additional_addresses"),
    STR("stat_prefix", .help = "replaces the address in listener.<...> stat names"),
    LIST("filter_chains", filter_chain_msg),
    UNSUP("filter_chain_matcher", .hint = "use filter_chain_match on each filter chain"),
    UNSUP("use_original_dst"),
    MSG("default_filter_chain", filter_chain_msg),
    UINT("per_connection_buffer_limit_bytes", .help = "default 1 MiB"),
    STRUCT("metadata"),
    REMOVED("deprecated_v1", "v2 field: remove it"),
    ENUM("drain_type", drain_type_values),
    LIST("listener_filters", listener_filter_msg),
    DUR("listener_filters_timeout", .help = "default 15s; 0s disables it"),
    BOOL("continue_on_listener_filters_timeout"),
    UNSUP("transparent"),
    UNSUP("freebind"),
    UNSUP("socket_options"),
    UNSUP("tcp_fast_open_queue_length"),
    ENUM("traffic_direction", traffic_direction_values),
    UNSUP("udp_listener_config"),
    UNSUP("api_listener"),
    UNSUP("connection_balance_config"),
    F_("reuse_port", BOOL, HERALD_F_DEPRECATED, .hint = "use enable_reuse_port"),
    BOOL("enable_reuse_port", .help = "default true"),
    UNSUP("access_log", .help = "connection-level access logs: use the filter's own (tcp_proxy access_log)"),
    UINT("tcp_backlog_size", .help = "default 1024"),
    UNSUP("max_connections_to_accept_per_socket_event"),
    BOOL("bind_to_port"),
    UNSUP("internal_listener"),
    UNSUP("enable_mptcp"),
    BOOL("ignore_global_conn_limit"),
    BOOL("bypass_overload_manager"),
    UNSUP("fcds_config"),
    UNSUP("tcp_keepalive"),
    END,
};
static const struct herald_message listener_msg = {
    "envoy.config.listener.v3.Listener", listener_fields, listener_check,
};

/* ------------------------------------------------------------ endpoint.v3 */

/* Endpoint.HealthCheckConfig (active health checking, health_check.c) */
static const struct herald_field endpoint_hc_fields[] = {
    UINT("port_value", .help = "health checks go to this port instead of the endpoint's"),
    UNSUP("hostname", .hint = "set http_health_check.host"),
    MSG("address", address_msg, .help = "health checks go to this IP address (port_value overrides "
        "its port)"),
    UNSUP("disable_active_health_check"),
    END,
};
static const struct herald_message endpoint_hc_msg = {
    "envoy.config.endpoint.v3.Endpoint.HealthCheckConfig", endpoint_hc_fields, NULL,
};

static const struct herald_field endpoint_fields[] = {
    MSG("address", address_msg),
    MSG("health_check_config", endpoint_hc_msg, .help = "where active health checks go (port_value)"),
    STR("hostname"),
    UNSUP("additional_addresses"),
    END,
};
static const struct herald_message endpoint_msg = {
    "envoy.config.endpoint.v3.Endpoint", endpoint_fields, NULL,
};

static const char *const health_status_values[] = {
    "UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED", NULL,
};

static int lb_endpoint_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *hs = herald_cfg_get(n, "health_status");
    const char *v = herald_cfg_str(hs, "UNKNOWN");
    if (strcmp(v, "UNKNOWN") != 0 && strcmp(v, "HEALTHY") != 0)
        return herald_cfg_errorf(hs, err, "not supported: health_status %s (herald does not implement "
                                 "endpoint health status yet; remove it or use HEALTHY)", v);
    if (!herald_cfg_get(n, "endpoint"))
        return herald_cfg_errorf(n, err, "missing required field 'endpoint'");
    return 0;
}

static const struct herald_field lb_endpoint_fields[] = {
    MSG("endpoint", endpoint_msg, .oneof = "host_identifier"),
    UNSUP("endpoint_name", .oneof = "host_identifier"),
    ENUM("health_status", health_status_values),
    STRUCT("metadata"),
    UINT("load_balancing_weight", .help = "default 1"),
    END,
};
static const struct herald_message lb_endpoint_msg = {
    "envoy.config.endpoint.v3.LbEndpoint", lb_endpoint_fields, lb_endpoint_check,
};

static const struct herald_field locality_lb_endpoints_fields[] = {
    MSG("locality", locality_msg),
    LIST("lb_endpoints", lb_endpoint_msg),
    UNSUP("leds_cluster_locality_config"),
    UINT("load_balancing_weight"),
    UINT("priority"),
    UNSUP("proximity"),
    STRUCT("metadata"),
    END,
};
static const struct herald_message locality_lb_endpoints_msg = {
    "envoy.config.endpoint.v3.LocalityLbEndpoints", locality_lb_endpoints_fields, NULL,
};

static const struct herald_field cla_policy_fields[] = {
    UNSUP("drop_overloads"),
    UNSUP("overprovisioning_factor"),
    UNSUP("endpoint_stale_after"),
    UNSUP("weighted_priority_health"),
    REMOVED("disable_overprovisioning", "v2 field: remove it"),
    END,
};
static const struct herald_message cla_policy_msg = {
    "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy", cla_policy_fields, NULL,
};

static const struct herald_field cla_fields[] = {
    F_("cluster_name", STRING, HERALD_F_REQUIRED),
    LIST("endpoints", locality_lb_endpoints_msg),
    UNSUP("named_endpoints"),
    MSG("policy", cla_policy_msg),
    END,
};
static const struct herald_message cla_msg = {
    "envoy.config.endpoint.v3.ClusterLoadAssignment", cla_fields, NULL,
};

/* ------------------------------------------------------------ core.v3.HealthCheck
 * Active health checking (core/upstream/health_check.c): HTTP (HTTP/1.1 or
 * HTTP/2) and TCP checkers; gRPC, custom checkers and event logs are not. */

static const struct herald_field hc_payload_fields[] = {
    STR("text", .oneof = "payload", .help = "hex-encoded bytes, e.g. \"000000FF\""),
    STR("binary", .oneof = "payload", .help = "bytes, base64 in YAML/JSON"),
    END,
};
static const struct herald_message hc_payload_msg = {
    "envoy.config.core.v3.HealthCheck.Payload", hc_payload_fields, NULL,
};

/* type.v3.Percent: common_lb_config.healthy_panic_threshold, the overload
 * manager's min_scale */
static const struct herald_field percent_fields[] = {
    F_("value", DOUBLE, 0, .help = "0 to 100"),
    END,
};
const struct herald_message schema_percent = { "envoy.type.v3.Percent", percent_fields, NULL };

static const struct herald_field hc_range_fields[] = {
    F_("start", INT, 0, .help = "inclusive"),
    F_("end", INT, 0, .help = "exclusive"),
    END,
};
static const struct herald_message hc_range_msg = { "envoy.type.v3.Int64Range", hc_range_fields, NULL };

#define hc_header_option_msg herald_header_value_option_schema   /* http/header_option.c */

static const char *const hc_codec_values[] = { "HTTP1", "HTTP2", "HTTP3", NULL };
static const char *const hc_method_values[] = {
    "METHOD_UNSPECIFIED", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    NULL,
};

static int hc_http_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *c = herald_cfg_get(n, "codec_client_type");
    if (strcmp(herald_cfg_str(c, "HTTP1"), "HTTP3") == 0)
        return herald_cfg_errorf(c, err, "not supported: codec_client_type HTTP3 (use HTTP1 or HTTP2)");
    const struct herald_cfg *m = herald_cfg_get(n, "method");
    if (strcmp(herald_cfg_str(m, "GET"), "CONNECT") == 0)
        return herald_cfg_errorf(m, err, "method CONNECT is not allowed for health checks");
    if (!*herald_cfg_str(herald_cfg_get(n, "path"), ""))
        return herald_cfg_errorf(n, err, "missing required field 'path'");
    return 0;
}

static const struct herald_field hc_http_fields[] = {
    STR("host", .help = "the :authority of the checks; default the cluster's name"),
    F_("path", STRING, HERALD_F_REQUIRED, .help = "the request path, e.g. /healthz"),
    UNSUP("send", .help = "HTTP health checks send no body in herald"),
    UNSUP("receive", .help = "herald checks the status only"),
    UNSUP("response_buffer_size"),
    LIST("request_headers_to_add", hc_header_option_msg),
    STRS("request_headers_to_remove"),
    LIST("expected_statuses", hc_range_msg, .help = "[start, end) ranges; default 200 only"),
    LIST("retriable_statuses", hc_range_msg, .help = "count toward unhealthy_threshold instead of "
         "failing at once"),
    ENUM("codec_client_type", hc_codec_values, .help = "HTTP1 (default) or HTTP2 (h2c prior knowledge)"),
    UNSUP("service_name_matcher"),
    ENUM("method", hc_method_values, .help = "default GET"),
    REMOVED("service_name", "v2 field: use service_name_matcher"),
    REMOVED("use_http2", "v2 field: use codec_client_type: HTTP2"),
    END,
};
static const struct herald_message hc_http_msg = {
    "envoy.config.core.v3.HealthCheck.HttpHealthCheck", hc_http_fields, hc_http_check,
};

static const struct herald_field hc_tcp_fields[] = {
    MSG("send", hc_payload_msg, .help = "written after connecting; empty: a connect-only check"),
    LIST("receive", hc_payload_msg, .help = "each must appear in the response, in order"),
    UNSUP("proxy_protocol_config"),
    END,
};
static const struct herald_message hc_tcp_msg = {
    "envoy.config.core.v3.HealthCheck.TcpHealthCheck", hc_tcp_fields, NULL,
};

static int health_check_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "http_health_check") && !herald_cfg_get(n, "tcp_health_check"))
        return herald_cfg_errorf(n, err, "a health check needs one of http_health_check or tcp_health_check "
                                 "(grpc_health_check and custom_health_check are not supported)");
    static const char *const positive[] = { "timeout", "interval" };
    for (size_t i = 0; i < ARRAY_SIZE(positive); i++) {
        const struct herald_cfg *d = herald_cfg_get(n, positive[i]);
        if (d && herald_cfg_duration_ms(d, 0) == 0)
            return herald_cfg_errorf(d, err, "%s must be more than 0s", positive[i]);
    }
    return 0;
}

static const struct herald_field health_check_fields[] = {
    F_("timeout", DURATION, HERALD_F_REQUIRED, .help = "how long a check may take; then it fails"),
    F_("interval", DURATION, HERALD_F_REQUIRED, .help = "between checks of a host"),
    DUR("initial_jitter", .help = "random delay up to this before the first check"),
    DUR("interval_jitter", .help = "random extra delay up to this on every interval"),
    UINT("interval_jitter_percent", .help = "random extra delay up to this percent of the interval"),
    F_("unhealthy_threshold", UINT, HERALD_F_REQUIRED, .help = "failures before a host is unhealthy"),
    F_("healthy_threshold", UINT, HERALD_F_REQUIRED, .help = "successes before a host is healthy again"),
    UNSUP("alt_port"),
    BOOL("reuse_connection", .help = "keep the connection between checks; default true"),
    MSG("http_health_check", hc_http_msg, .oneof = "health_checker"),
    MSG("tcp_health_check", hc_tcp_msg, .oneof = "health_checker"),
    UNSUP("grpc_health_check", .oneof = "health_checker",
          .hint = "use http_health_check or tcp_health_check"),
    UNSUP("custom_health_check", .oneof = "health_checker",
          .hint = "use http_health_check or tcp_health_check"),
    DUR("no_traffic_interval", .help = "interval while the cluster has had no traffic; default 60s"),
    DUR("no_traffic_healthy_interval", .help = "the same for healthy hosts; default no_traffic_interval"),
    DUR("unhealthy_interval", .help = "interval for unhealthy hosts; default interval"),
    DUR("unhealthy_edge_interval",
        .help = "after a failure on the way to unhealthy; default unhealthy_interval"),
    DUR("healthy_edge_interval", .help = "after a success on the way to healthy; default interval"),
    UNSUP("event_log_path", .hint = "herald has no health check event log; failures are logged"),
    UNSUP("event_logger"),
    UNSUP("event_service"),
    BOOL("always_log_health_check_failures", .help = "log every failed check, not only transitions"),
    UNSUP("always_log_health_check_success"),
    UNSUP("tls_options"),
    UNSUP("transport_socket_match_criteria"),
    END,
};
static const struct herald_message health_check_msg = {
    "envoy.config.core.v3.HealthCheck", health_check_fields, health_check_check,
};

/* ------------------------------------------------------------ cluster.v3 */

static const char *const priority_values[] = { "DEFAULT", "HIGH", NULL };

static const struct herald_field thresholds_fields[] = {
    ENUM("priority", priority_values),
    UINT("max_connections", .help = "default 1024"),
    UINT("max_pending_requests", .help = "default 1024"),
    UINT("max_requests", .help = "default 1024"),
    UINT("max_retries", .help = "default 3"),
    UNSUP("retry_budget"),
    BOOL("track_remaining"),
    UNSUP("max_connection_pools"),
    END,
};
static const struct herald_message thresholds_msg = {
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds", thresholds_fields, NULL,
};

static const struct herald_field circuit_breakers_fields[] = {
    LIST("thresholds", thresholds_msg),
    UNSUP("per_host_thresholds"),
    END,
};
static const struct herald_message circuit_breakers_msg = {
    "envoy.config.cluster.v3.CircuitBreakers", circuit_breakers_fields, NULL,
};

/* outlier.c implements the external-origin detectors (consecutive 5xx and
 * gateway failures, success rate, failure percentage) and, with
 * split_external_local_origin_errors, consecutive local-origin failures. */
static const struct herald_field outlier_detection_fields[] = {
    UINT("consecutive_5xx", .help = "default 5"),
    DUR("interval", .help = "default 10s: success-rate sweep and un-ejection check"),
    DUR("base_ejection_time", .help = "default 30s, times the number of ejections"),
    UINT("max_ejection_percent", .help = "default 10"),
    UINT("enforcing_consecutive_5xx", .help = "default 100"),
    UINT("enforcing_success_rate", .help = "default 100"),
    UINT("success_rate_minimum_hosts", .help = "default 5"),
    UINT("success_rate_request_volume", .help = "default 100"),
    UINT("success_rate_stdev_factor", .help = "default 1900 (1.9 standard deviations)"),
    UINT("consecutive_gateway_failure", .help = "default 5"),
    UINT("enforcing_consecutive_gateway_failure", .help = "default 0"),
    BOOL("split_external_local_origin_errors"),
    UINT("consecutive_local_origin_failure", .help = "default 5"),
    UINT("enforcing_consecutive_local_origin_failure", .help = "default 100"),
    UNSUP("enforcing_local_origin_success_rate",
          .hint = "herald has no local-origin success-rate detector"),
    UINT("failure_percentage_threshold", .help = "default 85"),
    UINT("enforcing_failure_percentage", .help = "default 0"),
    UNSUP("enforcing_failure_percentage_local_origin",
          .hint = "herald has no local-origin failure-percentage detector"),
    UINT("failure_percentage_minimum_hosts", .help = "default 5"),
    UINT("failure_percentage_request_volume", .help = "default 50"),
    DUR("max_ejection_time", .help = "default 300s"),
    DUR("max_ejection_time_jitter", .help = "default 0s"),
    UNSUP("successful_active_health_check_uneject_host"),
    UNSUP("monitors"),
    BOOL("always_eject_one_host"),
    UNSUP("detect_degraded_hosts"),
    END,
};
static const struct herald_message outlier_detection_msg = {
    "envoy.config.cluster.v3.OutlierDetection", outlier_detection_fields, NULL,
};

static const struct herald_field least_request_fields[] = {
    UINT("choice_count", .help = "default 2"),
    UNSUP("active_request_bias"),
    UNSUP("slow_start_config"),
    UNSUP("enable_full_scan"),
    UNSUP("selection_method"),
    END,
};
static const struct herald_message least_request_msg = {
    "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig", least_request_fields, NULL,
};

static const struct herald_field round_robin_fields[] = {
    UNSUP("slow_start_config"),
    END,
};
static const struct herald_message round_robin_msg = {
    "envoy.config.cluster.v3.Cluster.RoundRobinLbConfig", round_robin_fields, NULL,
};

/* RING_HASH and MAGLEV settings (upstream/lb_hash.c). */
#define RING_SIZE_LIMIT 8388608
#define MAGLEV_SIZE_LIMIT 5000011

static const char *const ring_hash_function_values[] = { "XX_HASH", "MURMUR_HASH_2", NULL };

static int ring_hash_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *mn = herald_cfg_get(n, "minimum_ring_size");
    const struct herald_cfg *mx = herald_cfg_get(n, "maximum_ring_size");
    long long lo = herald_cfg_int(mn, 1024), hi = herald_cfg_int(mx, RING_SIZE_LIMIT);
    if (mn && (lo < 1 || lo > RING_SIZE_LIMIT))
        return herald_cfg_errorf(mn, err, "minimum_ring_size %lld is out of range (1 to %d)", lo,
                                 RING_SIZE_LIMIT);
    if (mx && (hi < 1 || hi > RING_SIZE_LIMIT))
        return herald_cfg_errorf(mx, err, "maximum_ring_size %lld is out of range (1 to %d)", hi,
                                 RING_SIZE_LIMIT);
    if (lo > hi)
        return herald_cfg_errorf(mn ? mn : mx, err, "minimum_ring_size (%lld) is more than maximum_ring_size "
                                 "(%lld)", lo, hi);
    return 0;
}

static const struct herald_field ring_hash_fields[] = {
    UINT("minimum_ring_size", .help = "default 1024; the lightest host gets a whole number of points"),
    ENUM("hash_function", ring_hash_function_values, .help = "XX_HASH (default) or MURMUR_HASH_2"),
    UINT("maximum_ring_size", .help = "default 8388608 (8M), also the most allowed"),
    END,
};
static const struct herald_message ring_hash_msg = {
    "envoy.config.cluster.v3.Cluster.RingHashLbConfig", ring_hash_fields, ring_hash_check,
};

static int maglev_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *ts = herald_cfg_get(n, "table_size");
    long long size = herald_cfg_int(ts, 65537);
    if (ts && (size < 2 || size > MAGLEV_SIZE_LIMIT))
        return herald_cfg_errorf(ts, err, "table_size %lld is out of range (2 to %d)", size,
                                 MAGLEV_SIZE_LIMIT);
    if (ts) {
        bool prime = size % 2 != 0 || size == 2;
        for (long long d = 3; prime && d * d <= size; d += 2)
            prime = size % d != 0;
        if (!prime)
            return herald_cfg_errorf(ts, err, "table_size %lld is not a prime number (Maglev needs a prime "
                                     "table size, e.g. 65537 or 5000011)", size);
    }
    return 0;
}

static const struct herald_field maglev_fields[] = {
    UINT("table_size", .help = "default 65537; must be prime, at most 5000011"),
    END,
};
static const struct herald_message maglev_msg = {
    "envoy.config.cluster.v3.Cluster.MaglevLbConfig", maglev_fields, maglev_check,
};

/* (consistent_hashing_msg is defined below; the extension messages use it) */
static const struct herald_message consistent_hashing_msg;

/* load_balancing_policy: Envoy's extension form of lb_policy. Each policy's
 * typed_config is checked against its message when the cluster is read
 * (bootstrap.c, schema_lb_policy_find), since only the first policy herald
 * has is used. */
static const struct herald_field lbp_round_robin_fields[] = {
    UNSUP("slow_start_config"),
    UNSUP("locality_lb_config"),
    END,
};
static const struct herald_message lbp_round_robin_msg = {
    "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin", lbp_round_robin_fields, NULL,
};
static const struct herald_field lbp_least_request_fields[] = {
    UINT("choice_count", .help = "default 2"),
    UNSUP("active_request_bias"),
    UNSUP("slow_start_config"),
    UNSUP("locality_lb_config"),
    UNSUP("enable_full_scan"),
    UNSUP("selection_method"),
    END,
};
static const struct herald_message lbp_least_request_msg = {
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest", lbp_least_request_fields, NULL,
};
static const struct herald_field lbp_random_fields[] = {
    UNSUP("locality_lb_config"),
    END,
};
static const struct herald_message lbp_random_msg = {
    "envoy.extensions.load_balancing_policies.random.v3.Random", lbp_random_fields, NULL,
};
static const struct herald_field lbp_ring_hash_fields[] = {
    ENUM("hash_function", ring_hash_function_values, .help = "XX_HASH (default) or MURMUR_HASH_2"),
    UINT("minimum_ring_size", .help = "default 1024"),
    UINT("maximum_ring_size", .help = "default 8388608"),
    F_("use_hostname_for_hashing", BOOL, HERALD_F_DEPRECATED, .hint = "use consistent_hashing_lb_config"),
    UNSUP("hash_balance_factor"),
    MSG("consistent_hashing_lb_config", consistent_hashing_msg),
    UNSUP("locality_weighted_lb_config"),
    END,
};
static const struct herald_message lbp_ring_hash_msg = {
    "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash", lbp_ring_hash_fields, ring_hash_check,
};
static const struct herald_field lbp_maglev_fields[] = {
    UINT("table_size", .help = "default 65537; must be prime"),
    MSG("consistent_hashing_lb_config", consistent_hashing_msg),
    UNSUP("locality_weighted_lb_config"),
    END,
};
static const struct herald_message lbp_maglev_msg = {
    "envoy.extensions.load_balancing_policies.maglev.v3.Maglev", lbp_maglev_fields, maglev_check,
};

const struct lb_policy_ext schema_lb_policies[] = {
    {"envoy.load_balancing_policies.round_robin", "ROUND_ROBIN", &lbp_round_robin_msg},
    {"envoy.load_balancing_policies.least_request", "LEAST_REQUEST", &lbp_least_request_msg},
    {"envoy.load_balancing_policies.random", "RANDOM", &lbp_random_msg},
    {"envoy.load_balancing_policies.ring_hash", "RING_HASH", &lbp_ring_hash_msg},
    {"envoy.load_balancing_policies.maglev", "MAGLEV", &lbp_maglev_msg},
    {NULL, NULL, NULL},
};

/* The extension a policy entry names: by typed_config's @type, else by name. */
const struct lb_policy_ext *schema_lb_policy_find(const struct herald_cfg *typed_extension_config)
{
    const char *type = herald_cfg_str(herald_cfg_get(herald_cfg_get(typed_extension_config, "typed_config"),
                                                     "@type"), NULL);
    const char *slash = type ? strrchr(type, '/') : NULL;
    const char *name = herald_cfg_str(herald_cfg_get(typed_extension_config, "name"), "");
    for (const struct lb_policy_ext *p = schema_lb_policies; p->name; p++)
        if (type ? !strcmp(slash ? slash + 1 : type, p->msg->name) : !strcmp(name, p->name))
            return p;
    return NULL;
}

static int lbp_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *ps = herald_cfg_get(n, "policies");
    for (size_t i = 0; i < herald_cfg_len(ps); i++)
        if (schema_lb_policy_find(herald_cfg_get(herald_cfg_at(ps, i), "typed_extension_config")))
            return 0;
    return herald_cfg_errorf(ps ? ps : n, err, "none of these policies is one herald has (round_robin, "
                             "least_request, random, ring_hash, maglev under envoy.load_balancing_policies.)");
}

static const struct herald_field typed_ext_fields[] = {
    REQ("name", STRING),
    F_("typed_config", ANY, 0, .help = "checked against the policy's own message"),
    END,
};
static const struct herald_message typed_ext_msg = {
    "envoy.config.core.v3.TypedExtensionConfig", typed_ext_fields, NULL,
};
static const struct herald_field lbp_policy_fields[] = {
    F_("typed_extension_config", MESSAGE, HERALD_F_REQUIRED, .message = &typed_ext_msg),
    END,
};
static const struct herald_message lbp_policy_msg = {
    "envoy.config.cluster.v3.LoadBalancingPolicy.Policy", lbp_policy_fields, NULL,
};
static const struct herald_field lbp_fields[] = {
    F_("policies", MESSAGE, HERALD_F_REPEATED | HERALD_F_REQUIRED, .message = &lbp_policy_msg,
       .help = "in order of preference: the first one herald has is used"),
    END,
};
static const struct herald_message lbp_msg = {
    "envoy.config.cluster.v3.LoadBalancingPolicy", lbp_fields, lbp_check,
};

static const struct herald_field consistent_hashing_fields[] = {
    BOOL("use_hostname_for_hashing", .help = "hash hosts by hostname instead of ip:port"),
    UNSUP("hash_balance_factor", .hint = "bounded-load consistent hashing is not implemented"),
    END,
};
static const struct herald_message consistent_hashing_msg = {
    "envoy.config.cluster.v3.Cluster.CommonLbConfig.ConsistentHashingLbConfig", consistent_hashing_fields,
    NULL,
};

static const struct herald_field locality_weighted_fields[] = { END };
static const struct herald_message locality_weighted_msg = {
    "envoy.config.cluster.v3.Cluster.CommonLbConfig.LocalityWeightedLbConfig", locality_weighted_fields, NULL,
};

static const struct herald_field common_lb_fields[] = {
    MSG("healthy_panic_threshold", schema_percent,
        .help = "percent; below it, hosts are used whatever their health; default 50"),
    UNSUP("zone_aware_lb_config", .oneof = "locality_config_specifier"),
    MSG("locality_weighted_lb_config", locality_weighted_msg, .oneof = "locality_config_specifier",
        .help = "{}: pick a locality by its load_balancing_weight (times its health), then a host in it"),
    UNSUP("update_merge_window"),
    UNSUP("ignore_new_hosts_until_first_hc"),
    UNSUP("close_connections_on_host_set_change"),
    MSG("consistent_hashing_lb_config", consistent_hashing_msg, .help = "RING_HASH and MAGLEV"),
    UNSUP("override_host_status"),
    END,
};
static const struct herald_message common_lb_msg = {
    "envoy.config.cluster.v3.Cluster.CommonLbConfig", common_lb_fields, NULL,
};

static const struct herald_field upstream_conn_fields[] = {
    UNSUP("tcp_keepalive"),
    UNSUP("set_local_interface_name_on_upstream_connections"),
    UNSUP("happy_eyeballs_config"),
    END,
};
static const struct herald_message upstream_conn_msg = {
    "envoy.config.cluster.v3.UpstreamConnectionOptions", upstream_conn_fields, NULL,
};

/* ------------------------------------------------------------ upstreams.http.v3 */

#define HTTP_OPTIONS_KEY "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

static const struct herald_field common_http_options_fields[] = {
    DUR("idle_timeout", .help = "an idle upstream connection closes after it; default 1h, 0s: never"),
    UNSUP("max_connection_duration"),
    UINT("max_headers_count", .help = "most headers a response may have; default 100"),
    UNSUP("max_response_headers_kb"),
    UNSUP("max_stream_duration"),
    UNSUP("headers_with_underscores_action"),
    UINT("max_requests_per_connection", .help = "requests per upstream connection; unset or 0: no limit"),
    END,
};
static const struct herald_message common_http_options_msg = {
    "envoy.config.core.v3.HttpProtocolOptions", common_http_options_fields, NULL,
};

static const struct herald_field http1_options_fields[] = {
    UNSUP("allow_absolute_url"),
    UNSUP("accept_http_10"),
    UNSUP("default_host_for_http_10"),
    UNSUP("header_key_format"),
    UNSUP("enable_trailers"),
    UNSUP("allow_chunked_length"),
    UNSUP("override_stream_error_on_invalid_http_message"),
    UNSUP("send_fully_qualified_url"),
    UNSUP("use_balsa_parser"),
    UNSUP("allow_custom_methods"),
    UNSUP("ignore_http_11_upgrade"),
    END,
};
static const struct herald_message http1_options_msg = {
    "envoy.config.core.v3.Http1ProtocolOptions", http1_options_fields, NULL,
};

/* envoy.config.core.v3.Http2ProtocolOptions, for the upstream HTTP/2 client. */
static const struct herald_field http2_options_fields[] = {
    UINT("hpack_table_size", .help = "the HPACK table the upstream may use for its headers; default 4096"),
    UINT("max_concurrent_streams", .help = "streams per upstream connection (also bounded by the peer's "
         "SETTINGS); default 2147483647"),
    UINT("initial_stream_window_size", .help = "receive window per stream; 65535 to 2147483647, "
         "default 256 MiB"),
    UINT("initial_connection_window_size", .help = "receive window per connection; 65535 to 2147483647, "
         "default 256 MiB"),
    UNSUP("allow_connect"),
    UNSUP("allow_metadata"),
    UNSUP("max_outbound_frames"),
    UNSUP("max_outbound_control_frames"),
    UNSUP("max_consecutive_inbound_frames_with_empty_payload"),
    UNSUP("max_inbound_priority_frames_per_stream"),
    UNSUP("max_inbound_window_update_frames_per_data_frame_sent"),
    F_("stream_error_on_invalid_http_messaging", ANY, HERALD_F_UNSUPPORTED | HERALD_F_DEPRECATED),
    UNSUP("override_stream_error_on_invalid_http_message"),
    UNSUP("custom_settings_parameters"),
    MSG("connection_keepalive", schema_h2_keepalive,
        .help = "PINGs to the upstream; no answer within timeout closes the connection"),
    UNSUP("use_oghttp2_codec"),
    UNSUP("max_metadata_size"),
    END,
};
static const struct herald_message http2_options_msg = {
    "envoy.config.core.v3.Http2ProtocolOptions", http2_options_fields, NULL,
};

static const struct herald_field explicit_http_fields[] = {
    MSG("http_protocol_options", http1_options_msg, .oneof = "protocol_config"),
    MSG("http2_protocol_options", http2_options_msg, .oneof = "protocol_config",
        .help = "speak HTTP/2 to the upstream (h2c prior knowledge, or h2 over TLS)"),
    UNSUP("http3_protocol_options", .oneof = "protocol_config"),
    END,
};
static const struct herald_message explicit_http_msg = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig", explicit_http_fields, NULL,
};

static const struct herald_field auto_http_fields[] = {
    MSG("http_protocol_options", http1_options_msg),
    MSG("http2_protocol_options", http2_options_msg),
    UNSUP("http3_protocol_options"),
    UNSUP("alternate_protocols_cache_options"),
    END,
};
static const struct herald_message auto_http_msg = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig", auto_http_fields, NULL,
};

static const struct herald_field upstream_http_options_fields[] = {
    UNSUP("auto_sni"),
    UNSUP("auto_san_validation"),
    UNSUP("override_auto_sni_header"),
    END,
};
static const struct herald_message upstream_http_options_msg = {
    "envoy.config.core.v3.UpstreamHttpProtocolOptions", upstream_http_options_fields, NULL,
};

static int http_options_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *t = herald_cfg_get(n, "@type");
    const char *type = herald_cfg_str(t, NULL);
    if (type) {
        const char *slash = strrchr(type, '/');
        if (strcmp(slash ? slash + 1 : type, HTTP_OPTIONS_KEY) != 0)
            return herald_cfg_errorf(t, err, "\"@type\" must be type.googleapis.com/" HTTP_OPTIONS_KEY
                                     " under this key, not '%s'", type);
    }
    return 0;
}

static const struct herald_field http_options_fields[] = {
    MSG("upstream_http_protocol_options", upstream_http_options_msg),
    MSG("common_http_protocol_options", common_http_options_msg),
    MSG("explicit_http_config", explicit_http_msg, .oneof = "upstream_protocol_options"),
    UNSUP("use_downstream_protocol_config", .oneof = "upstream_protocol_options"),
    MSG("auto_config", auto_http_msg, .oneof = "upstream_protocol_options",
        .help = "HTTP/2 when TLS ALPN picks h2, else HTTP/1.1 (needs a TLS transport_socket)"),
    UNSUP("http_filters"),
    UNSUP("header_validation_config"),
    UNSUP("outlier_detection"),
    END,
};
static const struct herald_message http_options_msg = {
    HTTP_OPTIONS_KEY, http_options_fields, http_options_check,
};

/* ------------------------------------------------------------ redis_proxy.v3 */

/* RedisProtocolOptions: the AUTH redis_proxy sends on each new connection to
 * the cluster's hosts (the plugin reads it with herald_env_cluster_protocol_options). */
#define REDIS_OPTIONS_KEY "envoy.filters.network.redis_proxy"
#define REDIS_OPTIONS_TYPE "envoy.extensions.filters.network.redis_proxy.v3.RedisProtocolOptions"


static int redis_options_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *t = herald_cfg_get(n, "@type");
    const char *type = herald_cfg_str(t, NULL);
    if (type) {
        const char *slash = strrchr(type, '/');
        const char *name = slash ? slash + 1 : type;
        if (strcmp(name, REDIS_OPTIONS_TYPE) != 0 &&
            strcmp(name, "envoy.config.filter.network.redis_proxy.v2.RedisProtocolOptions") != 0)
            return herald_cfg_errorf(t, err, "\"@type\" must be type.googleapis.com/" REDIS_OPTIONS_TYPE
                                     " under this key, not '%s'", type);
    }
    if (herald_cfg_get(n, "auth_username") && !herald_cfg_get(n, "auth_password"))
        return herald_cfg_errorf(herald_cfg_get(n, "auth_username"), err, "auth_username needs auth_password");
    return 0;
}

static const struct herald_field redis_options_fields[] = {
    MSG("auth_password", schema_data_source, .help = "redis_proxy sends AUTH with it on each new connection to "
        "the cluster's hosts (the servers' requirepass)"),
    MSG("auth_username", schema_data_source, .help = "and this ACL user name (AUTH user password)"),
    UNSUP("aws_iam"),
    UNSUP("credentials"),
    END,
};
static const struct herald_message redis_options_msg = {
    REDIS_OPTIONS_TYPE, redis_options_fields, redis_options_check,
};

/* typed_extension_protocol_options: a map from extension name to its options,
 * each name with its own message. */
static const struct herald_field protocol_options_fields[] = {
    MSG("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", http_options_msg, .help = "HttpProtocolOptions: "
        "idle_timeout, "
        "max_requests_per_connection, HTTP/2 with explicit_http_config or auto_config"),
    MSG("envoy.filters.network.redis_proxy", redis_options_msg, .help = "RedisProtocolOptions: the AUTH "
        "redis_proxy sends to the "
        "cluster's hosts"),
    UNSUP("envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"),
    UNSUP("envoy.filters.network.thrift_proxy"),
    END,
};
static const struct herald_message protocol_options_msg = {
    "envoy.config.cluster.v3.Cluster.typed_extension_protocol_options", protocol_options_fields, NULL,
};

static const char *const cluster_type_values[] = {
    "STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST", NULL,
};
/* Cluster.LbSubsetConfig (upstream/lb_subset.c). Envoy's field list: its
 * allow_redundant_keys and subset_lb_policy belong to the
 * envoy.load_balancing_policies.subset extension, not to this message. */
static const char *const subset_fallback_values[] = { "NO_FALLBACK", "ANY_ENDPOINT", "DEFAULT_SUBSET", NULL };
static const char *const selector_fallback_values[] = {
    "NOT_DEFINED", "NO_FALLBACK", "ANY_ENDPOINT", "DEFAULT_SUBSET", "KEYS_SUBSET", NULL,
};
static const char *const metadata_fallback_values[] = { "METADATA_NO_FALLBACK", "FALLBACK_LIST", NULL };

static bool str_in(const struct herald_cfg *list, const char *s)
{
    for (size_t i = 0; i < herald_cfg_len(list); i++)
        if (strcmp(herald_cfg_str(herald_cfg_at(list, i), ""), s) == 0)
            return true;
    return false;
}

/* Envoy's SubsetSelector checks for KEYS_SUBSET. */
static int subset_selector_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *fp = herald_cfg_get(n, "fallback_policy");
    const struct herald_cfg *keys = herald_cfg_get(n, "keys"), *fk = herald_cfg_get(n, "fallback_keys_subset");
    if (strcmp(herald_cfg_str(fp, "NOT_DEFINED"), "KEYS_SUBSET") != 0)
        return 0;
    if (!herald_cfg_len(fk))
        return herald_cfg_errorf(fk ? fk : fp, err, "fallback_keys_subset cannot be empty with fallback_policy "
                                 "KEYS_SUBSET");
    bool all = true;
    for (size_t i = 0; i < herald_cfg_len(fk); i++) {
        const struct herald_cfg *k = herald_cfg_at(fk, i);
        if (!str_in(keys, herald_cfg_str(k, "")))
            return herald_cfg_errorf(k, err, "fallback_keys_subset must be a subset of the selector's keys: "
                                     "'%s' is not one of them", herald_cfg_str(k, ""));
    }
    for (size_t i = 0; i < herald_cfg_len(keys); i++)
        all &= str_in(fk, herald_cfg_str(herald_cfg_at(keys, i), ""));
    if (all)
        return herald_cfg_errorf(fk, err, "fallback_keys_subset cannot be equal to keys (KEYS_SUBSET falls back "
                                 "to fewer keys)");
    return 0;
}

static const struct herald_field subset_selector_fields[] = {
    STRS("keys", .help = "endpoint metadata keys (filter_metadata envoy.lb) that make one subset per "
         "combination of values"),
    UNSUP("single_host_per_subset", .hint = "a selector with one key and one host per value routes the same way"),
    ENUM("fallback_policy", selector_fallback_values,
         .help = "NOT_DEFINED (default: the cluster's), NO_FALLBACK, ANY_ENDPOINT, DEFAULT_SUBSET or KEYS_SUBSET"),
    STRS("fallback_keys_subset", .help = "KEYS_SUBSET: the keys to try again with"),
    END,
};
static const struct herald_message subset_selector_msg = {
    "envoy.config.cluster.v3.Cluster.LbSubsetConfig.LbSubsetSelector", subset_selector_fields,
    subset_selector_check,
};

static int subset_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *mf = herald_cfg_get(n, "metadata_fallback_policy");
    if (mf && strcmp(herald_cfg_str(mf, ""), "FALLBACK_LIST") == 0)
        return herald_cfg_errorf(mf, err, "not supported: metadata_fallback_policy FALLBACK_LIST (herald does "
                                 "not implement fallback_list; use METADATA_NO_FALLBACK)");
    return 0;
}

static const struct herald_field subset_fields[] = {
    ENUM("fallback_policy", subset_fallback_values,
         .help = "NO_FALLBACK (default), ANY_ENDPOINT or DEFAULT_SUBSET: when no subset matches"),
    STRUCT("default_subset", .help = "the metadata of DEFAULT_SUBSET's hosts ({}: every host)"),
    LIST("subset_selectors", subset_selector_msg),
    BOOL("locality_weight_aware", .help = "subsets keep the cluster's locality weights"),
    BOOL("scale_locality_weight", .help = "... scaled by the share of each locality's hosts in the subset"),
    BOOL("panic_mode_any", .help = "when the fallback finds no host, any host of the cluster"),
    BOOL("list_as_any", .help = "a list value in endpoint metadata matches each of its elements"),
    ENUM("metadata_fallback_policy", metadata_fallback_values, .help = "METADATA_NO_FALLBACK only"),
    UNSUP("allow_redundant_keys", .hint = "Envoy has it only in the envoy.load_balancing_policies.subset "
          "extension, not in Cluster.LbSubsetConfig"),
    END,
};
static const struct herald_message subset_msg = {
    "envoy.config.cluster.v3.Cluster.LbSubsetConfig", subset_fields, subset_check,
};

static const char *const lb_policy_values[] = {
    "ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "RANDOM", "MAGLEV", "CLUSTER_PROVIDED",
    "LOAD_BALANCING_POLICY_CONFIG", NULL,
};
static const char *const dns_family_values[] = { "AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL", NULL };

#define LEGACY_HINT "use typed_extension_protocol_options with " HTTP_OPTIONS_KEY

static const char *const legacy_http_fields[] = {
    "upstream_http_protocol_options", "common_http_protocol_options", "http_protocol_options",
    "http2_protocol_options", NULL,
};

static int cluster_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *t = herald_cfg_get(n, "type");
    const char *type = herald_cfg_str(t, "STATIC");
    if (strcmp(type, "EDS") == 0 || strcmp(type, "ORIGINAL_DST") == 0)
        return herald_cfg_errorf(t, err, "not supported: cluster type %s (herald supports STATIC, "
                                 "STRICT_DNS and LOGICAL_DNS)", type);
    const struct herald_cfg *lb = herald_cfg_get(n, "lb_policy");
    const char *pol = herald_cfg_str(lb, "ROUND_ROBIN");
    if (strcmp(pol, "LOAD_BALANCING_POLICY_CONFIG") == 0 && !herald_cfg_get(n, "load_balancing_policy"))
        return herald_cfg_errorf(lb, err, "lb_policy LOAD_BALANCING_POLICY_CONFIG needs load_balancing_policy");
    if (strcmp(pol, "CLUSTER_PROVIDED") == 0)
        return herald_cfg_errorf(lb, err, "not supported: lb_policy %s (herald does not implement it yet; "
                                 "use ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV)", pol);
    if (herald_cfg_get(n, "lb_subset_config") && herald_cfg_get(n, "load_balancing_policy"))
        return herald_cfg_errorf(herald_cfg_get(n, "lb_subset_config"), err, "not supported: lb_subset_config "
                                 "with load_balancing_policy (Envoy then wants the subset policy inside "
                                 "load_balancing_policy, envoy.load_balancing_policies.subset, which herald does "
                                 "not have; use lb_policy)");
    const struct herald_cfg *teo = herald_cfg_get(n, "typed_extension_protocol_options");
    /* As Envoy: the old places and the new one do not mix (which would win is
     * anybody's guess), and HTTP/1 and HTTP/2 options name one protocol. */
    for (const char *const *f = legacy_http_fields; *f; f++) {
        const struct herald_cfg *old = herald_cfg_get(n, *f);
        if (old && herald_cfg_get(teo, HTTP_OPTIONS_KEY))
            return herald_cfg_errorf(old, err, "%s and typed_extension_protocol_options' %s cannot both be "
                                     "set: move %s into the latter", *f, HTTP_OPTIONS_KEY, *f);
    }
    if (herald_cfg_get(n, "http_protocol_options") && herald_cfg_get(n, "http2_protocol_options"))
        return herald_cfg_errorf(herald_cfg_get(n, "http2_protocol_options"), err, "http_protocol_options and "
                                 "http2_protocol_options cannot both be set: the first is HTTP/1.1, the "
                                 "second HTTP/2");
    const struct herald_cfg *ac = herald_cfg_get(herald_cfg_get(teo, HTTP_OPTIONS_KEY), "auto_config");
    if (ac && !herald_cfg_get(n, "transport_socket"))
        return herald_cfg_errorf(ac, err, "auto_config picks the protocol by TLS ALPN: the cluster needs a "
                                 "TLS transport_socket (for plaintext HTTP/2 use explicit_http_config with "
                                 "http2_protocol_options)");
    return 0;
}

static const struct herald_field cluster_fields[] = {
    UNSUP("transport_socket_matches"),
    F_("name", STRING, HERALD_F_REQUIRED, .help = "unique; what routes and tcp_proxy refer to"),
    STR("alt_stat_name"),
    ENUM("type", cluster_type_values, .oneof = "cluster_discovery_type",
         .help = "STATIC (default), STRICT_DNS or LOGICAL_DNS"),
    UNSUP("cluster_type", .oneof = "cluster_discovery_type", .hint = "use type"),
    UNSUP("eds_cluster_config"),
    DUR("connect_timeout", .help = "default 5s"),
    UINT("per_connection_buffer_limit_bytes", .help = "default 1 MiB"),
    ENUM("lb_policy", lb_policy_values,
         .help = "ROUND_ROBIN (default), LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV"),
    MSG("load_assignment", cla_msg),
    LIST("health_checks", health_check_msg, .help = "active health checking (one per cluster)"),
    F_("max_requests_per_connection", UINT, HERALD_F_DEPRECATED,
       .hint = "use typed_extension_protocol_options with common_http_protocol_options"),
    MSG("circuit_breakers", circuit_breakers_msg),
    /* The v2-era places of HttpProtocolOptions' parts, still in many operators'
     * configs and still honoured by Envoy (deprecated): read as if they sat in
     * typed_extension_protocol_options, with a warning. */
    F_("upstream_http_protocol_options", MESSAGE, HERALD_F_DEPRECATED, .message = &upstream_http_options_msg,
       .hint = LEGACY_HINT),
    F_("common_http_protocol_options", MESSAGE, HERALD_F_DEPRECATED, .message = &common_http_options_msg,
       .hint = LEGACY_HINT),
    F_("http_protocol_options", MESSAGE, HERALD_F_DEPRECATED, .message = &http1_options_msg,
       .hint = LEGACY_HINT),
    F_("http2_protocol_options", MESSAGE, HERALD_F_DEPRECATED, .message = &http2_options_msg,
       .hint = LEGACY_HINT " (explicit_http_config: {http2_protocol_options: ...})"),
    MSG("typed_extension_protocol_options", protocol_options_msg,
        .help = "by extension name: " HTTP_OPTIONS_KEY " (idle_timeout, max_requests_per_connection, HTTP/2 "
        "with explicit_http_config or auto_config) and " REDIS_OPTIONS_KEY " (the servers' AUTH)"),
    DUR("dns_refresh_rate", .help = "default 5s"),
    UNSUP("dns_failure_refresh_rate"),
    BOOL("respect_dns_ttl"),
    ENUM("dns_lookup_family", dns_family_values),
    UNSUP("dns_resolvers"),
    UNSUP("use_tcp_for_dns_lookups"),
    UNSUP("dns_resolution_config"),
    UNSUP("typed_dns_resolver_config"),
    UNSUP("dns_jitter"),
    BOOL("wait_for_warm_on_init"),
    MSG("outlier_detection", outlier_detection_msg),
    DUR("cleanup_interval"),
    UNSUP("upstream_bind_config"),
    MSG("lb_subset_config", subset_msg, .help = "subsets of the hosts by endpoint metadata, chosen by a route's "
        "metadata_match and envoy.lb dynamic metadata"),
    MSG("ring_hash_lb_config", ring_hash_msg, .oneof = "lb_config"),
    MSG("maglev_lb_config", maglev_msg, .oneof = "lb_config"),
    UNSUP("original_dst_lb_config", .oneof = "lb_config"),
    MSG("least_request_lb_config", least_request_msg, .oneof = "lb_config"),
    MSG("round_robin_lb_config", round_robin_msg, .oneof = "lb_config"),
    MSG("common_lb_config", common_lb_msg),
    TYPED("transport_socket", .help = "{name, typed_config}: TLS to the upstream (envoy.transport_sockets.tls, "
          "UpstreamTlsContext) or none"),
    STRUCT("metadata"),
    F_("protocol_selection", ANY, HERALD_F_UNSUPPORTED | HERALD_F_DEPRECATED),
    MSG("upstream_connection_options", upstream_conn_msg),
    BOOL("close_connections_on_host_health_failure"),
    BOOL("ignore_health_on_host_removal"),
    UNSUP("filters"),
    MSG("load_balancing_policy", lbp_msg, .help = "the extension form of lb_policy; when set it is used "
        "instead (lb_policy may then be LOAD_BALANCING_POLICY_CONFIG)"),
    UNSUP("lrs_server"),
    UNSUP("lrs_report_endpoint_metrics"),
    F_("track_timeout_budgets", ANY, HERALD_F_UNSUPPORTED | HERALD_F_DEPRECATED),
    UNSUP("upstream_config"),
    UNSUP("track_cluster_stats"),
    UNSUP("preconnect_policy"),
    UNSUP("connection_pool_per_downstream_connection"),
    REMOVED("hosts", "v2 field: use load_assignment with endpoints[].lb_endpoints[].endpoint.address"),
    REMOVED("tls_context", "v2 field: use transport_socket with envoy.transport_sockets.tls"),
    REMOVED("extension_protocol_options", "v2 field: use typed_extension_protocol_options"),
    REMOVED("drain_connections_on_host_removal", "v2 field: renamed ignore_health_on_host_removal"),
    END,
};
static const struct herald_message cluster_msg = {
    "envoy.config.cluster.v3.Cluster", cluster_fields, cluster_check,
};

/* ------------------------------------------------------------ bootstrap.v3 */

/* layered_runtime: the layers' contents are checked by runtime_init(). */
static const struct herald_field disk_layer_fields[] = {
    REQ("symlink_root", STRING, .help = "a symlink to the tree of runtime files; swap it to reload"),
    STR("subdirectory", .help = "read below symlink_root/subdirectory"),
    BOOL("append_service_cluster", .help = "append node.cluster to the path"),
    END,
};
static const struct herald_message disk_layer_msg = {
    "envoy.config.bootstrap.v3.RuntimeLayer.DiskLayer", disk_layer_fields, NULL,
};
static const struct herald_field admin_layer_fields[] = { END };
static const struct herald_message admin_layer_msg = {
    "envoy.config.bootstrap.v3.RuntimeLayer.AdminLayer", admin_layer_fields, NULL,
};
static const struct herald_field runtime_layer_fields[] = {
    REQ("name", STRING),
    STRUCT("static_layer", .oneof = "layer_specifier", .help = "keys and values; nested keys join with '.'"),
    MSG("disk_layer", disk_layer_msg, .oneof = "layer_specifier"),
    MSG("admin_layer", admin_layer_msg, .oneof = "layer_specifier", .help = "set by POST /runtime_modify"),
    UNSUP("rtds_layer", .oneof = "layer_specifier", .hint = "xDS; use a disk_layer or the admin_layer"),
    END,
};
static const struct herald_message runtime_layer_msg = {
    "envoy.config.bootstrap.v3.RuntimeLayer", runtime_layer_fields, NULL,
};
static const struct herald_field layered_runtime_fields[] = {
    LIST("layers", runtime_layer_msg),
    END,
};
static const struct herald_message layered_runtime_msg = {
    "envoy.config.bootstrap.v3.LayeredRuntime", layered_runtime_fields, NULL,
};

/* stats_sinks: each typed_config is checked by stats_sinks_init() (stats_sink.c)
 * against the StatsdSink or DogStatsdSink table below. */
static const struct herald_field stats_sink_fields[] = {
    STR("name", .help = "envoy.stat_sinks.statsd or envoy.stat_sinks.dog_statsd; a typed_config \"@type\" decides"),
    TYPED("typed_config", .oneof = "config_type"),
    REMOVED("config", "v2 field: use typed_config with an \"@type\""),
    END,
};
static const struct herald_message stats_sink_msg = {
    "envoy.config.metrics.v3.StatsSink", stats_sink_fields, NULL,
};

/* A statsd server's address: always UDP, whatever "protocol" says (as Envoy). */
static int statsd_socket_address_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *port = herald_cfg_get(n, "port_value");
    int64_t v = herald_cfg_int(port, 0);
    if (!port || v < 1 || v > 65535)
        return herald_cfg_errorf(port ? port : n, err, "a statsd server needs a port_value (1-65535)");
    return 0;
}
static const struct herald_field statsd_socket_address_fields[] = {
    ENUM("protocol", protocol_values, .help = "ignored: statsd datagrams are UDP"),
    F_("address", STRING, HERALD_F_REQUIRED, .help = "an IP address"),
    UINT("port_value", .oneof = "port_specifier"),
    UNSUP("named_port", .oneof = "port_specifier", .hint = "use port_value"),
    UNSUP("resolver_name"),
    BOOL("ipv4_compat"),
    UNSUP("network_namespace_filepath"),
    END,
};
static const struct herald_message statsd_socket_address_msg = {
    "envoy.config.core.v3.SocketAddress", statsd_socket_address_fields, statsd_socket_address_check,
};
static const struct herald_field statsd_address_fields[] = {
    MSG("socket_address", statsd_socket_address_msg, .oneof = "address"),
    UNSUP("pipe", .oneof = "address", .hint = "statsd over a unix datagram socket: use a socket_address"),
    UNSUP("envoy_internal_address", .oneof = "address"),
    END,
};
static int statsd_address_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "socket_address"))
        return herald_cfg_errorf(n, err, "a statsd address needs a socket_address");
    return 0;
}
static const struct herald_message statsd_address_msg = {
    "envoy.config.core.v3.Address", statsd_address_fields, statsd_address_check,
};

static int statsd_sink_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "address") && !herald_cfg_get(n, "tcp_cluster_name"))
        return herald_cfg_errorf(n, err, "a StatsdSink needs an address (UDP) or a tcp_cluster_name");
    return 0;
}
static const struct herald_field statsd_sink_fields[] = {
    MSG("address", statsd_address_msg, .oneof = "statsd_specifier", .help = "the statsd server (UDP)"),
    STR("tcp_cluster_name", .oneof = "statsd_specifier", .help = "a static_resources cluster; TCP to one of its hosts"),
    STR("prefix", .help = "put before every stat name, default envoy"),
    END,
};
const struct herald_message schema_statsd_sink = {
    "envoy.config.metrics.v3.StatsdSink", statsd_sink_fields, statsd_sink_check,
};

static int dog_statsd_sink_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "address"))
        return herald_cfg_errorf(n, err, "a DogStatsdSink needs an address");
    return 0;
}
static const struct herald_field dog_statsd_sink_fields[] = {
    MSG("address", statsd_address_msg, .oneof = "dog_statsd_specifier", .help = "the DogStatsD agent (UDP)"),
    STR("prefix", .help = "put before every stat name, default envoy"),
    UINT("max_bytes_per_datagram", .help = "batch metrics up to this size; unset: one metric per datagram"),
    END,
};
const struct herald_message schema_dog_statsd_sink = {
    "envoy.config.metrics.v3.DogStatsdSink", dog_statsd_sink_fields, dog_statsd_sink_check,
};

/* overload_manager: the monitors' typed_config is checked by overload_init(). */
static const struct herald_field resource_monitor_fields[] = {
    REQ("name", STRING, .help = "envoy.resource_monitors.global_downstream_max_connections, "
        "envoy.resource_monitors.fixed_heap or envoy.resource_monitors.injected_resource"),
    TYPED("typed_config", .help = "DownstreamConnectionsConfig {max_active_downstream_connections}, "
          "FixedHeapConfig {max_heap_size_bytes} or InjectedResourceConfig {filename}"),
    END,
};
static const struct herald_field threshold_trigger_fields[] = {
    REQ("value", DOUBLE, .help = "the action is on while the monitor's pressure is at least this (0 to 1)"),
    END,
};
static int threshold_trigger_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *v = herald_cfg_get(n, "value");
    double x = herald_cfg_real(v, -1);
    if (x < 0 || x > 1)
        return herald_cfg_errorf(v ? v : n, err, "value must be from 0 to 1");
    return 0;
}
static const struct herald_message threshold_trigger_msg = {
    "envoy.config.overload.v3.ThresholdTrigger", threshold_trigger_fields, threshold_trigger_check,
};
static const struct herald_field scaled_trigger_fields[] = {
    REQ("scaling_threshold", DOUBLE, .help = "below this pressure the action is off (0 to 1)"),
    REQ("saturation_threshold", DOUBLE, .help = "from this pressure on the action is saturated (0 to 1)"),
    END,
};
static int scaled_trigger_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *a = herald_cfg_get(n, "scaling_threshold"), *b = herald_cfg_get(n, "saturation_threshold");
    double lo = herald_cfg_real(a, -1), hi = herald_cfg_real(b, -1);
    if (lo < 0 || lo > 1)
        return herald_cfg_errorf(a ? a : n, err, "scaling_threshold must be from 0 to 1");
    if (hi < 0 || hi > 1)
        return herald_cfg_errorf(b ? b : n, err, "saturation_threshold must be from 0 to 1");
    if (lo >= hi)
        return herald_cfg_errorf(n, err, "scaling_threshold must be less than saturation_threshold");
    return 0;
}
static const struct herald_message scaled_trigger_msg = {
    "envoy.config.overload.v3.ScaledTrigger", scaled_trigger_fields, scaled_trigger_check,
};
static int trigger_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "threshold") && !herald_cfg_get(n, "scaled"))
        return herald_cfg_errorf(n, err, "a trigger needs threshold or scaled");
    return 0;
}
static const struct herald_field trigger_fields[] = {
    REQ("name", STRING, .help = "a resource monitor of resource_monitors"),
    MSG("threshold", threshold_trigger_msg, .oneof = "trigger_oneof"),
    MSG("scaled", scaled_trigger_msg, .oneof = "trigger_oneof",
        .help = "the action scales from 0 at scaling_threshold to saturated at saturation_threshold"),
    END,
};
static const struct herald_message trigger_msg = {
    "envoy.config.overload.v3.Trigger", trigger_fields, trigger_check,
};
static const struct herald_field overload_action_fields[] = {
    REQ("name", STRING, .help = "envoy.overload_actions.stop_accepting_requests, .disable_http_keepalive, "
        ".stop_accepting_connections, .reject_incoming_connections, .shrink_heap or .reduce_timeouts"),
    F_("triggers", MESSAGE, HERALD_F_REPEATED | HERALD_F_REQUIRED, .message = &trigger_msg,
       .help = "the action's scale is the highest of theirs; it is on when saturated"),
    TYPED("typed_config", .help = "reduce_timeouts: ScaleTimersOverloadActionConfig {timer_scale_factors}"),
    END,
};
static const struct herald_message overload_action_msg = {
    "envoy.config.overload.v3.OverloadAction", overload_action_fields, NULL,
};
static const struct herald_message resource_monitor_msg = {
    "envoy.config.overload.v3.ResourceMonitor", resource_monitor_fields, NULL,
};
static const struct herald_field overload_manager_fields[] = {
    DUR("refresh_interval", .help = "how often the pressure monitors are read; default 1s (connection "
        "limits apply at every accept)"),
    LIST("resource_monitors", resource_monitor_msg),
    LIST("actions", overload_action_msg),
    UNSUP("loadshed_points"),
    UNSUP("buffer_factory_config"),
    END,
};
static const struct herald_message overload_manager_msg = {
    "envoy.config.overload.v3.OverloadManager", overload_manager_fields, NULL,
};

static const struct herald_field static_resources_fields[] = {
    LIST("listeners", listener_msg),
    LIST("clusters", cluster_msg),
    UNSUP("secrets", .hint = "put the certificates inline in the TLS context"),
    END,
};
static const struct herald_message static_resources_msg = {
    "envoy.config.bootstrap.v3.Bootstrap.StaticResources", static_resources_fields, NULL,
};

static const struct herald_field cluster_manager_fields[] = {
    STR("local_cluster_name"),
    UNSUP("outlier_detection"),
    UNSUP("upstream_bind_config"),
    UNSUP("load_stats_config"),
    UNSUP("enable_deferred_cluster_creation"),
    END,
};
static const struct herald_message cluster_manager_msg = {
    "envoy.config.bootstrap.v3.ClusterManager", cluster_manager_fields, NULL,
};

static const struct herald_field admin_fields[] = {
    UNSUP("access_log", .help = "herald does not log admin requests yet"),
    /* Envoy's own examples set it (often to /dev/null); rejecting them for
     * an admin log would help nobody, so it is accepted with a warning. */
    F_("access_log_path", STRING, HERALD_F_DEPRECATED,
       .hint = "herald does not write admin access logs yet, so it is ignored"),
    STR("profile_path"),
    MSG("address", address_msg),
    UNSUP("socket_options"),
    BOOL("ignore_global_conn_limit"),
    F_("allow_paths", MESSAGE, HERALD_F_REPEATED, .message = &herald_string_matcher_schema,
       .help = "only admin paths matching one of these are served (others: 403)"),
    END,
};
static const struct herald_message admin_msg = { "envoy.config.bootstrap.v3.Admin", admin_fields, NULL };

/* dynamic_resources: LDS and CDS from files (config/xds_files.c) */
static const struct herald_field watched_directory_fields[] = {
    STR("path", .help = "the directory to watch (herald polls the file itself, so any way of changing it counts)"),
    END,
};
static const struct herald_message watched_directory_msg = {
    "envoy.config.core.v3.WatchedDirectory", watched_directory_fields, NULL,
};
static const struct herald_field path_config_source_fields[] = {
    REQ("path", STRING, .help = "a file of xDS resources: resources: [{\"@type\": ...Listener or ...Cluster, ...}]"),
    MSG("watched_directory", watched_directory_msg),
    END,
};
static const struct herald_message path_config_source_msg = {
    "envoy.config.core.v3.PathConfigSource", path_config_source_fields, NULL,
};
static const char *const api_version_values[] = { "AUTO", "V2", "V3", NULL };
static const struct herald_field config_source_fields[] = {
    MSG("path_config_source", path_config_source_msg, .oneof = "config_source_specifier"),
    F_("path", STRING, HERALD_F_DEPRECATED, .oneof = "config_source_specifier", .hint = "use path_config_source"),
    UNSUP("api_config_source", .oneof = "config_source_specifier", .hint = "xDS servers: herald reads files only"),
    UNSUP("ads", .oneof = "config_source_specifier", .hint = "xDS servers: herald reads files only"),
    UNSUP("self", .oneof = "config_source_specifier"),
    UNSUP("authorities"),
    DUR("initial_fetch_timeout", .help = "accepted; files are read at start-up, nothing is waited for"),
    ENUM("resource_api_version", api_version_values, .help = "V3 (the resources are v3)"),
    END,
};
static const struct herald_message config_source_msg = {
    "envoy.config.core.v3.ConfigSource", config_source_fields, NULL,
};
static const struct herald_field dynamic_resources_fields[] = {
    MSG("lds_config", config_source_msg, .help = "listeners from a file, reloaded when it changes"),
    MSG("cds_config", config_source_msg, .help = "clusters from a file, reloaded when it changes"),
    UNSUP("lds_resources_locator"),
    UNSUP("cds_resources_locator"),
    UNSUP("ads_config", .hint = "xDS servers: herald reads files only"),
    END,
};
static const struct herald_message dynamic_resources_msg = {
    "envoy.config.bootstrap.v3.Bootstrap.DynamicResources", dynamic_resources_fields, NULL,
};

static const struct herald_field bootstrap_fields[] = {
    MSG("node", node_msg),
    UNSUP("node_context_params"),
    MSG("static_resources", static_resources_msg),
    MSG("dynamic_resources", dynamic_resources_msg, .help = "LDS and CDS from files (path_config_source)"),
    MSG("cluster_manager", cluster_manager_msg),
    UNSUP("hds_config"),
    UNSUP("flags_path"),
    LIST("stats_sinks", stats_sink_msg),
    UNSUP("deferred_stat_options"),
    ANY("stats_config", .help = "tag extraction and inclusion lists (read, not yet applied)"),
    DUR("stats_flush_interval", .oneof = "stats_flush", .help = "default 5s"),
    BOOL("stats_flush_on_admin", .oneof = "stats_flush"),
    F_("watchdog", ANY, HERALD_F_DEPRECATED, .hint = "use watchdogs"),
    ANY("watchdogs"),
    UNSUP("tracing"),
    MSG("layered_runtime", layered_runtime_msg),
    MSG("admin", admin_msg),
    MSG("overload_manager", overload_manager_msg),
    BOOL("enable_dispatcher_stats"),
    UNSUP("header_prefix"),
    UINT("stats_server_version_override"),
    UNSUP("use_tcp_for_dns_lookups"),
    UNSUP("dns_resolution_config"),
    UNSUP("typed_dns_resolver_config"),
    UNSUP("bootstrap_extensions"),
    UNSUP("fatal_actions"),
    UNSUP("config_sources"),
    UNSUP("default_config_source"),
    UNSUP("default_socket_interface"),
    UNSUP("certificate_provider_instances"),
    UNSUP("inline_headers"),
    UNSUP("perf_tracing_file_path"),
    ANY("default_regex_engine"),
    UNSUP("xds_delegate_extension"),
    UNSUP("xds_config_tracker_extension"),
    UNSUP("listener_manager"),
    UNSUP("application_log_config"),
    UNSUP("grpc_async_client_manager_config"),
    UNSUP("memory_allocator_manager"),
    REMOVED("runtime", "v2 field: use layered_runtime"),
    END,
};
const struct herald_message schema_bootstrap = {
    "envoy.config.bootstrap.v3.Bootstrap", bootstrap_fields, NULL,
};
