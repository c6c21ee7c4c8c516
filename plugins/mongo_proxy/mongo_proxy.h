/* mongo_proxy: Envoy's envoy.filters.network.mongo_proxy, a sniffer placed
 * before tcp_proxy. config.c parses the typed_config into a struct
 * mongo_proxy_conf (shared by all workers); mongo_proxy.c runs one session
 * per connection, feeding a copy of each direction to a codec.c decoder. */
#ifndef HERALD_PLUGIN_MONGO_PROXY_H
#define HERALD_PLUGIN_MONGO_PROXY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/herald.h"

#define MONGO_METADATA_NS "envoy.filters.network.mongo_proxy"
#define MONGO_MAX_COLLECTION_STATS 256 /* distinct collection names that get stats */

struct mongo_proxy_stats {
    struct herald_stat *decoding_error, *delays_injected, *op_get_more, *op_insert, *op_kill_cursors,
        *op_query, *op_query_tailable_cursor, *op_query_no_cursor_timeout, *op_query_await_data,
        *op_query_exhaust, *op_query_no_max_time, *op_query_scatter_get, *op_query_multi_get,
        *op_query_active, *op_reply, *op_reply_cursor_not_found, *op_reply_query_failure,
        *op_reply_valid_cursor, *cx_destroy_local_with_active_rq, *cx_destroy_remote_with_active_rq,
        *cx_drain_close,
        /* herald additions: opcodes Envoy's decoder does not count */
        *op_msg, *op_msg_reply, *op_compressed, *op_update, *op_delete;
};

struct mongo_proxy_conf {
    char *stat_prefix;             /* "mongo.<stat_prefix>" */
    char *access_log_path;
    int log_fd;                    /* -1: no access log */
    uint64_t delay_ms;             /* 0: no fault */
    uint32_t delay_per_million;    /* share of requests delayed */
    bool emit_dynamic_metadata;
    char **commands;               /* which commands get cmd.<name>.* stats */
    size_t ncommands;
    struct mongo_proxy_stats stats;
    pthread_mutex_t names_lock;    /* the collection names that have stats (bounded) */
    char **names;
    size_t nnames;
};

/* config.c */
int mongo_proxy_config_create(const struct herald_cfg *typed_config, const struct herald_filter_env *env,
                              void **conf, char **err);
void mongo_proxy_config_destroy(void *conf);
bool mongo_proxy_collection_allowed(struct mongo_proxy_conf *conf, const char *name);
extern const struct herald_message mongo_proxy_schema;

/* mongo_proxy.c */
extern const struct herald_network_filter_ops mongo_proxy_ops;

#endif
