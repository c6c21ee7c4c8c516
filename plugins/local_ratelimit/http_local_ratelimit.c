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
 * Stats (Envoy's names): <stat_prefix>.http_local_rate_limit.enabled,
 * .ok, .rate_limited, .enforced. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"
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
    struct herald_stat *st_enabled, *st_ok, *st_rate_limited, *st_enforced;
};

struct session {
    struct conf *conf;                 /* the filter's, or the route's */
    struct herald_http_stream *s;
    bool counted;                      /* enabled for this request: x-ratelimit-* on its response */
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
    {.name = "descriptors", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "stage", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "vh_rate_limits", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "always_consume_default_token_bucket", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "rate_limited_as_resource_exhausted", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "local_cluster_rate_limit", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "max_dynamic_descriptors", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "rate_limits", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
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

static void conf_destroy(void *p)
{
    struct conf *c = p;
    if (!c)
        return;
    fraction_free(&c->enabled);
    fraction_free(&c->enforced);
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
    free(p);
}

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
    ss->counted = c->has_bucket;
    if (!c->has_bucket || token_bucket_take(&c->bucket, herald_now_ms())) {
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
    char num[24];
    snprintf(num, sizeof(num), "%u", c->bucket.max_tokens);
    herald_headers_set(headers, "x-ratelimit-limit", num);
    snprintf(num, sizeof(num), "%u", token_bucket_remaining(&c->bucket, now));
    herald_headers_set(headers, "x-ratelimit-remaining", num);
    snprintf(num, sizeof(num), "%llu", (unsigned long long)((token_bucket_ms_to_fill(&c->bucket, now) + 999) / 1000));
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
