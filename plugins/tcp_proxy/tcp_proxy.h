/* tcp_proxy: Envoy's envoy.filters.network.tcp_proxy. config.c parses the
 * typed_config into a struct tcp_proxy_conf (immutable, shared by all
 * workers); tcp_proxy.c runs one session per downstream connection. */
#ifndef HERALD_PLUGIN_TCP_PROXY_H
#define HERALD_PLUGIN_TCP_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/herald.h"

struct tcp_proxy_cluster {
    char *name;
    uint32_t weight;
};

struct tcp_proxy_stats {
    struct herald_stat *downstream_cx_total, *downstream_cx_no_route, *downstream_cx_tx_bytes_total,
        *downstream_cx_rx_bytes_total, *downstream_cx_tx_bytes_buffered, *downstream_cx_rx_bytes_buffered,
        *downstream_flow_control_paused_reading_total, *downstream_flow_control_resumed_reading_total,
        *idle_timeout, *max_downstream_connection_duration, *upstream_flush_total, *upstream_flush_active;
};

/* tunneling_config: the bytes go to the host inside an HTTP CONNECT (or POST) */
struct tcp_proxy_tunneling {
    struct herald_format *hostname;     /* the CONNECT's :authority, %OPERATORS% rendered per connection */
    bool use_post;
    char *post_path;                    /* use_post: the request's path */
    struct herald_header_options *headers; /* headers_to_add, NULL: none */
};

struct tcp_proxy_conf {
    char *stat_prefix;                  /* "tcp.<stat_prefix>" */
    bool no_splice;                     /* HERALD_NO_SPLICE set: always copy (benchmarks, tests) */
    struct tcp_proxy_cluster *clusters; /* one for `cluster`, several for weighted_clusters */
    size_t nclusters;
    uint64_t total_weight;
    uint64_t idle_timeout_ms;           /* 0: disabled */
    uint64_t max_duration_ms;           /* max_downstream_connection_duration; 0: none */
    uint32_t max_connect_attempts;
    bool hash_source_ip;                /* hash_policy: [{source_ip: {}}] */
    struct tcp_proxy_tunneling *tunneling; /* NULL: plain TCP to the host */
    struct herald_access_log **logs;
    size_t nlogs;
    struct tcp_proxy_stats stats;
};

/* config.c */
int tcp_proxy_config_create(const struct herald_cfg *typed_config, const struct herald_filter_env *env,
                            void **conf, char **err);
void tcp_proxy_config_destroy(void *conf);
extern const struct herald_message tcp_proxy_schema;

/* tunnel.c: one tunnel per connect attempt. on_failed: the tunnel is dead
 * (before_open: the attempt failed: no answer, or status, a non-2xx one);
 * free it. on_watermark: the host's side cannot take more of the client's
 * bytes for now (above) / can again. */
struct tcp_tunnel;
struct tcp_tunnel_cbs {
    void (*on_open)(void *arg);
    void (*on_data)(void *arg, struct herald_buf *data, bool end_stream);
    void (*on_failed)(void *arg, bool before_open, enum herald_upstream_reset why, int status);
    void (*on_watermark)(void *arg, bool above);
};
/* field/field_ctx: the access log's operators, for hostname and headers_to_add */
struct tcp_tunnel *tcp_tunnel_start(const struct tcp_proxy_tunneling *cfg, struct herald_cluster *c,
                                    struct herald_host *h, struct herald_conn *d, herald_log_field_cb field,
                                    void *field_ctx, const struct tcp_tunnel_cbs *cbs, void *arg);
void tcp_tunnel_write(struct tcp_tunnel *t, struct herald_buf *data, bool end_stream);
void tcp_tunnel_pause_reading(struct tcp_tunnel *t, bool pause);
void tcp_tunnel_free(struct tcp_tunnel *t);

/* tcp_proxy.c */
extern const struct herald_network_filter_ops tcp_proxy_ops;

#endif
