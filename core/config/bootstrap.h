/* The Envoy bootstrap as typed, immutable C structs, extracted from a tree
 * that schema_check() already validated (so extraction cannot fail on types;
 * it reports only semantic errors such as a bad IP address). Nodes are kept
 * (.node) so later stages (plugins, warnings) can point at the config. */
#ifndef HERALD_CORE_CONFIG_BOOTSTRAP_H
#define HERALD_CORE_CONFIG_BOOTSTRAP_H

#include <stdbool.h>
#include <stdint.h>

#include "config/diag.h"
#include "config/lb_metadata.h"
#include "config/tree.h"
#include "http/h2_keepalive.h"

#define DEFAULT_BUFFER_LIMIT (1024u * 1024u)

struct address_cfg {
    char *host;               /* socket_address.address (IP or DNS name) */
    uint16_t port;            /* socket_address.port_value */
    char *pipe;               /* pipe.path (unix socket), or NULL */
    const struct herald_cfg *node;
};

/* A filter as the config names it; the plugin is resolved later (filters.c). */
struct filter_cfg {
    char *name;                              /* "name" (may be empty) */
    char *type_url;                          /* typed_config "@type" without the host prefix, or NULL */
    const struct herald_cfg *typed_config;   /* may be NULL */
    const struct herald_cfg *node;
};

struct cidr_cfg { char *prefix; uint32_t len; };

struct filter_chain_match_cfg {
    uint32_t destination_port;               /* 0: any */
    char **server_names; size_t nserver_names;
    char *transport_protocol;                /* NULL: any */
    char **application_protocols; size_t napplication_protocols;
    struct cidr_cfg *prefix_ranges; size_t nprefix_ranges;
    struct cidr_cfg *source_prefix_ranges; size_t nsource_prefix_ranges;
    struct cidr_cfg *direct_source_prefix_ranges; size_t ndirect_source_prefix_ranges;
    uint32_t *source_ports; size_t nsource_ports;
};

struct filter_chain_cfg {
    char *name;
    struct filter_chain_match_cfg match;
    struct filter_cfg *filters; size_t nfilters;
    const struct herald_cfg *transport_socket; /* NULL: plaintext */
    const struct herald_cfg *node;
};

struct listener_cfg {
    char *name;
    char *stat_prefix;                       /* NULL: derived from the address */
    struct address_cfg address;
    struct filter_chain_cfg *chains; size_t nchains;
    struct filter_chain_cfg *default_chain;  /* or NULL */
    struct filter_cfg *listener_filters; size_t nlistener_filters;
    uint64_t listener_filters_timeout_ms;    /* default 15000 */
    bool continue_on_listener_filters_timeout;
    uint32_t buffer_limit;                   /* per_connection_buffer_limit_bytes, default 1 MiB */
    bool reuse_port;                         /* enable_reuse_port, default true */
    uint32_t backlog;                        /* tcp_backlog_size, default 1024 */
    const struct herald_cfg *node;
};

struct tls_ctx;
struct pp_upstream;
struct pp_tlvs;

enum cluster_type { CLUSTER_STATIC = 0, CLUSTER_STRICT_DNS, CLUSTER_LOGICAL_DNS };
enum lb_policy { LB_ROUND_ROBIN = 0, LB_LEAST_REQUEST, LB_RANDOM, LB_RING_HASH, LB_MAGLEV };
enum dns_family { DNS_AUTO = 0, DNS_V4_ONLY, DNS_V6_ONLY, DNS_V4_PREFERRED, DNS_ALL };

struct endpoint_cfg {
    struct address_cfg address;
    uint32_t weight;                         /* load_balancing_weight, default 1 */
    char *hostname;
    uint16_t hc_port;                        /* health_check_config.port_value; 0: the address's port */
    struct address_cfg hc_address;           /* health_check_config.address (an IP); host NULL: unset */
    const struct herald_cfg *node;
    struct pp_tlvs *pp_tlvs;                 /* PerHostConfig added_tlvs (net/proxy_header.c), or NULL */
    struct lb_kvs lb_meta;                   /* metadata.filter_metadata["envoy.lb"] (lb_subset.c); read
                                              * only when the cluster has lb_subset_config */
};

struct locality_cfg {
    uint32_t priority;
    uint32_t weight;                         /* locality load_balancing_weight, 0 = unset */
    struct endpoint_cfg *endpoints; size_t nendpoints;
};

/* What a cluster's HTTP upstreams speak (HttpProtocolOptions). */
enum upstream_http_proto {
    UPSTREAM_HTTP1 = 0,                      /* default, or explicit http_protocol_options */
    UPSTREAM_HTTP2,                          /* explicit_http_config.http2_protocol_options */
    UPSTREAM_HTTP_AUTO,                      /* auto_config: TLS ALPN h2 -> HTTP/2, else HTTP/1.1 */
};

/* Http2ProtocolOptions for the upstream client (Envoy's defaults). */
struct http2_cfg {
    uint32_t hpack_table_size;               /* 4096 */
    uint32_t max_concurrent_streams;         /* 2147483647 */
    uint32_t initial_stream_window_size;     /* 256 MiB */
    uint32_t initial_connection_window_size; /* 256 MiB */
    struct h2_keepalive_cfg keepalive;       /* connection_keepalive; interval 0: none */
};

struct thresholds_cfg {
    uint32_t max_connections, max_pending_requests, max_requests, max_retries;
};

/* ---- outlier detection (cluster.v3.OutlierDetection; upstream/outlier.c) ----
 * Envoy's defaults; enforcing_* and max_ejection_percent are percents. */
struct outlier_cfg {
    bool enabled;                            /* the cluster has outlier_detection */
    uint32_t consecutive_5xx;                /* 5 */
    uint32_t consecutive_gateway_failure;    /* 5 */
    uint32_t consecutive_local_origin_failure; /* 5 (only with split_external_local_origin_errors) */
    bool split_external_local_origin_errors; /* false */
    uint64_t interval_ms;                    /* 10 s */
    uint64_t base_ejection_time_ms;          /* 30 s */
    uint64_t max_ejection_time_ms;           /* 300 s, or base_ejection_time when that is larger */
    uint64_t max_ejection_time_jitter_ms;    /* 0 */
    uint32_t max_ejection_percent;           /* 10 */
    uint32_t enforcing_consecutive_5xx;      /* 100 */
    uint32_t enforcing_consecutive_gateway_failure;      /* 0 */
    uint32_t enforcing_consecutive_local_origin_failure; /* 100 */
    uint32_t enforcing_success_rate;         /* 100 */
    uint32_t success_rate_minimum_hosts;     /* 5 */
    uint32_t success_rate_request_volume;    /* 100 */
    uint32_t success_rate_stdev_factor;      /* 1900 (divided by 1000) */
    uint32_t failure_percentage_threshold;   /* 85 */
    uint32_t enforcing_failure_percentage;   /* 0 */
    uint32_t failure_percentage_minimum_hosts; /* 5 */
    uint32_t failure_percentage_request_volume; /* 50 */
    bool always_eject_one_host;              /* false */
};

/* ---- subset load balancing (Cluster.LbSubsetConfig; upstream/lb_subset.c) ---- */
enum subset_fallback { SUBSET_NO_FALLBACK = 0, SUBSET_ANY_ENDPOINT, SUBSET_DEFAULT_SUBSET };
enum selector_fallback {
    SELECTOR_NOT_DEFINED = 0, SELECTOR_NO_FALLBACK, SELECTOR_ANY_ENDPOINT, SELECTOR_DEFAULT_SUBSET,
    SELECTOR_KEYS_SUBSET,
};

struct subset_selector_cfg {
    char **keys; size_t nkeys;               /* sorted, without duplicates (Envoy keeps a set) */
    enum selector_fallback fallback;
    char **fallback_keys; size_t nfallback_keys;  /* KEYS_SUBSET: sorted, a strict subset of keys */
};

struct subset_cfg {
    enum subset_fallback fallback;           /* default NO_FALLBACK */
    struct lb_kvs default_subset;            /* empty: every host */
    /* selectors with keys, in config order (selectors without keys are dropped, as Envoy) */
    struct subset_selector_cfg *selectors; size_t nselectors;
    bool locality_weight_aware, scale_locality_weight, panic_mode_any, list_as_any;
};

/* ---- active health checking (core.v3.HealthCheck; health_check.c) ---- */
struct hc_range { uint32_t start, end; };          /* [start, end) */
struct hc_payload { unsigned char *data; size_t len; };  /* from hex text */

enum hc_kind { HC_HTTP = 0, HC_TCP };

struct health_check_cfg {
    enum hc_kind kind;
    uint64_t timeout_ms, interval_ms;                 /* required, > 0 */
    uint64_t initial_jitter_ms, interval_jitter_ms;
    uint32_t interval_jitter_percent;
    uint32_t unhealthy_threshold, healthy_threshold;  /* required */
    bool reuse_connection;                            /* default true */
    uint64_t no_traffic_interval_ms;                  /* default 60 s */
    uint64_t no_traffic_healthy_interval_ms;          /* default no_traffic_interval */
    uint64_t unhealthy_interval_ms;                   /* default interval */
    uint64_t unhealthy_edge_interval_ms;              /* default unhealthy_interval */
    uint64_t healthy_edge_interval_ms;                /* default interval */
    bool always_log_failures;
    /* http_health_check */
    char *host;                                       /* NULL: the cluster's name */
    char *path;
    char *method;                                     /* default GET */
    struct hc_range *expected; size_t nexpected;      /* default [200, 201) */
    struct hc_range *retriable; size_t nretriable;
    const struct herald_cfg *headers_add;   /* request_headers_to_add: the health checker parses it */
    char **headers_remove; size_t nheaders_remove;
    bool http2;                                       /* codec_client_type HTTP2 */
    /* tcp_health_check */
    struct hc_payload send;                           /* len 0: send nothing */
    struct hc_payload *receive; size_t nreceive;      /* none: connecting is success */
    const struct herald_cfg *node;
};

struct cluster_cfg {
    char *name;
    enum cluster_type type;
    enum lb_policy lb_policy;
    uint64_t connect_timeout_ms;             /* default 5000 */
    uint32_t buffer_limit;                   /* default 1 MiB */
    uint64_t dns_refresh_rate_ms;            /* default 5000 */
    bool respect_dns_ttl;
    enum dns_family dns_lookup_family;
    struct locality_cfg *localities; size_t nlocalities;
    struct thresholds_cfg thresholds[2];     /* [0] DEFAULT, [1] HIGH; defaults 1024/1024/1024/3 */
    bool track_remaining[2];                 /* circuit_breakers.<prio>.remaining_* gauges */
    uint32_t least_request_choice_count;     /* default 2 */
    /* RING_HASH / MAGLEV (upstream/lb_hash.c): ring_hash_lb_config, maglev_lb_config and
     * common_lb_config.consistent_hashing_lb_config; 0 in a size means its default. */
    uint64_t ring_min_size;                  /* minimum_ring_size, default 1024 */
    uint64_t ring_max_size;                  /* maximum_ring_size, default 8M */
    bool ring_murmur2;                       /* hash_function MURMUR_HASH_2 (default XX_HASH) */
    uint64_t maglev_table_size;              /* table_size, default 65537, prime */
    bool hash_use_hostname;                  /* use_hostname_for_hashing */
    bool locality_weighted;                  /* common_lb_config.locality_weighted_lb_config (lb.c) */
    /* lb_subset_config with subset_selectors, or NULL: no subset load balancing at all */
    struct subset_cfg *subset;
    /* HttpProtocolOptions.common_http_protocol_options (typed_extension_protocol_options) */
    uint64_t http_idle_timeout_ms;           /* idle_timeout, default 1h; 0: never */
    uint32_t max_requests_per_connection;    /* 0: no limit (also the deprecated Cluster field) */
    uint32_t max_headers_count;              /* default 100 */
    enum upstream_http_proto http_protocol;
    struct http2_cfg http2;
    bool tls_alpn_set;                       /* the UpstreamTlsContext names alpn_protocols itself */
    const struct herald_cfg *transport_socket; /* NULL: plaintext */
    struct tls_ctx *tls;                     /* built from it by tls_clusters_build (net/tls.c) */
    /* envoy.transport_sockets.upstream_proxy_protocol around it (net/proxy_header.c), or NULL;
     * transport_socket is then the inner socket */
    struct pp_upstream *proxy_protocol;
    /* active health checking (health_check.c) and the LB's panic threshold */
    struct health_check_cfg *health_checks; size_t nhealth_checks;  /* at most one, as Envoy */
    double healthy_panic_threshold;          /* common_lb_config, percent, default 50 */
    struct outlier_cfg outlier;              /* outlier_detection (outlier.c) */
    const struct herald_cfg *node;
    bool referenced;                         /* set when a filter asked for it (validate warnings) */
};

struct admin_cfg {
    bool present;
    struct address_cfg address;
    char *access_log_path;
};

struct bootstrap {
    struct cfg_doc *doc;                     /* owns the tree */
    char *node_id, *node_cluster;
    struct listener_cfg *listeners; size_t nlisteners;
    struct cluster_cfg *clusters; size_t nclusters;
    struct admin_cfg admin;
    uint64_t stats_flush_interval_ms;
};

/* schema_check + extraction. Takes ownership of doc (also on failure).
 * Returns NULL with the errors in d. */
struct bootstrap *bootstrap_load(struct cfg_doc *doc, struct cfg_diag *d);
void bootstrap_free(struct bootstrap *b);
const struct cluster_cfg *bootstrap_find_cluster(const struct bootstrap *b, const char *name);
static inline bool bootstrap_cluster_referenced(const struct cluster_cfg *c) { return c->referenced; }

#endif
