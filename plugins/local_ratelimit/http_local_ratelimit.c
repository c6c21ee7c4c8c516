/* local_ratelimit (HTTP): envoy.filters.http.local_ratelimit. A token bucket
 * shared by all workers (Envoy: "rate limits are applied per Envoy
 * process"); a request that finds it empty is answered 429 (or `status`) with
 * response_headers_to_add, RESPONSE_FLAGS RL and details local_rate_limited,
 * unless enforcement is off, in which case it goes on upstream carrying
 * request_headers_to_add_when_not_enforced. As in Envoy, the filter does
 * nothing unless filter_enabled is set, and limits nothing unless
 * filter_enforced is set; both are runtime fractions.
 *
 * A route, virtual host or route configuration can give its own
 * LocalRateLimit in typed_per_filter_config (it must have a token_bucket):
 * the most specific one replaces the filter's for its requests, with its own
 * bucket, as Envoy does.
 *
 * descriptors: buckets for the request's rate limit descriptors, made by the
 * filter's own rate_limits, or else by its route's and virtual host's (see
 * descriptors.h and herald/http.h). Every matching descriptor gives a token,
 * strictest first; the default bucket gives one too unless
 * always_consume_default_token_bucket is false and a descriptor matched.
 *
 * Stats (Envoy's names): <stat_prefix>.http_local_rate_limit.enabled,
 * .ok, .rate_limited, .enforced. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/herald.h"
#include "descriptors.h"
#include "fraction.h"
#include "token_bucket_config.h"

#define DEFAULT_STATUS 429

struct conf {
    bool has_bucket;
    struct token_bucket bucket;
    int status;
    struct fraction enabled, enforced;
    struct herald_header_options *resp_add;   /* response_headers_to_add */
    struct herald_header_options *req_add;    /* request_headers_to_add_when_not_enforced */
    bool x_ratelimit_headers;          /* enable_x_ratelimit_headers: DRAFT_VERSION_03 */
    struct lrl_descriptors descs;      /* descriptors, strictest first */
    uint32_t stage;
    enum { VH_OVERRIDE = 0, VH_INCLUDE, VH_IGNORE } vh_rate_limits;
    bool always_default;               /* always_consume_default_token_bucket */
    struct herald_rate_limits *own;    /* rate_limits: then the route's are not used */
    struct herald_stat *st_enabled, *st_ok, *st_rate_limited, *st_enforced;
};

struct session {
    struct conf *conf;                 /* the filter's, or the route's */
    struct herald_http_stream *s;
    bool counted;                      /* enabled for this request: x-ratelimit-* on its response */
    struct herald_rl_descriptors *rd;  /* the request's descriptors, when the conf has descriptors */
};

/* ------------------------------------------------------------ schema */

static const struct herald_field http_status_fields[] = {
    {.name = "code", .kind = HERALD_FIELD_UINT, .flags = HERALD_F_REQUIRED},
    {.name = NULL},
};
static const struct herald_message http_status_msg = {
    "envoy.type.v3.HttpStatus", http_status_fields, NULL,
};

static const char *const x_ratelimit_values[] = {"OFF", "DRAFT_VERSION_03", NULL};
static const char *const vh_values[] = {"OVERRIDE", "INCLUDE", "IGNORE", NULL};

static const struct herald_field entry_fields[] = {
    {.name = "key", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "the entry's key"},
    {.name = "value", .kind = HERALD_FIELD_STRING,
     .help = "the entry's value; empty or absent: any value, each with a bucket of its own"},
    {.name = NULL},
};
static const struct herald_message entry_msg = {
    "envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry", entry_fields, NULL,
};

static const struct herald_field descriptor_fields[] = {
    {.name = "entries", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &entry_msg, .help = "matched against a request descriptor's entries, in order"},
    {.name = "token_bucket", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED,
     .message = &token_bucket_schema, .help = "its bucket, shared by all workers"},
    {.name = NULL},
};
static const struct herald_message descriptor_msg = {
    "envoy.extensions.common.ratelimit.v3.LocalRateLimitDescriptor", descriptor_fields, NULL,
};

static const struct herald_field lrl_fields[] = {
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "stats under <stat_prefix>.http_local_rate_limit."},
    {.name = "status", .kind = HERALD_FIELD_MESSAGE, .message = &http_status_msg,
     .help = "the answer when limited; default 429 (a code under 400 means 429, as in Envoy)"},
    {.name = "token_bucket", .kind = HERALD_FIELD_MESSAGE, .message = &token_bucket_schema,
     .help = "shared by all workers; none: nothing is limited"},
    {.name = "filter_enabled", .kind = HERALD_FIELD_MESSAGE, .message = &fraction_runtime_schema,
     .help = "the share of requests checked; unset: none (the filter is off)"},
    {.name = "filter_enforced", .kind = HERALD_FIELD_MESSAGE, .message = &fraction_runtime_schema,
     .help = "the share of limited requests answered `status`; unset: none (only counted)"},
    {.name = "request_headers_to_add_when_not_enforced", .kind = HERALD_FIELD_MESSAGE,
     .flags = HERALD_F_REPEATED, .message = &herald_header_value_option_schema,
     .help = "added to a limited request that goes on because enforcement is off"},
    {.name = "response_headers_to_add", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED,
     .message = &herald_header_value_option_schema, .help = "added to the answer of a limited request"},
    {.name = "enable_x_ratelimit_headers", .kind = HERALD_FIELD_ENUM, .enum_values = x_ratelimit_values,
     .help = "DRAFT_VERSION_03: x-ratelimit-limit, -remaining and -reset on the responses"},
    {.name = "local_rate_limit_per_downstream_connection", .kind = HERALD_FIELD_BOOL,
     .help = "false only: one bucket per process"},
    {.name = "descriptors", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED, .message = &descriptor_msg,
     .help = "buckets for the request's rate limit descriptors"},
    {.name = "stage", .kind = HERALD_FIELD_UINT, .help = "0..10: the rate_limits of this stage make descriptors"},
    {.name = "vh_rate_limits", .kind = HERALD_FIELD_ENUM, .enum_values = vh_values,
     .help = "OVERRIDE (default): the virtual host's rate_limits when the route has none; INCLUDE: both; "
             "IGNORE: the route's only"},
    {.name = "always_consume_default_token_bucket", .kind = HERALD_FIELD_BOOL,
     .help = "true (default): the token_bucket gives a token even when a descriptor matched"},
    {.name = "rate_limited_as_resource_exhausted", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "local_cluster_rate_limit", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "max_dynamic_descriptors", .kind = HERALD_FIELD_UINT,
     .help = "buckets kept per wildcard descriptor (default 20), the least recently used dropped"},
    {.name = "rate_limits", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED,
     .message = &herald_rate_limit_schema,
     .help = "the filter's own RateLimits; then the route's and virtual host's are not used"},
    {.name = NULL},
};

static int lrl_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *pc = herald_cfg_get(n, "local_rate_limit_per_downstream_connection");
    if (herald_cfg_bool(pc, false))
        return herald_cfg_errorf(pc, err, "not supported: a bucket per downstream connection (herald has one "
                                 "bucket per process, Envoy's default)");
    return 0;
}

static const struct herald_message lrl_schema = {
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", lrl_fields, lrl_check,
};

/* ------------------------------------------------------------ config */

/* A bool or google.protobuf.BoolValue {value: b} */
static bool bool_value(const struct herald_cfg *n, bool dflt)
{
    return herald_cfg_bool(herald_cfg_type(n) == HERALD_CFG_OBJECT ? herald_cfg_get(n, "value") : n, dflt);
}

static int descriptors_from_cfg(struct conf *c, const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *list = herald_cfg_get(n, "descriptors");
    const struct herald_cfg *md = herald_cfg_get(n, "max_dynamic_descriptors");
    int64_t max_dyn = herald_cfg_int(herald_cfg_type(md) == HERALD_CFG_OBJECT ? herald_cfg_get(md, "value") : md, 20);
    if (max_dyn < 1 || max_dyn > 1000000)
        return herald_cfg_errorf(md, err, "max_dynamic_descriptors must be from 1 to 1000000");
    uint64_t now = herald_now_ms();
    for (size_t i = 0; i < herald_cfg_len(list); i++) {
        const struct herald_cfg *dn = herald_cfg_at(list, i);
        const struct herald_cfg *entries = herald_cfg_get(dn, "entries");
        const struct herald_cfg *tb = herald_cfg_get(dn, "token_bucket");
        size_t ne = herald_cfg_len(entries);
        const char *keys[64], *values[64];
        if (ne > 64)
            return herald_cfg_errorf(entries, err, "at most 64 entries in a descriptor");
        for (size_t j = 0; j < ne; j++) {
            keys[j] = herald_cfg_str(herald_cfg_get(herald_cfg_at(entries, j), "key"), "");
            values[j] = herald_cfg_str(herald_cfg_get(herald_cfg_at(entries, j), "value"), "");
            if (!*keys[j])
                return herald_cfg_errorf(herald_cfg_at(entries, j), err, "an entry needs a non-empty key");
        }
        struct token_bucket b;
        token_bucket_from_cfg(&b, tb, now);
        struct lrl_descriptor *d = lrl_descriptor_new(keys, values, ne, b.max_tokens, b.tokens_per_fill,
                                                      b.fill_interval_ms, (size_t)max_dyn, now);
        for (size_t k = 0; k < c->descs.n; k++)
            if (lrl_descriptor_same(c->descs.d[k], d)) {
                lrl_descriptor_free(d);
                return herald_cfg_errorf(dn, err, "the same descriptor twice");
            }
        lrl_descriptors_add(&c->descs, d);
    }
    lrl_descriptors_finish(&c->descs);
    const struct herald_cfg *st = herald_cfg_get(n, "stage");
    int64_t stage = herald_cfg_int(st, 0);
    if (stage < 0 || stage > 10)
        return herald_cfg_errorf(st, err, "stage must be from 0 to 10");
    c->stage = (uint32_t)stage;
    const char *vh = herald_cfg_str(herald_cfg_get(n, "vh_rate_limits"), "OVERRIDE");
    c->vh_rate_limits = !strcasecmp(vh, "INCLUDE") ? VH_INCLUDE : !strcasecmp(vh, "IGNORE") ? VH_IGNORE : VH_OVERRIDE;
    c->always_default = bool_value(herald_cfg_get(n, "always_consume_default_token_bucket"), true);
    const struct herald_cfg *rl = herald_cfg_get(n, "rate_limits");
    if (herald_cfg_len(rl) && !(c->own = herald_rate_limits_new(rl, err)))
        return -1;
    return 0;
}

static void conf_destroy(void *p)
{
    struct conf *c = p;
    if (!c)
        return;
    fraction_free(&c->enabled);
    fraction_free(&c->enforced);
    lrl_descriptors_fini(&c->descs);
    herald_rate_limits_free(c->own);
    herald_header_options_free(c->resp_add);
    herald_header_options_free(c->req_add);
    free(c);
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    const struct herald_cfg *tb = herald_cfg_get(n, "token_bucket");
    if (tb) {
        c->has_bucket = true;
        token_bucket_from_cfg(&c->bucket, tb, herald_now_ms());
    } else {
        herald_env_warn(env, n, "no token_bucket: every request is allowed unless its route's "
                        "typed_per_filter_config gives one");
    }
    int64_t code = herald_cfg_int(herald_cfg_get(herald_cfg_get(n, "status"), "code"), DEFAULT_STATUS);
    c->status = code >= 400 && code <= 599 ? (int)code : DEFAULT_STATUS;
    fraction_parse(herald_cfg_get(n, "filter_enabled"), &c->enabled);
    fraction_parse(herald_cfg_get(n, "filter_enforced"), &c->enforced);
    if (!c->enabled.set)
        herald_env_warn(env, n, "no filter_enabled: the filter checks no request (Envoy's default, 0%%)");
    if (herald_header_options_new(herald_cfg_get(n, "response_headers_to_add"), &c->resp_add, err) < 0 ||
        herald_header_options_new(herald_cfg_get(n, "request_headers_to_add_when_not_enforced"), &c->req_add,
                                  err) < 0) {
        conf_destroy(c);
        return -1;
    }
    c->x_ratelimit_headers = !strcmp(herald_cfg_str(herald_cfg_get(n, "enable_x_ratelimit_headers"), "OFF"),
                                     "DRAFT_VERSION_03");
    if (descriptors_from_cfg(c, n, err) < 0) {
        conf_destroy(c);
        return -1;
    }
    if (c->descs.n && !c->own)
        herald_env_warn(env, n, "descriptors are matched against the descriptors of each request's route and "
                        "virtual host rate_limits (this filter has no rate_limits of its own)");

    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s.http_local_rate_limit",
             herald_cfg_str(herald_cfg_get(n, "stat_prefix"), ""));
    c->st_enabled = herald_counter(prefix, "enabled");
    c->st_ok = herald_counter(prefix, "ok");
    c->st_rate_limited = herald_counter(prefix, "rate_limited");
    c->st_enforced = herald_counter(prefix, "enforced");
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ the filter */

/* Envoy: "local rate limit token bucket must be set for per filter configs". */
static int route_conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                             char **err)
{
    if (!herald_cfg_get(n, "token_bucket"))
        return herald_cfg_errorf(n, err, "a per-route local rate limit needs a token_bucket");
    return conf_create(n, env, out, err);
}

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
    herald_rl_descriptors_free(ss->rd);
    free(ss);
}

/* The request's descriptors, Envoy's way: the filter's own rate_limits, or
 * the route's plus (vh_rate_limits, include_vh_rate_limits) its virtual host's. */
static struct herald_rl_descriptors *request_descriptors(struct session *ss, const struct herald_headers *h)
{
    struct conf *c = ss->conf;
    struct herald_rl_descriptors *rd = herald_rl_descriptors_new();
    if (c->own) {
        herald_rate_limits_populate(c->own, c->stage, ss->s, h, rd);
        return rd;
    }
    const struct herald_route *r = herald_http_stream_route(ss->s);
    if (!r)
        return rd;
    const struct herald_rate_limits *route_rl = herald_route_rate_limits(r);
    herald_rate_limits_populate(route_rl, c->stage, ss->s, h, rd);
    int vh = herald_route_include_vh_rate_limits(r) ? VH_INCLUDE : (int)c->vh_rate_limits;
    if (vh == VH_INCLUDE || (vh == VH_OVERRIDE && !route_rl))
        herald_rate_limits_populate(herald_route_vhost_rate_limits(r), c->stage, ss->s, h, rd);
    return rd;
}

/* The SDK's descriptors as descriptors.c takes them (pointers into rd). */
static size_t to_request(const struct herald_rl_descriptors *rd, struct lrl_request_descriptor *out, size_t max,
                         const char **strs, size_t nstrs)
{
    size_t n = 0, used = 0;
    for (size_t i = 0; i < herald_rl_descriptors_count(rd) && n < max; i++) {
        const struct herald_rl_descriptor *d = herald_rl_descriptors_at(rd, i);
        if (used + 2 * d->n > nstrs)
            break;
        const char **keys = strs + used, **values = strs + used + d->n;
        for (size_t j = 0; j < d->n; j++) {
            keys[j] = d->entries[j].key;
            values[j] = d->entries[j].value;
        }
        used += 2 * d->n;
        out[n++] = (struct lrl_request_descriptor){.keys = keys, .values = values, .n = d->n};
    }
    return n;
}

/* A request's descriptors past these are not matched: a route makes one per
 * RateLimit, a handful in practice, and these live on the stack. */
#define MAX_REQ_DESCRIPTORS 16
#define MAX_REQ_STRINGS 256

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    (void)end_stream;
    struct session *ss = p;
    struct conf *route = herald_http_stream_route_config(ss->s, ss->conf);
    if (route)
        ss->conf = route;
    struct conf *c = ss->conf;
    if (!fraction_on(&c->enabled, false))
        return HERALD_HTTP_CONTINUE;
    herald_stat_inc(c->st_enabled);
    uint64_t now = herald_now_ms();
    bool allowed = true, matched = false;
    if (c->descs.n) {
        struct lrl_request_descriptor req[MAX_REQ_DESCRIPTORS];
        const char *strs[MAX_REQ_STRINGS];
        ss->rd = request_descriptors(ss, headers);
        size_t nreq = to_request(ss->rd, req, MAX_REQ_DESCRIPTORS, strs, MAX_REQ_STRINGS);
        allowed = lrl_take(&c->descs, req, nreq, now, &matched);
    }
    ss->counted = c->has_bucket || matched;
    if (allowed && (!matched || c->always_default) && c->has_bucket)
        allowed = token_bucket_take(&c->bucket, now);
    if (allowed) {
        herald_stat_inc(c->st_ok);
        return HERALD_HTTP_CONTINUE;
    }
    herald_stat_inc(c->st_rate_limited);
    if (!fraction_on(&c->enforced, false)) {
        herald_header_options_apply(c->req_add, headers, ss->s);
        return HERALD_HTTP_CONTINUE;
    }
    herald_stat_inc(c->st_enforced);
    herald_http_stream_local_reply_header_options(ss->s, c->resp_add);
    herald_http_stream_send_local_reply(ss->s, c->status, "local_rate_limited", "local_rate_limited", "RL");
    return HERALD_HTTP_STOP;
}

/* DRAFT_VERSION_03 of the IETF RateLimit header fields, as Envoy sends them
 * for a local limiter: the bucket's size, what is left, and the seconds until
 * the next fill. */
static enum herald_http_status encode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    (void)end_stream;
    struct session *ss = p;
    struct conf *c = ss->conf;
    if (!c->x_ratelimit_headers || !ss->counted)
        return HERALD_HTTP_CONTINUE;
    uint64_t now = herald_now_ms();
    uint32_t max = c->bucket.max_tokens, left = 0;
    uint64_t to_fill = 0;
    bool by_descriptor = false;
    if (ss->rd) {  /* the first matching descriptor's bucket, as Envoy reports it */
        struct lrl_request_descriptor req[MAX_REQ_DESCRIPTORS];
        const char *strs[MAX_REQ_STRINGS];
        size_t nreq = to_request(ss->rd, req, MAX_REQ_DESCRIPTORS, strs, MAX_REQ_STRINGS);
        by_descriptor = lrl_state(&c->descs, req, nreq, now, &max, &left, &to_fill);
    }
    if (!by_descriptor) {
        left = token_bucket_remaining(&c->bucket, now);
        to_fill = token_bucket_ms_to_fill(&c->bucket, now);
    }
    char num[24];
    snprintf(num, sizeof(num), "%u", max);
    herald_headers_set(headers, "x-ratelimit-limit", num);
    snprintf(num, sizeof(num), "%u", left);
    herald_headers_set(headers, "x-ratelimit-remaining", num);
    snprintf(num, sizeof(num), "%llu", (unsigned long long)((to_fill + 999) / 1000));
    herald_headers_set(headers, "x-ratelimit-reset", num);
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
    .route_config_schema = &lrl_schema,
    .route_config_create = route_conf_create,
    .route_config_destroy = conf_destroy,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.http.local_ratelimit",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "a token bucket per process: requests over it answered 429",
              .config_schema = &lrl_schema,
              .ops = &ops);
