/* ext_authz: the schema of ExtAuthz and ExtAuthzPerRoute, and the factory
 * that turns a checked typed_config into struct authz_conf. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ext_authz.h"

/* ------------------------------------------------------------ envoy.type.v3.HttpStatus */

/* envoy.type.v3.StatusCode: the codes Envoy accepts (defined_only), by number or name. */
static const struct {
    const char *name;
    int code;
} status_codes[] = {
    {"Continue", 100}, {"OK", 200}, {"Created", 201}, {"Accepted", 202}, {"NonAuthoritativeInformation", 203},
    {"NoContent", 204}, {"ResetContent", 205}, {"PartialContent", 206}, {"MultiStatus", 207},
    {"AlreadyReported", 208}, {"IMUsed", 226}, {"MultipleChoices", 300}, {"MovedPermanently", 301},
    {"Found", 302}, {"SeeOther", 303}, {"NotModified", 304}, {"UseProxy", 305}, {"TemporaryRedirect", 307},
    {"PermanentRedirect", 308}, {"BadRequest", 400}, {"Unauthorized", 401}, {"PaymentRequired", 402},
    {"Forbidden", 403}, {"NotFound", 404}, {"MethodNotAllowed", 405}, {"NotAcceptable", 406},
    {"ProxyAuthenticationRequired", 407}, {"RequestTimeout", 408}, {"Conflict", 409}, {"Gone", 410},
    {"LengthRequired", 411}, {"PreconditionFailed", 412}, {"PayloadTooLarge", 413}, {"URITooLong", 414},
    {"UnsupportedMediaType", 415}, {"RangeNotSatisfiable", 416}, {"ExpectationFailed", 417},
    {"MisdirectedRequest", 421}, {"UnprocessableEntity", 422}, {"Locked", 423}, {"FailedDependency", 424},
    {"UpgradeRequired", 426}, {"PreconditionRequired", 428}, {"TooManyRequests", 429},
    {"RequestHeaderFieldsTooLarge", 431}, {"InternalServerError", 500}, {"NotImplemented", 501},
    {"BadGateway", 502}, {"ServiceUnavailable", 503}, {"GatewayTimeout", 504}, {"HTTPVersionNotSupported", 505},
    {"VariantAlsoNegotiates", 506}, {"InsufficientStorage", 507}, {"LoopDetected", 508}, {"NotExtended", 510},
    {"NetworkAuthenticationRequired", 511},
};

/* The code a node names (a number or a StatusCode name); 0: none Envoy defines. */
static int status_code_of(const struct herald_cfg *n)
{
    const char *s = herald_cfg_str(n, NULL);
    int64_t v = herald_cfg_type(n) == HERALD_CFG_INT ? herald_cfg_int(n, 0) : 0;
    if (s && !v) {
        char *end;
        long x = strtol(s, &end, 10);
        if (*s && !*end)
            v = x;
        else
            for (size_t i = 0; i < sizeof(status_codes) / sizeof(status_codes[0]); i++)
                if (!strcasecmp(status_codes[i].name, s))
                    return status_codes[i].code;
    }
    for (size_t i = 0; i < sizeof(status_codes) / sizeof(status_codes[0]); i++)
        if (status_codes[i].code == v)
            return (int)v;
    return 0;
}

static int http_status_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *code = herald_cfg_get(n, "code");
    if (!status_code_of(code)) {
        char num[32];
        const char *s = herald_cfg_str(code, NULL);
        if (!s) {
            snprintf(num, sizeof(num), "%lld", (long long)herald_cfg_int(code, 0));
            s = num;
        }
        return herald_cfg_errorf(code, err, "'%s' is not an HTTP status Envoy defines (a number such as 403, "
                                 "or a StatusCode name such as Forbidden)", s);
    }
    return 0;
}

static const struct herald_field http_status_fields[] = {
    {.name = "code", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_REQUIRED,
     .help = "a status code (403) or its StatusCode name (Forbidden)"},
    {.name = NULL},
};
static const struct herald_message http_status_msg = {
    "envoy.type.v3.HttpStatus", http_status_fields, http_status_check,
};

/* ------------------------------------------------------------ the messages */

static const struct herald_field list_fields[] = {
    {.name = "patterns", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &herald_string_matcher_schema, .help = "header names (lower case); any one matching is enough"},
    {.name = NULL},
};
static const struct herald_message list_msg = {
    "envoy.type.matcher.v3.ListStringMatcher", list_fields, NULL,
};

static int header_value_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *k = herald_cfg_get(n, "key");
    const char *key = herald_cfg_str(k, "");
    if (!*key)
        return herald_cfg_errorf(n, err, "the header key is empty");
    for (const char *p = key; *p; p++)
        if (!(strchr("!#$%&'*+-.^_`|~", *p) || (*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')))
            return herald_cfg_errorf(k, err, "'%s' is not a header name", key);
    const struct herald_cfg *v = herald_cfg_get(n, "value");
    const char *val = herald_cfg_str(v, "");
    for (const char *p = strchr(val, '%'); p; p = strchr(p + 2, '%')) {
        if (p[1] != '%')
            return herald_cfg_errorf(v, err, "not supported: %%OPERATORS%% in authorization_request.headers_to_add "
                                     "(herald sends these values as they are; write %%%% for a '%%')");
    }
    return 0;
}

static const struct herald_field header_value_fields[] = {
    {.name = "key", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "the header name"},
    {.name = "value", .kind = HERALD_FIELD_STRING, .help = "its value, literal (%% for '%')"},
    {.name = "raw_value", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .hint = "use value"},
    {.name = NULL},
};
static const struct herald_message header_value_msg = {
    "envoy.config.core.v3.HeaderValue", header_value_fields, header_value_check,
};

static const struct herald_field http_uri_fields[] = {
    {.name = "uri", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "required, as in Envoy; only for reference (requests go to cluster)"},
    {.name = "cluster", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .oneof = "http_upstream_type",
     .help = "the cluster of the authorization service"},
    {.name = "timeout", .kind = HERALD_FIELD_DURATION, .flags = HERALD_F_REQUIRED,
     .help = "how long a check may take; past it the check is an error (0s: no limit)"},
    {.name = NULL},
};
static const struct herald_message http_uri_msg = {
    "envoy.config.core.v3.HttpUri", http_uri_fields, NULL,
};

static const struct herald_field auth_request_fields[] = {
    {.name = "allowed_headers", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_DEPRECATED, .message = &list_msg,
     .help = "the client's headers the check request carries (besides the defaults)",
     .hint = "use ExtAuthz.allowed_headers"},
    {.name = "headers_to_add", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED, .message = &header_value_msg,
     .help = "headers set on every check request (replacing the client's of that name)"},
    {.name = NULL},
};
static const struct herald_message auth_request_msg = {
    "envoy.extensions.filters.http.ext_authz.v3.AuthorizationRequest", auth_request_fields, NULL,
};

static const struct herald_field auth_response_fields[] = {
    {.name = "allowed_upstream_headers", .kind = HERALD_FIELD_MESSAGE, .message = &list_msg,
     .help = "on 200: these headers of the answer are set on the request (replacing)"},
    {.name = "allowed_upstream_headers_to_append", .kind = HERALD_FIELD_MESSAGE, .message = &list_msg,
     .help = "on 200: these headers of the answer are added to the request"},
    {.name = "allowed_client_headers", .kind = HERALD_FIELD_MESSAGE, .message = &list_msg,
     .help = "on a denial: these headers of the answer go to the client (default: all)"},
    {.name = "allowed_client_headers_on_success", .kind = HERALD_FIELD_MESSAGE, .message = &list_msg,
     .help = "on 200: these headers of the answer are added to the client's response"},
    {.name = "dynamic_metadata_from_headers", .kind = HERALD_FIELD_MESSAGE, .message = &list_msg,
     .help = "on 200: these headers of the answer become dynamic metadata under " EXT_AUTHZ_NAME},
    {.name = NULL},
};
static const struct herald_message auth_response_msg = {
    "envoy.extensions.filters.http.ext_authz.v3.AuthorizationResponse", auth_response_fields, NULL,
};

static const struct herald_field http_service_fields[] = {
    {.name = "server_uri", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &http_uri_msg},
    {.name = "path_prefix", .kind = HERALD_FIELD_STRING, .help = "put in front of the client's path"},
    {.name = "authorization_request", .kind = HERALD_FIELD_MESSAGE, .message = &auth_request_msg},
    {.name = "authorization_response", .kind = HERALD_FIELD_MESSAGE, .message = &auth_response_msg},
    {.name = "retry_policy", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .hint = "a check is tried once"},
    {.name = NULL},
};
static const struct herald_message http_service_msg = {
    "envoy.extensions.filters.http.ext_authz.v3.HttpService", http_service_fields, NULL,
};

static int buffer_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *m = herald_cfg_get(n, "max_request_bytes");
    if (!m || herald_cfg_int(m, 0) <= 0)
        return herald_cfg_errorf(m ? m : n, err, "max_request_bytes must be greater than 0");
    if (herald_cfg_int(m, 0) > UINT32_MAX)
        return herald_cfg_errorf(m, err, "max_request_bytes is a uint32");
    return 0;
}

static const struct herald_field buffer_fields[] = {
    {.name = "max_request_bytes", .kind = HERALD_FIELD_UINT, .flags = HERALD_F_REQUIRED,
     .help = "the most request body sent along; more is a 413 unless allow_partial_message"},
    {.name = "allow_partial_message", .kind = HERALD_FIELD_BOOL,
     .help = "send the first max_request_bytes and check then, instead of a 413"},
    {.name = "pack_as_bytes", .kind = HERALD_FIELD_BOOL,
     .help = "accepted: the HTTP service gets the bytes as they are either way"},
    {.name = NULL},
};
static const struct herald_message buffer_msg = {
    "envoy.extensions.filters.http.ext_authz.v3.BufferSettings", buffer_fields, buffer_check,
};

static const char *const api_versions[] = {"AUTO", "V2", "V3", NULL};

static int ext_authz_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "http_service") && !herald_cfg_get(n, "grpc_service"))
        return herald_cfg_errorf(n, err, "http_service is required (herald's ext_authz speaks the HTTP service)");
    const struct herald_cfg *v = herald_cfg_get(n, "transport_api_version");
    if (v && !strcmp(herald_cfg_str(v, ""), "V2"))
        return herald_cfg_errorf(v, err, "transport_api_version V2 is no longer accepted (Envoy refuses it too); "
                                 "use V3");
    return 0;
}

static const struct herald_field ext_authz_fields[] = {
    {.name = "grpc_service", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = "services",
     .hint = "herald's ext_authz speaks the HTTP service: use http_service"},
    {.name = "http_service", .kind = HERALD_FIELD_MESSAGE, .oneof = "services", .message = &http_service_msg,
     .help = "the authorization service, spoken to in plain HTTP"},
    {.name = "transport_api_version", .kind = HERALD_FIELD_ENUM, .enum_values = api_versions,
     .help = "AUTO or V3 (the gRPC service's; no effect on the HTTP service)"},
    {.name = "failure_mode_allow", .kind = HERALD_FIELD_BOOL,
     .help = "a failed check (no answer, timeout, 5xx) lets the request go on"},
    {.name = "failure_mode_allow_header_add", .kind = HERALD_FIELD_BOOL,
     .help = "with failure_mode_allow: such a request gets x-envoy-auth-failure-mode-allowed: true"},
    {.name = "with_request_body", .kind = HERALD_FIELD_MESSAGE, .message = &buffer_msg,
     .help = "send the request body along (buffered first)"},
    {.name = "clear_route_cache", .kind = HERALD_FIELD_BOOL,
     .help = "route again when the answer changed the request's headers"},
    {.name = "status_on_error", .kind = HERALD_FIELD_MESSAGE, .message = &http_status_msg,
     .help = "the answer to the client when the check fails; default 403"},
    {.name = "metadata_context_namespaces", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REPEATED,
     .help = "accepted; the gRPC service's (the HTTP service carries no metadata)"},
    {.name = "typed_metadata_context_namespaces", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REPEATED,
     .help = "accepted; the gRPC service's"},
    {.name = "route_metadata_context_namespaces", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REPEATED,
     .help = "accepted; the gRPC service's"},
    {.name = "route_typed_metadata_context_namespaces", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REPEATED,
     .help = "accepted; the gRPC service's"},
    {.name = "filter_enabled", .kind = HERALD_FIELD_MESSAGE, .message = &fraction_runtime_schema,
     .help = "the share of requests checked; default all"},
    {.name = "filter_enabled_metadata", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .hint = "use filter_enabled"},
    {.name = "deny_at_disable", .kind = HERALD_FIELD_MESSAGE, .message = &feature_flag_schema,
     .help = "requests filter_enabled leaves out are answered status_on_error"},
    {.name = "include_peer_certificate", .kind = HERALD_FIELD_BOOL,
     .help = "accepted; the gRPC service's (the HTTP service carries no certificate)"},
    {.name = "include_tls_session", .kind = HERALD_FIELD_BOOL, .help = "accepted; the gRPC service's"},
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING,
     .help = "stats under http.<hcm prefix>.ext_authz.<stat_prefix>."},
    {.name = "bootstrap_metadata_labels_key", .kind = HERALD_FIELD_STRING, .help = "accepted; the gRPC service's"},
    {.name = "allowed_headers", .kind = HERALD_FIELD_MESSAGE, .message = &list_msg,
     .help = "the client's headers a check carries, besides Authorization, :method, :path and Host"},
    {.name = "disallowed_headers", .kind = HERALD_FIELD_MESSAGE, .message = &list_msg,
     .help = "the client's headers a check never carries"},
    {.name = "encode_raw_headers", .kind = HERALD_FIELD_BOOL, .help = "accepted; the gRPC service's"},
    {.name = "validate_mutations", .kind = HERALD_FIELD_BOOL,
     .help = "accepted; herald's codecs refuse invalid header names and values anyway"},
    {.name = "decoder_header_mutation_rules", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "enable_dynamic_metadata_ingestion", .kind = HERALD_FIELD_BOOL, .help = "accepted; the gRPC service's"},
    {.name = "filter_metadata", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "emit_filter_state_stats", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "charge_cluster_response_stats", .kind = HERALD_FIELD_BOOL,
     .help = "accepted; herald counts no upstream_rq_<code> for denials"},
    {.name = NULL},
};
const struct herald_message ext_authz_schema = {
    "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz", ext_authz_fields, ext_authz_check,
};

static int check_settings_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *d = herald_cfg_get(n, "disable_request_body_buffering");
    if (d && herald_cfg_bool(d, false) && herald_cfg_get(n, "with_request_body"))
        return herald_cfg_errorf(d, err, "only one of disable_request_body_buffering or with_request_body "
                                 "can be set");
    return 0;
}

static const struct herald_field check_settings_fields[] = {
    {.name = "context_extensions", .kind = HERALD_FIELD_MAP,
     .help = "accepted; the gRPC service's (Envoy does not send them to an HTTP service either)"},
    {.name = "disable_request_body_buffering", .kind = HERALD_FIELD_BOOL,
     .help = "this route's checks carry no body"},
    {.name = "with_request_body", .kind = HERALD_FIELD_MESSAGE, .message = &buffer_msg,
     .help = "this route's body settings, instead of the filter's"},
    {.name = NULL},
};
static const struct herald_message check_settings_msg = {
    "envoy.extensions.filters.http.ext_authz.v3.CheckSettings", check_settings_fields, check_settings_check,
};

static int per_route_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *d = herald_cfg_get(n, "disabled");
    if (!d && !herald_cfg_get(n, "check_settings"))
        return herald_cfg_errorf(n, err, "ExtAuthzPerRoute needs disabled or check_settings");
    if (d && !herald_cfg_bool(d, false))
        return herald_cfg_errorf(d, err, "disabled must be true (leave it out to check)");
    return 0;
}

static const struct herald_field per_route_fields[] = {
    {.name = "disabled", .kind = HERALD_FIELD_BOOL, .oneof = "override",
     .help = "true: no check for this route or virtual host"},
    {.name = "check_settings", .kind = HERALD_FIELD_MESSAGE, .oneof = "override", .message = &check_settings_msg},
    {.name = NULL},
};
const struct herald_message ext_authz_per_route_schema = {
    "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", per_route_fields, per_route_check,
};

/* ------------------------------------------------------------ the factory */

static char *xdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

static void name_list_free(struct name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        herald_string_matcher_free(l->m[i]);
    free(l->m);
    l->m = NULL;
    l->n = 0;
}

static int name_list_parse(const struct herald_cfg *n, struct name_list *l, char **err)
{
    if (!n)
        return 0;
    const struct herald_cfg *ps = herald_cfg_get(n, "patterns");
    size_t count = herald_cfg_len(ps);
    l->set = true;
    l->m = calloc(count + 1, sizeof(*l->m));
    if (!l->m)
        abort();
    for (size_t i = 0; i < count; i++) {
        if (!(l->m[i] = herald_string_matcher_new(herald_cfg_at(ps, i), err)))
            return -1;
        l->n = i + 1;
    }
    return 0;
}

bool name_list_match(const struct name_list *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (herald_string_matcher_match(l->m[i], name))
            return true;
    return false;
}

static void body_parse(const struct herald_cfg *n, struct body_settings *b)
{
    if (!n)
        return;
    b->max_bytes = (uint32_t)herald_cfg_int(herald_cfg_get(n, "max_request_bytes"), 0);
    b->allow_partial = herald_cfg_bool(herald_cfg_get(n, "allow_partial_message"), false);
    b->pack_as_bytes = herald_cfg_bool(herald_cfg_get(n, "pack_as_bytes"), false);
}

/* "%%" -> "%" */
static char *unescape(const char *v)
{
    char *out = xdup(v), *w = out;
    for (const char *p = v; *p; p++) {
        *w++ = *p;
        if (p[0] == '%' && p[1] == '%')
            p++;
    }
    *w = '\0';
    return out;
}

void ext_authz_config_destroy(void *p)
{
    struct authz_conf *c = p;
    if (!c)
        return;
    free(c->cluster);
    free(c->path_prefix);
    name_list_free(&c->allowed);
    name_list_free(&c->disallowed);
    name_list_free(&c->up_set);
    name_list_free(&c->up_append);
    name_list_free(&c->client);
    name_list_free(&c->client_ok);
    name_list_free(&c->metadata);
    for (size_t i = 0; i < c->nto_add; i++) {
        free(c->to_add[i].key);
        free(c->to_add[i].value);
    }
    free(c->to_add);
    fraction_free(&c->enabled);
    feature_flag_free(&c->deny_at_disable);
    for (struct cluster_stats *cs = c->clusters, *next; cs; cs = next) {
        next = cs->next;
        free(cs->cluster);
        free(cs);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int ext_authz_config_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    struct authz_conf *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    pthread_mutex_init(&c->lock, NULL);
    const struct herald_cfg *hs = herald_cfg_get(n, "http_service");
    const struct herald_cfg *uri = herald_cfg_get(hs, "server_uri");
    const struct herald_cfg *rq = herald_cfg_get(hs, "authorization_request");
    const struct herald_cfg *rs = herald_cfg_get(hs, "authorization_response");
    c->cluster = xdup(herald_cfg_str(herald_cfg_get(uri, "cluster"), ""));
    c->timeout_ms = herald_cfg_duration_ms(herald_cfg_get(uri, "timeout"), 0);
    c->path_prefix = xdup(herald_cfg_str(herald_cfg_get(hs, "path_prefix"), ""));
    if (!herald_env_cluster_exists(env, c->cluster))   /* also marks it referenced */
        herald_env_warn(env, herald_cfg_get(uri, "cluster"),
                        "no cluster '%s' (yet): until there is, every check fails", c->cluster);

    /* ExtAuthz.allowed_headers replaces the deprecated AuthorizationRequest one, as in Envoy */
    const struct herald_cfg *allowed = herald_cfg_get(n, "allowed_headers");
    if (!allowed)
        allowed = herald_cfg_get(rq, "allowed_headers");
    if (name_list_parse(allowed, &c->allowed, err) < 0 ||
        name_list_parse(herald_cfg_get(n, "disallowed_headers"), &c->disallowed, err) < 0 ||
        name_list_parse(herald_cfg_get(rs, "allowed_upstream_headers"), &c->up_set, err) < 0 ||
        name_list_parse(herald_cfg_get(rs, "allowed_upstream_headers_to_append"), &c->up_append, err) < 0 ||
        name_list_parse(herald_cfg_get(rs, "allowed_client_headers"), &c->client, err) < 0 ||
        name_list_parse(herald_cfg_get(rs, "allowed_client_headers_on_success"), &c->client_ok, err) < 0 ||
        name_list_parse(herald_cfg_get(rs, "dynamic_metadata_from_headers"), &c->metadata, err) < 0) {
        ext_authz_config_destroy(c);
        return -1;
    }
    const struct herald_cfg *adds = herald_cfg_get(rq, "headers_to_add");
    c->nto_add = herald_cfg_len(adds);
    c->to_add = calloc(c->nto_add + 1, sizeof(*c->to_add));
    if (!c->to_add)
        abort();
    for (size_t i = 0; i < c->nto_add; i++) {
        const struct herald_cfg *hv = herald_cfg_at(adds, i);
        c->to_add[i].key = xdup(herald_cfg_str(herald_cfg_get(hv, "key"), ""));
        lower(c->to_add[i].key);
        c->to_add[i].value = unescape(herald_cfg_str(herald_cfg_get(hv, "value"), ""));
    }

    c->failure_mode_allow = herald_cfg_bool(herald_cfg_get(n, "failure_mode_allow"), false);
    c->failure_header_add = herald_cfg_bool(herald_cfg_get(n, "failure_mode_allow_header_add"), false);
    c->clear_route_cache = herald_cfg_bool(herald_cfg_get(n, "clear_route_cache"), false);
    const struct herald_cfg *soe = herald_cfg_get(n, "status_on_error");
    c->status_on_error = soe ? status_code_of(herald_cfg_get(soe, "code")) : 403;
    body_parse(herald_cfg_get(n, "with_request_body"), &c->body);
    fraction_parse(herald_cfg_get(n, "filter_enabled"), &c->enabled);
    const struct herald_cfg *dad = herald_cfg_get(n, "deny_at_disable");
    c->has_deny_at_disable = dad != NULL;
    feature_flag_parse(dad, false, &c->deny_at_disable);
    if (herald_cfg_get(n, "include_peer_certificate") && herald_cfg_bool(herald_cfg_get(n, "include_peer_certificate"),
                                                                           false))
        herald_env_warn(env, herald_cfg_get(n, "include_peer_certificate"),
                        "include_peer_certificate has no effect on the HTTP service (as in Envoy)");

    /* Envoy: <hcm prefix>.ext_authz.[<stat_prefix>.]<name> */
    char prefix[512];
    const char *sp = herald_env_stat_prefix(env);
    const char *own = herald_cfg_str(herald_cfg_get(n, "stat_prefix"), "");
    snprintf(prefix, sizeof(prefix), "%s.ext_authz%s%s", sp ? sp : "http", *own ? "." : "", own);
    c->st_ok = herald_counter(prefix, "ok");
    c->st_denied = herald_counter(prefix, "denied");
    c->st_error = herald_counter(prefix, "error");
    c->st_disabled = herald_counter(prefix, "disabled");
    c->st_failure_mode_allowed = herald_counter(prefix, "failure_mode_allowed");
    *out = c;
    return 0;
}

struct cluster_stats *ext_authz_cluster_stats(struct authz_conf *c, const char *cluster)
{
    struct cluster_stats *cs;
    pthread_mutex_lock(&c->lock);
    for (cs = c->clusters; cs; cs = cs->next)
        if (!strcmp(cs->cluster, cluster))
            goto out;
    cs = calloc(1, sizeof(*cs));
    if (!cs)
        abort();
    cs->cluster = xdup(cluster);
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "cluster.%s.ext_authz", cluster);
    cs->ok = herald_counter(prefix, "ok");
    cs->denied = herald_counter(prefix, "denied");
    cs->error = herald_counter(prefix, "error");
    cs->failure_mode_allowed = herald_counter(prefix, "failure_mode_allowed");
    cs->next = c->clusters;
    c->clusters = cs;
out:
    pthread_mutex_unlock(&c->lock);
    return cs;
}

void ext_authz_route_destroy(void *p)
{
    free(p);
}

int ext_authz_route_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    (void)env;
    (void)err;
    struct authz_route *r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    const struct herald_cfg *cs = herald_cfg_get(n, "check_settings");
    r->disabled = herald_cfg_bool(herald_cfg_get(n, "disabled"), false);
    r->skip_body = herald_cfg_bool(herald_cfg_get(cs, "disable_request_body_buffering"), false);
    r->has_body = herald_cfg_get(cs, "with_request_body") != NULL;
    body_parse(herald_cfg_get(cs, "with_request_body"), &r->body);
    *out = r;
    return 0;
}
