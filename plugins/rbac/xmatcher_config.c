/* rbac: the schema of the unified matcher (xds.type.matcher.v3.Matcher) as
 * the RBAC filters' matcher / shadow_matcher use it, and the config tree ->
 * rbac_xmatcher step. The inputs, the IP matcher and the action are
 * google.protobuf.Any, which the core leaves to their owner: their @type
 * and fields are checked here, with the same file:line:col messages. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/herald.h"
#include "matcher.h"
#include "xmatcher.h"

/* ---------------------------------------------------------------- schema */
static const struct herald_message on_match_msg, predicate_msg;

static const struct herald_field typed_ext_fields[] = {
    {.name = "name", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "a name for humans"},
    {.name = "typed_config", .kind = HERALD_FIELD_TYPED, .flags = HERALD_F_REQUIRED,
     .help = "the input, matcher or action, by its \"@type\""},
    {NULL},
};
static const struct herald_message typed_ext_msg = {.name = "xds.core.v3.TypedExtensionConfig",
                                                    .fields = typed_ext_fields};

static const struct herald_message xds_string_matcher_msg = {.name = "xds.type.matcher.v3.StringMatcher",
                                                             .fields = rbac_string_matcher_fields};

static const struct herald_field single_predicate_fields[] = {
    {.name = "input", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &typed_ext_msg,
     .help = "what is matched: a request header, query parameter, address, port, SNI, peer certificate name"},
    {.name = "value_match", .kind = HERALD_FIELD_MESSAGE, .oneof = "matcher", .message = &xds_string_matcher_msg,
     .help = "the input's value matches this StringMatcher"},
    {.name = "custom_match", .kind = HERALD_FIELD_MESSAGE, .oneof = "matcher", .message = &typed_ext_msg,
     .help = "envoy.extensions.matching.input_matchers.ip.v3.Ip: the value is an address in cidr_ranges"},
    {NULL},
};
static const struct herald_message single_predicate_msg = {
    .name = "xds.type.matcher.v3.Matcher.MatcherList.Predicate.SinglePredicate", .fields = single_predicate_fields};

static const struct herald_field predicate_list_fields[] = {
    {.name = "predicate", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &predicate_msg, .help = "two or more predicates"},
    {NULL},
};
static const struct herald_message predicate_list_msg = {
    .name = "xds.type.matcher.v3.Matcher.MatcherList.Predicate.PredicateList", .fields = predicate_list_fields};

#define MT "match_type"
static const struct herald_field predicate_fields[] = {
    {.name = "single_predicate", .kind = HERALD_FIELD_MESSAGE, .oneof = MT, .message = &single_predicate_msg,
     .help = "one input against one matcher"},
    {.name = "or_matcher", .kind = HERALD_FIELD_MESSAGE, .oneof = MT, .message = &predicate_list_msg,
     .help = "any of these"},
    {.name = "and_matcher", .kind = HERALD_FIELD_MESSAGE, .oneof = MT, .message = &predicate_list_msg,
     .help = "all of these"},
    {.name = "not_matcher", .kind = HERALD_FIELD_MESSAGE, .oneof = MT, .message = &predicate_msg,
     .help = "the negation of this one (an absent input does not match, so its negation does)"},
    {NULL},
};
#undef MT
static const struct herald_message predicate_msg = {.name = "xds.type.matcher.v3.Matcher.MatcherList.Predicate",
                                                    .fields = predicate_fields};

static const struct herald_field field_matcher_fields[] = {
    {.name = "predicate", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &predicate_msg,
     .help = "when it matches, on_match applies"},
    {.name = "on_match", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &on_match_msg,
     .help = "an action or a nested matcher"},
    {NULL},
};
static const struct herald_message field_matcher_msg = {
    .name = "xds.type.matcher.v3.Matcher.MatcherList.FieldMatcher", .fields = field_matcher_fields};

static const struct herald_field matcher_list_fields[] = {
    {.name = "matchers", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &field_matcher_msg, .help = "tried in order; the first whose predicate matches decides"},
    {NULL},
};
static const struct herald_message matcher_list_msg = {.name = "xds.type.matcher.v3.Matcher.MatcherList",
                                                       .fields = matcher_list_fields};

static const struct herald_field match_map_fields[] = {
    {.name = "map", .kind = HERALD_FIELD_MAP, .flags = HERALD_F_REQUIRED, .message = &on_match_msg,
     .help = "input value (or prefix) -> what to do"},
    {NULL},
};
static const struct herald_message match_map_msg = {.name = "xds.type.matcher.v3.Matcher.MatcherTree.MatchMap",
                                                    .fields = match_map_fields};

#define TT "tree_type"
static const struct herald_field matcher_tree_fields[] = {
    {.name = "input", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &typed_ext_msg,
     .help = "the value looked up in the map"},
    {.name = "exact_match_map", .kind = HERALD_FIELD_MESSAGE, .oneof = TT, .message = &match_map_msg,
     .help = "the value equals a key"},
    {.name = "prefix_match_map", .kind = HERALD_FIELD_MESSAGE, .oneof = TT, .message = &match_map_msg,
     .help = "the value starts with a key; the longest key first"},
    {.name = "custom_match", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = TT,
     .help = "extension trees"},
    {NULL},
};
#undef TT
static const struct herald_message matcher_tree_msg = {.name = "xds.type.matcher.v3.Matcher.MatcherTree",
                                                       .fields = matcher_tree_fields};

static const struct herald_field on_match_fields[] = {
    {.name = "matcher", .kind = HERALD_FIELD_MESSAGE, .oneof = "on_match", .message = &rbac_xds_matcher_msg,
     .help = "a nested matcher; when it finds nothing, matching goes on at this level"},
    {.name = "action", .kind = HERALD_FIELD_MESSAGE, .oneof = "on_match", .message = &typed_ext_msg,
     .help = "envoy.config.rbac.v3.Action {name, action: ALLOW | DENY | LOG}"},
    {.name = "keep_matching", .kind = HERALD_FIELD_BOOL,
     .help = "skip this action and go on matching (RBAC has no use for a skipped action)"},
    {NULL},
};
static const struct herald_message on_match_msg = {.name = "xds.type.matcher.v3.Matcher.OnMatch",
                                                   .fields = on_match_fields};

static const struct herald_field matcher_fields[] = {
    {.name = "matcher_list", .kind = HERALD_FIELD_MESSAGE, .oneof = "matcher_type", .message = &matcher_list_msg,
     .help = "predicates tried in order"},
    {.name = "matcher_tree", .kind = HERALD_FIELD_MESSAGE, .oneof = "matcher_type", .message = &matcher_tree_msg,
     .help = "one input looked up in a map"},
    {.name = "on_no_match", .kind = HERALD_FIELD_MESSAGE, .message = &on_match_msg,
     .help = "what to do when nothing matched (absent: RBAC denies)"},
    {NULL},
};
const struct herald_message rbac_xds_matcher_msg = {.name = "xds.type.matcher.v3.Matcher", .fields = matcher_fields};

/* ---------------------------------------------------------------- typed configs */

/* The "@type" without its "type.googleapis.com/" part. */
static const char *type_of(const struct herald_cfg *tc)
{
    const char *t = herald_cfg_str(herald_cfg_get(tc, "@type"), "");
    const char *slash = strrchr(t, '/');
    return slash ? slash + 1 : t;
}

/* Every key of tc but "@type" must be one of fields (NULL-terminated). */
static int only_fields(const struct herald_cfg *tc, const char *const *fields, char **err)
{
    for (size_t i = 0; i < herald_cfg_len(tc); i++) {
        const char *k = herald_cfg_key_at(tc, i);
        bool known = !strcmp(k, "@type");
        for (const char *const *f = fields; *f && !known; f++)
            known = !strcmp(*f, k);
        if (!known)
            return herald_cfg_errorf(herald_cfg_at(tc, i), err, "unknown field '%s' in %s", k, type_of(tc));
    }
    return 0;
}

#define NET "envoy.extensions.matching.common_inputs.network.v3."
#define SSL "envoy.extensions.matching.common_inputs.ssl.v3."
static const struct {
    const char *type;
    enum rbac_input_kind kind;
    const char *arg;           /* the field naming the header or parameter */
} inputs[] = {
    {"envoy.type.matcher.v3.HttpRequestHeaderMatchInput", RBAC_IN_REQUEST_HEADER, "header_name"},
    {"envoy.type.matcher.v3.HttpRequestQueryParamMatchInput", RBAC_IN_QUERY_PARAM, "query_param"},
    {NET "DestinationIPInput", RBAC_IN_DESTINATION_IP, NULL},
    {NET "DestinationPortInput", RBAC_IN_DESTINATION_PORT, NULL},
    {NET "SourceIPInput", RBAC_IN_SOURCE_IP, NULL},
    {NET "SourcePortInput", RBAC_IN_SOURCE_PORT, NULL},
    {NET "DirectSourceIPInput", RBAC_IN_DIRECT_SOURCE_IP, NULL},
    {NET "SourceTypeInput", RBAC_IN_SOURCE_TYPE, NULL},
    {NET "ServerNameInput", RBAC_IN_SERVER_NAME, NULL},
    {NET "TransportProtocolInput", RBAC_IN_TRANSPORT_PROTOCOL, NULL},
    {SSL "UriSanInput", RBAC_IN_URI_SAN, NULL},
    {SSL "DnsSanInput", RBAC_IN_DNS_SAN, NULL},
    {SSL "SubjectInput", RBAC_IN_SUBJECT, NULL},
};

/* Inputs Envoy has that herald's RBAC does not offer, with why. */
static const struct {
    const char *type;
    const char *why;
} unsupported_inputs[] = {
    {"envoy.type.matcher.v3.HttpRequestTrailerMatchInput", "RBAC decides on the request headers, before trailers"},
    {"envoy.type.matcher.v3.HttpResponseHeaderMatchInput", "RBAC decides before there is a response"},
    {"envoy.type.matcher.v3.HttpResponseTrailerMatchInput", "RBAC decides before there is a response"},
    {NET "ApplicationProtocolInput", "herald knows the negotiated ALPN, not the list the client offered"},
    {NET "FilterStateInput", "herald has no filter state"},
    {NET "DynamicMetadataInput", "not implemented yet"},
};
#undef NET
#undef SSL

static bool valid_header_name(const char *s)
{
    if (!*s)
        return false;
    for (const char *p = *s == ':' ? s + 1 : s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return false;
    return true;
}

static int input_from_cfg(struct rbac_input *in, const struct herald_cfg *ext, bool http, char **err)
{
    const struct herald_cfg *tc = herald_cfg_get(ext, "typed_config");
    const char *type = type_of(tc);

    for (size_t i = 0; i < sizeof(unsupported_inputs) / sizeof(unsupported_inputs[0]); i++)
        if (!strcmp(type, unsupported_inputs[i].type))
            return herald_cfg_errorf(tc, err, "the input %s is not supported by herald's RBAC: %s", type,
                                     unsupported_inputs[i].why);
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        if (strcmp(type, inputs[i].type))
            continue;
        const char *fields[] = {inputs[i].arg, NULL};
        if (only_fields(tc, fields, err) < 0)
            return -1;
        if (!http && rbac_input_is_http(inputs[i].kind))
            return herald_cfg_errorf(tc, err, "%s is an HTTP input: only the HTTP RBAC filter has requests", type);
        in->kind = inputs[i].kind;
        if (inputs[i].arg) {
            const struct herald_cfg *a = herald_cfg_get(tc, inputs[i].arg);
            const char *v = herald_cfg_str(a, "");
            if (!*v)
                return herald_cfg_errorf(a ? a : tc, err, "%s needs a non-empty %s", type, inputs[i].arg);
            if (in->kind == RBAC_IN_REQUEST_HEADER && !valid_header_name(v))
                return herald_cfg_errorf(a, err, "'%s' is not a valid header name", v);
            in->arg = strdup(v);
            if (!in->arg)
                abort();
            if (in->kind == RBAC_IN_REQUEST_HEADER) /* header maps keep names lower-case */
                for (char *p = in->arg; *p; p++)
                    *p = (char)tolower((unsigned char)*p);
        }
        return 0;
    }
    return herald_cfg_errorf(tc ? tc : ext, err,
                             "unknown input \"%s\" (RBAC inputs: HttpRequestHeaderMatchInput, "
                             "HttpRequestQueryParamMatchInput, the network inputs DestinationIP/DestinationPort/"
                             "SourceIP/SourcePort/DirectSourceIP/SourceType/ServerName/TransportProtocolInput, the "
                             "ssl inputs UriSan/DnsSan/SubjectInput)",
                             type);
}

#define IP_MATCHER "envoy.extensions.matching.input_matchers.ip.v3.Ip"

static int ip_matcher_from_cfg(struct rbac_pred *p, const struct herald_cfg *ext, char **err)
{
    const struct herald_cfg *tc = herald_cfg_get(ext, "typed_config");
    static const char *const fields[] = {"cidr_ranges", "stat_prefix", NULL};
    static const char *const cidr_fields[] = {"address_prefix", "prefix_len", NULL};

    if (strcmp(type_of(tc), IP_MATCHER))
        return herald_cfg_errorf(tc ? tc : ext, err,
                                 "custom_match \"%s\" is not supported: the one custom matcher herald has is " IP_MATCHER,
                                 type_of(tc));
    if (only_fields(tc, fields, err) < 0)
        return -1;
    const struct herald_cfg *ranges = herald_cfg_get(tc, "cidr_ranges");
    if (!herald_cfg_len(ranges))
        return herald_cfg_errorf(ranges ? ranges : tc, err, "cidr_ranges needs at least one CidrRange");
    p->is_ip = true;
    p->cidrs = calloc(herald_cfg_len(ranges), sizeof(*p->cidrs));
    if (!p->cidrs)
        abort();
    for (size_t i = 0; i < herald_cfg_len(ranges); i++) {
        const struct herald_cfg *r = herald_cfg_at(ranges, i);
        /* CidrRange: the same fields as Envoy's; checked by hand inside an Any */
        if (herald_cfg_type(r) != HERALD_CFG_OBJECT)
            return herald_cfg_errorf(r, err, "expected a CidrRange {address_prefix, prefix_len}");
        for (size_t k = 0; k < herald_cfg_len(r); k++) {
            const char *key = herald_cfg_key_at(r, k);
            if (strcmp(key, cidr_fields[0]) && strcmp(key, cidr_fields[1]))
                return herald_cfg_errorf(herald_cfg_at(r, k), err, "unknown field '%s' in %s", key,
                                         rbac_cidr_msg.name);
        }
        if (!herald_cfg_get(r, "address_prefix"))
            return herald_cfg_errorf(r, err, "a CidrRange needs address_prefix");
        if (rbac_cidr_from_cfg(&p->cidrs[i], r, err) < 0)
            return -1;
        p->ncidrs++;
    }
    return 0;
}

#define ACTION "envoy.config.rbac.v3.Action"

static int action_from_cfg(struct rbac_on_match *om, const struct herald_cfg *ext, char **err)
{
    const struct herald_cfg *tc = herald_cfg_get(ext, "typed_config");
    static const char *const fields[] = {"name", "action", NULL};

    if (strcmp(type_of(tc), ACTION))
        return herald_cfg_errorf(tc ? tc : ext, err, "an RBAC matcher's actions are " ACTION ", not \"%s\"",
                                 type_of(tc));
    if (only_fields(tc, fields, err) < 0)
        return -1;
    const struct herald_cfg *a = herald_cfg_get(tc, "action");
    const char *v = herald_cfg_str(a, "ALLOW");
    if (!strcasecmp(v, "ALLOW"))
        om->action = RBAC_ALLOW;
    else if (!strcasecmp(v, "DENY"))
        om->action = RBAC_DENY;
    else if (!strcasecmp(v, "LOG"))
        om->action = RBAC_LOG;
    else
        return herald_cfg_errorf(a, err, "action must be ALLOW, DENY or LOG, not '%s'", v);
    const struct herald_cfg *name = herald_cfg_get(tc, "name");
    if (name && herald_cfg_type(name) != HERALD_CFG_STRING)
        return herald_cfg_errorf(name, err, "expected a string");
    om->action_name = strdup(herald_cfg_str(name, ""));
    if (!om->action_name)
        abort();
    return 0;
}

/* ---------------------------------------------------------------- the tree */

static struct rbac_xmatcher *matcher_from_cfg(const struct herald_cfg *n, bool http, unsigned depth, char **err);

/* Nesting past this is a config mistake (or an attack on the loader), not a policy. */
#define MAX_DEPTH 32

static int on_match_from_cfg(struct rbac_on_match *om, const struct herald_cfg *n, bool http, unsigned depth,
                             char **err)
{
    const struct herald_cfg *v;

    om->set = true;
    om->keep_matching = herald_cfg_bool(herald_cfg_get(n, "keep_matching"), false);
    if ((v = herald_cfg_get(n, "action")))
        return action_from_cfg(om, v, err);
    if ((v = herald_cfg_get(n, "matcher")))
        return (om->matcher = matcher_from_cfg(v, http, depth + 1, err)) ? 0 : -1;
    return herald_cfg_errorf(n, err, "on_match needs an action or a matcher");
}

static struct rbac_pred *pred_from_cfg(const struct herald_cfg *n, bool http, unsigned depth, char **err)
{
    const struct herald_cfg *v;
    struct rbac_pred *p = NULL;
    int rc = 0;

    if (depth > MAX_DEPTH) {
        herald_cfg_errorf(n, err, "predicates nested deeper than %d", MAX_DEPTH);
        return NULL;
    }
    if ((v = herald_cfg_get(n, "single_predicate"))) {
        p = rbac_pred_new(RBAC_PRED_SINGLE);
        const struct herald_cfg *vm = herald_cfg_get(v, "value_match");
        const struct herald_cfg *cm = herald_cfg_get(v, "custom_match");
        rc = input_from_cfg(&p->in, herald_cfg_get(v, "input"), http, err);
        if (rc == 0 && vm)
            rc = rbac_str_from_cfg(&p->str, vm, err);
        else if (rc == 0 && cm)
            rc = ip_matcher_from_cfg(p, cm, err);
        else if (rc == 0)
            rc = herald_cfg_errorf(v, err, "single_predicate needs value_match or custom_match");
    } else if ((v = herald_cfg_get(n, "or_matcher")) || (v = herald_cfg_get(n, "and_matcher"))) {
        const struct herald_cfg *list = herald_cfg_get(v, "predicate");
        p = rbac_pred_new(herald_cfg_get(n, "or_matcher") ? RBAC_PRED_OR : RBAC_PRED_AND);
        if (herald_cfg_len(list) < 2)
            rc = herald_cfg_errorf(list ? list : v, err, "or_matcher and and_matcher need at least two predicates");
        for (size_t i = 0; rc == 0 && i < herald_cfg_len(list); i++) {
            struct rbac_pred *sub = pred_from_cfg(herald_cfg_at(list, i), http, depth + 1, err);
            if (sub)
                rbac_pred_add(p, sub);
            else
                rc = -1;
        }
    } else if ((v = herald_cfg_get(n, "not_matcher"))) {
        p = rbac_pred_new(RBAC_PRED_NOT);
        struct rbac_pred *sub = pred_from_cfg(v, http, depth + 1, err);
        if (sub)
            rbac_pred_add(p, sub);
        else
            rc = -1;
    } else {
        herald_cfg_errorf(n, err, "a predicate needs single_predicate, or_matcher, and_matcher or not_matcher");
        return NULL;
    }
    if (rc < 0) {
        rbac_pred_free(p);
        return NULL;
    }
    return p;
}

static struct rbac_xmatcher *matcher_from_cfg(const struct herald_cfg *n, bool http, unsigned depth, char **err)
{
    const struct herald_cfg *list = herald_cfg_get(n, "matcher_list");
    const struct herald_cfg *tree = herald_cfg_get(n, "matcher_tree");
    const struct herald_cfg *no_match = herald_cfg_get(n, "on_no_match");
    struct rbac_xmatcher *m;
    int rc = 0;

    if (depth > MAX_DEPTH) {
        herald_cfg_errorf(n, err, "matchers nested deeper than %d", MAX_DEPTH);
        return NULL;
    }
    if (list) {
        const struct herald_cfg *fms = herald_cfg_get(list, "matchers");
        m = rbac_xmatcher_new(RBAC_XM_LIST);
        for (size_t i = 0; rc == 0 && i < herald_cfg_len(fms); i++) {
            const struct herald_cfg *fm = herald_cfg_at(fms, i);
            struct rbac_pred *pred = pred_from_cfg(herald_cfg_get(fm, "predicate"), http, depth + 1, err);
            struct rbac_xm_field *f = rbac_xmatcher_add_field(m);
            if (!pred) {
                rc = -1;
                break;
            }
            f->pred = pred;
            rc = on_match_from_cfg(&f->on_match, herald_cfg_get(fm, "on_match"), http, depth, err);
        }
    } else if (tree) {
        const struct herald_cfg *exact = herald_cfg_get(tree, "exact_match_map");
        const struct herald_cfg *prefix = herald_cfg_get(tree, "prefix_match_map");
        const struct herald_cfg *map = herald_cfg_get(exact ? exact : prefix, "map");
        m = rbac_xmatcher_new(exact ? RBAC_XM_EXACT : RBAC_XM_PREFIX);
        if (!exact && !prefix)
            rc = herald_cfg_errorf(tree, err, "matcher_tree needs exact_match_map or prefix_match_map");
        if (rc == 0)
            rc = input_from_cfg(&m->in, herald_cfg_get(tree, "input"), http, err);
        for (size_t i = 0; rc == 0 && i < herald_cfg_len(map); i++) {
            struct rbac_xm_entry *e = rbac_xmatcher_add_entry(m, herald_cfg_key_at(map, i));
            rc = on_match_from_cfg(&e->on_match, herald_cfg_at(map, i), http, depth, err);
        }
        rbac_xmatcher_finish(m);
    } else {
        m = rbac_xmatcher_new(RBAC_XM_NONE);
        if (!no_match)
            rc = herald_cfg_errorf(n, err, "a matcher needs matcher_list, matcher_tree or on_no_match");
    }
    if (rc == 0 && no_match)
        rc = on_match_from_cfg(&m->on_no_match, no_match, http, depth, err);
    if (rc < 0) {
        rbac_xmatcher_free(m);
        return NULL;
    }
    return m;
}

struct rbac_engine *rbac_engine_from_matcher(const struct herald_cfg *matcher, bool http, char **err)
{
    struct rbac_xmatcher *m = matcher_from_cfg(matcher, http, 0, err);
    return m ? rbac_engine_new_tree(m) : NULL;
}
