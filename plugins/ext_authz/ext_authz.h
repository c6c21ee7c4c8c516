/* ext_authz (HTTP): envoy.filters.http.ext_authz with Envoy's HTTP service.
 * config.c reads the typed_config (schema tables, factory), ext_authz.c runs
 * the check for each request. */
#ifndef HERALD_PLUGIN_EXT_AUTHZ_H
#define HERALD_PLUGIN_EXT_AUTHZ_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "feature_flag.h"
#include "fraction.h"
#include "herald/herald.h"

#define EXT_AUTHZ_NAME "envoy.filters.http.ext_authz"

/* A ListStringMatcher: any of its patterns matches. */
struct name_list {
    struct herald_string_matcher **m;
    size_t n;
    bool set;                           /* the field was given */
};

struct body_settings {                  /* BufferSettings; max_bytes 0: no body is sent */
    uint32_t max_bytes;
    bool allow_partial;
    bool pack_as_bytes;
};

struct header_value {                   /* authorization_request.headers_to_add */
    char *key;                          /* lower case */
    char *value;
};

/* cluster.<route's cluster>.ext_authz.* (Envoy's cluster-scope counters), made on first use. */
struct cluster_stats {
    struct cluster_stats *next;
    char *cluster;
    struct herald_stat *ok, *denied, *error, *failure_mode_allowed;
};

struct authz_conf {
    char *cluster;                      /* http_service.server_uri.cluster */
    uint64_t timeout_ms;                /* server_uri.timeout; 0: none */
    char *path_prefix;
    struct name_list allowed, disallowed; /* allowed_headers (either place), disallowed_headers */
    struct header_value *to_add; size_t nto_add;
    struct name_list up_set, up_append, client, client_ok, metadata;
    bool failure_mode_allow, failure_header_add, clear_route_cache;
    int status_on_error;
    struct body_settings body;
    struct fraction enabled;
    bool has_deny_at_disable;
    struct feature_flag deny_at_disable;
    struct herald_stat *st_ok, *st_denied, *st_error, *st_disabled, *st_failure_mode_allowed;
    pthread_mutex_t lock;               /* clusters */
    struct cluster_stats *clusters;
};

struct authz_route {                    /* ExtAuthzPerRoute */
    bool disabled;
    bool skip_body;                     /* check_settings.disable_request_body_buffering */
    bool has_body;                      /* check_settings.with_request_body */
    struct body_settings body;
};

extern const struct herald_message ext_authz_schema;
extern const struct herald_message ext_authz_per_route_schema;

int ext_authz_config_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err);
void ext_authz_config_destroy(void *p);
int ext_authz_route_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err);
void ext_authz_route_destroy(void *p);

bool name_list_match(const struct name_list *l, const char *name);
/* The cluster-scope counters for cluster (created on first use, any thread). */
struct cluster_stats *ext_authz_cluster_stats(struct authz_conf *c, const char *cluster);

#endif
