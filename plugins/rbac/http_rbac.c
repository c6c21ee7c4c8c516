/* rbac (HTTP): envoy.filters.http.rbac. A decoder filter that checks each
 * request's headers against the enforced rules (403 when denied) and the
 * shadow rules (counted and put in dynamic metadata only). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/herald.h"
#include "matcher.h"

/* The stats belong under http.<HCM stat_prefix>.rbac., but an HTTP filter's
 * factory cannot learn the connection manager's stat_prefix through SDK 1.1;
 * until it can (proposed: herald_env_stat_prefix()), they are counted under
 * this fixed prefix. */
#define MD_NS "envoy.filters.http.rbac"

struct conf {
    struct rbac_engine *rules, *shadow;
    char *shadow_prefix;                /* shadow_rules_stat_prefix, for the metadata keys */
    char *md_policy_key, *md_result_key;
    struct herald_stat *allowed, *denied, *shadow_allowed, *shadow_denied, *logged, *not_logged;
};

struct session {
    struct conf *conf;
    struct herald_http_stream *s;
    const struct herald_headers *headers;
};

static void conf_destroy(void *p)
{
    struct conf *c = p;
    if (!c)
        return;
    rbac_engine_free(c->rules);
    rbac_engine_free(c->shadow);
    free(c->shadow_prefix);
    free(c->md_policy_key);
    free(c->md_result_key);
    free(c);
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                       char **err)
{
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    const struct herald_cfg *rules = herald_cfg_get(n, "rules");
    const struct herald_cfg *shadow = herald_cfg_get(n, "shadow_rules");
    const struct herald_cfg *matcher = herald_cfg_get(n, "matcher");
    const struct herald_cfg *shadow_matcher = herald_cfg_get(n, "shadow_matcher");

    if (rules && !(c->rules = rbac_engine_from_cfg(rules, err)))
        goto fail;
    if (shadow && !(c->shadow = rbac_engine_from_cfg(shadow, err)))
        goto fail;
    /* Envoy: with both, the matcher wins and the rules are ignored */
    if (matcher) {
        if (rules)
            herald_env_warn(env, rules, "rules are ignored: matcher is set too");
        rbac_engine_free(c->rules);
        if (!(c->rules = rbac_engine_from_matcher(matcher, true, err)))
            goto fail;
    }
    if (shadow_matcher) {
        if (shadow)
            herald_env_warn(env, shadow, "shadow_rules are ignored: shadow_matcher is set too");
        rbac_engine_free(c->shadow);
        if (!(c->shadow = rbac_engine_from_matcher(shadow_matcher, true, err)))
            goto fail;
    }
    const char *rp = herald_cfg_str(herald_cfg_get(n, "rules_stat_prefix"), "");
    const char *sp = herald_cfg_str(herald_cfg_get(n, "shadow_rules_stat_prefix"), "");
    c->shadow_prefix = strdup(sp);
    if (!c->shadow_prefix || asprintf(&c->md_policy_key, "%sshadow_effective_policy_id", sp) < 0 ||
        asprintf(&c->md_result_key, "%sshadow_engine_result", sp) < 0)
        abort();

    /* Envoy: http.<prefix>.rbac.<rules_stat_prefix>allowed,
     * http.<prefix>.rbac.<shadow_rules_stat_prefix>shadow_allowed, with the
     * connection manager's prefix */
    const char *hp = herald_env_stat_prefix(env) ? herald_env_stat_prefix(env) : "http";
    char *base = NULL;
    if (asprintf(&base, "%s.rbac", hp) < 0)
        abort();
    c->allowed = rbac_counter(base, rp, "allowed");
    c->denied = rbac_counter(base, rp, "denied");
    c->logged = rbac_counter(base, rp, "logged");
    c->not_logged = rbac_counter(base, rp, "not_logged");
    c->shadow_allowed = rbac_counter(base, sp, "shadow_allowed");
    c->shadow_denied = rbac_counter(base, sp, "shadow_denied");
    free(base);
    if (c->rules && !c->rules->tree && c->rules->action == RBAC_ALLOW && c->rules->npolicies == 0)
        herald_env_warn(env, rules, "rules with action ALLOW and no policies deny every request");
    *out = c;
    return 0;

fail:
    conf_destroy(c);
    return -1;
}

/* RBACPerRoute: its rbac, or nothing to check (no rules: everything passes). */
static int route_conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                             char **err)
{
    return conf_create(herald_cfg_get(n, "rbac"), env, out, err);
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

/* All values of name joined with ",", as Envoy's getAllOfHeaderAsString. */
static char *get_header(void *arg, const char *name)
{
    return herald_headers_get_all(arg, name);
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    struct session *ss = p;
    struct conf *route = herald_http_stream_route_config(ss->s, ss->conf);
    struct conf *c = route ? route : ss->conf;
    struct herald_conn *conn = herald_http_stream_conn(ss->s);
    struct rbac_ip remote, direct, local;
    socklen_t len;
    const char *policy;

    if (!c->rules && !c->shadow)
        return HERALD_HTTP_CONTINUE;
    struct rbac_ctx ctx = {.header = get_header, .arg = headers,
                           .path = herald_headers_get(headers, ":path"), .query = herald_http_query_param};
    if (rbac_ip_parse(&remote, herald_http_stream_downstream_address(ss->s)) == 0)
        ctx.remote = &remote;
    if (conn) {
        if (rbac_ip_from_sockaddr(&direct, herald_conn_direct_remote_addr(conn, &len)) == 0)
            ctx.direct_remote = &direct;
        if (rbac_ip_from_sockaddr(&local, herald_conn_local_addr(conn, &len)) == 0)
            ctx.local = &local;
        ctx.sni = herald_conn_server_name(conn);
        ctx.tls = herald_conn_is_tls(conn);
        ctx.peer_names = rbac_peer_names;  /* decoded only if an authenticated rule asks */
        ctx.peer_arg = conn;
    }
    if (!ctx.remote)
        ctx.remote = ctx.direct_remote;
    else if (ctx.direct_remote && ctx.remote->family == ctx.direct_remote->family &&
             !memcmp(ctx.remote->addr, ctx.direct_remote->addr, sizeof(remote.addr)))
        remote.port = ctx.direct_remote->port; /* the client is the peer: its port is known */

    struct rbac_verdict v;
    if (c->shadow) {
        rbac_engine_decide(c->shadow, &ctx, &v);
        herald_stat_inc(v.allowed ? c->shadow_allowed : c->shadow_denied);
        if (v.policy)
            herald_http_stream_metadata_set(ss->s, MD_NS, c->md_policy_key, v.policy);
        herald_http_stream_metadata_set(ss->s, MD_NS, c->md_result_key, v.allowed ? "allowed" : "denied");
    }
    if (!c->rules)
        return HERALD_HTTP_CONTINUE;
    rbac_engine_decide(c->rules, &ctx, &v);
    policy = v.policy;
    bool ok = v.allowed;
    if (v.log_hint >= 0) {
        herald_stat_inc(v.log_hint ? c->logged : c->not_logged);
        herald_http_stream_metadata_set(ss->s, "envoy.common", "access_log_hint", v.log_hint ? "true" : "false");
    }
    if (ok) {
        HERALD_LOGF(HERALD_LOG_DEBUG, "rbac", "[S%llu] allowed, matched policy %s",
                    (unsigned long long)herald_http_stream_id(ss->s), policy ? policy : "none");
        herald_stat_inc(c->allowed);
        return HERALD_HTTP_CONTINUE;
    }
    herald_stat_inc(c->denied);
    char details[512];
    snprintf(details, sizeof(details), "rbac_access_denied_matched_policy[%s]", policy ? policy : "none");
    HERALD_LOGF(HERALD_LOG_DEBUG, "rbac", "[S%llu] denied, matched policy %s",
                (unsigned long long)herald_http_stream_id(ss->s), policy ? policy : "none");
    herald_http_stream_send_local_reply(ss->s, 403, "RBAC: access denied", details, NULL);
    return HERALD_HTTP_STOP;
}

static const struct herald_http_filter_ops ops = {
    .size = sizeof(struct herald_http_filter_ops),
    .config_create = conf_create,
    .config_destroy = conf_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .decode_headers = decode_headers,
    .route_config_schema = &rbac_per_route_schema,
    .route_config_create = route_conf_create,
    .route_config_destroy = conf_destroy,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.rbac.v3.RBAC",
    "envoy.config.filter.http.rbac.v2.RBAC",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.http.rbac",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "role-based access control of HTTP requests (403 when denied)",
              .config_schema = &rbac_http_schema,
              .ops = &ops);
