/* redis_proxy: Envoy's envoy.filters.network.redis_proxy, a terminal filter
 * that speaks RESP to clients and to Redis servers. The pieces:
 *   codec.c      RESP2 decoder and encoder (pure)
 *   router.c     prefix routes and the key hash (pure)
 *   commands.c   the command table: how each command is split and routed (pure)
 *   config.c     the schema, the factory, stats, the plugin descriptor
 *   pool.c       per worker: one pipelined connection per upstream host
 *   redis_proxy.c  per client connection: decode, split, answer in order
 */
#ifndef HERALD_PLUGIN_REDIS_PROXY_H
#define HERALD_PLUGIN_REDIS_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/herald.h"

#include "codec.h"
#include "fraction.h"
#include "commands.h"
#include "router.h"

/* Reply strings, as Envoy words them (clients and tests match on them). */
#define REDIS_NO_UPSTREAM_HOST "no upstream host"
#define REDIS_UPSTREAM_FAILURE "upstream failure"
#define REDIS_INVALID_REQUEST "invalid request"
#define REDIS_UPSTREAM_PROTOCOL_ERROR "upstream protocol error"
#define REDIS_AUTH_REQUIRED "NOAUTH Authentication required."
#define REDIS_DOWNSTREAM_PROTOCOL_ERROR "downstream protocol error"

struct redis_proxy_stats {
    struct herald_stat *downstream_cx_active, *downstream_cx_protocol_error, *downstream_cx_rx_bytes_buffered,
        *downstream_cx_rx_bytes_total, *downstream_cx_total, *downstream_cx_tx_bytes_buffered,
        *downstream_cx_tx_bytes_total, *downstream_cx_drain_close, *downstream_rq_active, *downstream_rq_total,
        *invalid_request, *unsupported_command;   /* splitter.* */
};

/* command.<name>.* (Envoy's per-command stats) */
struct redis_cmd_stats {
    struct herald_stat *total, *success, *error, *latency;
};

/* A route's request_mirror_policy: requests also sent to cluster, replies dropped. */
struct redis_mirror {
    size_t cluster;              /* index into the config's clusters */
    bool exclude_read_commands;
    struct fraction fraction;    /* runtime_fraction; unset: every request */
};

/* A cluster the routes name, with what the pool needs to talk to its hosts. */
struct redis_cluster {
    char *name;
    char *auth_username, *auth_password;   /* RedisProtocolOptions of the cluster (NULL: none) */
    size_t auth_username_len, auth_password_len;
    struct herald_stat *upstream_rq_total, *upstream_rq_timeout, *upstream_rq_active;  /* cluster.<name>.* */
};

struct redis_proxy_conf {
    char *stat_prefix;                   /* "redis.<stat_prefix>" */
    uint64_t op_timeout_ms;
    bool hashtagging;                    /* enable_hashtagging */
    uint32_t max_buffer_before_flush;    /* 0: write each request at once */
    uint64_t buffer_flush_timeout_ms;    /* default 3 ms */
    bool latency_in_micros;
    struct redis_router router;
    struct redis_cluster *clusters;      /* the routes' cluster indexes point here */
    size_t nclusters;
    char **passwords;                    /* downstream_auth_password(s); npasswords 0: no AUTH needed */
    size_t *password_lens;
    size_t npasswords;
    char *username;                      /* downstream_auth_username or NULL */
    size_t username_len;
    struct redis_cmd_stats *cmd_stats;   /* by command table index, then custom_commands */
    char **custom_commands;              /* lower case */
    size_t ncustom;
    struct redis_proxy_stats stats;
};

/* config.c */
int redis_proxy_config_create(const struct herald_cfg *typed_config, const struct herald_filter_env *env,
                              void **conf, char **err);
void redis_proxy_config_destroy(void *conf);
extern const struct herald_message redis_proxy_schema;

/* ---- pool.c: the worker's upstream connections */
struct redis_pool;
struct redis_frag;        /* redis_proxy.c: one piece of a client's request waiting for a server */
struct redis_upreq;       /* pool.c: that piece in a connection's queue */

struct redis_pool *redis_pool_new(struct redis_proxy_conf *conf);
void redis_pool_free(struct redis_pool *p);
/* Sends argv (argc bulk strings; argv[key] replaced by key/key_len) to a host
 * of cluster ci picked by hash, on the worker's connection to that host
 * (made when there is none). The reply comes to redis_frag_done(f, ...);
 * *upq is set to a handle for redis_upreq_cancel. Returns NULL on success, or
 * the error to answer with (nothing was sent). */
const char *redis_pool_send(struct redis_pool *p, size_t ci, uint64_t hash, const struct resp_value *argv,
                            size_t argc, size_t key, const char *key_str, size_t key_len, struct redis_frag *f,
                            struct redis_upreq **upq);
/* The client is gone: the reply, when it comes, is dropped. */
void redis_upreq_cancel(struct redis_upreq *q);

/* ---- redis_proxy.c */
/* The reply to a fragment: v (owned by the callee; may be NULL) or, when v
 * is NULL, err (a static string) to answer with. */
void redis_frag_done(struct redis_frag *f, struct resp_value *v, const char *err);
extern const struct herald_network_filter_ops redis_proxy_ops;

#endif
