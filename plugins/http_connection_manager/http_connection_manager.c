/* http_connection_manager: Envoy's envoy.filters.network.http_connection_manager.
 * A thin network filter: the connection manager itself (codec, HTTP filter
 * chain, routes, stats, access logs) is the core's, reached through
 * herald_http_cm_* (herald/http.h), as Envoy keeps it in source/common. The
 * config schema is the core's too (herald_http_cm_schema), so that the core
 * checks the HttpConnectionManager before herald_http_cm_create reads it. */
#include "herald/herald.h"

/* exported by the core (core/http/hcm_schema.c) */
extern const struct herald_message herald_http_cm_schema;

static int config_create(const struct herald_cfg *typed_config, const struct herald_filter_env *env,
                         void **conf, char **err)
{
    struct herald_http_cm *cm = herald_http_cm_create(typed_config, env, err);
    if (!cm)
        return -1;
    *conf = cm;
    return 0;
}

static void config_destroy(void *conf)
{
    herald_http_cm_destroy(conf);
}

static void *session_new(void *conf, void *wstate, struct herald_conn *c)
{
    return herald_http_cm_session_new(conf, c);
}

static const struct herald_network_filter_ops hcm_ops = {
    .size = sizeof(struct herald_network_filter_ops),
    .config_create = config_create,
    .config_destroy = config_destroy,
    .session_new = session_new,
    .session_destroy = herald_http_cm_session_destroy,
    .on_read = herald_http_cm_on_read,
    .on_event = herald_http_cm_on_event,
};

static const char *const hcm_aliases[] = {"envoy.http_connection_manager", NULL};
static const char *const hcm_type_urls[] = {
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.config.filter.network.http_connection_manager.v2.HttpConnectionManager",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.network.http_connection_manager", .kind = HERALD_PLUGIN_NETWORK_FILTER,
              .flags = HERALD_PLUGIN_TERMINAL, .aliases = hcm_aliases, .type_urls = hcm_type_urls,
              .version = "1.0.0",
              .description =
                  "HTTP connection manager: HTTP/1.1 codec, HTTP filter chain ending in the router, "
                  "routes, access logs",
              .config_schema = &herald_http_cm_schema, .ops = &hcm_ops);
