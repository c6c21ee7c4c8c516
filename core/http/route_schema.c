/* envoy.config.route.v3.RouteConfiguration and everything under it as schema
 * tables: every field Envoy has, so that one herald does not implement is a
 * clear "not supported" and a misspelt one an "unknown field" with a
 * suggestion. The checks here are the per-message ones (a route needs an
 * action, a regex must compile, ...); what needs the whole table (duplicate
 * domains, shadowed routes) is in route_table_create(). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "config/schema.h"
#include "config/tree.h"
#include "http/route.h"

#include "config/data_source.h"
#include "config/schema_tables.h"

/* ------------------------------------------------------------ matchers (type.matcher.v3)
 * RegexMatcher and StringMatcher live in config/matcher_schema.c: the
 * bootstrap (admin.allow_paths) and the SDK use them too. */
#define regex_matcher_msg schema_regex_matcher
#define string_matcher_msg herald_string_matcher_schema

static const struct herald_field regex_subst_fields[] = {
    F_("pattern", MESSAGE, HERALD_F_REQUIRED, .message = &regex_matcher_msg),
    STR("substitution", .help = "replaces every match; \\1..\\9 are the capture groups"),
    END,
};
/* exported: filters put it in their own schemas (SDK 1.9, herald_regex_subst_new) */
const struct herald_message herald_regex_subst_schema = {
    "envoy.type.matcher.v3.RegexMatchAndSubstitute", regex_subst_fields, NULL,
};
#define regex_subst_msg herald_regex_subst_schema

/* ------------------------------------------------------------ core.v3 bits */

/* core.v3.Metadata as metadata_match: only filter_metadata["envoy.lb"]
 * counts (subset load balancing, upstream/lb_subset.c). */
static int metadata_match_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *lb = herald_cfg_get(herald_cfg_get(n, "filter_metadata"), "envoy.lb");
    if (lb && herald_cfg_type(lb) != HERALD_CFG_OBJECT && herald_cfg_type(lb) != HERALD_CFG_NULL)
        return herald_cfg_errorf(lb, err, "filter_metadata[\"envoy.lb\"] must be a mapping of endpoint metadata "
                                 "keys to values");
    return 0;
}

static const struct herald_field metadata_match_fields[] = {
    F_("filter_metadata", MAP, 0, .help = "under envoy.lb: the keys and values of the subset to use "
       "(other namespaces are not read)"),
    UNSUP("typed_filter_metadata", .hint = "subsets are chosen by filter_metadata[\"envoy.lb\"]"),
    END,
};
static const struct herald_message metadata_match_msg = {
    "envoy.config.core.v3.Metadata", metadata_match_fields, metadata_match_check,
};

/* HeaderValueOption: http/header_option.c, shared with local replies, health
 * checks and filters (herald_header_value_option_schema in the SDK). */
#define header_value_option_msg herald_header_value_option_schema


/* ------------------------------------------------------------ RouteMatch */

static const struct herald_field header_matcher_fields[] = {
    F_("name", STRING, HERALD_F_REQUIRED),
    F_("exact_match", STRING, HERALD_F_DEPRECATED, .oneof = "header_match_specifier",
       .hint = "use string_match: {exact: ...}"),
    F_("safe_regex_match", MESSAGE, HERALD_F_DEPRECATED, .message = &regex_matcher_msg,
       .oneof = "header_match_specifier", .hint = "use string_match: {safe_regex: {regex: ...}}"),
    UNSUP("range_match", .oneof = "header_match_specifier"),
    BOOL("present_match", .oneof = "header_match_specifier",
         .help = "true: the header is present; false: it is absent"),
    F_("prefix_match", STRING, HERALD_F_DEPRECATED, .oneof = "header_match_specifier",
       .hint = "use string_match: {prefix: ...}"),
    F_("suffix_match", STRING, HERALD_F_DEPRECATED, .oneof = "header_match_specifier",
       .hint = "use string_match: {suffix: ...}"),
    F_("contains_match", STRING, HERALD_F_DEPRECATED, .oneof = "header_match_specifier",
       .hint = "use string_match: {contains: ...}"),
    MSG("string_match", string_matcher_msg, .oneof = "header_match_specifier"),
    BOOL("invert_match"),
    BOOL("treat_missing_header_as_empty"),
    REMOVED("regex_match", "v2 field: use string_match: {safe_regex: {regex: ...}}"),
    END,
};
/* exported: filters put it in their own schemas (SDK 1.6) */
const struct herald_message herald_header_matcher_schema = {
    "envoy.config.route.v3.HeaderMatcher", header_matcher_fields, NULL,
};
#define header_matcher_msg herald_header_matcher_schema

static const struct herald_field query_matcher_fields[] = {
    F_("name", STRING, HERALD_F_REQUIRED),
    MSG("string_match", string_matcher_msg, .oneof = "query_parameter_match_specifier"),
    BOOL("present_match", .oneof = "query_parameter_match_specifier"),
    REMOVED("value", "v2 field: use string_match: {exact: ...}"),
    REMOVED("regex", "v2 field: use string_match: {safe_regex: {regex: ...}}"),
    END,
};
static const struct herald_message query_matcher_msg = {
    "envoy.config.route.v3.QueryParameterMatcher", query_matcher_fields, NULL,
};

static const char *const denominator_values[] = { "HUNDRED", "TEN_THOUSAND", "MILLION", NULL };
static const struct herald_field fractional_percent_fields[] = {
    UINT("numerator"),
    ENUM("denominator", denominator_values, .help = "default HUNDRED"),
    END,
};
static const struct herald_message fractional_percent_msg = {
    "envoy.type.v3.FractionalPercent", fractional_percent_fields, NULL,
};
static const struct herald_field runtime_fraction_fields[] = {
    F_("default_value", MESSAGE, HERALD_F_REQUIRED, .message = &fractional_percent_msg),
    STR("runtime_key", .help = "an integer value: a percentage; a FractionalPercent: replaces default_value"),
    END,
};
static const struct herald_message runtime_fraction_msg = {
    "envoy.config.core.v3.RuntimeFractionalPercent", runtime_fraction_fields, NULL,
};

static int mirror_policy_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "cluster") && !herald_cfg_get(n, "cluster_header"))
        return herald_cfg_errorf(n, err, "a mirror policy needs cluster or cluster_header");
    return 0;
}

static const struct herald_field mirror_policy_fields[] = {
    STR("cluster", .oneof = "cluster_specifier", .help = "where the copies go"),
    STR("cluster_header", .oneof = "cluster_specifier", .help = "a request header naming the cluster"),
    MSG("runtime_fraction", runtime_fraction_msg, .help = "the share of requests mirrored; default all"),
    BOOL("trace_sampled", .help = "accepted (herald does not trace)"),
    BOOL("disable_shadow_host_suffix_append", .help = "default false: the copy's host gets -shadow"),
    END,
};
static const struct herald_message mirror_policy_msg = {
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy", mirror_policy_fields, mirror_policy_check,
};

static int route_match_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "prefix") && !herald_cfg_get(n, "path") && !herald_cfg_get(n, "safe_regex") &&
        !herald_cfg_get(n, "path_separated_prefix") && !herald_cfg_get(n, "connect_matcher"))
        return herald_cfg_errorf(n, err, "a route match needs one of prefix, path, safe_regex, "
                                 "path_separated_prefix or connect_matcher (prefix: \"/\" matches every "
                                 "request but CONNECT)");
    const struct herald_cfg *psp = herald_cfg_get(n, "path_separated_prefix");
    if (psp) {
        const char *p = herald_cfg_str(psp, "");
        size_t len = strlen(p);
        if (len == 0 || p[0] != '/' || strpbrk(p, "?#") || (len > 1 && p[len - 1] == '/') || len == 1)
            return herald_cfg_errorf(psp, err, "path_separated_prefix must start with '/', not end with '/' "
                                     "and hold no '?' or '#' (got '%s')", p);
    }
    return 0;
}

/* envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions: empty */
static const struct herald_field grpc_match_fields[] = {
    END,
};
static const struct herald_message grpc_match_msg = {
    "envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions", grpc_match_fields, NULL,
};

/* envoy.config.route.v3.RouteMatch.ConnectMatcher: empty */
static const struct herald_message connect_match_msg = {
    "envoy.config.route.v3.RouteMatch.ConnectMatcher", grpc_match_fields, NULL,
};

static const struct herald_field route_match_fields[] = {
    STR("prefix", .oneof = "path_specifier", .help = "the path starts with it"),
    STR("path", .oneof = "path_specifier", .help = "the path (without query) is exactly it"),
    MSG("safe_regex", regex_matcher_msg, .oneof = "path_specifier",
        .help = "matches the whole path without the query string"),
    F_("connect_matcher", MESSAGE, 0, .message = &connect_match_msg, .oneof = "path_specifier",
       .help = "{}: only CONNECT requests (which have no path)"),
    STR("path_separated_prefix", .oneof = "path_specifier",
        .help = "the path is it, or starts with it followed by '/'"),
    UNSUP("path_match_policy", .oneof = "path_specifier"),
    BOOL("case_sensitive", .help = "default true; for prefix, path and path_separated_prefix"),
    MSG("runtime_fraction", runtime_fraction_msg, .help = "match only this fraction of requests"),
    LIST("headers", header_matcher_msg),
    LIST("query_parameters", query_matcher_msg),
    F_("grpc", MESSAGE, 0, .message = &grpc_match_msg,
       .help = "{}: only gRPC requests (content-type application/grpc or application/grpc+codec)"),
    UNSUP("tls_context"),
    UNSUP("dynamic_metadata"),
    UNSUP("filter_state"),
    UNSUP("cookies"),
    REMOVED("regex", "v2 field: use safe_regex: {regex: ...}"),
    END,
};
static const struct herald_message route_match_msg = {
    "envoy.config.route.v3.RouteMatch", route_match_fields, route_match_check,
};

/* ------------------------------------------------------------ RouteAction */

static int cluster_weight_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "name"))
        return herald_cfg_errorf(n, err, "missing required field 'name'");
    return 0;
}

static const struct herald_field cluster_weight_fields[] = {
    STR("name", .oneof = "cluster_specifier"),
    UNSUP("cluster_header", .oneof = "cluster_specifier"),
    UINT("weight", .help = "relative to the other clusters' weights"),
    MSG("metadata_match", metadata_match_msg, .help = "merged over the route's metadata_match, its keys winning"),
    LIST("request_headers_to_add", header_value_option_msg),
    STRS("request_headers_to_remove"),
    LIST("response_headers_to_add", header_value_option_msg),
    STRS("response_headers_to_remove"),
    UNSUP("typed_per_filter_config"),
    STR("host_rewrite_literal", .oneof = "host_rewrite_specifier"),
    REMOVED("per_filter_config", "v2 field: use typed_per_filter_config"),
    END,
};
static const struct herald_message cluster_weight_msg = {
    "envoy.config.route.v3.WeightedCluster.ClusterWeight", cluster_weight_fields, cluster_weight_check,
};

static int weighted_cluster_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *cl = herald_cfg_get(n, "clusters");
    uint64_t sum = 0;
    for (size_t i = 0; i < herald_cfg_len(cl); i++)
        sum += (uint64_t)herald_cfg_int(herald_cfg_get(herald_cfg_at(cl, i), "weight"), 0);
    if (sum == 0)
        return herald_cfg_errorf(cl ? cl : n, err, "the sum of the cluster weights must be greater than 0");
    if (sum > UINT32_MAX)
        return herald_cfg_errorf(cl, err, "the sum of the cluster weights (%llu) is over 4294967295",
                                 (unsigned long long)sum);
    const struct herald_cfg *tw = herald_cfg_get(n, "total_weight");
    if (tw && (uint64_t)herald_cfg_int(tw, 0) != sum)
        return herald_cfg_errorf(tw, err, "total_weight %lld is not the sum of the cluster weights (%llu)",
                                 (long long)herald_cfg_int(tw, 0), (unsigned long long)sum);
    return 0;
}

static const struct herald_field weighted_cluster_fields[] = {
    F_("clusters", MESSAGE, HERALD_F_REPEATED | HERALD_F_REQUIRED, .message = &cluster_weight_msg),
    F_("total_weight", UINT, HERALD_F_DEPRECATED, .hint = "the weights are relative; remove it"),
    STR("runtime_key_prefix", .help = "each weight is read from the runtime key <prefix>.<cluster name>"),
    UNSUP("header_name", .oneof = "random_value_specifier"),
    UNSUP("use_hash_policy", .oneof = "random_value_specifier"),
    END,
};
static const struct herald_message weighted_cluster_msg = {
    "envoy.config.route.v3.WeightedCluster", weighted_cluster_fields, weighted_cluster_check,
};

static int back_off_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *base = herald_cfg_get(n, "base_interval");
    const struct herald_cfg *max = herald_cfg_get(n, "max_interval");
    if (!base)
        return herald_cfg_errorf(n, err, "missing required field 'base_interval'");
    uint64_t b = herald_cfg_duration_ms(base, 0);
    if (b == 0)
        return herald_cfg_errorf(base, err, "base_interval must be greater than 0");
    if (max && herald_cfg_duration_ms(max, 0) < b)
        return herald_cfg_errorf(max, err, "max_interval must be at least base_interval");
    return 0;
}

static const struct herald_field back_off_fields[] = {
    DUR("base_interval", .help = "default 25ms; the n-th retry waits up to base * (2^n - 1), jittered"),
    DUR("max_interval", .help = "default 10 times base_interval"),
    END,
};
static const struct herald_message back_off_msg = {
    "envoy.config.route.v3.RetryPolicy.RetryBackOff", back_off_fields, back_off_check,
};

/* retry_on conditions herald implements, with their SDK bits */
static const struct { const char *name; unsigned bit; } retry_conds[] = {
    { "5xx", HERALD_RETRY_5XX },
    { "gateway-error", HERALD_RETRY_GATEWAY_ERROR },
    { "connect-failure", HERALD_RETRY_CONNECT_FAILURE },
    { "reset", HERALD_RETRY_RESET },
    { "retriable-status-codes", HERALD_RETRY_RETRIABLE_CODES },
    { "retriable-4xx", HERALD_RETRY_RETRIABLE_4XX },
    { "refused-stream", HERALD_RETRY_REFUSED_STREAM },
};
static const char *const retry_unsupported[] = {
    "reset-before-request", "envoy-ratelimited", "retriable-headers", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
};

int route_parse_retry_on(const struct herald_cfg *n, unsigned *bits, char **err)
{
    const char *s = herald_cfg_str(n, "");
    *bits = 0;
    while (*s) {
        size_t len = strcspn(s, ",");
        const char *tok = s;
        size_t tl = len;
        while (tl && (*tok == ' ' || *tok == '\t'))
            tok++, tl--;
        while (tl && (tok[tl - 1] == ' ' || tok[tl - 1] == '\t'))
            tl--;
        if (tl) {
            bool found = false;
            for (size_t i = 0; i < ARRAY_SIZE(retry_conds) && !found; i++)
                if (strlen(retry_conds[i].name) == tl && strncmp(retry_conds[i].name, tok, tl) == 0) {
                    *bits |= retry_conds[i].bit;
                    found = true;
                }
            for (size_t i = 0; i < ARRAY_SIZE(retry_unsupported) && !found; i++)
                if (strlen(retry_unsupported[i]) == tl && strncmp(retry_unsupported[i], tok, tl) == 0)
                    return herald_cfg_errorf(n, err, "not supported: retry_on condition '%.*s' (herald "
                                             "implements 5xx, gateway-error, connect-failure, reset, "
                                             "retriable-status-codes, retriable-4xx, refused-stream)",
                                             (int)tl, tok);
            if (!found)
                return herald_cfg_errorf(n, err, "unknown retry_on condition '%.*s' (expected a comma list "
                                         "of 5xx, gateway-error, connect-failure, reset, "
                                         "retriable-status-codes, retriable-4xx, refused-stream)",
                                         (int)tl, tok);
        }
        s += len;
        if (*s == ',')
            s++;
    }
    return 0;
}

static int retry_policy_check(const struct herald_cfg *n, char **err)
{
    unsigned bits;
    if (route_parse_retry_on(herald_cfg_get(n, "retry_on"), &bits, err) < 0)
        return -1;
    const struct herald_cfg *codes = herald_cfg_get(n, "retriable_status_codes");
    for (size_t i = 0; i < herald_cfg_len(codes); i++) {
        int64_t c = herald_cfg_int(herald_cfg_at(codes, i), 0);
        if (c < 100 || c > 599)
            return herald_cfg_errorf(herald_cfg_at(codes, i), err, "%lld is not an HTTP status code",
                                     (long long)c);
    }
    return 0;
}

/* retry_host_predicate entries: Envoy finds the extension by typed_config's
 * @type, else by name; herald has one of them. */
#define PREVIOUS_HOSTS_NAME "envoy.retry_host_predicates.previous_hosts"
#define PREVIOUS_HOSTS_TYPE "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"

static int retry_host_predicate_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *tc = herald_cfg_get(n, "typed_config");
    const struct herald_cfg *t = herald_cfg_get(tc, "@type");
    const char *type = herald_cfg_str(t, NULL);
    if (type) {
        const char *slash = strrchr(type, '/');
        if (strcmp(slash ? slash + 1 : type, PREVIOUS_HOSTS_TYPE) != 0)
            return herald_cfg_errorf(t, err, "not supported: retry host predicate '%s' (herald has "
                                     "type.googleapis.com/" PREVIOUS_HOSTS_TYPE ")", type);
        for (size_t i = 0; i < herald_cfg_len(tc); i++)
            if (strcmp(herald_cfg_key_at(tc, i), "@type") != 0)
                return herald_cfg_errorf(herald_cfg_at(tc, i), err, "unknown field '%s' in "
                                         PREVIOUS_HOSTS_TYPE, herald_cfg_key_at(tc, i));
        return 0;
    }
    const struct herald_cfg *nm = herald_cfg_get(n, "name");
    const char *name = herald_cfg_str(nm, "");
    if (strcmp(name, PREVIOUS_HOSTS_NAME) != 0)
        return herald_cfg_errorf(nm ? nm : n, err, "not supported: retry host predicate '%s' (herald has "
                                 PREVIOUS_HOSTS_NAME ")", name);
    return 0;
}

static const struct herald_field retry_host_predicate_fields[] = {
    STR("name"),
    F_("typed_config", ANY, 0),
    END,
};
static const struct herald_message retry_host_predicate_msg = {
    "envoy.config.core.v3.TypedExtensionConfig", retry_host_predicate_fields, retry_host_predicate_check,
};

static const struct herald_field retry_policy_fields[] = {
    STR("retry_on", .help = "comma list: 5xx, gateway-error, connect-failure, reset, retriable-status-codes, "
        "retriable-4xx, refused-stream"),
    UINT("num_retries", .help = "default 1"),
    DUR("per_try_timeout", .help = "default: the route's timeout"),
    UNSUP("per_try_idle_timeout"),
    UNSUP("retry_priority"),
    F_("retry_host_predicate", MESSAGE, HERALD_F_REPEATED, .message = &retry_host_predicate_msg,
       .help = "envoy.retry_host_predicates.previous_hosts: retries avoid the hosts already tried"),
    UNSUP("retry_options_predicates"),
    UINT("host_selection_retry_max_attempts",
         .help = "how many times a retry re-picks a host the predicate refused; default 1"),
    F_("retriable_status_codes", UINT, HERALD_F_REPEATED),
    MSG("retry_back_off", back_off_msg),
    UNSUP("rate_limited_retry_back_off"),
    UNSUP("retriable_headers"),
    UNSUP("retriable_request_headers"),
    END,
};
static const struct herald_message retry_policy_msg = {
    "envoy.config.route.v3.RetryPolicy", retry_policy_fields, retry_policy_check,
};

/* RouteAction.UpgradeConfig.ConnectConfig: this proxy ends the CONNECT */
static const struct herald_field connect_config_fields[] = {
    UNSUP("proxy_protocol_config"),
    UNSUP("allow_post"),
    END,
};
static const struct herald_message connect_config_msg = {
    "envoy.config.route.v3.RouteAction.UpgradeConfig.ConnectConfig", connect_config_fields, NULL,
};

static int upgrade_config_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *cc = herald_cfg_get(n, "connect_config");
    if (cc && strcasecmp(herald_cfg_str(herald_cfg_get(n, "upgrade_type"), ""), "CONNECT") != 0)
        return herald_cfg_errorf(cc, err, "connect_config is only for upgrade_type CONNECT");
    return 0;
}

static const struct herald_field upgrade_config_fields[] = {
    F_("upgrade_type", STRING, HERALD_F_REQUIRED, .help = "e.g. websocket (case-insensitive)"),
    BOOL("enabled", .help = "default true; overrides the connection manager's setting for this route"),
    MSG("connect_config", connect_config_msg,
        .help = "CONNECT only: herald ends the CONNECT and carries its bytes over TCP to a host of the cluster"),
    END,
};
static const struct herald_message upgrade_config_msg = {
    "envoy.config.route.v3.RouteAction.UpgradeConfig", upgrade_config_fields, upgrade_config_check,
};

/* RouteAction.HashPolicy (evaluated by herald_route_hash in route.c). */
static const struct herald_field hash_header_fields[] = {
    F_("header_name", STRING, HERALD_F_REQUIRED, .help = "its value(s) are hashed (absent: no hash)"),
    MSG("regex_rewrite", regex_subst_msg, .help = "rewrites each value before hashing"),
    END,
};
static const struct herald_message hash_header_msg = {
    "envoy.config.route.v3.RouteAction.HashPolicy.Header", hash_header_fields, NULL,
};

static const struct herald_field hash_cookie_fields[] = {
    F_("name", STRING, HERALD_F_REQUIRED, .help = "the cookie whose value is hashed"),
    DUR("ttl", .help = "when set and the cookie is absent, one is generated and set on the response"),
    STR("path", .help = "Path of a generated cookie"),
    UNSUP("attributes"),
    END,
};
static const struct herald_message hash_cookie_msg = {
    "envoy.config.route.v3.RouteAction.HashPolicy.Cookie", hash_cookie_fields, NULL,
};

static const struct herald_field hash_conn_fields[] = {
    BOOL("source_ip", .help = "hash the client's IP address"),
    END,
};
static const struct herald_message hash_conn_msg = {
    "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties", hash_conn_fields, NULL,
};

static const struct herald_field hash_query_fields[] = {
    F_("name", STRING, HERALD_F_REQUIRED, .help = "the query parameter whose (first) value is hashed"),
    END,
};
static const struct herald_message hash_query_msg = {
    "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter", hash_query_fields, NULL,
};

static int hash_policy_check(const struct herald_cfg *n, char **err)
{
    static const char *const kinds[] = { "header", "cookie", "connection_properties", "query_parameter",
                                         "filter_state" };
    for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
        if (herald_cfg_get(n, kinds[i]))
            return 0;
    return herald_cfg_errorf(n, err, "a hash policy needs one of header, cookie, connection_properties or "
                             "query_parameter");
}

static const struct herald_field hash_policy_fields[] = {
    MSG("header", hash_header_msg, .oneof = "policy_specifier"),
    MSG("cookie", hash_cookie_msg, .oneof = "policy_specifier"),
    MSG("connection_properties", hash_conn_msg, .oneof = "policy_specifier"),
    MSG("query_parameter", hash_query_msg, .oneof = "policy_specifier"),
    UNSUP("filter_state", .oneof = "policy_specifier", .hint = "herald has no filter state to hash"),
    BOOL("terminal", .help = "once this policy produced a hash, the later ones are skipped"),
    END,
};
static const struct herald_message hash_policy_msg = {
    "envoy.config.route.v3.RouteAction.HashPolicy", hash_policy_fields, hash_policy_check,
};

static const char *const route_priority_values[] = { "DEFAULT", "HIGH", NULL };
static const char *const cluster_not_found_values[] = {
    "SERVICE_UNAVAILABLE", "NOT_FOUND", "INTERNAL_SERVER_ERROR", NULL,
};

static int route_action_check(const struct herald_cfg *n, char **err)
{
    if (herald_cfg_get(n, "prefix_rewrite") && herald_cfg_get(n, "regex_rewrite"))
        return herald_cfg_errorf(herald_cfg_get(n, "regex_rewrite"), err,
                                 "prefix_rewrite and regex_rewrite are both set: give only one");
    if (!herald_cfg_get(n, "cluster") && !herald_cfg_get(n, "cluster_header") &&
        !herald_cfg_get(n, "weighted_clusters"))
        return herald_cfg_errorf(n, err, "a route action needs one of cluster, cluster_header or "
                                 "weighted_clusters");
    const struct herald_cfg *ch = herald_cfg_get(n, "cluster_header");
    if (ch && !*herald_cfg_str(ch, ""))
        return herald_cfg_errorf(ch, err, "cluster_header is empty");
    return 0;
}

static const struct herald_field route_action_fields[] = {
    STR("cluster", .oneof = "cluster_specifier", .help = "the upstream cluster"),
    STR("cluster_header", .oneof = "cluster_specifier", .help = "the request header naming the cluster"),
    MSG("weighted_clusters", weighted_cluster_msg, .oneof = "cluster_specifier"),
    UNSUP("cluster_specifier_plugin", .oneof = "cluster_specifier"),
    UNSUP("inline_cluster_specifier_plugin", .oneof = "cluster_specifier"),
    ENUM("cluster_not_found_response_code", cluster_not_found_values,
         .help = "SERVICE_UNAVAILABLE (503, default), NOT_FOUND, INTERNAL_SERVER_ERROR"),
    MSG("metadata_match", metadata_match_msg, .help = "filter_metadata envoy.lb: the subset of a cluster with "
        "lb_subset_config to use"),
    STR("prefix_rewrite", .help = "replaces the matched prefix (or path) of :path"),
    MSG("regex_rewrite", regex_subst_msg, .help = "rewrites the path (without query) by regex"),
    UNSUP("path_rewrite_policy"),
    UNSUP("path_rewrite"),
    STR("host_rewrite_literal", .oneof = "host_rewrite_specifier"),
    BOOL("auto_host_rewrite", .oneof = "host_rewrite_specifier",
         .help = "Host becomes the upstream host's hostname"),
    STR("host_rewrite_header", .oneof = "host_rewrite_specifier"),
    UNSUP("host_rewrite_path_regex", .oneof = "host_rewrite_specifier"),
    UNSUP("host_rewrite", .oneof = "host_rewrite_specifier", .hint = "use host_rewrite_literal"),
    BOOL("append_x_forwarded_host", .help = "keep the original Host in x-forwarded-host on a host rewrite"),
    DUR("timeout", .help = "default 15s; 0s disables it"),
    DUR("idle_timeout", .help = "overrides the connection manager's stream_idle_timeout"),
    UNSUP("early_data_policy"),
    MSG("retry_policy", retry_policy_msg),
    UNSUP("retry_policy_typed_config"),
    LIST("request_mirror_policies", mirror_policy_msg,
         .help = "a copy of each request to another cluster, its answer thrown away"),
    ENUM("priority", route_priority_values,
         .help = "DEFAULT or HIGH: which circuit_breakers thresholds apply"),
    LIST("rate_limits", herald_rate_limit_schema,
         .help = "descriptors for the rate limit filters (local_ratelimit) made from each request"),
    BOOL("include_vh_rate_limits", .help = "the virtual host's rate_limits apply too (default: only when "
         "the route has none)"),
    LIST("hash_policy", hash_policy_msg, .help = "what RING_HASH and MAGLEV clusters hash: header, cookie, "
         "connection_properties, query_parameter"),
    UNSUP("cors"),
    UNSUP("max_grpc_timeout"),
    UNSUP("grpc_timeout_offset"),
    LIST("upgrade_configs", upgrade_config_msg),
    UNSUP("internal_redirect_policy"),
    UNSUP("internal_redirect_action"),
    UNSUP("max_internal_redirects"),
    UNSUP("hedge_policy"),
    UNSUP("max_stream_duration"),
    REMOVED("request_mirror_policy", "v2 field: use request_mirror_policies"),
    END,
};
static const struct herald_message route_action_msg = {
    "envoy.config.route.v3.RouteAction", route_action_fields, route_action_check,
};

/* ------------------------------------------------------------ redirect, direct response */

static const char *const redirect_code_values[] = {
    "MOVED_PERMANENTLY", "FOUND", "SEE_OTHER", "TEMPORARY_REDIRECT", "PERMANENT_REDIRECT", NULL,
};

static int redirect_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *port = herald_cfg_get(n, "port_redirect");
    if (port && herald_cfg_int(port, 0) > 65535)
        return herald_cfg_errorf(port, err, "port %lld is out of range (0-65535)",
                                 (long long)herald_cfg_int(port, 0));
    const struct herald_cfg *path = herald_cfg_get(n, "path_redirect");
    if (path && herald_cfg_str(path, "")[0] != '/')
        return herald_cfg_errorf(path, err, "path_redirect must start with '/'");
    return 0;
}

static const struct herald_field redirect_fields[] = {
    BOOL("https_redirect", .oneof = "scheme_rewrite_specifier"),
    STR("scheme_redirect", .oneof = "scheme_rewrite_specifier"),
    STR("host_redirect"),
    UINT("port_redirect"),
    STR("path_redirect", .oneof = "path_rewrite_specifier"),
    STR("prefix_rewrite", .oneof = "path_rewrite_specifier"),
    MSG("regex_rewrite", regex_subst_msg, .oneof = "path_rewrite_specifier"),
    ENUM("response_code", redirect_code_values,
         .help = "MOVED_PERMANENTLY (301, default), FOUND (302), SEE_OTHER (303), TEMPORARY_REDIRECT (307), "
                 "PERMANENT_REDIRECT (308)"),
    BOOL("strip_query"),
    END,
};
static const struct herald_message redirect_msg = {
    "envoy.config.route.v3.RedirectAction", redirect_fields, redirect_check,
};

static int direct_response_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *st = herald_cfg_get(n, "status");
    int64_t s = herald_cfg_int(st, 0);
    if (s < 200 || s > 599)
        return herald_cfg_errorf(st, err, "status %lld is out of range (200-599)", (long long)s);
    return 0;
}

static const struct herald_field direct_response_fields[] = {
    F_("status", UINT, HERALD_F_REQUIRED, .help = "200-599"),
    MSG("body", schema_data_source),
    UNSUP("body_format"),
    END,
};
static const struct herald_message direct_response_msg = {
    "envoy.config.route.v3.DirectResponseAction", direct_response_fields, direct_response_check,
};

/* ------------------------------------------------------------ Route, VirtualHost, RouteConfiguration */

static int route_check(const struct herald_cfg *n, char **err)
{
    if (!herald_cfg_get(n, "route") && !herald_cfg_get(n, "redirect") &&
        !herald_cfg_get(n, "direct_response"))
        return herald_cfg_errorf(n, err, "a route needs an action: route, redirect or direct_response");
    return 0;
}

static const struct herald_field route_fields[] = {
    STR("name"),
    F_("match", MESSAGE, HERALD_F_REQUIRED, .message = &route_match_msg),
    MSG("route", route_action_msg, .oneof = "action"),
    MSG("redirect", redirect_msg, .oneof = "action"),
    MSG("direct_response", direct_response_msg, .oneof = "action"),
    UNSUP("filter_action", .oneof = "action"),
    UNSUP("non_forwarding_action", .oneof = "action"),
    STRUCT("metadata"),
    UNSUP("decorator"),
    F_("typed_per_filter_config", MAP, 0, .help = "by http_filters[].name: that filter's config here "
       "(the route's beats the virtual host's, which beats the route configuration's)"),
    LIST("request_headers_to_add", header_value_option_msg),
    STRS("request_headers_to_remove"),
    LIST("response_headers_to_add", header_value_option_msg),
    STRS("response_headers_to_remove"),
    UNSUP("tracing"),
    UNSUP("per_request_buffer_limit_bytes"),
    UNSUP("stat_prefix"),
    REMOVED("per_filter_config", "v2 field: use typed_per_filter_config"),
    END,
};
static const struct herald_message route_msg = { "envoy.config.route.v3.Route", route_fields, route_check };

static const struct herald_field virtual_cluster_fields[] = {
    F_("name", STRING, HERALD_F_REQUIRED,
       .help = "stats under vhost.<virtual host>.vcluster.<name>. and %VIRTUAL_CLUSTER_NAME%"),
    F_("headers", MESSAGE, HERALD_F_REPEATED | HERALD_F_REQUIRED, .message = &header_matcher_msg,
       .help = "a request belongs to the first virtual cluster whose headers all match (:path, :method...)"),
    REMOVED("pattern", "v2 field: use headers: [{name: \":path\", string_match: {safe_regex: ...}}]"),
    REMOVED("method", "v2 field: use headers: [{name: \":method\", string_match: {exact: ...}}]"),
    END,
};
static const struct herald_message virtual_cluster_msg = {
    "envoy.config.route.v3.VirtualCluster", virtual_cluster_fields, NULL,
};

static const struct herald_field virtual_host_fields[] = {
    F_("name", STRING, HERALD_F_REQUIRED),
    F_("domains", STRING, HERALD_F_REPEATED | HERALD_F_REQUIRED,
       .help = "host names: exact, *.suffix, prefix.* or *"),
    LIST("routes", route_msg),
    UNSUP("matcher", .hint = "use routes"),
    UNSUP("require_tls"),
    LIST("virtual_clusters", virtual_cluster_msg,
         .help = "request classes with their own stats; the requests no class matches are in \"other\""),
    LIST("rate_limits", herald_rate_limit_schema,
         .help = "descriptors for the rate limit filters, for routes without their own (see RouteAction)"),
    LIST("request_headers_to_add", header_value_option_msg),
    STRS("request_headers_to_remove"),
    LIST("response_headers_to_add", header_value_option_msg),
    STRS("response_headers_to_remove"),
    UNSUP("cors"),
    F_("typed_per_filter_config", MAP, 0, .help = "by http_filters[].name: that filter's config here "
       "(the route's beats the virtual host's, which beats the route configuration's)"),
    UNSUP("include_request_attempt_count"),
    UNSUP("include_attempt_count_in_response"),
    MSG("retry_policy", retry_policy_msg, .help = "for the routes that have none"),
    UNSUP("retry_policy_typed_config"),
    UNSUP("hedge_policy"),
    UNSUP("include_is_timeout_retry_header"),
    UNSUP("per_request_buffer_limit_bytes"),
    LIST("request_mirror_policies", mirror_policy_msg,
         .help = "for every route below that has none of its own (the most specific list wins whole)"),
    STRUCT("metadata"),
    REMOVED("per_filter_config", "v2 field: use typed_per_filter_config"),
    END,
};
static const struct herald_message virtual_host_msg = {
    "envoy.config.route.v3.VirtualHost", virtual_host_fields, NULL,
};

static const struct herald_field route_configuration_fields[] = {
    STR("name"),
    LIST("virtual_hosts", virtual_host_msg),
    UNSUP("vhds"),
    UNSUP("internal_only_headers"),
    LIST("response_headers_to_add", header_value_option_msg),
    STRS("response_headers_to_remove"),
    LIST("request_headers_to_add", header_value_option_msg),
    STRS("request_headers_to_remove"),
    BOOL("most_specific_header_mutations_wins",
         .help = "apply the route's header mutations last (default: the route config's last)"),
    BOOL("validate_clusters", .help = "check that the route clusters exist at load"),
    UINT("max_direct_response_body_size_bytes", .help = "default 4096"),
    UNSUP("cluster_specifier_plugins"),
    LIST("request_mirror_policies", mirror_policy_msg,
         .help = "for every route below that has none of its own (the most specific list wins whole)"),
    BOOL("ignore_port_in_host_matching", .help = "match domains against the host without its port"),
    UNSUP("ignore_path_parameters_in_path_matching"),
    F_("typed_per_filter_config", MAP, 0, .help = "by http_filters[].name: that filter's config here "
       "(the route's beats the virtual host's, which beats the route configuration's)"),
    STRUCT("metadata"),
    END,
};

const struct herald_message schema_route_configuration = {
    "envoy.config.route.v3.RouteConfiguration", route_configuration_fields, NULL,
};
