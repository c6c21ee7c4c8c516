/* envoy.filters.listener.proxy_protocol: reads the PROXY protocol header (v1
 * or v2, pp_parse.c) a load balancer puts before a connection's bytes,
 * consumes it, and makes its source and destination the connection's
 * addresses (x-forwarded-for, rbac remote_ip, access logs, filter chain
 * match; the socket's own stay the "direct" ones). v2 TLVs can go into
 * dynamic metadata (rules) and be kept for upstream PROXY headers
 * (pass_through_tlvs). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"
#include "pp_parse.h"

#define DEFAULT_NS "envoy.filters.listener.proxy_protocol"

struct rule { uint8_t type; char *ns, *key; };

struct version_stats { struct herald_stat *found, *disallowed, *error; };

struct pp_conf {
    struct rule *rules; size_t nrules;
    bool allow_without;
    unsigned allowed;            /* bit 1: v1, bit 2: v2 */
    bool pass_all;
    uint8_t pass[32];            /* INCLUDE: a bit per TLV type */
    bool pass_any;               /* pass_through_tlvs set at all */
    struct version_stats v[3];   /* [1], [2] */
    struct herald_stat *not_found_allowed, *not_found_disallowed;
};

struct session {
    struct pp_conf *conf;
    struct herald_socket *s;
};

/* ------------------------------------------------------------ config */

static int uint8_of(const struct herald_cfg *n, uint8_t *out, char **err)
{
    int64_t v = herald_cfg_int(n, -1);
    if (v < 0 || v > 255)
        return herald_cfg_errorf(n, err, "a TLV type is a byte: 0 to 255");
    *out = (uint8_t)v;
    return 0;
}

static void config_destroy(void *p)
{
    struct pp_conf *c = p;
    if (!c)
        return;
    for (size_t i = 0; i < c->nrules; i++) {
        free(c->rules[i].ns);
        free(c->rules[i].key);
    }
    free(c->rules);
    free(c);
}

static int config_create(const struct herald_cfg *tc, const struct herald_filter_env *env, void **out, char **err)
{
    (void)env;
    struct pp_conf *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->allow_without = herald_cfg_bool(herald_cfg_get(tc, "allow_requests_without_proxy_protocol"), false);
    const struct herald_cfg *rules = herald_cfg_get(tc, "rules");
    c->rules = calloc(herald_cfg_len(rules) + 1, sizeof(*c->rules));
    if (!c->rules)
        abort();
    for (size_t i = 0; i < herald_cfg_len(rules); i++) {
        const struct herald_cfg *r = herald_cfg_at(rules, i), *kv = herald_cfg_get(r, "on_tlv_present");
        struct rule *x = &c->rules[c->nrules];
        if (uint8_of(herald_cfg_get(r, "tlv_type"), &x->type, err) < 0)
            goto fail;
        const char *key = herald_cfg_str(herald_cfg_get(kv, "key"), "");
        if (!*key) {
            herald_cfg_errorf(kv ? kv : r, err, "on_tlv_present.key is required (the metadata key the TLV goes to)");
            goto fail;
        }
        const char *ns = herald_cfg_str(herald_cfg_get(kv, "metadata_namespace"), "");
        x->ns = strdup(*ns ? ns : DEFAULT_NS);
        x->key = strdup(key);
        if (!x->ns || !x->key)
            abort();
        c->nrules++;
    }
    const struct herald_cfg *pt = herald_cfg_get(tc, "pass_through_tlvs");
    if (pt) {
        c->pass_any = true;
        const char *m = herald_cfg_str(herald_cfg_get(pt, "match_type"), "INCLUDE_ALL");
        c->pass_all = strcmp(m, "INCLUDE_ALL") == 0;
        const struct herald_cfg *types = herald_cfg_get(pt, "tlv_type");
        for (size_t i = 0; i < herald_cfg_len(types); i++) {
            uint8_t t = 0;
            if (uint8_of(herald_cfg_at(types, i), &t, err) < 0)
                goto fail;
            c->pass[t / 8] |= (uint8_t)(1u << (t % 8));
        }
    }
    const struct herald_cfg *versions = herald_cfg_get(tc, "allowed_versions");
    for (size_t i = 0; i < herald_cfg_len(versions); i++)
        c->allowed |= strcmp(herald_cfg_str(herald_cfg_at(versions, i), ""), "V2") == 0 ? 2u : 1u;
    if (!c->allowed)
        c->allowed = 3;   /* default: both */

    /* proxy_proto.[<stat_prefix>.]versions.v<N>.{found,disallowed,error}, not_found_{allowed,disallowed} */
    const char *sp = herald_cfg_str(herald_cfg_get(tc, "stat_prefix"), "");
    char prefix[256];
    snprintf(prefix, sizeof(prefix), *sp ? "proxy_proto.%s" : "proxy_proto", sp);
    for (int v = 1; v <= 2; v++) {
        char n[64];
        snprintf(n, sizeof(n), "versions.v%d.found", v);
        c->v[v].found = herald_counter(prefix, n);
        snprintf(n, sizeof(n), "versions.v%d.disallowed", v);
        c->v[v].disallowed = herald_counter(prefix, n);
        snprintf(n, sizeof(n), "versions.v%d.error", v);
        c->v[v].error = herald_counter(prefix, n);
    }
    c->not_found_allowed = herald_counter(prefix, "not_found_allowed");
    c->not_found_disallowed = herald_counter(prefix, "not_found_disallowed");
    *out = c;
    return 0;
fail:
    config_destroy(c);
    return -1;
}

/* ------------------------------------------------------------ the filter */

static size_t max_read_bytes(void *conf)
{
    (void)conf;
    return PP_V2_MAX;   /* the whole header is peeked at once; most are under 300 bytes */
}

static void *session_new(void *conf, struct herald_socket *s)
{
    struct session *ss = calloc(1, sizeof(*ss));
    if (ss) {
        ss->conf = conf;
        ss->s = s;
    }
    return ss;
}

static void session_destroy(void *session) { free(session); }

static enum herald_status on_accept(void *session) { return session ? HERALD_STOP : HERALD_CLOSE; }

static void apply(struct session *ss, const struct pp_header *h)
{
    struct pp_conf *c = ss->conf;
    if (h->has_addresses &&
        herald_socket_restore_addresses(ss->s, (const struct sockaddr *)&h->src, h->src_len,
                                        (const struct sockaddr *)&h->dst, h->dst_len) < 0)
        herald_log(HERALD_LOG_DEBUG, "proxy_protocol", "addresses of an unsupported family kept as they were");
    for (size_t i = 0; i < h->ntlvs; i++) {
        const struct pp_tlv_ref *t = &h->tlvs[i];
        for (size_t r = 0; r < c->nrules; r++)
            if (c->rules[r].type == t->type) {
                /* metadata values are strings: the TLV's bytes up to a NUL */
                char *v = strndup((const char *)t->value, t->len);
                if (!v)
                    abort();
                herald_socket_metadata_set(ss->s, c->rules[r].ns, c->rules[r].key, v);
                free(v);
            }
        if (c->pass_any && (c->pass_all || (c->pass[t->type / 8] & (1u << (t->type % 8)))))
            herald_socket_add_proxy_tlv(ss->s, t->type, t->value, t->len);
    }
}

static enum herald_status on_data(void *session, const uint8_t *data, size_t len)
{
    struct session *ss = session;
    struct pp_conf *c = ss->conf;
    struct pp_header h;
    enum pp_result r = pp_parse(data, len, 3, &h);
    if (r == PP_MORE && h.version == 0)
        return HERALD_STOP;   /* a prefix of a signature: which version, if any, is not known yet */
    if (r != PP_NOT_PROXY && !(c->allowed & (1u << (h.version - 1)))) {
        /* a version not allowed: with allow_requests_without_proxy_protocol it is just data */
        if (c->allow_without) {
            herald_stat_inc(c->not_found_allowed);
            return HERALD_CONTINUE;
        }
        herald_stat_inc(c->v[h.version].disallowed);
        return HERALD_CLOSE;
    }
    switch (r) {
    case PP_MORE:
        return HERALD_STOP;
    case PP_NOT_PROXY:
        if (c->allow_without) {
            herald_stat_inc(c->not_found_allowed);
            return HERALD_CONTINUE;
        }
        herald_stat_inc(c->not_found_disallowed);
        herald_log(HERALD_LOG_DEBUG, "proxy_protocol", "a connection without a PROXY protocol header: closed");
        return HERALD_CLOSE;
    case PP_ERROR:
        herald_stat_inc(c->v[h.version].error);
        herald_log(HERALD_LOG_DEBUG, "proxy_protocol", "closed: %s", h.error);
        return HERALD_CLOSE;
    case PP_DONE:
        break;
    }
    herald_stat_inc(c->v[h.version].found);
    apply(ss, &h);
    herald_socket_drain(ss->s, h.len);
    return HERALD_CONTINUE;
}

static const struct herald_listener_filter_ops ops = {
    .size = sizeof(struct herald_listener_filter_ops),
    .config_create = config_create,
    .config_destroy = config_destroy,
    .max_read_bytes = max_read_bytes,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .on_accept = on_accept,
    .on_data = on_data,
};

/* ------------------------------------------------------------ schema */

static const struct herald_field kv_fields[] = {
    {.name = "metadata_namespace", .kind = HERALD_FIELD_STRING, .help = "default " DEFAULT_NS},
    {.name = "key", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED},
    {.name = NULL},
};
static const struct herald_message kv_msg = {
    "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol.KeyValuePair", kv_fields, NULL,
};

static const struct herald_field rule_fields[] = {
    {.name = "tlv_type", .kind = HERALD_FIELD_UINT, .help = "0 to 255"},
    {.name = "on_tlv_present", .kind = HERALD_FIELD_MESSAGE, .message = &kv_msg},
    {.name = NULL},
};
static const struct herald_message rule_msg = {
    "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol.Rule", rule_fields, NULL,
};

static const char *const match_values[] = {"INCLUDE_ALL", "INCLUDE", NULL};
static const struct herald_field pass_fields[] = {
    {.name = "match_type", .kind = HERALD_FIELD_ENUM, .enum_values = match_values},
    {.name = "tlv_type", .kind = HERALD_FIELD_UINT, .flags = HERALD_F_REPEATED},
    {.name = NULL},
};
static const struct herald_message pass_msg = {"envoy.config.core.v3.ProxyProtocolPassThroughTLVs", pass_fields, NULL};

static const char *const version_values[] = {"V1", "V2", NULL};
static const struct herald_field fields[] = {
    {.name = "rules", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED, .message = &rule_msg,
     .help = "a TLV of tlv_type -> dynamic metadata on_tlv_present.metadata_namespace:key"},
    {.name = "allow_requests_without_proxy_protocol", .kind = HERALD_FIELD_BOOL,
     .help = "let connections without a PROXY header through untouched (default false)"},
    {.name = "pass_through_tlvs", .kind = HERALD_FIELD_MESSAGE, .message = &pass_msg,
     .help = "TLVs kept for upstream PROXY headers (unset: none)"},
    {.name = "allowed_versions", .kind = HERALD_FIELD_ENUM, .flags = HERALD_F_REPEATED, .enum_values = version_values,
     .help = "default both"},
    {.name = "disallowed_versions", .kind = HERALD_FIELD_ENUM, .flags = HERALD_F_UNSUPPORTED | HERALD_F_REPEATED,
     .enum_values = version_values, .hint = "use allowed_versions"},
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING, .help = "stats under proxy_proto.<stat_prefix>."},
    {.name = NULL},
};

static const struct herald_message schema = {
    "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol", fields, NULL,
};

static const char *const aliases[] = {"envoy.listener.proxy_protocol", NULL};
static const char *const type_urls[] = {
    "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
    "envoy.config.filter.listener.proxy_protocol.v2.ProxyProtocol",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.listener.proxy_protocol",
              .kind = HERALD_PLUGIN_LISTENER_FILTER,
              .aliases = aliases,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "reads a PROXY protocol header (v1, v2) and makes its addresses the connection's",
              .config_schema = &schema,
              .ops = &ops);
