/* herald SDK: ABI version. A plugin loads when its major equals the core's
 * and its minor is <= the core's. Bump the minor for additive changes (new
 * functions, callbacks appended to an ops table), the major for anything that
 * breaks a built plugin. Keep a dated line per bump:
 *   1.0  2026-11-27  first SDK: network + listener filters, buffers, config
 *                    tree and schema, clusters and upstream connections,
 *                    timers, stats, logging.
 *   1.1  2026-11-27  HTTP: header maps, HTTP filters and streams, routes,
 *                    upstream HTTP requests, the connection manager service
 *                    (herald/http.h); zero-copy forwarding (herald_conn_splice).
 *   1.2  2026-11-27  herald_headers_copy; herald_server_health_failed (the
 *                    health_check filter); circuit-breaker priorities:
 *                    herald_route_priority, herald_http_upstream_new_priority,
 *                    herald_cluster_retry_begin/end; herald_route_hash
 *                    (hash_policy for RING_HASH and MAGLEV).
 *   1.3  2026-11-28  herald_http_upstream_set_stream (the upstream connection
 *                    and attempt count in a stream's access log).
 *   1.4  2026-11-28  herald_upstream_id (%UPSTREAM_CONNECTION_ID% for filters
 *                    that hold their own upstream connection: tcp_proxy);
 *                    herald_conn_tls_log_field (the DOWNSTREAM_TLS_* and
 *                    certificate operators of access logs).
 *   1.5  2026-11-28  herald_conn_filter_chain_name (%FILTER_CHAIN_NAME%).
 *   1.6  2026-11-28  struct herald_retry_policy: other_hosts and
 *                    host_selection_max_attempts (retry_host_predicate
 *                    previous_hosts), appended; herald/runtime.h:
 *                    herald_runtime_feature_enabled, herald_runtime_uint,
 *                    herald_runtime_bool; herald_header_matcher_*
 *                    (Envoy's HeaderMatcher, as routes match it);
 *                    typed_per_filter_config: the ops route_config_schema,
 *                    route_config_create, route_config_destroy (appended)
 *                    and herald_http_stream_route_config;
 *                    herald_route_mirror_* (request_mirror_policies);
 *                    herald_string_matcher_*;
 *                    herald_http_stream_route_config_chain;
 *                    herald_conn_peer_cert_names (each SAN of a type and
 *                    the subject of the peer certificate: rbac's
 *                    authenticated);
 *                    herald_http_stream_mark_health_check (access logs'
 *                    not_health_check_filter).
 *   1.7  2026-11-29  herald_header_options_* and
 *                    herald_header_value_option_schema (Envoy's
 *                    HeaderValueOption lists, values with %OPERATORS%),
 *                    herald_http_stream_local_reply_header_options,
 *                    herald_route_apply_request_stream,
 *                    herald_cluster_choose_host_attempt,
 *                    herald_http_stream_add_encoded_data,
 *                    herald_http_stream_add_decoded_data.
 *   1.8  2026-11-29  PROXY protocol: listener filters may consume bytes
 *                    (herald_socket_drain), restore the connection's
 *                    addresses (herald_socket_restore_addresses), set its
 *                    dynamic metadata (herald_socket_metadata_set) and keep
 *                    TLVs for upstream PROXY headers
 *                    (herald_socket_add_proxy_tlv); herald_headers_get_all;
 *                    herald_conn_direct_*
 *                    (the peer's own addresses); herald_upstream_connect_from
 *                    and herald_http_upstream_new_for (the downstream
 *                    connection an upstream connection speaks for).
 *   1.9  2026-11-29  Subset load balancing: herald_http_stream_choose_host
 *                    (a route's metadata_match and the stream's envoy.lb
 *                    dynamic metadata pick the subset);
 *                    herald_http_stream_metadata_set_typed and enum
 *                    herald_metadata_type (numbers and booleans as Envoy's
 *                    protobuf Values); herald_regex_subst_* (Envoy's
 *                    RegexMatchAndSubstitute) and herald_headers_cookie,
 *                    for header_to_metadata;
 *                    rate limit descriptors: herald_rate_limit_schema,
 *                    herald_rate_limits_* and herald_rl_descriptors_*
 *                    (envoy.config.route.v3.RateLimit actions),
 *                    herald_route_rate_limits,
 *                    herald_route_vhost_rate_limits,
 *                    herald_route_include_vh_rate_limits;
 *                    herald_env_cluster_protocol_options (a cluster's
 *                    typed_extension_protocol_options entry for a filter:
 *                    redis_proxy's RedisProtocolOptions);
 *                    herald_base64_decode, herald_murmur2_64,
 *                    herald_cfg_data_source and herald_http_query_param
 *                    (one copy of each for the core and the plugins);
 *                    herald_cluster_metadata and herald_upstream_metadata
 *                    (%CLUSTER_METADATA% and %UPSTREAM_METADATA%).
 *   1.10 2026-11-29  Pacing: herald_http_stream_inject_encoded_data and
 *                    herald_http_stream_inject_decoded_data (a filter
 *                    sends on, from its timer, the bytes it took with
 *                    STOP), herald_http_stream_encode_watermark (a filter
 *                    holding response bytes stops the upstream),
 *                    herald_http_stream_decode_watermark (the same for
 *                    the request body); for
 *                    fault's response_rate_limit and bandwidth_limit;
 *                    herald_http_stream_virtual_cluster (a request's
 *                    VirtualHost.virtual_clusters entry, for the router's
 *                    vhost.<vh>.vcluster.<name>.* stats);
 *                    herald_http_stream_send_local_reply_grpc (a local
 *                    reply's grpc-status for gRPC requests, which now get
 *                    every local reply as a trailers-only gRPC answer);
 *                    the network event HERALD_EV_TIMERS_RESCALED (the
 *                    overload manager's reduce_timeouts scale moved).
 *   1.11 2026-11-29  herald_http_stream_set_decode_buffer_limit and
 *                    herald_http_stream_set_encode_buffer_limit (the buffer
 *                    filter's max_request_bytes); herald_route_connect_terminates
 *                    (CONNECT ended by the router: connect_config);
 *                    herald_format_* (a string with %OPERATORS%) and
 *                    herald_header_options_apply_fields (tcp_proxy's
 *                    tunneling_config).
 */
#ifndef HERALD_VERSION_H
#define HERALD_VERSION_H

#define HERALD_ABI_MAJOR 1
#define HERALD_ABI_MINOR 11

#define HERALD_ABI_AT_LEAST(maj, min) \
    (HERALD_ABI_MAJOR == (maj) && HERALD_ABI_MINOR >= (min))

#if defined(__GNUC__)
#define HERALD_EXPORT __attribute__((visibility("default")))
#define HERALD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define HERALD_EXPORT
#define HERALD_PRINTF(f, a)
#endif

#endif
