/* mysql_proxy: Envoy's envoy.filters.network.mysql_proxy, a sniffer placed
 * before tcp_proxy. config.c holds the schema and the factory; mysql_proxy.c
 * the per-connection session feeding codec.c and sql.c. */
#ifndef HERALD_PLUGIN_MYSQL_PROXY_H
#define HERALD_PLUGIN_MYSQL_PROXY_H

#include "herald/herald.h"

#define MYSQL_MD_NS "envoy.filters.network.mysql_proxy"

struct mysql_proxy_stats {
    struct herald_stat *sessions, *login_attempts, *login_failures, *decoder_errors, *protocol_errors,
        *upgraded_to_ssl, *auth_switch_request, *queries_parsed, *queries_parse_error;
};

struct mysql_proxy_conf {
    char *stat_prefix;                 /* "mysql.<stat_prefix>" */
    char *access_log;                  /* path, or NULL */
    int log_fd;                        /* O_APPEND; -1 when none (or validate-only) */
    struct mysql_proxy_stats stats;
};

/* config.c */
extern const struct herald_message mysql_proxy_schema;
int mysql_proxy_config_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **conf,
                              char **err);
void mysql_proxy_config_destroy(void *conf);

/* mysql_proxy.c */
extern const struct herald_network_filter_ops mysql_proxy_ops;

#endif
