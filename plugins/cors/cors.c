/* cors (HTTP): envoy.filters.http.cors, Envoy's CORS filter. The policies
 * come from typed_per_filter_config (CorsPolicy) on the route, its virtual
 * host and the route configuration; as in Envoy, each setting is taken from
 * the most specific level that sets it, and the most specific policy decides
 * filter_enabled / shadow_enabled.
 *
 * For a request with an Origin the policy allows: a preflight (OPTIONS with
 * Access-Control-Request-Method) is answered here with the
 * Access-Control-Allow-* headers; any other request goes on and its response
 * gets Access-Control-Allow-Origin (and -Credentials, -Expose-Headers). An
 * origin is allowed when a matcher matches it, or matches "*" (Envoy's
 * wildcard rule). Stats: http.<prefix>.cors.origin_valid / origin_invalid. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fraction.h"
#include "herald/herald.h"

#define MAX_LEVELS 3

struct policy {                        /* a CorsPolicy */
    struct herald_string_matcher **origins; size_t norigins;
    char *allow_methods, *allow_headers, *expose_headers, *max_age;
    int allow_credentials;             /* -1 unset */
    struct fraction enabled, shadow;
    int private_network;               /* allow_private_network_access, -1 unset */
    int forward_not_matching;          /* forward_not_matching_preflights, -1 unset */
};

struct conf {
    struct herald_stat *origin_valid, *origin_invalid;
};

struct session {
    struct conf *conf;
    struct herald_http_stream *s;
    struct policy *p[MAX_LEVELS];
    size_t np;
    char *origin;                      /* set: a CORS request whose response gets the headers */
};

/* ------------------------------------------------------------ schema */

static const struct herald_field policy_fields[] = {
    {.name = "allow_origin_string_match", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED,
     .message = &herald_string_matcher_schema, .help = "origins allowed (one matching \"*\" allows all)"},
    {.name = "allow_methods", .kind = HERALD_FIELD_STRING, .help = "Access-Control-Allow-Methods"},
    {.name = "allow_headers", .kind = HERALD_FIELD_STRING, .help = "Access-Control-Allow-Headers"},
    {.name = "expose_headers", .kind = HERALD_FIELD_STRING, .help = "Access-Control-Expose-Headers"},
    {.name = "max_age", .kind = HERALD_FIELD_STRING, .help = "Access-Control-Max-Age"},
    {.name = "allow_credentials", .kind = HERALD_FIELD_BOOL, .help = "Access-Control-Allow-Credentials: true"},
    {.name = "filter_enabled", .kind = HERALD_FIELD_MESSAGE, .message = &fraction_runtime_schema,
     .help = "the share of requests CORS applies to; default 100%"},
    {.name = "shadow_enabled", .kind = HERALD_FIELD_MESSAGE, .message = &fraction_runtime_schema,
     .help = "the share of requests only checked and counted; default 0%"},
    {.name = "allow_private_network_access", .kind = HERALD_FIELD_BOOL,
     .help = "answer Access-Control-Request-Private-Network preflights"},
    {.name = "forward_not_matching_preflights", .kind = HERALD_FIELD_BOOL,
     .help = "default true: a preflight from an origin not allowed goes upstream"},
    {.name = NULL},
};
static const struct herald_message policy_schema = {
    "envoy.extensions.filters.http.cors.v3.CorsPolicy", policy_fields, NULL,
};

static const struct herald_field cors_fields[] = {
    {.name = NULL},
};
static const struct herald_message cors_schema = {
    "envoy.extensions.filters.http.cors.v3.Cors", cors_fields, NULL,
};

/* ------------------------------------------------------------ config */

static char *opt_dup(const struct herald_cfg *n, const char *key)
{
    const char *s = herald_cfg_str(herald_cfg_get(n, key), NULL);
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static int opt_bool(const struct herald_cfg *n, const char *key)
{
    const struct herald_cfg *v = herald_cfg_get(n, key);
    return v ? herald_cfg_bool(v, false) : -1;
}

static void policy_destroy(void *p)
{
    struct policy *c = p;
    if (!c)
        return;
    for (size_t i = 0; i < c->norigins; i++)
        herald_string_matcher_free(c->origins[i]);
    free(c->origins);
    free(c->allow_methods);
    free(c->allow_headers);
    free(c->expose_headers);
    free(c->max_age);
    fraction_free(&c->enabled);
    fraction_free(&c->shadow);
    free(c);
}

static int policy_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    (void)env;
    struct policy *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    const struct herald_cfg *os = herald_cfg_get(n, "allow_origin_string_match");
    c->norigins = herald_cfg_len(os);
    c->origins = calloc(c->norigins + 1, sizeof(*c->origins));
    if (!c->origins)
        abort();
    for (size_t i = 0; i < c->norigins; i++)
        if (!(c->origins[i] = herald_string_matcher_new(herald_cfg_at(os, i), err))) {
            c->norigins = i;
            policy_destroy(c);
            return -1;
        }
    c->allow_methods = opt_dup(n, "allow_methods");
    c->allow_headers = opt_dup(n, "allow_headers");
    c->expose_headers = opt_dup(n, "expose_headers");
    c->max_age = opt_dup(n, "max_age");
    c->allow_credentials = opt_bool(n, "allow_credentials");
    c->private_network = opt_bool(n, "allow_private_network_access");
    c->forward_not_matching = opt_bool(n, "forward_not_matching_preflights");
    fraction_parse(herald_cfg_get(n, "filter_enabled"), &c->enabled);
    fraction_parse(herald_cfg_get(n, "shadow_enabled"), &c->shadow);
    *out = c;
    return 0;
}

static void conf_destroy(void *p)
{
    free(p);
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    (void)n;
    (void)err;
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    char prefix[256];
    const char *sp = herald_env_stat_prefix(env);
    snprintf(prefix, sizeof(prefix), "%s.cors", sp ? sp : "http");
    c->origin_valid = herald_counter(prefix, "origin_valid");
    c->origin_invalid = herald_counter(prefix, "origin_invalid");
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ the policy chain */

/* A setting from the most specific policy that has it (offset: its place in
 * struct policy); NULL / -1: none has. */
static const char *first_str(const struct session *ss, size_t offset)
{
    for (size_t i = 0; i < ss->np; i++) {
        const char *v = *(char *const *)((const char *)ss->p[i] + offset);
        if (v)
            return v;
    }
    return NULL;
}

static int first_flag(const struct session *ss, size_t offset)
{
    for (size_t i = 0; i < ss->np; i++) {
        int v = *(const int *)((const char *)ss->p[i] + offset);
        if (v >= 0)
            return v;
    }
    return -1;
}

static bool origin_allowed(const struct session *ss, const char *origin)
{
    for (size_t i = 0; i < ss->np; i++) {
        const struct policy *p = ss->p[i];
        if (!p->norigins)
            continue;
        for (size_t k = 0; k < p->norigins; k++)
            if (herald_string_matcher_match(p->origins[k], origin) ||
                herald_string_matcher_match(p->origins[k], "*"))
                return true;
        return false;                  /* the most specific list decides */
    }
    return false;
}

/* ------------------------------------------------------------ the filter */

static void *session_new(void *conf, struct herald_http_stream *s)
{
    struct session *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return NULL;
    ss->conf = conf;
    ss->s = s;
    return ss;
}

static void session_destroy(void *p)
{
    struct session *ss = p;
    free(ss->origin);
    free(ss);
}

static void set_if(struct herald_headers *h, const char *name, const char *value)
{
    if (value && *value)
        herald_headers_set(h, name, value);
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    (void)end_stream;
    struct session *ss = p;
    ss->np = herald_http_stream_route_config_chain(ss->s, ss->conf, (void **)ss->p, MAX_LEVELS);
    if (!ss->np)
        return HERALD_HTTP_CONTINUE;
    /* the most specific policy decides whether the filter runs at all */
    bool enabled = fraction_on(&ss->p[0]->enabled, true), shadow = fraction_on(&ss->p[0]->shadow, false);
    if (!enabled && !shadow)
        return HERALD_HTTP_CONTINUE;
    const char *origin = herald_headers_get(headers, "origin");
    if (!origin || !*origin)
        return HERALD_HTTP_CONTINUE;
    const char *method = herald_headers_get(headers, ":method");
    const char *req_method = herald_headers_get(headers, "access-control-request-method");
    bool preflight = method && !strcmp(method, "OPTIONS") && req_method && *req_method;
    if (!origin_allowed(ss, origin)) {
        herald_stat_inc(ss->conf->origin_invalid);
        if (enabled && preflight && first_flag(ss, offsetof(struct policy, forward_not_matching)) == 0) {
            herald_http_stream_send_local_reply(ss->s, 200, "", "cors_preflight_not_forwarded", NULL);
            return HERALD_HTTP_STOP;
        }
        return HERALD_HTTP_CONTINUE;
    }
    herald_stat_inc(ss->conf->origin_valid);
    if (!enabled)
        return HERALD_HTTP_CONTINUE;   /* shadow mode: counted only */
    if (!preflight) {
        ss->origin = strdup(origin);
        if (!ss->origin)
            abort();
        return HERALD_HTTP_CONTINUE;
    }
    struct herald_headers *r = herald_headers_new();
    herald_headers_set(r, ":status", "200");
    herald_headers_set(r, "access-control-allow-origin", origin);
    if (first_flag(ss, offsetof(struct policy, allow_credentials)) == 1)
        herald_headers_set(r, "access-control-allow-credentials", "true");
    set_if(r, "access-control-allow-methods", first_str(ss, offsetof(struct policy, allow_methods)));
    set_if(r, "access-control-allow-headers", first_str(ss, offsetof(struct policy, allow_headers)));
    set_if(r, "access-control-max-age", first_str(ss, offsetof(struct policy, max_age)));
    const char *pna = herald_headers_get(headers, "access-control-request-private-network");
    if (pna && !strcmp(pna, "true") && first_flag(ss, offsetof(struct policy, private_network)) == 1)
        herald_headers_set(r, "access-control-allow-private-network", "true");
    herald_http_stream_encode_headers(ss->s, r, true);
    return HERALD_HTTP_STOP;
}

static enum herald_http_status encode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    (void)end_stream;
    struct session *ss = p;
    if (!ss->origin)
        return HERALD_HTTP_CONTINUE;
    herald_headers_set(headers, "access-control-allow-origin", ss->origin);
    if (first_flag(ss, offsetof(struct policy, allow_credentials)) == 1)
        herald_headers_set(headers, "access-control-allow-credentials", "true");
    set_if(headers, "access-control-expose-headers", first_str(ss, offsetof(struct policy, expose_headers)));
    return HERALD_HTTP_CONTINUE;
}

static const struct herald_http_filter_ops ops = {
    .size = sizeof(struct herald_http_filter_ops),
    .config_create = conf_create,
    .config_destroy = conf_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .decode_headers = decode_headers,
    .encode_headers = encode_headers,
    .route_config_schema = &policy_schema,
    .route_config_create = policy_create,
    .route_config_destroy = policy_destroy,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.cors.v3.Cors",
    NULL,
};

static const char *const aliases[] = { "envoy.cors", NULL };

HERALD_PLUGIN(.name = "envoy.filters.http.cors",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .aliases = aliases,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "CORS: preflights answered, Access-Control-Allow-* on responses, per route",
              .config_schema = &cors_schema,
              .ops = &ops);
