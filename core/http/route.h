/* The route table: an envoy.config.route.v3.RouteConfiguration compiled for
 * matching. Virtual hosts are picked by :authority (exact, longest "*.suffix",
 * longest "prefix*", then "*"; case-insensitive), routes are tried in order
 * and the first match wins. The entry a request matched is the SDK's opaque
 * struct herald_route, read through the herald_route_* accessors of
 * herald/http.h (implemented in route.c).
 *
 * A table is immutable once built and may be shared by every worker. */
#ifndef HERALD_CORE_HTTP_ROUTE_H
#define HERALD_CORE_HTTP_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "config/diag.h"
#include "herald/config.h"
#include "herald/access_log.h"
#include "herald/http.h"

/* envoy.config.route.v3.RouteConfiguration and the messages under it
 * (VirtualHost, Route, RouteMatch, HeaderMatcher, RouteAction, ...). The HCM
 * schema points its route_config field here. */
extern const struct herald_message schema_route_configuration;

struct route_table;

/* Builds the table from a RouteConfiguration node already passed through
 * schema_check(). Semantic errors (bad regex with its position, duplicate
 * domain, two "*" vhosts, ...) go to d and give NULL; likely mistakes
 * (a route shadowed by an earlier one in its vhost) are warnings in d. */
struct route_table *route_table_create(const struct herald_cfg *route_config, struct cfg_diag *d);
void route_table_free(struct route_table *t);

/* The RouteConfiguration's name ("" when unnamed). */
const char *route_table_name(const struct route_table *t);

/* The route for a request (:authority, :path, :method and the other headers
 * are read from req), or NULL: no vhost or no route in it (404). For a route
 * with weighted_clusters, random picks the cluster here, as Envoy does
 * (random % total weight; pass a fresh random per request): the entry
 * returned is that cluster's, so herald_route_cluster() gives it whatever
 * random it is passed, and herald_route_apply_request() adds the picked
 * cluster's own header mutations (before the route's, vhost's, config's). */
const struct herald_route *route_table_match(const struct route_table *t, const struct herald_headers *req,
                                             uint64_t random);

/* The virtual cluster (VirtualHost.virtual_clusters) req belongs to on route
 * r: its name, and *stat_prefix "vhost.<vh>.vcluster.<name>"; NULL when the
 * route's virtual host has none. Both live as long as the route table. */
const char *route_virtual_cluster(const struct herald_route *r, const struct herald_headers *req,
                                  const char **stat_prefix);

/* The envoy.lb criteria of a route's metadata_match (a weighted cluster's
 * entry: its own merged over its route's), or NULL when it has none: what
 * subset load balancing starts from (upstream/lb_subset.h). */
struct lb_kvs;
const struct lb_kvs *route_metadata_match(const struct herald_route *r);

/* Whether some virtual host takes this request's :authority, so a caller can
 * tell "no vhost" from "no route in the vhost" (both are 404 "route_not_found"
 * in Envoy). */
bool route_table_vhost_found(const struct route_table *t, const struct herald_headers *req);

/* A route's upgrade_configs entry for upgrade_type (case-insensitive):
 * 1 enabled, 0 disabled, -1 the route does not mention it (the HCM's
 * upgrade_configs decide). herald_route_upgrade_allowed() is this != 0. */
int route_upgrade_override(const struct herald_route *r, const char *upgrade_type);

/* Parses a RetryPolicy.retry_on comma list into HERALD_RETRY_* bits; an
 * unknown or unsupported condition is an error on n. 0 / -1. */
int route_parse_retry_on(const struct herald_cfg *n, unsigned *bits, char **err);

/* herald_route_apply_request / _response with the operators of header
 * values read through field(ctx, ...) (the stream's access log fields). */
void route_apply_request(const struct herald_route *r, struct herald_headers *req, const char *upstream_hostname,
                         herald_log_field_cb field, void *ctx);
void route_apply_response(const struct herald_route *r, struct herald_headers *resp, herald_log_field_cb field,
                          void *ctx);

/* typed_per_filter_config of the route configuration, its virtual hosts and
 * routes: one entry per key (an http_filters[].name). The connection manager
 * resolves them once its filters are made (filter, conf) and frees the confs
 * before the table. */
struct route_filter_config {
    char *name;
    const struct herald_cfg *node;     /* the value; valid while the config tree is */
    size_t filter;                     /* the connection manager's filter index */
    void *conf;                        /* what that filter made of it; NULL: nothing to make */
    bool disabled;                     /* FilterConfig {disabled: true}: the filter sits this route out;
                                        * any other entry turns it on (one disabled by default too) */
};
void route_table_foreach_filter_config(struct route_table *t,
                                       void (*cb)(struct route_filter_config *fc, void *arg), void *arg);
bool route_table_has_filter_configs(const struct route_table *t);
/* The configs of filter for this route, most specific first: the route's,
 * its virtual host's, the route configuration's (at most max). */
size_t route_filter_config_chain(const struct herald_route *r, size_t filter, const struct route_filter_config **out,
                                 size_t max);

/* Calls cb for every cluster a route names (cluster, weighted_clusters,
 * mirrors), and with cluster NULL for a cluster_header: any cluster may be
 * named per request. */
void route_table_foreach_cluster(const struct route_table *t,
                                 void (*cb)(const char *cluster, const struct herald_cfg *at, void *arg), void *arg);

/* One HeaderMatcher outside a route (the access log's header_filter): made
 * with the SDK's herald_header_matcher_new (route semantics), asked about a
 * value the caller has. value: the header's value, NULL when it is absent. */
struct herald_header_matcher;
const char *route_header_matcher_name(const struct herald_header_matcher *m);   /* lower-case */
bool route_header_matcher_value_matches(const struct herald_header_matcher *m, const char *value);

#endif
