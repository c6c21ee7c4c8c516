/* The HttpConnectionManager (envoy.extensions.filters.network.
 * http_connection_manager.v3.HttpConnectionManager) as a schema table. It is
 * exported to the http_connection_manager plugin (herald_ prefix: the
 * version script lets plugins see it) as its config_schema, so that the core
 * checks the config before herald_http_cm_create() reads it. Every Envoy
 * field is here: implemented, or "not supported". */
#include "config.h"

#include <string.h>

#include "http/conn_manager.h"
#include "http/route.h"

#include "config/schema_tables.h"
#include "http/h2_keepalive.h"

/* ------------------------------------------------------------ HttpFilter */

static const struct herald_field http_filter_fields[] = {
    F_("name", STRING, HERALD_F_REQUIRED,
       .help = "the filter's extension name, e.g. envoy.filters.http.router"),
    TYPED("typed_config", .oneof = "config_type",
          .help = "the filter's config; may be omitted when the name is canonical (defaults)"),
    UNSUP("config_discovery", .oneof = "config_type", .help = "extension config discovery (ECDS)"),
    BOOL("is_optional", .help = "skip the filter when no plugin provides it, instead of failing"),
    BOOL("disabled", .help = "off by default; routes turn it on in typed_per_filter_config"),
    REMOVED("config", "use typed_config with its \"@type\""),
    END,
};
static const struct herald_message http_filter_msg = {
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", http_filter_fields, NULL,
};

/* ------------------------------------------------------------ access logs */

static const struct herald_field access_log_fields[] = {
    STR("name",
        .help = "envoy.access_loggers.file, envoy.access_loggers.stdout or envoy.access_loggers.stderr"),
    TYPED("typed_config", .oneof = "config_type",
          .help = "FileAccessLog, StdoutAccessLog or StderrAccessLog"),
    ANY("filter", .help = "an AccessLogFilter: whether a line is written (status_code_filter, duration_filter, "
                          "not_health_check_filter, response_flag_filter, header_filter, and_filter, or_filter, "
                          "grpc_status_filter, log_type_filter)"),
    REMOVED("config", "use typed_config with \"@type\": type.googleapis.com/"
                      "envoy.extensions.access_loggers.file.v3.FileAccessLog"),
    END,
};
static const struct herald_message access_log_msg = {
    "envoy.config.accesslog.v3.AccessLog", access_log_fields, NULL,
};

/* ------------------------------------------------------------ upgrades */

static const struct herald_field upgrade_fields[] = {
    F_("upgrade_type", STRING, HERALD_F_REQUIRED,
       .help = "the Upgrade header value allowed (case-insensitive), e.g. websocket"),
    UNSUP("filters", .help = "a separate filter chain for upgraded streams"),
    BOOL("enabled", .help = "default true; false lets routes enable it one by one"),
    END,
};
static const struct herald_message upgrade_msg = {
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig",
    upgrade_fields, NULL,
};

/* ------------------------------------------------------------ protocol options */

static const char *const underscores_values[] = { "ALLOW", "REJECT_REQUEST", "DROP_HEADER", NULL };

static const struct herald_field common_opts_fields[] = {
    DUR("idle_timeout", .help = "close a connection without streams after this long (default 1h; 0s: never)"),
    DUR("max_connection_duration", .help = "close connections this long after they opened (default: never)"),
    UINT("max_headers_count", .help = "request headers allowed (default 100); more is a 431"),
    DUR("max_stream_duration", .help = "a request/response must finish in this time (default: no limit)"),
    UINT("max_requests_per_connection",
         .help = "close the connection after this many requests (default: no limit)"),
    ENUM("headers_with_underscores_action", underscores_values,
         .help = "ALLOW (default), REJECT_REQUEST (400) or DROP_HEADER"),
    UNSUP("max_response_headers_kb"),
    UNSUP("max_response_headers_count"),
    END,
};
static const struct herald_message common_opts_msg = {
    "envoy.config.core.v3.HttpProtocolOptions", common_opts_fields, NULL,
};

static const struct herald_field h1_opts_fields[] = {
    BOOL("allow_absolute_url", .help = "accept absolute-form request targets (default true)"),
    BOOL("accept_http_10", .help = "accept HTTP/1.0 requests (default false: 426)"),
    STR("default_host_for_http_10", .help = "the :authority of HTTP/1.0 requests that have no Host"),
    UNSUP("header_key_format", .help = "response header name case"),
    BOOL("enable_trailers", .help = "send response trailers in chunked responses (default false: dropped)"),
    BOOL("allow_chunked_length", .help = "accept Content-Length beside Transfer-Encoding: chunked "
                                         "(the length is dropped); default false: 400"),
    BOOL("override_stream_error_on_invalid_http_message",
         .help = "HTTP/1 closes the connection after an invalid message either way"),
    UNSUP("send_fully_qualified_url", .help = "upstream-side only"),
    UNSUP("use_balsa_parser"),
    UNSUP("allow_custom_methods"),
    UNSUP("ignore_http_11_upgrade"),
    END,
};
static const struct herald_message h1_opts_msg = {
    "envoy.config.core.v3.Http1ProtocolOptions", h1_opts_fields, NULL,
};

/* Http2ProtocolOptions (envoy.config.core.v3). herald's defaults are
 * Envoy's edge guide, not Envoy's own: 100 streams (Envoy: 2^31-1), a 64 KiB
 * stream window (Envoy: 256 MiB) and a 1 MiB connection window, so that one
 * client's buffered bytes stay small; the flood limits are Envoy's. */
static const struct herald_field h2_opts_fields[] = {
    UINT("hpack_table_size", .help = "HPACK dynamic table size we allow the client (default 4096)"),
    UINT("max_concurrent_streams",
         .help = "streams a client may have open at once (default 100, Envoy's edge value; Envoy's "
                 "default is 2147483647); more are refused with REFUSED_STREAM"),
    UINT("initial_stream_window_size",
         .help = "per-stream receive window: request bytes buffered before the upstream takes them "
                 "(default 65536, Envoy's edge value; 65535..2147483647)"),
    UINT("initial_connection_window_size", .help = "connection receive window (default 1048576)"),
    BOOL("allow_connect", .help = "default false: CONNECT over HTTP/2 is answered 403 (true: allowed, as over "
         "HTTP/1.1, when upgrade_configs names CONNECT)"),
    UNSUP("allow_metadata"),
    UINT("max_outbound_frames",
         .help = "frames queued for a client that does not read before the connection is closed "
                 "(default 10000; http2.outbound_flood)"),
    UINT("max_outbound_control_frames",
         .help = "queued SETTINGS/PING acknowledgements before the connection is closed (default 1000; "
                 "http2.outbound_control_flood)"),
    UINT("max_consecutive_inbound_frames_with_empty_payload",
         .help = "empty DATA/HEADERS/CONTINUATION frames in a row (default 1; "
                 "http2.inbound_empty_frames_flood)"),
    UINT("max_inbound_priority_frames_per_stream",
         .help = "PRIORITY frames per opened stream (default 100; http2.inbound_priority_frames_flood)"),
    UINT("max_inbound_window_update_frames_per_data_frame_sent",
         .help = "WINDOW_UPDATE frames per DATA frame sent (default 10; "
                 "http2.inbound_window_update_frames_flood)"),
    BOOL("stream_error_on_invalid_http_messaging",
         .help = "an invalid request resets its stream only (default false: the connection is closed)"),
    UNSUP("override_stream_error_on_invalid_http_message"),
    UNSUP("custom_settings_parameters"),
    MSG("connection_keepalive", schema_h2_keepalive, .help = "PINGs to the client; no answer within timeout closes the connection"),
    UNSUP("use_oghttp2_codec"),
    UNSUP("max_metadata_size"),
    UNSUP("enable_huffman_encoding_for_headers"),
    END,
};
static const struct herald_message h2_opts_msg = {
    "envoy.config.core.v3.Http2ProtocolOptions", h2_opts_fields, NULL,
};

/* ------------------------------------------------------------ HttpConnectionManager */

static const char *const codec_values[] = { "AUTO", "HTTP1", "HTTP2", "HTTP3", NULL };
static const char *const server_transform_values[] = {"OVERWRITE", "APPEND_IF_ABSENT", "PASS_THROUGH", NULL};
static const char *const fcc_values[] = {
    "SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET", "ALWAYS_FORWARD_ONLY", NULL,
};
static const char *const escaped_slashes_values[] = {
    "IMPLEMENTATION_SPECIFIC_DEFAULT", "KEEP_UNCHANGED", "REJECT_REQUEST", "UNESCAPE_AND_REDIRECT",
    "UNESCAPE_AND_FORWARD", NULL,
};

static const char *const scheme_values[] = { "http", "https", NULL };
static int scheme_transform_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *mu = herald_cfg_get(n, "match_upstream");
    if (herald_cfg_get(n, "scheme_to_overwrite") && herald_cfg_bool(mu, false))
        return herald_cfg_errorf(mu, err, "scheme_to_overwrite and match_upstream are one of: give only one");
    return 0;
}
static const struct herald_field scheme_transform_fields[] = {
    ENUM("scheme_to_overwrite", scheme_values, .help = "http or https: the :scheme of every request"),
    BOOL("match_upstream", .help = "the :scheme sent upstream follows the upstream's transport "
                                   "(what herald's HTTP/2 upstreams always do)"),
    END,
};
static const struct herald_message scheme_transform_msg = {
    "envoy.config.core.v3.SchemeHeaderTransformation", scheme_transform_fields, scheme_transform_check,
};

static const struct herald_field hcm_fields[] = {
    ENUM("codec_type", codec_values,
         .help = "AUTO (default: ALPN h2 on TLS, the client preface on plaintext, else HTTP/1.1), "
                 "HTTP1 or HTTP2; HTTP3 is not supported"),
    F_("stat_prefix", STRING, HERALD_F_REQUIRED, .help = "stats are named http.<stat_prefix>.*"),
    MSG("route_config", schema_route_configuration, .oneof = "route_specifier",
        .help = "the route table, inline"),
    UNSUP("rds", .oneof = "route_specifier", .help = "routes from a discovery service"),
    UNSUP("scoped_routes", .oneof = "route_specifier"),
    LIST("http_filters", http_filter_msg,
         .help = "decoder filters in order, encoder filters in reverse; the last must be the router "
                 "(an empty list means the router alone)"),
    UNSUP("add_user_agent"),
    UNSUP("tracing"),
    MSG("common_http_protocol_options", common_opts_msg),
    MSG("http_protocol_options", h1_opts_msg, .help = "HTTP/1 codec options"),
    MSG("http2_protocol_options", h2_opts_msg, .help = "HTTP/2 codec options (downstream)"),
    UNSUP("http3_protocol_options", .help = "HTTP/3 is not supported"),
    STR("server_name", .help = "the Server header value (default \"herald\"; Envoy says \"envoy\")"),
    ENUM("server_header_transformation", server_transform_values,
         .help = "OVERWRITE (default), APPEND_IF_ABSENT or PASS_THROUGH"),
    MSG("scheme_header_transformation", scheme_transform_msg),
    UINT("max_request_headers_kb", .help = "request header block limit in KiB (default 60, at most 8192); "
                                           "more is a 431"),
    DUR("stream_idle_timeout", .help = "a stream without activity this long is ended: 408 before the "
                                       "response started, a reset after (default 5m; 0s: never)"),
    DUR("request_timeout", .help = "the whole request must arrive in this time (default: no limit): 408"),
    DUR("request_headers_timeout",
        .help = "the request headers must arrive in this time (default: no limit)"),
    DUR("drain_timeout", .help = "HTTP/2: from the drain's first GOAWAY (it takes the streams already on their "
                                 "way) to the last (default 5s; 0s: one GOAWAY at once)"),
    DUR("delayed_close_timeout", .help = "default 1s: after its last response herald half-closes and reads "
                                         "what the client still sends this long before closing; 0s closes "
                                         "at once. Not for a client whose last request asked to close: "
                                         "it sends no more"),
    LIST("access_log", access_log_msg, .help = "one line per request, at its end"),
    UNSUP("access_log_flush_interval"),
    UNSUP("flush_access_log_on_new_request"),
    UNSUP("access_log_options"),
    BOOL("use_remote_address", .help = "the peer address is the client's: it is appended to x-forwarded-for "
                                       "and decides internal/external (default false)"),
    UINT("xff_num_trusted_hops", .help = "x-forwarded-for addresses appended by trusted proxies"),
    UNSUP("original_ip_detection_extensions"),
    UNSUP("early_header_mutation_extensions"),
    UNSUP("internal_address_config"),
    BOOL("skip_xff_append", .help = "do not append the peer to x-forwarded-for"),
    STR("via", .help = "appended to the Via header of requests and responses"),
    BOOL("generate_request_id", .help = "set x-request-id (a UUIDv4) when absent (default true)"),
    BOOL("preserve_external_request_id", .help = "keep an x-request-id from an external client"),
    BOOL("always_set_request_id_in_response", .help = "copy x-request-id into the response"),
    ENUM("forward_client_cert_details", fcc_values,
         .help = "x-forwarded-client-cert handling (default SANITIZE); herald has no client certificates "
                 "yet, so only ALWAYS_FORWARD_ONLY keeps the header"),
    UNSUP("set_current_client_cert_details"),
    BOOL("proxy_100_continue", .help = "only false (herald answers 100 Continue itself)"),
    UNSUP("represent_ipv4_remote_address_as_ipv4_mapped_ipv6"),
    LIST("upgrade_configs", upgrade_msg, .help = "upgrades allowed, e.g. [{upgrade_type: websocket}]"),
    BOOL("normalize_path", .help = "RFC 3986 normalisation of :path before routing (default false)"),
    BOOL("merge_slashes", .help = "merge adjacent slashes in :path before routing"),
    ENUM("path_with_escaped_slashes_action", escaped_slashes_values,
         .help = "%2F and %5C in :path: KEEP_UNCHANGED (default), REJECT_REQUEST (400), "
                 "UNESCAPE_AND_FORWARD or UNESCAPE_AND_REDIRECT"),
    UNSUP("request_id_extension"),
    ANY("local_reply_config",
        .help = "mappers (filter, status_code, body, body_format_override, headers_to_add) and body_format "
                "for the replies herald makes itself; checked when the HCM is made"),
    BOOL("strip_matching_host_port", .oneof = "strip_port_mode",
         .help = "drop the port from Host when it is the listener's port"),
    BOOL("strip_any_host_port", .oneof = "strip_port_mode", .help = "drop any port from Host"),
    BOOL("stream_error_on_invalid_http_message",
         .help = "HTTP/1 closes the connection after an invalid message either way; HTTP/2 resets "
                "only the stream when true"),
    BOOL("strip_trailing_host_dot", .help = "drop a trailing dot from Host"),
    UNSUP("proxy_status_config"),
    UNSUP("typed_header_validation_config"),
    UNSUP("append_x_forwarded_port"),
    UNSUP("append_local_overload"),
    UNSUP("add_proxy_protocol_connection_state"),
    UNSUP("http1_safe_max_connection_duration"),
    UNSUP("hash_policy"),
    REMOVED("idle_timeout", "use common_http_protocol_options.idle_timeout"),
    END,
};

static int check_hcm(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *ct = herald_cfg_get(n, "codec_type");
    const char *codec = herald_cfg_str(ct, "AUTO");
    if (!strcmp(codec, "HTTP3"))
        return herald_cfg_errorf(ct, err, "not supported: codec_type HTTP3 (use AUTO, HTTP1 or HTTP2)");
    const struct herald_cfg *sp = herald_cfg_get(n, "stat_prefix");
    if (sp && !*herald_cfg_str(sp, ""))
        return herald_cfg_errorf(sp, err, "stat_prefix must not be empty");
    if (!herald_cfg_get(n, "route_config"))
        return herald_cfg_errorf(n, err,
                                 "route_config is required (rds and scoped_routes are not supported)");
    const struct herald_cfg *kb = herald_cfg_get(n, "max_request_headers_kb");
    if (kb && (herald_cfg_int(kb, 0) < 1 || herald_cfg_int(kb, 0) > 8192))
        return herald_cfg_errorf(kb, err, "max_request_headers_kb must be between 1 and 8192");
    const struct herald_cfg *c = herald_cfg_get(herald_cfg_get(n, "common_http_protocol_options"),
                                                "max_headers_count");
    if (c && herald_cfg_int(c, 0) < 1)
        return herald_cfg_errorf(c, err, "max_headers_count must be at least 1");
    const struct herald_cfg *p = herald_cfg_get(n, "proxy_100_continue");
    if (herald_cfg_bool(p, false))
        return herald_cfg_errorf(p, err, "not supported yet: proxy_100_continue: true");
    return 0;
}

const struct herald_message herald_http_cm_schema = {
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    hcm_fields,
    check_hcm,
};
