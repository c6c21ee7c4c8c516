/* mysql_proxy: the config schema (envoy.extensions.filters.network.mysql_proxy.v3.MySQLProxy),
 * the factory and the plugin descriptor. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
     .help = "file to append one JSON line per login result and COM_QUERY to (not reopened on SIGUSR1)"},
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
    if (conf->log_fd >= 0)
        close(conf->log_fd);
    free(conf->access_log);
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
    conf->log_fd = -1;
    /* a plain path, not an AccessLog entry: the SDK's loggers do not apply, the plugin owns the file */
    const struct herald_cfg *al = herald_cfg_get(n, "access_log");
    const char *path = herald_cfg_str(al, "");
    if (*path) {
        conf->access_log = strdup(path);
        if (!conf->access_log)
            abort();
        if (!herald_env_validate_only(env)) {
            conf->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (conf->log_fd < 0) {
                int e = errno;
                mysql_proxy_config_destroy(conf);
                return herald_cfg_errorf(al, err, "cannot open access_log %s: %s", path, strerror(e));
            }
        }
    }
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
