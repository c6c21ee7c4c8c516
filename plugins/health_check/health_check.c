/* health_check (HTTP): envoy.filters.http.health_check. Answers the health
 * checks of a load balancer (or of a herald in front) that match `headers`:
 *   pass_through_mode false: 200 from here, or 503 while the server fails
 *     health checks (admin POST /healthcheck/fail, or draining);
 *   pass_through_mode true: the request goes on upstream, except that it is
 *     answered 503 here while the server fails health checks.
 * While failing, every response through the filter carries
 * x-envoy-immediate-health-check-fail: true, so that an Envoy or herald
 * checker takes this server out at once. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/herald.h"

#define FAIL_HEADER "x-envoy-immediate-health-check-fail"

enum match_kind { M_PRESENT = 0, M_EXACT, M_PREFIX, M_SUFFIX, M_CONTAINS };

struct matcher {
    char *name;
    enum match_kind kind;
    char *value;
    bool invert, ignore_case, present;
};

struct conf {
    bool pass_through;
    struct matcher *m; size_t nm;
};

struct session {
    struct conf *conf;
    struct herald_http_stream *s;
    bool health_check;               /* this request is a health check */
};

/* ------------------------------------------------------------ schema */

static const struct herald_field string_match_fields[] = {
    {.name = "exact", .kind = HERALD_FIELD_STRING, .oneof = "match_pattern"},
    {.name = "prefix", .kind = HERALD_FIELD_STRING, .oneof = "match_pattern"},
    {.name = "suffix", .kind = HERALD_FIELD_STRING, .oneof = "match_pattern"},
    {.name = "contains", .kind = HERALD_FIELD_STRING, .oneof = "match_pattern"},
    {.name = "safe_regex", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = "match_pattern",
     .help = "use exact, prefix, suffix or contains"},
    {.name = "custom", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = "match_pattern"},
    {.name = "ignore_case", .kind = HERALD_FIELD_BOOL},
    {.name = NULL},
};
static const struct herald_message string_match_msg = {
    "envoy.type.matcher.v3.StringMatcher", string_match_fields, NULL,
};

static const struct herald_field header_matcher_fields[] = {
    {.name = "name", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "e.g. :path"},
    {.name = "exact_match", .kind = HERALD_FIELD_STRING, .oneof = "header_match_specifier"},
    {.name = "prefix_match", .kind = HERALD_FIELD_STRING, .oneof = "header_match_specifier"},
    {.name = "suffix_match", .kind = HERALD_FIELD_STRING, .oneof = "header_match_specifier"},
    {.name = "contains_match", .kind = HERALD_FIELD_STRING, .oneof = "header_match_specifier"},
    {.name = "present_match", .kind = HERALD_FIELD_BOOL, .oneof = "header_match_specifier"},
    {.name = "string_match", .kind = HERALD_FIELD_MESSAGE, .oneof = "header_match_specifier",
     .message = &string_match_msg},
    {.name = "safe_regex_match", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .oneof = "header_match_specifier", .help = "use string_match"},
    {.name = "range_match", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .oneof = "header_match_specifier"},
    {.name = "invert_match", .kind = HERALD_FIELD_BOOL},
    {.name = "treat_missing_header_as_empty", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = NULL},
};
static const struct herald_message header_matcher_msg = {
    "envoy.config.route.v3.HeaderMatcher", header_matcher_fields, NULL,
};

static const struct herald_field hc_fields[] = {
    {.name = "pass_through_mode", .kind = HERALD_FIELD_BOOL, .flags = HERALD_F_REQUIRED,
     .help = "false: answer here; true: forward the check upstream (503 here while failing)"},
    {.name = "headers", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED,
     .message = &header_matcher_msg, .help = "what a health check request looks like, e.g. :path /healthz"},
    {.name = "cache_time", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "herald does not cache pass-through health check results"},
    {.name = "cluster_min_healthy_percentages", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "endpoint", .kind = HERALD_FIELD_REMOVED, .hint = "v2 field: use headers with :path"},
    {.name = NULL},
};
static const struct herald_message hc_schema = {
    "envoy.extensions.filters.http.health_check.v3.HealthCheck", hc_fields, NULL,
};

/* ------------------------------------------------------------ config */

static char *xdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

static void conf_destroy(void *p)
{
    struct conf *c = p;

    if (!c)
        return;
    for (size_t i = 0; i < c->nm; i++) {
        free(c->m[i].name);
        free(c->m[i].value);
    }
    free(c->m);
    free(c);
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                       char **err)
{
    static const struct { const char *key; enum match_kind kind; } direct[] = {
        { "exact_match", M_EXACT }, { "prefix_match", M_PREFIX }, { "suffix_match", M_SUFFIX },
        { "contains_match", M_CONTAINS },
    };
    static const struct { const char *key; enum match_kind kind; } sm[] = {
        { "exact", M_EXACT }, { "prefix", M_PREFIX }, { "suffix", M_SUFFIX }, { "contains", M_CONTAINS },
    };
    struct conf *c = calloc(1, sizeof(*c));
    const struct herald_cfg *hs = herald_cfg_get(n, "headers");

    if (!c)
        abort();
    c->pass_through = herald_cfg_bool(herald_cfg_get(n, "pass_through_mode"), false);
    c->m = calloc(herald_cfg_len(hs) + 1, sizeof(*c->m));
    if (!c->m)
        abort();
    for (size_t i = 0; i < herald_cfg_len(hs); i++) {
        const struct herald_cfg *h = herald_cfg_at(hs, i), *x;
        struct matcher *m = &c->m[c->nm++];
        m->name = xdup(herald_cfg_str(herald_cfg_get(h, "name"), ""));
        for (char *p = m->name; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        m->invert = herald_cfg_bool(herald_cfg_get(h, "invert_match"), false);
        m->kind = M_PRESENT;
        m->present = true;
        for (size_t k = 0; k < sizeof(direct) / sizeof(direct[0]); k++)
            if ((x = herald_cfg_get(h, direct[k].key))) {
                m->kind = direct[k].kind;
                m->value = xdup(herald_cfg_str(x, ""));
            }
        if ((x = herald_cfg_get(h, "present_match")))
            m->present = herald_cfg_bool(x, true);
        const struct herald_cfg *s = herald_cfg_get(h, "string_match");
        if (s) {
            m->ignore_case = herald_cfg_bool(herald_cfg_get(s, "ignore_case"), false);
            for (size_t k = 0; k < sizeof(sm) / sizeof(sm[0]); k++)
                if ((x = herald_cfg_get(s, sm[k].key))) {
                    m->kind = sm[k].kind;
                    m->value = xdup(herald_cfg_str(x, ""));
                }
            if (m->kind == M_PRESENT) {
                herald_cfg_errorf(s, err, "string_match needs one of exact, prefix, suffix or contains");
                conf_destroy(c);
                return -1;
            }
        }
    }
    if (!c->nm)
        herald_env_warn(env, n, "no headers: every request is taken for a health check");
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ matching */

static bool value_matches(const struct matcher *m, const char *v)
{
    size_t vl = strlen(v), ml = m->value ? strlen(m->value) : 0;
    int (*ncmp)(const char *, const char *, size_t) = m->ignore_case ? strncasecmp : strncmp;

    switch (m->kind) {
    case M_EXACT: return vl == ml && ncmp(v, m->value, vl) == 0;
    case M_PREFIX: return vl >= ml && ncmp(v, m->value, ml) == 0;
    case M_SUFFIX: return vl >= ml && ncmp(v + vl - ml, m->value, ml) == 0;
    case M_CONTAINS:
        for (size_t i = 0; i + ml <= vl; i++)
            if (ncmp(v + i, m->value, ml) == 0)
                return true;
        return false;
    default: return true;
    }
}

/* Envoy's HeaderUtility::matchHeaders: the values of a repeated header are
 * joined with ","; :path is matched as given (query included). */
static bool header_matches(const struct matcher *m, const struct herald_headers *h)
{
    const char *v = herald_headers_get(h, m->name);
    bool r;

    if (m->kind == M_PRESENT)
        r = (v != NULL) == m->present;
    else
        r = v && value_matches(m, v);
    return r != m->invert;
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
    free(p);
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    struct session *ss = p;
    struct conf *c = ss->conf;

    for (size_t i = 0; i < c->nm; i++)
        if (!header_matches(&c->m[i], headers))
            return HERALD_HTTP_CONTINUE;
    ss->health_check = true;
    herald_http_stream_mark_health_check(ss->s);
    if (herald_server_health_failed()) {
        herald_http_stream_add_local_reply_header(ss->s, FAIL_HEADER, "true");
        herald_http_stream_send_local_reply(ss->s, 503, "", "health_check_failed", "LH");
        return HERALD_HTTP_STOP;
    }
    if (c->pass_through)
        return HERALD_HTTP_CONTINUE;
    herald_http_stream_send_local_reply(ss->s, 200, "", "health_check_ok", NULL);
    return HERALD_HTTP_STOP;
}

static enum herald_http_status encode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    if (herald_server_health_failed() && !herald_headers_get(headers, FAIL_HEADER))
        herald_headers_set(headers, FAIL_HEADER, "true");
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
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.health_check.v3.HealthCheck",
    "envoy.config.filter.http.health_check.v2.HealthCheck",
    NULL,
};

static const char *const aliases[] = { "envoy.health_check", NULL };

HERALD_PLUGIN(.name = "envoy.filters.http.health_check",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .aliases = aliases,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "answers health checks (200, or 503 after /healthcheck/fail or while draining)",
              .config_schema = &hc_schema,
              .ops = &ops);
