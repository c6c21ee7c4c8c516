/* Rate limit descriptors, the config side: the schema of
 * envoy.config.route.v3.RateLimit, the compiled lists and the descriptor
 * container (see rate_limit.h; rate_limit_request.c makes descriptors). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "http/rate_limit.h"

/* ---------------------------------------------------------------- schema */

static const struct herald_field empty_fields[] = {{NULL}};
static const struct herald_message source_cluster_msg = {
    "envoy.config.route.v3.RateLimit.Action.SourceCluster", empty_fields, NULL};
static const struct herald_message destination_cluster_msg = {
    "envoy.config.route.v3.RateLimit.Action.DestinationCluster", empty_fields, NULL};
static const struct herald_message remote_address_msg = {
    "envoy.config.route.v3.RateLimit.Action.RemoteAddress", empty_fields, NULL};

static const struct herald_field request_headers_fields[] = {
    {.name = "header_name", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "the header whose value (all values joined with \",\") is the entry's value"},
    {.name = "descriptor_key", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "the entry's key"},
    {.name = "skip_if_absent", .kind = HERALD_FIELD_BOOL,
     .help = "a missing header skips this entry instead of the whole descriptor"},
    {NULL},
};
static const struct herald_message request_headers_msg = {
    "envoy.config.route.v3.RateLimit.Action.RequestHeaders", request_headers_fields, NULL};

static const struct herald_field query_parameters_fields[] = {
    {.name = "query_parameter_name", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "the parameter whose first value is the entry's value"},
    {.name = "descriptor_key", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "the entry's key"},
    {.name = "skip_if_absent", .kind = HERALD_FIELD_BOOL,
     .help = "a missing parameter skips this entry instead of the whole descriptor"},
    {NULL},
};
static const struct herald_message query_parameters_msg = {
    "envoy.config.route.v3.RateLimit.Action.QueryParameters", query_parameters_fields, NULL};

static const struct herald_field masked_fields[] = {
    {.name = "v4_prefix_mask_len", .kind = HERALD_FIELD_UINT, .help = "0..32, default 32"},
    {.name = "v6_prefix_mask_len", .kind = HERALD_FIELD_UINT, .help = "0..128, default 128"},
    {NULL},
};
static const struct herald_message masked_msg = {
    "envoy.config.route.v3.RateLimit.Action.MaskedRemoteAddress", masked_fields, NULL};

static const struct herald_field generic_key_fields[] = {
    {.name = "descriptor_value", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "the value"},
    {.name = "descriptor_key", .kind = HERALD_FIELD_STRING, .help = "the key (default generic_key)"},
    {NULL},
};
static const struct herald_message generic_key_msg = {
    "envoy.config.route.v3.RateLimit.Action.GenericKey", generic_key_fields, NULL};

static const struct herald_field header_value_match_fields[] = {
    {.name = "descriptor_value", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "the value"},
    {.name = "descriptor_key", .kind = HERALD_FIELD_STRING, .help = "the key (default header_match)"},
    {.name = "expect_match", .kind = HERALD_FIELD_BOOL,
     .help = "true (default): the entry when all headers match; false: when they do not"},
    {.name = "headers", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &herald_header_matcher_schema, .help = "HeaderMatchers, as a route's"},
    {NULL},
};
static const struct herald_message header_value_match_msg = {
    "envoy.config.route.v3.RateLimit.Action.HeaderValueMatch", header_value_match_fields, NULL};

#define A "action_specifier"
static const struct herald_field action_fields[] = {
    {.name = "source_cluster", .kind = HERALD_FIELD_MESSAGE, .oneof = A, .message = &source_cluster_msg,
     .help = "(\"source_cluster\", node.cluster)"},
    {.name = "destination_cluster", .kind = HERALD_FIELD_MESSAGE, .oneof = A, .message = &destination_cluster_msg,
     .help = "(\"destination_cluster\", the route's cluster)"},
    {.name = "request_headers", .kind = HERALD_FIELD_MESSAGE, .oneof = A, .message = &request_headers_msg,
     .help = "(descriptor_key, a header's value)"},
    {.name = "query_parameters", .kind = HERALD_FIELD_MESSAGE, .oneof = A, .message = &query_parameters_msg,
     .help = "(descriptor_key, a query parameter's value)"},
    {.name = "remote_address", .kind = HERALD_FIELD_MESSAGE, .oneof = A, .message = &remote_address_msg,
     .help = "(\"remote_address\", the client's address as the connection manager decided it)"},
    {.name = "masked_remote_address", .kind = HERALD_FIELD_MESSAGE, .oneof = A, .message = &masked_msg,
     .help = "(\"masked_remote_address\", the client's network, e.g. 10.1.2.0/24)"},
    {.name = "generic_key", .kind = HERALD_FIELD_MESSAGE, .oneof = A, .message = &generic_key_msg,
     .help = "(descriptor_key, descriptor_value)"},
    {.name = "header_value_match", .kind = HERALD_FIELD_MESSAGE, .oneof = A, .message = &header_value_match_msg,
     .help = "(descriptor_key, descriptor_value) when the headers match"},
    {.name = "dynamic_metadata", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = A,
     .help = "a value from dynamic metadata"},
    {.name = "metadata", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = A,
     .help = "a value from metadata"},
    {.name = "extension", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = A,
     .help = "extension actions"},
    {.name = "query_parameter_value_match", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = A,
     .help = "query parameter matchers"},
    {NULL},
};
#undef A
static const struct herald_message action_msg = {"envoy.config.route.v3.RateLimit.Action", action_fields, NULL};

static const struct herald_field rate_limit_fields[] = {
    {.name = "stage", .kind = HERALD_FIELD_UINT, .help = "0..10, default 0: only filters of this stage use it"},
    {.name = "disable_key", .kind = HERALD_FIELD_STRING,
     .help = "runtime key ratelimit.<disable_key>.http_filter_enabled (a percentage, default 100) turns it off"},
    {.name = "actions", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED | HERALD_F_REQUIRED,
     .message = &action_msg, .help = "the descriptor's entries, in order"},
    {.name = "limit", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .help = "limit overrides"},
    {.name = "apply_on_stream_done", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .help = "counting when the stream ends"},
    {.name = "hits_addend", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .help = "hits per request"},
    {NULL},
};
const struct herald_message herald_rate_limit_schema = {"envoy.config.route.v3.RateLimit", rate_limit_fields, NULL};

/* ---------------------------------------------------------------- compiled (rate_limit.h) */

static void action_fini(struct rl_action *a)
{
    free(a->key);
    free(a->value);
    free(a->name);
    for (size_t i = 0; i < a->nhm; i++)
        herald_header_matcher_free(a->hm[i]);
    free(a->hm);
}

void herald_rate_limits_free(struct herald_rate_limits *rl)
{
    if (!rl)
        return;
    for (size_t i = 0; i < rl->n; i++) {
        for (size_t j = 0; j < rl->e[i].nactions; j++)
            action_fini(&rl->e[i].actions[j]);
        free(rl->e[i].actions);
        free(rl->e[i].disable_key);
    }
    free(rl->e);
    free(rl);
}

static char *lower_copy(const char *s)
{
    char *d = xstrdup(s);
    for (char *p = d; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return d;
}

static int action_from_cfg(struct rl_action *a, const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *v;

    a->expect_match = true;
    if (herald_cfg_get(n, "source_cluster")) {
        a->kind = RL_SOURCE_CLUSTER;
        a->key = xstrdup("source_cluster");
    } else if (herald_cfg_get(n, "destination_cluster")) {
        a->kind = RL_DESTINATION_CLUSTER;
        a->key = xstrdup("destination_cluster");
    } else if ((v = herald_cfg_get(n, "request_headers"))) {
        a->kind = RL_REQUEST_HEADER;
        a->name = lower_copy(herald_cfg_str(herald_cfg_get(v, "header_name"), ""));
        a->key = xstrdup(herald_cfg_str(herald_cfg_get(v, "descriptor_key"), ""));
        a->skip_if_absent = herald_cfg_bool(herald_cfg_get(v, "skip_if_absent"), false);
        if (!*a->name)
            return herald_cfg_errorf(v, err, "header_name must not be empty");
    } else if ((v = herald_cfg_get(n, "query_parameters"))) {
        a->kind = RL_QUERY_PARAMETER;
        a->name = xstrdup(herald_cfg_str(herald_cfg_get(v, "query_parameter_name"), ""));
        a->key = xstrdup(herald_cfg_str(herald_cfg_get(v, "descriptor_key"), ""));
        a->skip_if_absent = herald_cfg_bool(herald_cfg_get(v, "skip_if_absent"), false);
        if (!*a->name)
            return herald_cfg_errorf(v, err, "query_parameter_name must not be empty");
    } else if (herald_cfg_get(n, "remote_address")) {
        a->kind = RL_REMOTE_ADDRESS;
        a->key = xstrdup("remote_address");
    } else if ((v = herald_cfg_get(n, "masked_remote_address"))) {
        a->kind = RL_MASKED_REMOTE_ADDRESS;
        a->key = xstrdup("masked_remote_address");
        const struct herald_cfg *m4 = herald_cfg_get(v, "v4_prefix_mask_len");
        const struct herald_cfg *m6 = herald_cfg_get(v, "v6_prefix_mask_len");
        int64_t l4 = herald_cfg_int(herald_cfg_type(m4) == HERALD_CFG_OBJECT ? herald_cfg_get(m4, "value") : m4, 32);
        int64_t l6 = herald_cfg_int(herald_cfg_type(m6) == HERALD_CFG_OBJECT ? herald_cfg_get(m6, "value") : m6, 128);
        if (l4 < 0 || l4 > 32)
            return herald_cfg_errorf(m4, err, "v4_prefix_mask_len must be from 0 to 32");
        if (l6 < 0 || l6 > 128)
            return herald_cfg_errorf(m6, err, "v6_prefix_mask_len must be from 0 to 128");
        a->v4_mask = (unsigned)l4;
        a->v6_mask = (unsigned)l6;
    } else if ((v = herald_cfg_get(n, "generic_key"))) {
        a->kind = RL_GENERIC_KEY;
        a->key = xstrdup(herald_cfg_str(herald_cfg_get(v, "descriptor_key"), "generic_key"));
        a->value = xstrdup(herald_cfg_str(herald_cfg_get(v, "descriptor_value"), ""));
        if (!*a->key)
            return herald_cfg_errorf(v, err, "descriptor_key must not be empty");
    } else if ((v = herald_cfg_get(n, "header_value_match"))) {
        a->kind = RL_HEADER_VALUE_MATCH;
        a->key = xstrdup(herald_cfg_str(herald_cfg_get(v, "descriptor_key"), "header_match"));
        a->value = xstrdup(herald_cfg_str(herald_cfg_get(v, "descriptor_value"), ""));
        a->expect_match = herald_cfg_bool(herald_cfg_get(v, "expect_match"), true);
        const struct herald_cfg *hs = herald_cfg_get(v, "headers");
        a->nhm = herald_cfg_len(hs);
        a->hm = xcalloc(a->nhm ? a->nhm : 1, sizeof(*a->hm));
        for (size_t i = 0; i < a->nhm; i++)
            if (!(a->hm[i] = herald_header_matcher_new(herald_cfg_at(hs, i), err)))
                return -1;
    } else {
        return herald_cfg_errorf(n, err, "an action needs one of source_cluster, destination_cluster, "
                                 "request_headers, query_parameters, remote_address, masked_remote_address, "
                                 "generic_key, header_value_match");
    }
    return 0;
}

struct herald_rate_limits *herald_rate_limits_new(const struct herald_cfg *list, char **err)
{
    struct herald_rate_limits *rl = xcalloc(1, sizeof(*rl));
    rl->n = herald_cfg_len(list);
    rl->e = xcalloc(rl->n ? rl->n : 1, sizeof(*rl->e));
    for (size_t i = 0; i < rl->n; i++) {
        const struct herald_cfg *n = herald_cfg_at(list, i), *v;
        struct rl_rate_limit *r = &rl->e[i];
        v = herald_cfg_get(n, "stage");
        int64_t stage = herald_cfg_int(herald_cfg_type(v) == HERALD_CFG_OBJECT ? herald_cfg_get(v, "value") : v, 0);
        if (stage < 0 || stage > 10) {
            herald_cfg_errorf(v, err, "stage must be from 0 to 10");
            goto fail;
        }
        r->stage = (uint32_t)stage;
        const char *dk = herald_cfg_str(herald_cfg_get(n, "disable_key"), "");
        if (*dk)
            r->disable_key = xasprintf("ratelimit.%s.http_filter_enabled", dk);
        const struct herald_cfg *acts = herald_cfg_get(n, "actions");
        r->nactions = herald_cfg_len(acts);
        r->actions = xcalloc(r->nactions ? r->nactions : 1, sizeof(*r->actions));
        for (size_t j = 0; j < r->nactions; j++)
            if (action_from_cfg(&r->actions[j], herald_cfg_at(acts, j), err) < 0)
                goto fail;
    }
    return rl;

fail:
    herald_rate_limits_free(rl);
    return NULL;
}

/* ---------------------------------------------------------------- populating */

struct herald_rl_descriptors *herald_rl_descriptors_new(void)
{
    return xcalloc(1, sizeof(struct herald_rl_descriptors));
}

void herald_rl_descriptors_free(struct herald_rl_descriptors *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++) {
        for (size_t j = 0; j < d->d[i].n; j++) {
            free((char *)d->d[i].entries[j].key);
            free((char *)d->d[i].entries[j].value);
        }
        free((void *)d->d[i].entries);
    }
    free(d->d);
    free(d);
}

size_t herald_rl_descriptors_count(const struct herald_rl_descriptors *d)
{
    return d ? d->n : 0;
}

const struct herald_rl_descriptor *herald_rl_descriptors_at(const struct herald_rl_descriptors *d, size_t i)
{
    return d && i < d->n ? &d->d[i] : NULL;
}

