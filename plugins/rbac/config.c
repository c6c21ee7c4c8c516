/* rbac: the schemas of envoy.extensions.filters.{http,network}.rbac.v3.RBAC
 * (with envoy.config.rbac.v3.RBAC under them) and the config tree -> engine
 * step both filters share. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/herald.h"
#include "matcher.h"

/* ---------------------------------------------------------------- schema
 * Permission and Principal nest through Set/not_*, so the tables refer to
 * each other before they are defined. */
static const struct herald_message permission_msg, principal_msg, perm_set_msg, id_set_msg;

static const struct herald_field regex_fields[] = {
    {.name = "google_re2", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_DEPRECATED,
     .help = "ignored (regexes are PCRE2 here, matched in full as RE2 does)"},
    {.name = "regex", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "the regular expression; it must match the whole value"},
    {NULL},
};
static const struct herald_message regex_msg = {
    .name = "envoy.type.matcher.v3.RegexMatcher", .fields = regex_fields};

const struct herald_field rbac_string_matcher_fields[] = {
    {.name = "exact", .kind = HERALD_FIELD_STRING, .oneof = "match_pattern", .help = "the whole value"},
    {.name = "prefix", .kind = HERALD_FIELD_STRING, .oneof = "match_pattern",
     .help = "the value starts with it"},
    {.name = "suffix", .kind = HERALD_FIELD_STRING, .oneof = "match_pattern",
     .help = "the value ends with it"},
    {.name = "contains", .kind = HERALD_FIELD_STRING, .oneof = "match_pattern",
     .help = "the value contains it"},
    {.name = "safe_regex", .kind = HERALD_FIELD_MESSAGE, .oneof = "match_pattern", .message = &regex_msg,
     .help = "a regular expression matching the whole value"},
    {.name = "custom", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = "match_pattern",
     .help = "extension matchers"},
    {.name = "ignore_case", .kind = HERALD_FIELD_BOOL, .help = "compare without regard to case"},
    {NULL},
};
static const struct herald_message string_matcher_msg = {
    .name = "envoy.type.matcher.v3.StringMatcher", .fields = rbac_string_matcher_fields};

static const struct herald_field int64_range_fields[] = {
    {.name = "start", .kind = HERALD_FIELD_INT, .help = "inclusive"},
    {.name = "end", .kind = HERALD_FIELD_INT, .help = "exclusive"},
    {NULL},
};
static const struct herald_message int64_range_msg = {.name = "envoy.type.v3.Int64Range",
                                                      .fields = int64_range_fields};
static const struct herald_message int32_range_msg = {.name = "envoy.type.v3.Int32Range",
                                                      .fields = int64_range_fields};

#define HM "header_match_specifier"
static const struct herald_field header_matcher_fields[] = {
    {.name = "name", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "the header (case-insensitive; :path, :authority, :method work too)"},
    {.name = "string_match", .kind = HERALD_FIELD_MESSAGE, .oneof = HM, .message = &string_matcher_msg,
     .help = "the value matches (several values are joined with \",\")"},
    {.name = "present_match", .kind = HERALD_FIELD_BOOL, .oneof = HM, .help = "the header is there (or not)"},
    {.name = "range_match", .kind = HERALD_FIELD_MESSAGE, .oneof = HM, .message = &int64_range_msg,
     .help = "the value is an integer in [start, end)"},
    {.name = "exact_match", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_DEPRECATED, .oneof = HM,
     .hint = "use string_match: {exact: ...}"},
    {.name = "prefix_match", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_DEPRECATED, .oneof = HM,
     .hint = "use string_match: {prefix: ...}"},
    {.name = "suffix_match", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_DEPRECATED, .oneof = HM,
     .hint = "use string_match: {suffix: ...}"},
    {.name = "contains_match", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_DEPRECATED, .oneof = HM,
     .hint = "use string_match: {contains: ...}"},
    {.name = "safe_regex_match", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_DEPRECATED, .oneof = HM,
     .message = &regex_msg, .hint = "use string_match: {safe_regex: {regex: ...}}"},
    {.name = "invert_match", .kind = HERALD_FIELD_BOOL, .help = "negate the result (a missing header stays "
                                                               "unmatched, except for present_match)"},
    {.name = "treat_missing_header_as_empty", .kind = HERALD_FIELD_BOOL,
     .help = "match a missing header as the empty string"},
    {NULL},
};
#undef HM
static const struct herald_message header_matcher_msg = {
    .name = "envoy.config.route.v3.HeaderMatcher", .fields = header_matcher_fields};

static const struct herald_field path_matcher_fields[] = {
    {.name = "path", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &string_matcher_msg,
     .help = "matched against :path without its query string"},
    {NULL},
};
static const struct herald_message path_matcher_msg = {
    .name = "envoy.type.matcher.v3.PathMatcher", .fields = path_matcher_fields};

static const struct herald_field cidr_fields[] = {
    {.name = "address_prefix", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "an IPv4 or IPv6 address"},
    {.name = "prefix_len", .kind = HERALD_FIELD_UINT,
     .help = "bits of the prefix (default: the whole address)"},
    {NULL},
};
const struct herald_message rbac_cidr_msg = {.name = "envoy.config.core.v3.CidrRange",
                                               .fields = cidr_fields};

/* envoy.type.matcher.v3.MetadataMatcher, as far as string metadata goes */
static const struct herald_field md_segment_fields[] = {
    {.name = "key", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "a key of the struct"},
    {NULL},
};
static const struct herald_message md_segment_msg = {
    .name = "envoy.type.matcher.v3.MetadataMatcher.PathSegment", .fields = md_segment_fields};

static const struct herald_message value_matcher_msg;

static const struct herald_field list_matcher_fields[] = {
    {.name = "one_of", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &value_matcher_msg,
     .help = "some element of the list (a comma-separated string value) matches"},
    {NULL},
};
static const struct herald_message list_matcher_msg = {
    .name = "envoy.type.matcher.v3.ListMatcher", .fields = list_matcher_fields};

#define VM "match_pattern"
static const struct herald_field value_matcher_fields[] = {
    {.name = "string_match", .kind = HERALD_FIELD_MESSAGE, .oneof = VM, .message = &string_matcher_msg,
     .help = "the string value matches"},
    {.name = "list_match", .kind = HERALD_FIELD_MESSAGE, .oneof = VM, .message = &list_matcher_msg,
     .help = "an element of the list matches (lists are comma-separated strings here)"},
    {.name = "present_match", .kind = HERALD_FIELD_BOOL, .oneof = VM, .help = "the key is set (non-empty)"},
    {.name = "null_match", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = VM,
     .help = "metadata values are strings"},
    {.name = "double_match", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = VM,
     .help = "metadata values are strings"},
    {.name = "bool_match", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = VM,
     .help = "metadata values are strings"},
    {.name = "or_match", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = VM,
     .help = "alternatives"},
    {NULL},
};
#undef VM
static const struct herald_message value_matcher_msg = {
    .name = "envoy.type.matcher.v3.ValueMatcher", .fields = value_matcher_fields};

static const struct herald_field metadata_matcher_fields[] = {
    {.name = "filter", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "the metadata namespace, e.g. envoy.filters.network.mysql_proxy"},
    {.name = "path", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &md_segment_msg, .help = "exactly one key (values are strings)"},
    {.name = "value", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &value_matcher_msg,
     .help = "how the value must match"},
    {.name = "invert", .kind = HERALD_FIELD_BOOL, .help = "negate the result"},
    {NULL},
};
static const struct herald_message metadata_matcher_msg = {
    .name = "envoy.type.matcher.v3.MetadataMatcher", .fields = metadata_matcher_fields};

static const struct herald_field perm_set_fields[] = {
    {.name = "rules", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &permission_msg, .help = "the permissions"},
    {NULL},
};
static const struct herald_message perm_set_msg = {
    .name = "envoy.config.rbac.v3.Permission.Set", .fields = perm_set_fields};

#define R "rule"
static const struct herald_field permission_fields[] = {
    {.name = "any", .kind = HERALD_FIELD_BOOL, .oneof = R, .help = "every action (must be true)"},
    {.name = "and_rules", .kind = HERALD_FIELD_MESSAGE, .oneof = R, .message = &perm_set_msg,
     .help = "all of these"},
    {.name = "or_rules", .kind = HERALD_FIELD_MESSAGE, .oneof = R, .message = &perm_set_msg,
     .help = "any of these"},
    {.name = "not_rule", .kind = HERALD_FIELD_MESSAGE, .oneof = R, .message = &permission_msg,
     .help = "the negation of this one"},
    {.name = "header", .kind = HERALD_FIELD_MESSAGE, .oneof = R, .message = &header_matcher_msg,
     .help = "a request header (HTTP only; never matches on the network filter)"},
    {.name = "url_path", .kind = HERALD_FIELD_MESSAGE, .oneof = R, .message = &path_matcher_msg,
     .help = "the request path without the query (HTTP only)"},
    {.name = "destination_ip", .kind = HERALD_FIELD_MESSAGE, .oneof = R, .message = &rbac_cidr_msg,
     .help = "the local address the connection came in on"},
    {.name = "destination_port", .kind = HERALD_FIELD_UINT, .oneof = R,
     .help = "the local port the connection came in on"},
    {.name = "destination_port_range", .kind = HERALD_FIELD_MESSAGE, .oneof = R, .message = &int32_range_msg,
     .help = "the local port is in [start, end)"},
    {.name = "requested_server_name", .kind = HERALD_FIELD_MESSAGE, .oneof = R,
     .message = &string_matcher_msg,
     .help = "the TLS SNI (\"\" without one)"},
    {.name = "metadata", .kind = HERALD_FIELD_MESSAGE, .oneof = R, .message = &metadata_matcher_msg,
     .help = "dynamic metadata (e.g. mysql_proxy's {\"<table>.<db>\": \"select,delete\"}; network filter)"},
    {.name = "matcher", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = R,
     .help = "extension matchers"},
    {.name = "uri_template", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = R,
     .help = "URI template path matching"},
    {.name = "sourced_metadata", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = R,
     .help = "metadata from a chosen source"},
    {NULL},
};
#undef R
static const struct herald_message permission_msg = {
    .name = "envoy.config.rbac.v3.Permission", .fields = permission_fields};

static const struct herald_field id_set_fields[] = {
    {.name = "ids", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &principal_msg, .help = "the principals"},
    {NULL},
};
static const struct herald_message id_set_msg = {.name = "envoy.config.rbac.v3.Principal.Set",
                                                 .fields = id_set_fields};

static const struct herald_field authenticated_fields[] = {
    {.name = "principal_name", .kind = HERALD_FIELD_MESSAGE, .message = &string_matcher_msg,
     .help = "matched against each URI SAN, then each DNS SAN, then the subject (RFC 2253); "
             "unset: any TLS connection matches"},
    {NULL},
};
static const struct herald_message authenticated_msg = {
    .name = "envoy.config.rbac.v3.Principal.Authenticated", .fields = authenticated_fields};

#define I "identifier"
static const struct herald_field principal_fields[] = {
    {.name = "any", .kind = HERALD_FIELD_BOOL, .oneof = I, .help = "every client (must be true)"},
    {.name = "and_ids", .kind = HERALD_FIELD_MESSAGE, .oneof = I, .message = &id_set_msg,
     .help = "all of these"},
    {.name = "or_ids", .kind = HERALD_FIELD_MESSAGE, .oneof = I, .message = &id_set_msg,
     .help = "any of these"},
    {.name = "not_id", .kind = HERALD_FIELD_MESSAGE, .oneof = I, .message = &principal_msg,
     .help = "the negation of this one"},
    {.name = "remote_ip", .kind = HERALD_FIELD_MESSAGE, .oneof = I, .message = &rbac_cidr_msg,
     .help = "the client address (HTTP: as the connection manager decided it from x-forwarded-for)"},
    {.name = "direct_remote_ip", .kind = HERALD_FIELD_MESSAGE, .oneof = I, .message = &rbac_cidr_msg,
     .help = "the peer of the downstream socket"},
    {.name = "source_ip", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_DEPRECATED, .oneof = I,
     .message = &rbac_cidr_msg, .hint = "use direct_remote_ip (same meaning) or remote_ip"},
    {.name = "header", .kind = HERALD_FIELD_MESSAGE, .oneof = I, .message = &header_matcher_msg,
     .help = "a request header (HTTP only)"},
    {.name = "url_path", .kind = HERALD_FIELD_MESSAGE, .oneof = I, .message = &path_matcher_msg,
     .help = "the request path without the query (HTTP only)"},
    {.name = "authenticated", .kind = HERALD_FIELD_MESSAGE, .oneof = I, .message = &authenticated_msg,
     .help = "a TLS connection; with principal_name, its peer certificate's URI SAN, DNS SAN or subject"},
    {.name = "metadata", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = I,
     .help = "dynamic metadata"},
    {.name = "filter_state", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = I,
     .help = "filter state"},
    {.name = "custom", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = I,
     .help = "extension principals"},
    {.name = "sourced_metadata", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = I,
     .help = "metadata from a chosen source"},
    {NULL},
};
#undef I
static const struct herald_message principal_msg = {
    .name = "envoy.config.rbac.v3.Principal", .fields = principal_fields};

static const struct herald_field policy_fields[] = {
    {.name = "permissions", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &permission_msg, .help = "the policy matches when any permission and any principal match"},
    {.name = "principals", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &principal_msg, .help = "who the policy is about"},
    {.name = "condition", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_cel_expr_msg,
     .help = "a CEL expression (parsed form) that must be true too; see CONDITIONS"},
    {.name = "checked_condition", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "a checked CEL expression"},
    {.name = "cel_config", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "CEL evaluation options"},
    {NULL},
};
static const struct herald_message policy_msg = {.name = "envoy.config.rbac.v3.Policy",
                                                 .fields = policy_fields};

static const char *const action_values[] = {"ALLOW", "DENY", "LOG", NULL};

static const struct herald_field rbac_fields[] = {
    {.name = "action", .kind = HERALD_FIELD_ENUM, .enum_values = action_values,
     .help = "ALLOW (default): only what a policy matches; DENY: all but what a policy matches; "
             "LOG: everything, noting matches"},
    {.name = "policies", .kind = HERALD_FIELD_MAP, .message = &policy_msg,
     .help = "named policies; with ALLOW and none, everything is denied"},
    {.name = "audit_logging_options", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "audit loggers"},
    {NULL},
};
static const struct herald_message rbac_rules_msg = {.name = "envoy.config.rbac.v3.RBAC",
                                                     .fields = rbac_fields};

static const struct herald_field http_fields[] = {
    {.name = "rules", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_rules_msg,
     .help = "the enforced policies (absent: nothing is enforced)"},
    {.name = "rules_stat_prefix", .kind = HERALD_FIELD_STRING,
     .help = "extra prefix of the allowed/denied stats"},
    {.name = "shadow_rules", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_rules_msg,
     .help = "policies only evaluated and counted (shadow_allowed/shadow_denied), never enforced"},
    {.name = "shadow_rules_stat_prefix", .kind = HERALD_FIELD_STRING,
     .help = "extra prefix of the shadow stats and metadata keys"},
    {.name = "matcher", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_xds_matcher_msg,
     .help = "a unified matcher tree whose actions (envoy.config.rbac.v3.Action) decide; no match: denied. "
             "Replaces rules"},
    {.name = "shadow_matcher", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_xds_matcher_msg,
     .help = "a matcher tree only evaluated and counted, never enforced. Replaces shadow_rules"},
    {.name = "track_per_rule_stats", .kind = HERALD_FIELD_BOOL, .flags = HERALD_F_UNSUPPORTED,
     .help = "a counter per policy"},
    {NULL},
};

const struct herald_message rbac_http_schema = {
    .name = "envoy.extensions.filters.http.rbac.v3.RBAC", .fields = http_fields};

/* typed_per_filter_config: RBACPerRoute {rbac} replaces the filter's RBAC for
 * the route; without rbac the route is not checked at all (Envoy's rule). */
static const struct herald_field per_route_fields[] = {
    {.name = "rbac", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_http_schema,
     .help = "the RBAC for this route's requests; absent: none (the filter is off here)"},
    {NULL},
};
const struct herald_message rbac_per_route_schema = {
    .name = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute", .fields = per_route_fields};

static const char *const enforcement_values[] = {"ONE_TIME_ON_FIRST_BYTE", "CONTINUOUS", NULL};

static int check_network(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *sp = herald_cfg_get(n, "stat_prefix");
    if (sp && !*herald_cfg_str(sp, ""))
        return herald_cfg_errorf(sp, err, "stat_prefix must not be empty");
    return 0;
}

static const struct herald_field network_fields[] = {
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "stats are named <stat_prefix>.rbac.*"},
    {.name = "rules", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_rules_msg,
     .help = "the enforced policies (absent: nothing is enforced)"},
    {.name = "shadow_rules", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_rules_msg,
     .help = "policies only evaluated and counted, never enforced"},
    {.name = "shadow_rules_stat_prefix", .kind = HERALD_FIELD_STRING,
     .help = "extra prefix of the shadow stats and metadata keys"},
    {.name = "enforcement_type", .kind = HERALD_FIELD_ENUM, .enum_values = enforcement_values,
     .help = "ONE_TIME_ON_FIRST_BYTE (default): decide once, on the first bytes; CONTINUOUS: on every read"},
    {.name = "matcher", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_xds_matcher_msg,
     .help = "a unified matcher tree whose actions (envoy.config.rbac.v3.Action) decide; no match: denied. "
             "Replaces rules"},
    {.name = "shadow_matcher", .kind = HERALD_FIELD_MESSAGE, .message = &rbac_xds_matcher_msg,
     .help = "a matcher tree only evaluated and counted, never enforced. Replaces shadow_rules"},
    {.name = "delay_deny", .kind = HERALD_FIELD_DURATION, .flags = HERALD_F_UNSUPPORTED,
     .help = "wait before closing a denied connection"},
    {NULL},
};

const struct herald_message rbac_network_schema = {
    .name = "envoy.extensions.filters.network.rbac.v3.RBAC",
    .fields = network_fields,
    .check = check_network,
};

/* ---------------------------------------------------------------- building */

static struct rbac_rule *rule_from_cfg(const struct herald_cfg *n, bool principal, char **err);

int rbac_str_from_cfg(struct rbac_str_matcher *m, const struct herald_cfg *n, char **err)
{
    static const struct { const char *key; enum rbac_str_kind kind; } kinds[] = {
        {"exact", RBAC_STR_EXACT}, {"prefix", RBAC_STR_PREFIX}, {"suffix", RBAC_STR_SUFFIX},
        {"contains", RBAC_STR_CONTAINS},
    };
    bool icase = herald_cfg_bool(herald_cfg_get(n, "ignore_case"), false);
    char *e = NULL;

    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        const struct herald_cfg *v = herald_cfg_get(n, kinds[i].key);
        if (v)
            return rbac_str_init(m, kinds[i].kind, herald_cfg_str(v, ""), icase, NULL);
    }
    const struct herald_cfg *re = herald_cfg_get(herald_cfg_get(n, "safe_regex"), "regex");
    if (re) {
        if (rbac_str_init(m, RBAC_STR_REGEX, herald_cfg_str(re, ""), icase, &e) < 0) {
            herald_cfg_errorf(re, err, "%s", e ? e : "invalid regex");
            free(e);
            return -1;
        }
        return 0;
    }
    return herald_cfg_errorf(n, err,
                             "a StringMatcher needs one of exact, prefix, suffix, contains, safe_regex");
}

static int header_from_cfg(struct rbac_header_matcher *h, const struct herald_cfg *n, char **err)
{
    static const struct { const char *key; enum rbac_str_kind kind; } old[] = {
        {"exact_match", RBAC_STR_EXACT}, {"prefix_match", RBAC_STR_PREFIX},
        {"suffix_match", RBAC_STR_SUFFIX}, {"contains_match", RBAC_STR_CONTAINS},
    };
    const struct herald_cfg *v;

    h->name = strdup(herald_cfg_str(herald_cfg_get(n, "name"), ""));
    if (!h->name)
        abort();
    h->invert = herald_cfg_bool(herald_cfg_get(n, "invert_match"), false);
    h->missing_as_empty = herald_cfg_bool(herald_cfg_get(n, "treat_missing_header_as_empty"), false);
    if ((v = herald_cfg_get(n, "string_match"))) {
        h->kind = RBAC_HDR_STRING;
        return rbac_str_from_cfg(&h->str, v, err);
    }
    if ((v = herald_cfg_get(n, "present_match"))) {
        h->kind = RBAC_HDR_PRESENT;
        h->present = herald_cfg_bool(v, true);
        return 0;
    }
    if ((v = herald_cfg_get(n, "range_match"))) {
        h->kind = RBAC_HDR_RANGE;
        h->range_start = herald_cfg_int(herald_cfg_get(v, "start"), 0);
        h->range_end = herald_cfg_int(herald_cfg_get(v, "end"), 0);
        return 0;
    }
    for (size_t i = 0; i < sizeof(old) / sizeof(old[0]); i++) {
        if ((v = herald_cfg_get(n, old[i].key))) {
            h->kind = RBAC_HDR_STRING;
            return rbac_str_init(&h->str, old[i].kind, herald_cfg_str(v, ""), false, NULL);
        }
    }
    if ((v = herald_cfg_get(herald_cfg_get(n, "safe_regex_match"), "regex"))) {
        char *e = NULL;
        h->kind = RBAC_HDR_STRING;
        if (rbac_str_init(&h->str, RBAC_STR_REGEX, herald_cfg_str(v, ""), false, &e) < 0) {
            herald_cfg_errorf(v, err, "%s", e ? e : "invalid regex");
            free(e);
            return -1;
        }
        return 0;
    }
    /* Envoy: a HeaderMatcher with only a name means "present" */
    h->kind = RBAC_HDR_PRESENT;
    h->present = true;
    return 0;
}

int rbac_cidr_from_cfg(struct rbac_cidr *c, const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *pl = herald_cfg_get(n, "prefix_len");
    const struct herald_cfg *ap = herald_cfg_get(n, "address_prefix");
    char *e = NULL;

    /* UInt32Value: a bare number, or {value: n} */
    if (herald_cfg_type(pl) == HERALD_CFG_OBJECT)
        pl = herald_cfg_get(pl, "value");
    if (rbac_cidr_init(c, herald_cfg_str(ap, ""), pl ? herald_cfg_int(pl, 0) : -1, &e) < 0) {
        herald_cfg_errorf(pl && e && strstr(e, "prefix_len") ? pl : ap, err, "%s", e ? e : "bad CIDR range");
        free(e);
        return -1;
    }
    return 0;
}

static int md_from_cfg(struct rbac_md_matcher *m, const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *path = herald_cfg_get(n, "path");
    const struct herald_cfg *val = herald_cfg_get(n, "value");
    const struct herald_cfg *v;

    if (herald_cfg_len(path) != 1)
        return herald_cfg_errorf(path ? path : n, err,
                                 "only a one-key path is supported (metadata values are strings)");
    m->filter = strdup(herald_cfg_str(herald_cfg_get(n, "filter"), ""));
    m->key = strdup(herald_cfg_str(herald_cfg_get(herald_cfg_at(path, 0), "key"), ""));
    if (!m->filter || !m->key)
        abort();
    m->invert = herald_cfg_bool(herald_cfg_get(n, "invert"), false);
    if ((v = herald_cfg_get(val, "string_match"))) {
        m->kind = RBAC_MD_STRING;
        return rbac_str_from_cfg(&m->str, v, err);
    }
    if ((v = herald_cfg_get(herald_cfg_get(herald_cfg_get(val, "list_match"), "one_of"), "string_match"))) {
        m->kind = RBAC_MD_LIST;
        return rbac_str_from_cfg(&m->str, v, err);
    }
    if ((v = herald_cfg_get(val, "present_match"))) {
        m->kind = RBAC_MD_PRESENT;
        m->present = herald_cfg_bool(v, true);
        return 0;
    }
    return herald_cfg_errorf(val ? val : n, err,
                             "value needs string_match, list_match {one_of {string_match}} or present_match");
}

static int set_from_cfg(struct rbac_rule *r, const struct herald_cfg *list, bool principal, char **err)
{
    for (size_t i = 0; i < herald_cfg_len(list); i++) {
        struct rbac_rule *sub = rule_from_cfg(herald_cfg_at(list, i), principal, err);
        if (!sub)
            return -1;
        rbac_rule_add(r, sub);
    }
    return 0;
}

static struct rbac_rule *rule_from_cfg(const struct herald_cfg *n, bool principal, char **err)
{
    const char *and_key = principal ? "and_ids" : "and_rules";
    const char *or_key = principal ? "or_ids" : "or_rules";
    const char *list_key = principal ? "ids" : "rules";
    const char *not_key = principal ? "not_id" : "not_rule";
    const struct herald_cfg *v;
    struct rbac_rule *r = NULL;
    int rc = 0;

    if ((v = herald_cfg_get(n, "any"))) {
        if (!herald_cfg_bool(v, false)) {
            herald_cfg_errorf(v, err, "any must be true");
            return NULL;
        }
        return rbac_rule_new(RBAC_ANY);
    }
    if ((v = herald_cfg_get(n, and_key))) {
        r = rbac_rule_new(RBAC_AND);
        rc = set_from_cfg(r, herald_cfg_get(v, list_key), principal, err);
    } else if ((v = herald_cfg_get(n, or_key))) {
        r = rbac_rule_new(RBAC_OR);
        rc = set_from_cfg(r, herald_cfg_get(v, list_key), principal, err);
    } else if ((v = herald_cfg_get(n, not_key))) {
        r = rbac_rule_new(RBAC_NOT);
        struct rbac_rule *sub = rule_from_cfg(v, principal, err);
        if (sub)
            rbac_rule_add(r, sub);
        else
            rc = -1;
    } else if ((v = herald_cfg_get(n, "header"))) {
        r = rbac_rule_new(RBAC_HEADER);
        rc = header_from_cfg(&r->hdr, v, err);
    } else if ((v = herald_cfg_get(n, "url_path"))) {
        r = rbac_rule_new(RBAC_URL_PATH);
        rc = rbac_str_from_cfg(&r->str, herald_cfg_get(v, "path"), err);
    } else if (!principal && (v = herald_cfg_get(n, "destination_ip"))) {
        r = rbac_rule_new(RBAC_DST_IP);
        rc = rbac_cidr_from_cfg(&r->cidr, v, err);
    } else if (!principal && (v = herald_cfg_get(n, "destination_port"))) {
        int64_t p = herald_cfg_int(v, -1);
        if (p < 0 || p > 65535) {
            herald_cfg_errorf(v, err, "destination_port must be 0..65535");
            return NULL;
        }
        r = rbac_rule_new(RBAC_DST_PORT);
        r->port_lo = r->port_hi = (uint32_t)p;
    } else if (!principal && (v = herald_cfg_get(n, "destination_port_range"))) {
        int64_t s = herald_cfg_int(herald_cfg_get(v, "start"), 0);
        int64_t e = herald_cfg_int(herald_cfg_get(v, "end"), 0);
        r = rbac_rule_new(RBAC_DST_PORT);
        if (s < 0 || e > 65536 || e <= s) {
            /* an empty range matches nothing, as in Envoy */
            r->port_lo = 1;
            r->port_hi = 0;
        } else {
            r->port_lo = (uint32_t)s;
            r->port_hi = (uint32_t)(e - 1);
        }
    } else if (!principal && (v = herald_cfg_get(n, "requested_server_name"))) {
        r = rbac_rule_new(RBAC_SNI);
        rc = rbac_str_from_cfg(&r->str, v, err);
    } else if (!principal && (v = herald_cfg_get(n, "metadata"))) {
        r = rbac_rule_new(RBAC_METADATA);
        rc = md_from_cfg(&r->md, v, err);
    } else if (principal && (v = herald_cfg_get(n, "authenticated"))) {
        const struct herald_cfg *name = herald_cfg_get(v, "principal_name");
        r = rbac_rule_new(RBAC_AUTHENTICATED);
        r->has_name = name != NULL;
        if (name)
            rc = rbac_str_from_cfg(&r->str, name, err);
    } else if (principal && (v = herald_cfg_get(n, "remote_ip"))) {
        r = rbac_rule_new(RBAC_REMOTE_IP);
        rc = rbac_cidr_from_cfg(&r->cidr, v, err);
    } else if (principal &&
               ((v = herald_cfg_get(n, "direct_remote_ip")) || (v = herald_cfg_get(n, "source_ip")))) {
        r = rbac_rule_new(RBAC_DIRECT_REMOTE_IP);
        rc = rbac_cidr_from_cfg(&r->cidr, v, err);
    } else {
        herald_cfg_errorf(n, err, "%s needs one rule (any, %s, %s, %s, header, url_path, ...)",
                          principal ? "a Principal" : "a Permission", and_key, or_key, not_key);
        return NULL;
    }
    if (rc < 0) {
        rbac_rule_free(r);
        return NULL;
    }
    return r;
}

struct rbac_engine *rbac_engine_from_cfg(const struct herald_cfg *rules, char **err)
{
    const char *a = herald_cfg_str(herald_cfg_get(rules, "action"), "ALLOW");
    enum rbac_action action = !strcasecmp(a, "DENY") ? RBAC_DENY
                              : !strcasecmp(a, "LOG") ? RBAC_LOG
                                                      : RBAC_ALLOW;
    struct rbac_engine *e = rbac_engine_new(action);
    const struct herald_cfg *pols = herald_cfg_get(rules, "policies");

    for (size_t i = 0; i < herald_cfg_len(pols); i++) {
        const struct herald_cfg *pn = herald_cfg_at(pols, i);
        struct rbac_policy *p = rbac_engine_add_policy(e, herald_cfg_key_at(pols, i));
        const struct herald_cfg *perms = herald_cfg_get(pn, "permissions");
        const struct herald_cfg *ids = herald_cfg_get(pn, "principals");
        if (!herald_cfg_len(perms) || !herald_cfg_len(ids)) {
            herald_cfg_errorf(pn, err, "policy '%s' needs at least one permission and one principal",
                              p->name);
            goto fail;
        }
        for (size_t j = 0; j < herald_cfg_len(perms); j++) {
            struct rbac_rule *r = rule_from_cfg(herald_cfg_at(perms, j), false, err);
            if (!r)
                goto fail;
            rbac_policy_add_permission(p, r);
        }
        for (size_t j = 0; j < herald_cfg_len(ids); j++) {
            struct rbac_rule *r = rule_from_cfg(herald_cfg_at(ids, j), true, err);
            if (!r)
                goto fail;
            rbac_policy_add_principal(p, r);
        }
        const struct herald_cfg *cond = herald_cfg_get(pn, "condition");
        if (cond && !(p->condition = rbac_cel_from_cfg(cond, err)))
            goto fail;
    }
    rbac_engine_finish(e);
    return e;

fail:
    rbac_engine_free(e);
    return NULL;
}

char *rbac_join_prefix(const char *a, const char *b)
{
    size_t la = strlen(a ? a : "");
    char *out;
    while (la && a[la - 1] == '.')
        la--;
    if (asprintf(&out, "%.*s%s%s", (int)la, a ? a : "", la && b && *b ? "." : "", b ? b : "") < 0)
        abort();
    return out;
}

struct herald_stat *rbac_counter(const char *prefix, const char *a, const char *b)
{
    char *name;
    if (asprintf(&name, "%s%s", a, b) < 0)
        abort();
    struct herald_stat *st = herald_counter(prefix, name);
    free(name);
    return st;
}
