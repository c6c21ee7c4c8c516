/* herald SDK 1.1 (additions in 1.2): HTTP. Header maps, HTTP filters and the stream they sit
 * on, the route a request matched, and HTTP requests to upstream clusters
 * through the core's connection pools.
 *
 * The HTTP machinery (codecs, the connection manager that runs the filter
 * chain, the route table, upstream pools) lives in the core, as Envoy keeps
 * it in source/common; the plugins are the policy on top: the
 * envoy.filters.network.http_connection_manager plugin is a thin network
 * filter that hands its connection to a herald_http_cm, `router` is the
 * terminal HTTP filter, `rbac` a decoder filter.
 *
 * Life cycle of an HTTP filter (all but config_* on the stream's worker):
 *   config_create(typed_config)     main thread, once per filter config
 *   session_new(conf, stream)       once per request
 *   decode_headers [decode_data*] [decode_trailers]   request, in config order
 *   encode_headers [encode_data*] [encode_trailers]   response, in reverse order
 *   on_complete                     just before the access log
 *   session_destroy
 */
#ifndef HERALD_HTTP_H
#define HERALD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/access_log.h"
#include "herald/buffer.h"
#include "herald/config.h"
#include "herald/network_filter.h"
#include "herald/stats.h"
#include "herald/upstream.h"
#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ header maps
 * Ordered, case-insensitive names; several values per name allowed. The
 * pseudo-headers :method :path :authority :scheme :status are ordinary
 * entries (HTTP/1 requests get :authority from Host and :scheme from the
 * transport). Strings passed in are copied. */
struct herald_headers;

HERALD_EXPORT struct herald_headers *herald_headers_new(void);
HERALD_EXPORT void herald_headers_free(struct herald_headers *h);
HERALD_EXPORT size_t herald_headers_count(const struct herald_headers *h);
/* Entry i in order; false past the end. Names come back lower-cased. */
HERALD_EXPORT bool herald_headers_at(const struct herald_headers *h, size_t i, const char **name,
                                     const char **value);
/* First value of name, or NULL. */
HERALD_EXPORT const char *herald_headers_get(const struct herald_headers *h, const char *name);
/* (1.8) Every value of name joined with "," in order (Envoy's
 * getAllOfHeaderAsString: what header matchers must see, so a second copy of
 * a header cannot hide behind a first), malloc'd; NULL when absent. */
HERALD_EXPORT char *herald_headers_get_all(const struct herald_headers *h, const char *name);
HERALD_EXPORT void herald_headers_add(struct herald_headers *h, const char *name, const char *value);
/* Replaces every value of name with one. */
HERALD_EXPORT void herald_headers_set(struct herald_headers *h, const char *name, const char *value);
/* Removes every value of name; returns how many. */
HERALD_EXPORT size_t herald_headers_remove(struct herald_headers *h, const char *name);
/* A copy of h (one allocation for a typical map; since ABI 1.2). */
HERALD_EXPORT struct herald_headers *herald_headers_copy(const struct herald_headers *h);

/* ------------------------------------------------------------ streams */
struct herald_http_stream; /* one request/response exchange on a downstream connection */
struct herald_route;       /* the route entry the request matched (immutable) */

enum herald_http_status {
    HERALD_HTTP_CONTINUE = 0,        /* go on with the next filter */
    HERALD_HTTP_STOP = 1,            /* headers: stop here (data keeps coming to this filter);
                                        data: drop nothing, ask for more (nothing buffered) */
    HERALD_HTTP_STOP_AND_BUFFER = 2, /* data: keep it buffered here until continue (413/500 past the
                                        buffer limit) */
};

enum herald_http_protocol { HERALD_HTTP10 = 0, HERALD_HTTP11, HERALD_HTTP2 };

HERALD_EXPORT struct herald_conn *herald_http_stream_conn(struct herald_http_stream *s);
HERALD_EXPORT enum herald_http_protocol herald_http_stream_protocol(const struct herald_http_stream *s);
HERALD_EXPORT const struct herald_headers *herald_http_stream_request_headers(const struct herald_http_stream *s);
HERALD_EXPORT uint64_t herald_http_stream_id(const struct herald_http_stream *s);
/* The client's address as the connection manager decided it (use_remote_address,
 * x-forwarded-for and xff_num_trusted_hops), "ip" without port. */
HERALD_EXPORT const char *herald_http_stream_downstream_address(const struct herald_http_stream *s);

/* The route for the current request headers (cached; recomputed after
 * herald_http_stream_clear_route_cache). NULL: no route (a 404 is due). */
HERALD_EXPORT const struct herald_route *herald_http_stream_route(struct herald_http_stream *s);
HERALD_EXPORT void herald_http_stream_clear_route_cache(struct herald_http_stream *s);
/* (1.10) The virtual cluster (VirtualHost.virtual_clusters) of the request
 * on its route: the first whose headers match, else "other"; NULL when the
 * virtual host has none. *stat_prefix (may be NULL) gets
 * "vhost.<virtual host>.vcluster.<name>", under which the router counts
 * Envoy's virtual cluster stats. The name is the access log's
 * %VIRTUAL_CLUSTER_NAME% from this call on. Strings live as long as the route. */
HERALD_EXPORT const char *herald_http_stream_virtual_cluster(struct herald_http_stream *s,
                                                             const char **stat_prefix);

/* Answers the request from here: the remaining decoder filters are skipped,
 * the encoder filters already passed run on the reply. details goes to
 * %RESPONSE_CODE_DETAILS%; flags (e.g. "NR", "UH") to %RESPONSE_FLAGS%. */
HERALD_EXPORT void herald_http_stream_send_local_reply(struct herald_http_stream *s, int status, const char *body,
                                                       const char *details, const char *flags);
/* (1.10) The same, with the grpc-status a gRPC request gets (Envoy's
 * sendLocalReply with a grpc_status; the fault filter's grpc_status abort).
 * Every local reply to a gRPC request (content-type application/grpc) is a
 * trailers-only gRPC answer: :status 200, grpc-status (this one, else the
 * gRPC mapping of status), the body as grpc-message; other requests get
 * status and body as usual. */
HERALD_EXPORT void herald_http_stream_send_local_reply_grpc(struct herald_http_stream *s, int status,
                                                            int grpc_status, const char *body,
                                                            const char *details, const char *flags);
/* (1.1) Adds a header to the next local reply of this stream (e.g. the
 * router's x-envoy-overloaded: true on a circuit-breaker 503). */
HERALD_EXPORT void herald_http_stream_add_local_reply_header(struct herald_http_stream *s, const char *name,
                                                             const char *value);
/* (1.6) This request is a health check (the health_check filter matched it):
 * access logs' not_health_check_filter leaves it out, as Envoy's. */
HERALD_EXPORT void herald_http_stream_mark_health_check(struct herald_http_stream *s);
/* (1.2) The server is failing health checks: admin POST /healthcheck/fail
 * (until /healthcheck/ok), or it is draining. Any thread. */
HERALD_EXPORT bool herald_server_health_failed(void);
/* After HERALD_HTTP_STOP*: resume with the filter after this one. */
HERALD_EXPORT void herald_http_stream_continue_decoding(struct herald_http_stream *s);
HERALD_EXPORT void herald_http_stream_continue_encoding(struct herald_http_stream *s);

/* For the terminal filter (router): emit the response into the encoder
 * chain. headers are taken over (freed by the core). */
HERALD_EXPORT void herald_http_stream_encode_headers(struct herald_http_stream *s, struct herald_headers *headers,
                                                     bool end_stream);
HERALD_EXPORT void herald_http_stream_encode_data(struct herald_http_stream *s, struct herald_buf *data,
                                                  bool end_stream);
HERALD_EXPORT void herald_http_stream_encode_trailers(struct herald_http_stream *s, struct herald_headers *trailers);
/* (1.7) From a filter's encode_trailers (decode_trailers) only, elsewhere
 * the bytes are dropped: data (moved out) goes on to the next filters as
 * body, in front of the trailers, as Envoy's addEncodedData /
 * addDecodedData; a compressor ends its stream this way. */
HERALD_EXPORT void herald_http_stream_add_encoded_data(struct herald_http_stream *s, struct herald_buf *data);
HERALD_EXPORT void herald_http_stream_add_decoded_data(struct herald_http_stream *s, struct herald_buf *data);
/* (1.10) Pacing, as Envoy's inject{En,De}codedDataToFilterChain: a filter
 * that took data with HERALD_HTTP_STOP (keeping it itself) sends it on later,
 * from its own timer: data (moved out) goes to the filters after it (session:
 * the filter's own session, which says where it is in the chain) and on to
 * the client (the upstream), end_stream as given. When the filter stopped
 * trailers too, it calls continue_encoding (decoding) after its last bytes.
 * Call it from the filter's events, not from inside its own callbacks. */
HERALD_EXPORT void herald_http_stream_inject_encoded_data(struct herald_http_stream *s, void *session,
                                                          struct herald_buf *data, bool end_stream);
HERALD_EXPORT void herald_http_stream_inject_decoded_data(struct herald_http_stream *s, void *session,
                                                          struct herald_buf *data, bool end_stream);
/* (1.10) A filter holding more response data than it wants (a pacing
 * filter): true stops the upstream (the filters hear on_watermark(true))
 * until the same filter calls with false. Counted with the client's own
 * backpressure: the upstream resumes when neither holds it. Calls pair up. */
HERALD_EXPORT void herald_http_stream_encode_watermark(struct herald_http_stream *s, bool above);
/* (1.10) The same for the request: a filter holding more request body than
 * it wants stops reading the client until it calls with false; counted apart
 * from herald_http_stream_pause_decoding (the router's), so reading resumes
 * only when neither holds it. */
HERALD_EXPORT void herald_http_stream_decode_watermark(struct herald_http_stream *s, bool above);
/* (1.11) How many bytes of the request (decode) or response (encode) body
 * the filters may hold with HERALD_HTTP_STOP_AND_BUFFER before the stream
 * gets Envoy's 413 (request) or 500 (response): setDecoderBufferLimit /
 * setEncoderBufferLimit. 0: the connection's per_connection_buffer_limit_bytes
 * (the default). For this stream only; call it before the bytes arrive. */
HERALD_EXPORT void herald_http_stream_set_decode_buffer_limit(struct herald_http_stream *s, uint32_t bytes);
HERALD_EXPORT void herald_http_stream_set_encode_buffer_limit(struct herald_http_stream *s, uint32_t bytes);
/* Flow control for the terminal filter: the downstream cannot take more
 * response bytes now (pause the upstream) / can again. Delivered through
 * on_watermark below. Returns true while the response side is over its limit. */
HERALD_EXPORT bool herald_http_stream_encode_blocked(const struct herald_http_stream *s);
/* Stops/starts reading more request body from the downstream (backpressure
 * from an upstream that is not taking it). */
HERALD_EXPORT void herald_http_stream_pause_decoding(struct herald_http_stream *s, bool pause);
/* Resets the stream (e.g. upstream reset after the response started). */
HERALD_EXPORT void herald_http_stream_reset(struct herald_http_stream *s);

/* What the access log and later filters see. */
HERALD_EXPORT void herald_http_stream_set_upstream(struct herald_http_stream *s, const char *cluster,
                                                   const char *host);
HERALD_EXPORT void herald_http_stream_add_response_flag(struct herald_http_stream *s, const char *flag);
HERALD_EXPORT int herald_http_stream_metadata_set(struct herald_http_stream *s, const char *ns, const char *key,
                                                  const char *value);
HERALD_EXPORT const char *herald_http_stream_metadata_get(const struct herald_http_stream *s, const char *ns,
                                                          const char *key);
/* (1.9) The kind of protobuf Value a dynamic metadata value stands for
 * (herald_http_stream_metadata_set: a string). */
enum herald_metadata_type {
    HERALD_METADATA_STRING = 0,
    HERALD_METADATA_NUMBER,
    HERALD_METADATA_BOOL,
    HERALD_METADATA_NULL,
};
/* (1.9) herald_http_stream_metadata_set with a kind: NUMBER takes a decimal
 * number, kept in its shortest form (herald_http_stream_metadata_get then
 * gives "1.5" for "1.50"), BOOL "true" or "false", NULL ignores value (reads
 * back "null"); -1 when value is not of its kind. Subset load balancing
 * compares values with their kinds, as Envoy does: the string "1" does not
 * select hosts whose metadata has the number 1. */
HERALD_EXPORT int herald_http_stream_metadata_set_typed(struct herald_http_stream *s, const char *ns,
                                                        const char *key, const char *value,
                                                        enum herald_metadata_type type);
/* Added with the connection manager (still SDK 1.1, nothing released yet):
 * %UPSTREAM_TRANSPORT_FAILURE_REASON% for the access log. */
HERALD_EXPORT void herald_http_stream_set_upstream_failure_reason(struct herald_http_stream *s, const char *reason);
/* The request asks for a protocol upgrade (WebSocket, CONNECT) that the HCM
 * or the route allows; its upgrade/connection headers are kept for the
 * upstream. When the terminal filter then encodes a 101 (CONNECT: a 2xx),
 * the stream carries raw bytes both ways: decode_data delivers what the
 * client sends, encode_data writes bytes unframed, end_stream on either
 * side half-closes, and the connection closes once the response side ends.
 * Any other status cancels the upgrade (the connection closes after it). */
HERALD_EXPORT bool herald_http_stream_is_upgrade(const struct herald_http_stream *s);
/* The connection manager's counters the router keeps under
 * http.<stat_prefix>. (Envoy's router stats there): "no_route", "no_cluster",
 * "rq_redirect", "rq_direct_response", "rq_total",
 * "rq_reset_after_downstream_response_started"; NULL for other names. */
HERALD_EXPORT struct herald_stat *herald_http_stream_counter(struct herald_http_stream *s, const char *name);

/* (1.6) Envoy's HeaderMatcher (envoy.config.route.v3.HeaderMatcher), matched
 * exactly as routes match it (string_match with safe_regex, present_match,
 * range_match, invert_match, treat_missing_header_as_empty; several values
 * joined with ","), for a filter's own config: name
 * herald_header_matcher_schema as the .message of the field, then build the
 * matcher in config_create. new: NULL with a malloc'd *err on a bad node. */
struct herald_header_matcher;
HERALD_EXPORT extern const struct herald_message herald_header_matcher_schema;
/* (1.6) Envoy's StringMatcher (exact, prefix, suffix, contains, safe_regex
 * as a full match; ignore_case), the same way: schema, new, match, free. */
struct herald_string_matcher;
HERALD_EXPORT extern const struct herald_message herald_string_matcher_schema;
HERALD_EXPORT struct herald_string_matcher *herald_string_matcher_new(const struct herald_cfg *n, char **err);
HERALD_EXPORT bool herald_string_matcher_match(const struct herald_string_matcher *m, const char *s);
HERALD_EXPORT void herald_string_matcher_free(struct herald_string_matcher *m);
HERALD_EXPORT struct herald_header_matcher *herald_header_matcher_new(const struct herald_cfg *n, char **err);
HERALD_EXPORT bool herald_header_matcher_match(const struct herald_header_matcher *m,
                                               const struct herald_headers *h);
HERALD_EXPORT void herald_header_matcher_free(struct herald_header_matcher *m);
/* (1.9) Envoy's RegexMatchAndSubstitute ({pattern: RegexMatcher,
 * substitution}), applied as routes apply regex_rewrite: every match
 * replaced, \1..\9 in the substitution being the capture groups. Same use:
 * schema as the .message of a field, new in config_create (NULL with a
 * malloc'd *err on a bad node), apply gives a malloc'd string. */
struct herald_regex_subst;
HERALD_EXPORT extern const struct herald_message herald_regex_subst_schema;
HERALD_EXPORT struct herald_regex_subst *herald_regex_subst_new(const struct herald_cfg *n, char **err);
HERALD_EXPORT char *herald_regex_subst_apply(const struct herald_regex_subst *r, const char *s);
HERALD_EXPORT void herald_regex_subst_free(struct herald_regex_subst *r);
/* (1.9) The value of cookie name in h's Cookie headers, as hash_policy reads
 * it (the first one, without surrounding double quotes), malloc'd; NULL when
 * absent or empty. */
HERALD_EXPORT char *herald_headers_cookie(const struct herald_headers *h, const char *name);

/* (1.7) Envoy's HeaderValueOption list (request_headers_to_add and the
 * like): header {key, value}, append_action or the deprecated append,
 * keep_empty_value, applied in order as routes apply theirs. A value may
 * hold the access log's %OPERATORS% (%% is '%'); they are read from the
 * stream when applied, an operator without a value renders as nothing, and
 * a value that comes out empty is not added unless keep_empty_value. Name
 * herald_header_value_option_schema as the .message of a repeated field,
 * then build the list in config_create: new gives NULL for an absent or
 * empty list, and -1 with a malloc'd *err on a bad one. apply: s may be NULL
 * (operators then have no value). */
struct herald_header_options;
HERALD_EXPORT extern const struct herald_message herald_header_value_option_schema;
HERALD_EXPORT int herald_header_options_new(const struct herald_cfg *list, struct herald_header_options **out,
                                            char **err);
HERALD_EXPORT void herald_header_options_apply(const struct herald_header_options *o, struct herald_headers *h,
                                               struct herald_http_stream *s);
HERALD_EXPORT void herald_header_options_free(struct herald_header_options *o);
/* (1.11) apply with the operators read through an access log field
 * callback instead of a stream (a network filter's own: tcp_proxy's
 * tunneling_config.headers_to_add). */
HERALD_EXPORT void herald_header_options_apply_fields(const struct herald_header_options *o,
                                                      struct herald_headers *h, herald_log_field_cb field,
                                                      void *ctx);
/* (1.7) o is applied to the stream's next local reply (after its own
 * headers); o must outlive the stream (a filter's config does). */
HERALD_EXPORT void herald_http_stream_local_reply_header_options(struct herald_http_stream *s,
                                                                 const struct herald_header_options *o);
/* (1.7) herald_route_apply_request for this stream: the header values'
 * %OPERATORS% read the stream (herald_route_apply_request gives them no
 * value but %REQ()%). */
HERALD_EXPORT void herald_route_apply_request_stream(const struct herald_route *r, struct herald_headers *req,
                                                     const char *upstream_hostname, struct herald_http_stream *s);

struct herald_http_filter_ops {
    size_t size;
    int (*config_create)(const struct herald_cfg *typed_config, const struct herald_filter_env *env,
                         void **conf, char **err);
    void (*config_destroy)(void *conf);
    void *(*session_new)(void *conf, struct herald_http_stream *s); /* NULL: 500 */
    void (*session_destroy)(void *session);
    enum herald_http_status (*decode_headers)(void *session, struct herald_headers *headers, bool end_stream);
    enum herald_http_status (*decode_data)(void *session, struct herald_buf *data, bool end_stream);
    enum herald_http_status (*decode_trailers)(void *session, struct herald_headers *trailers);
    enum herald_http_status (*encode_headers)(void *session, struct herald_headers *headers, bool end_stream);
    enum herald_http_status (*encode_data)(void *session, struct herald_buf *data, bool end_stream);
    enum herald_http_status (*encode_trailers)(void *session, struct herald_headers *trailers);
    /* The downstream's response side went over (true) / under (false) its limit. */
    void (*on_watermark)(void *session, bool above);
    /* The stream ends (reset or complete) before the access log is written;
     * cancel outstanding work here: no stream call is allowed after it. */
    void (*on_complete)(void *session);
    /* (1.6) typed_per_filter_config: the value a route, virtual host or
     * route configuration gives under this filter's http_filters[].name is
     * checked against route_config_schema (NULL: not checked) and made into
     * a conf by route_config_create on the main thread (destroyed with
     * route_config_destroy). A filter without route_config_create refuses
     * per-route configs. A stream finds the most specific one with
     * herald_http_stream_route_config(). */
    const struct herald_message *route_config_schema;
    int (*route_config_create)(const struct herald_cfg *typed_config, const struct herald_filter_env *env,
                               void **conf, char **err);
    void (*route_config_destroy)(void *conf);
};

/* (1.6) The conf route_config_create made for this stream's route (the
 * route's, else its virtual host's, else the route configuration's), for the
 * filter whose config_create made filter_conf (what session_new was given);
 * NULL when the route has none for it, or there is no route. */
HERALD_EXPORT void *herald_http_stream_route_config(struct herald_http_stream *s, const void *filter_conf);
/* (1.6) All of them, most specific first (route, virtual host, route
 * configuration): up to max into confs; how many. For filters that take each
 * setting from the most specific level that has it, as Envoy's CORS does. */
HERALD_EXPORT size_t herald_http_stream_route_config_chain(struct herald_http_stream *s, const void *filter_conf,
                                                           void **confs, size_t max);

/* ------------------------------------------------------------ routes
 * Read-only views of the matched route (RouteConfiguration, VirtualHost,
 * Route, RouteAction, RedirectAction, DirectResponseAction). */
enum herald_route_kind { HERALD_ROUTE_FORWARD = 0, HERALD_ROUTE_REDIRECT, HERALD_ROUTE_DIRECT_RESPONSE };

HERALD_EXPORT enum herald_route_kind herald_route_kind(const struct herald_route *r);
HERALD_EXPORT const char *herald_route_name(const struct herald_route *r);
HERALD_EXPORT const char *herald_route_vhost_name(const struct herald_route *r);
/* FORWARD: the cluster for these request headers (cluster, cluster_header or
 * a weighted pick with `random`); NULL when cluster_header is absent. */
HERALD_EXPORT const char *herald_route_cluster(const struct herald_route *r, const struct herald_headers *req,
                                               uint64_t random);
HERALD_EXPORT int herald_route_cluster_not_found_code(const struct herald_route *r); /* 503 default */
HERALD_EXPORT uint64_t herald_route_timeout_ms(const struct herald_route *r);        /* 15000; 0 = none */
HERALD_EXPORT uint64_t herald_route_idle_timeout_ms(const struct herald_route *r);   /* 0 = HCM's */
/* Rewrites the request for the upstream: prefix_rewrite / regex_rewrite of
 * :path, host_rewrite_literal (auto_host_rewrite needs the host: pass it,
 * or NULL), and the request_headers_to_add/remove of the route, vhost and
 * route config. */
HERALD_EXPORT void herald_route_apply_request(const struct herald_route *r, struct herald_headers *req,
                                              const char *upstream_hostname);
/* response_headers_to_add/remove of the route, vhost and route config (the
 * connection manager applies them to every response on a matched route). */
HERALD_EXPORT void herald_route_apply_response(const struct herald_route *r, struct herald_headers *resp);

struct herald_retry_policy {
    uint32_t num_retries;            /* 0: no retries */
    unsigned on;                     /* HERALD_RETRY_* bits */
    uint64_t per_try_timeout_ms;     /* 0: the route's timeout */
    uint64_t backoff_base_ms, backoff_max_ms;
    const uint32_t *retriable_status_codes; size_t nretriable_status_codes;
    /* (1.6) retry_host_predicate previous_hosts: a retry picks a host not yet
     * tried by this request, choosing again up to host_selection_max_attempts
     * times (Envoy's host_selection_retry_max_attempts, default 1) and then
     * taking the last pick. Appended: older plugins do not see it. */
    bool other_hosts;
    uint32_t host_selection_max_attempts;
};
#define HERALD_RETRY_5XX             0x01u
#define HERALD_RETRY_GATEWAY_ERROR   0x02u
#define HERALD_RETRY_CONNECT_FAILURE 0x04u
#define HERALD_RETRY_RESET           0x08u
#define HERALD_RETRY_RETRIABLE_CODES 0x10u
#define HERALD_RETRY_RETRIABLE_4XX   0x20u
#define HERALD_RETRY_REFUSED_STREAM  0x40u
/* The route's policy, or the vhost's; NULL when neither has one. */
HERALD_EXPORT const struct herald_retry_policy *herald_route_retry_policy(const struct herald_route *r);
/* (1.6) request_mirror_policies: how many the route has; policy i's cluster
 * for this request (its cluster, or the value of its cluster_header), or NULL
 * when its runtime_fraction leaves this request out (random: a fresh draw) or
 * the header is absent; and whether the copy's :authority gets "-shadow"
 * (not disable_shadow_host_suffix_append). */
HERALD_EXPORT size_t herald_route_mirror_count(const struct herald_route *r);
HERALD_EXPORT const char *herald_route_mirror_cluster(const struct herald_route *r, size_t i,
                                                      const struct herald_headers *req, uint64_t random);
HERALD_EXPORT bool herald_route_mirror_host_suffix(const struct herald_route *r, size_t i);
/* REDIRECT: the Location for this request and the status (301 default). */
HERALD_EXPORT char *herald_route_redirect_location(const struct herald_route *r, const struct herald_headers *req,
                                                   const char *scheme); /* malloc'd */
HERALD_EXPORT int herald_route_redirect_code(const struct herald_route *r);
/* DIRECT_RESPONSE: status and body (may be NULL). */
HERALD_EXPORT int herald_route_direct_status(const struct herald_route *r);
HERALD_EXPORT const char *herald_route_direct_body(const struct herald_route *r, size_t *len);
/* upgrade_configs: whether this route allows `upgrade_type` (e.g. "websocket"). */
HERALD_EXPORT bool herald_route_upgrade_allowed(const struct herald_route *r, const char *upgrade_type);
/* (1.11) The route's CONNECT upgrade has connect_config: this proxy ends the
 * CONNECT itself (answers 200 once a TCP connection to a host of the cluster
 * is up, then carries the bytes both ways) instead of passing it upstream. */
HERALD_EXPORT bool herald_route_connect_terminates(const struct herald_route *r);
/* (1.2) The route's hash_policy for this request, for RING_HASH and MAGLEV
 * clusters (pass it to herald_cluster_choose_host). Envoy's rules: each
 * policy hashes its input with xxHash64 (header: all values sorted; cookie;
 * connection_properties.source_ip: client_ip; query_parameter: first value),
 * results combine as rotate-left-1 then xor, and a terminal policy that
 * produced a hash ends the list. false: nothing produced a hash. A cookie
 * policy with a ttl whose cookie is absent generates one from cookie_seed
 * (Envoy: the connection's remote and local address; NULL: client_ip) when
 * set_cookie is given: *set_cookie is then the Set-Cookie value to add to the
 * response (malloc'd), else NULL. hash and set_cookie may be NULL. */
HERALD_EXPORT bool herald_route_hash(const struct herald_route *r, const struct herald_headers *req,
                                     const char *client_ip, const char *cookie_seed, uint64_t *hash,
                                     char **set_cookie);
/* (1.9) herald_cluster_choose_host_attempt for stream s's request on route r
 * (the one herald_http_stream_route gave: for weighted_clusters, the picked
 * cluster's entry; may be NULL). On a cluster with lb_subset_config the host
 * comes from the subset that r's metadata_match (filter_metadata envoy.lb, a
 * weighted cluster's own over its route's) and the envoy.lb dynamic metadata
 * filters set on s (over those, key by key) select, with the cluster's
 * fallback policies, as Envoy's router does. Any other cluster picks as
 * herald_cluster_choose_host_attempt, reading neither. NULL: no host
 * (counted as upstream_cx_none_healthy). */
HERALD_EXPORT struct herald_host *herald_http_stream_choose_host(struct herald_http_stream *s,
                                                                 const struct herald_route *r,
                                                                 struct herald_cluster *c, uint64_t hash,
                                                                 uint32_t attempt);
/* (1.2) How many hash_policy entries the route has (0: herald_route_hash has nothing to do). */
HERALD_EXPORT size_t herald_route_hash_policy_count(const struct herald_route *r);
/* (1.2) Routing priority (RouteAction priority): which of the cluster's
 * circuit_breakers thresholds its upstream requests and retries count under. */
enum herald_priority { HERALD_PRIORITY_DEFAULT = 0, HERALD_PRIORITY_HIGH = 1 };
HERALD_EXPORT enum herald_priority herald_route_priority(const struct herald_route *r);

/* (1.9) The first value of query parameter name in path's query string
 * (names and values percent-decoded, '+' kept; "" for a parameter without
 * '='), malloc'd, or NULL when it is absent: as route matching reads them. */
HERALD_EXPORT char *herald_http_query_param(const char *path, const char *name);

/* (1.9) Rate limit descriptors (envoy.config.route.v3.RateLimit): each
 * RateLimit of a list makes at most one descriptor per request, its actions'
 * (key, value) entries in order (source_cluster, destination_cluster,
 * request_headers, query_parameters, remote_address, masked_remote_address,
 * generic_key, header_value_match), as Envoy's routes make them for its rate
 * limit filters. A filter gets the lists of the request's route (and virtual
 * host), or makes its own from a field whose .message is
 * herald_rate_limit_schema (repeated), in config_create. */
struct herald_rate_limits;
struct herald_rl_entry {
    const char *key, *value;
};
struct herald_rl_descriptor {
    const struct herald_rl_entry *entries;
    size_t n;
};
struct herald_rl_descriptors;
HERALD_EXPORT extern const struct herald_message herald_rate_limit_schema;
/* A list of RateLimit nodes -> rate limits; NULL with a malloc'd *err. */
HERALD_EXPORT struct herald_rate_limits *herald_rate_limits_new(const struct herald_cfg *list, char **err);
HERALD_EXPORT void herald_rate_limits_free(struct herald_rate_limits *rl);
/* Appends to out the descriptors of the request for the RateLimits of this
 * stage (and not turned off by their disable_key). */
HERALD_EXPORT void herald_rate_limits_populate(const struct herald_rate_limits *rl, uint32_t stage,
                                               struct herald_http_stream *s, const struct herald_headers *req,
                                               struct herald_rl_descriptors *out);
HERALD_EXPORT struct herald_rl_descriptors *herald_rl_descriptors_new(void);
HERALD_EXPORT size_t herald_rl_descriptors_count(const struct herald_rl_descriptors *d);
HERALD_EXPORT const struct herald_rl_descriptor *herald_rl_descriptors_at(const struct herald_rl_descriptors *d,
                                                                          size_t i);
HERALD_EXPORT void herald_rl_descriptors_free(struct herald_rl_descriptors *d);
/* (1.9) The route's RouteAction.rate_limits and its virtual host's
 * rate_limits (NULL: none), and include_vh_rate_limits. */
HERALD_EXPORT const struct herald_rate_limits *herald_route_rate_limits(const struct herald_route *r);
HERALD_EXPORT const struct herald_rate_limits *herald_route_vhost_rate_limits(const struct herald_route *r);
HERALD_EXPORT bool herald_route_include_vh_rate_limits(const struct herald_route *r);

/* ------------------------------------------------------------ upstream requests
 * An HTTP request to a host of a cluster, over a connection from the
 * calling worker's pool for (cluster, host, protocol). The pool enforces
 * circuit breakers (max_pending_requests, max_requests: overflow answered
 * through on_reset with HERALD_UPSTREAM_RESET_OVERFLOW) and connection
 * reuse (max_requests_per_connection, idle timeout). */
struct herald_http_upstream;

enum herald_upstream_reset {
    HERALD_UPSTREAM_RESET_CONNECT_FAILURE = 0, /* could not connect (or timed out connecting) */
    HERALD_UPSTREAM_RESET_OVERFLOW,            /* circuit breaker */
    HERALD_UPSTREAM_RESET_REMOTE,              /* the connection closed or reset mid-exchange */
    HERALD_UPSTREAM_RESET_PROTOCOL,            /* the upstream's response was not valid HTTP */
    HERALD_UPSTREAM_RESET_LOCAL,               /* we cancelled it */
};

struct herald_http_upstream_cbs {
    size_t size;
    /* The request can be sent (a connection is bound). */
    void (*on_ready)(void *arg);
    void (*on_headers)(void *arg, struct herald_headers *headers, bool end_stream); /* taken over */
    void (*on_data)(void *arg, struct herald_buf *data, bool end_stream);
    void (*on_trailers)(void *arg, struct herald_headers *trailers);               /* taken over */
    /* Failure before or during the exchange; the upstream request is gone after it. */
    void (*on_reset)(void *arg, enum herald_upstream_reset why);
    /* The request body side: the upstream connection is over its high watermark
     * (stop feeding) / drained (feed again). */
    void (*on_watermark)(void *arg, bool above);
};

/* Starts a request to h (chosen with herald_cluster_choose_host). The
 * headers are sent once on_ready fires: call herald_http_upstream_send_headers
 * from there (or right away: it queues). */
HERALD_EXPORT struct herald_http_upstream *herald_http_upstream_new(struct herald_cluster *c, struct herald_host *h,
                                                                   const struct herald_http_upstream_cbs *cbs,
                                                                   void *arg);
HERALD_EXPORT void herald_http_upstream_send_headers(struct herald_http_upstream *u, struct herald_headers *headers,
                                                     bool end_stream); /* taken over */
HERALD_EXPORT void herald_http_upstream_send_data(struct herald_http_upstream *u, struct herald_buf *data,
                                                  bool end_stream);
HERALD_EXPORT void herald_http_upstream_send_trailers(struct herald_http_upstream *u, struct herald_headers *trailers);
HERALD_EXPORT void herald_http_upstream_pause_reading(struct herald_http_upstream *u, bool pause);
/* Cancels (no callback follows) or, after a complete response, releases the
 * connection to the pool. */
HERALD_EXPORT void herald_http_upstream_free(struct herald_http_upstream *u);
HERALD_EXPORT const struct herald_host *herald_http_upstream_host(const struct herald_http_upstream *u);
/* (1.3) u is an attempt at stream s's request: s's access log counts it
 * (%UPSTREAM_REQUEST_ATTEMPT_COUNT%) and, once u has a connection, shows that
 * connection (%UPSTREAM_LOCAL_ADDRESS%, %UPSTREAM_LOCAL_PORT%, ..._WITHOUT_PORT,
 * %UPSTREAM_PROTOCOL%)
 * and how long u waited for it (%UPSTREAM_CONNECTION_POOL_READY_DURATION%).
 * Free u before s ends (a filter frees its upstream requests in on_destroy). */
HERALD_EXPORT void herald_http_upstream_set_stream(struct herald_http_upstream *u, struct herald_http_stream *s);
/* (1.2) herald_http_upstream_new under the circuit_breakers thresholds of a
 * priority (herald_http_upstream_new: DEFAULT). */
HERALD_EXPORT struct herald_http_upstream *
herald_http_upstream_new_priority(struct herald_cluster *c, struct herald_host *h,
                                  const struct herald_http_upstream_cbs *cbs, void *arg,
                                  enum herald_priority priority);
/* (1.8) herald_http_upstream_new_priority on behalf of downstream connection
 * d (herald_http_stream_conn): a cluster whose transport sends a PROXY
 * protocol header gives d upstream connections of its own, which carry its
 * addresses (without d: the LOCAL / UNKNOWN header). An attempt at a
 * stream's request still calls herald_http_upstream_set_stream. */
HERALD_EXPORT struct herald_http_upstream *
herald_http_upstream_new_for(struct herald_cluster *c, struct herald_host *h,
                             const struct herald_http_upstream_cbs *cbs, void *arg,
                             enum herald_priority priority, const struct herald_conn *d);
/* (1.2) The retry circuit breaker (max_retries): true when a retry may be
 * made; it then counts as a retry in flight until herald_cluster_retry_end.
 * false: over budget (count it as upstream_rq_retry_overflow and return the
 * original failure, as Envoy does). */
HERALD_EXPORT bool herald_cluster_retry_begin(struct herald_cluster *c, enum herald_priority priority);
HERALD_EXPORT void herald_cluster_retry_end(struct herald_cluster *c, enum herald_priority priority);

/* ------------------------------------------------------------ the connection manager
 * For the http_connection_manager plugin: the core's HTTP connection
 * manager, built from an HttpConnectionManager config (already checked
 * against the plugin's schema), run on a downstream connection. */
struct herald_http_cm;

HERALD_EXPORT struct herald_http_cm *herald_http_cm_create(const struct herald_cfg *config,
                                                           const struct herald_filter_env *env, char **err);
HERALD_EXPORT void herald_http_cm_destroy(struct herald_http_cm *cm);
HERALD_EXPORT void *herald_http_cm_session_new(struct herald_http_cm *cm, struct herald_conn *c);
HERALD_EXPORT void herald_http_cm_session_destroy(void *session);
HERALD_EXPORT enum herald_status herald_http_cm_on_read(void *session, struct herald_buf *data, bool end_stream);
HERALD_EXPORT void herald_http_cm_on_event(void *session, enum herald_conn_event ev);

#ifdef __cplusplus
}
#endif
#endif
