/* mysql_proxy: the config schema (envoy.extensions.filters.network.mysql_proxy.v3.MySQLProxy),
 * the factory and the plugin descriptor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mysql_proxy.h"

static int check_mysql_proxy(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *sp = herald_cfg_get(n, "stat_prefix");
    if (!sp || !*herald_cfg_str(sp, ""))
        return herald_cfg_errorf(sp ? sp : n, err, "stat_prefix must not be empty");
    return 0;
}

static const struct herald_field mysql_proxy_fields[] = {
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "stats are named mysql.<stat_prefix>.*"},
    {.name = "access_log", .kind = HERALD_FIELD_STRING,
     .help = "accepted and ignored, as in Envoy (not implemented there either); use tcp_proxy's access_log"},
    {.name = "downstream_ssl", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "terminating the client's TLS in the proxy"},
    {NULL},
};

const struct herald_message mysql_proxy_schema = {
    .name = "envoy.extensions.filters.network.mysql_proxy.v3.MySQLProxy",
    .fields = mysql_proxy_fields,
    .check = check_mysql_proxy,
};

void mysql_proxy_config_destroy(void *p)
{
    struct mysql_proxy_conf *conf = p;
    if (!conf)
        return;
    free(conf->stat_prefix);
    free(conf);
}

int mysql_proxy_config_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                              char **err)
{
    if (check_mysql_proxy(n, err) < 0)
        return -1;
    struct mysql_proxy_conf *conf = calloc(1, sizeof(*conf));
    if (!conf)
        abort();
    const char *sp = herald_cfg_str(herald_cfg_get(n, "stat_prefix"), "");
    size_t splen = strlen(sp);
    int keep = (int)(splen && sp[splen - 1] == '.' ? splen - 1 : splen);
    if (asprintf(&conf->stat_prefix, "mysql.%.*s", keep, sp) < 0)
        abort();
    if (herald_cfg_get(n, "access_log"))
        herald_env_warn(env, herald_cfg_get(n, "access_log"),
                        "mysql_proxy access_log is not implemented (as in Envoy): use tcp_proxy's access_log");
    const char *p = conf->stat_prefix;
    struct mysql_proxy_stats *st = &conf->stats;
    st->sessions = herald_counter(p, "sessions");
    st->login_attempts = herald_counter(p, "login_attempts");
    st->login_failures = herald_counter(p, "login_failures");
    st->decoder_errors = herald_counter(p, "decoder_errors");
    st->protocol_errors = herald_counter(p, "protocol_errors");
    st->upgraded_to_ssl = herald_counter(p, "upgraded_to_ssl");
    st->auth_switch_request = herald_counter(p, "auth_switch_request");
    st->queries_parsed = herald_counter(p, "queries_parsed");
    st->queries_parse_error = herald_counter(p, "queries_parse_error");
    *out = conf;
    return 0;
}

static const char *const mysql_proxy_aliases[] = {"envoy.mysql_proxy", NULL};
static const char *const mysql_proxy_type_urls[] = {
    "envoy.extensions.filters.network.mysql_proxy.v3.MySQLProxy",
    "envoy.config.filter.network.mysql_proxy.v1alpha1.MySQLProxy",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.network.mysql_proxy",
              .kind = HERALD_PLUGIN_NETWORK_FILTER,
              .aliases = mysql_proxy_aliases,
              .type_urls = mysql_proxy_type_urls,
              .version = "1.0.0",
              .description = "MySQL/MariaDB protocol sniffer: stats, and tables/operations of queries as "
                             "dynamic metadata (place before tcp_proxy)",
              .config_schema = &mysql_proxy_schema,
              .ops = &mysql_proxy_ops);
