/* rbac (network): envoy.filters.network.rbac. Checks the connection (peer,
 * local address and port, SNI, the TLS peer certificate, dynamic metadata
 * such as mysql_proxy's) against the enforced rules on its first bytes
 * (ONE_TIME_ON_FIRST_BYTE) or on every read (CONTINUOUS) and closes it when
 * denied; shadow rules are evaluated once, counted and put in metadata. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"
#include "matcher.h"

#define MD_NS "envoy.filters.network.rbac"

struct conf {
    struct rbac_engine *rules, *shadow;
    bool continuous;
    char *md_policy_key, *md_result_key;
    struct herald_stat *allowed, *denied, *shadow_allowed, *shadow_denied, *logged, *not_logged;
};

enum verdict { V_UNKNOWN = 0, V_ALLOW, V_DENY };

struct session {
    struct conf *conf;
    struct herald_conn *c;
    enum verdict verdict;
    bool shadow_done;
};

static void conf_destroy(void *p)
{
    struct conf *c = p;
    if (!c)
        return;
    rbac_engine_free(c->rules);
    rbac_engine_free(c->shadow);
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
    const struct herald_cfg *sp = herald_cfg_get(n, "stat_prefix");

    if (!*herald_cfg_str(sp, "")) {
        herald_cfg_errorf(sp ? sp : n, err, "stat_prefix must not be empty");
        goto fail;
    }
    if (rules && !(c->rules = rbac_engine_from_cfg(rules, err)))
        goto fail;
    if (shadow && !(c->shadow = rbac_engine_from_cfg(shadow, err)))
        goto fail;
    /* Envoy: with both, the matcher wins and the rules are ignored */
    if (matcher) {
        if (rules)
            herald_env_warn(env, rules, "rules are ignored: matcher is set too");
        rbac_engine_free(c->rules);
        if (!(c->rules = rbac_engine_from_matcher(matcher, false, err)))
            goto fail;
    }
    if (shadow_matcher) {
        if (shadow)
            herald_env_warn(env, shadow, "shadow_rules are ignored: shadow_matcher is set too");
        rbac_engine_free(c->shadow);
        if (!(c->shadow = rbac_engine_from_matcher(shadow_matcher, false, err)))
            goto fail;
    }
    c->continuous = !strcmp(herald_cfg_str(herald_cfg_get(n, "enforcement_type"), ""), "CONTINUOUS");
    const char *ssp = herald_cfg_str(herald_cfg_get(n, "shadow_rules_stat_prefix"), "");
    if (asprintf(&c->md_policy_key, "%sshadow_effective_policy_id", ssp) < 0 ||
        asprintf(&c->md_result_key, "%sshadow_engine_result", ssp) < 0)
        abort();

    /* <stat_prefix>.rbac.allowed, <stat_prefix>.rbac.<shadow_rules_stat_prefix>shadow_allowed */
    char *prefix = rbac_join_prefix(herald_cfg_str(sp, ""), "rbac");
    c->allowed = herald_counter(prefix, "allowed");
    c->denied = herald_counter(prefix, "denied");
    c->logged = herald_counter(prefix, "logged");
    c->not_logged = herald_counter(prefix, "not_logged");
    c->shadow_allowed = rbac_counter(prefix, ssp, "shadow_allowed");
    c->shadow_denied = rbac_counter(prefix, ssp, "shadow_denied");
    free(prefix);
    if (c->rules && !c->rules->tree && c->rules->action == RBAC_ALLOW && c->rules->npolicies == 0)
        herald_env_warn(env, rules, "rules with action ALLOW and no policies close every connection");
    *out = c;
    return 0;

fail:
    conf_destroy(c);
    return -1;
}

static void *session_new(void *conf, void *wstate, struct herald_conn *c)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->conf = conf;
    s->c = c;
    return s;
}

static void session_destroy(void *p)
{
    free(p);
}

static const char *get_md(void *arg, const char *ns, const char *key)
{
    return herald_conn_metadata_get(arg, ns, key);
}

static void fill_ctx(struct session *s, struct rbac_ctx *ctx, struct rbac_ip *peer, struct rbac_ip *direct,
                     struct rbac_ip *local)
{
    socklen_t len;

    memset(ctx, 0, sizeof(*ctx));
    /* remote_ip: a PROXY protocol header's source when there was one; direct_remote_ip: the peer */
    if (rbac_ip_from_sockaddr(peer, herald_conn_remote_addr(s->c, &len)) == 0)
        ctx->remote = peer;
    if (rbac_ip_from_sockaddr(direct, herald_conn_direct_remote_addr(s->c, &len)) == 0)
        ctx->direct_remote = direct;
    if (rbac_ip_from_sockaddr(local, herald_conn_local_addr(s->c, &len)) == 0)
        ctx->local = local;
    ctx->sni = herald_conn_server_name(s->c);
    ctx->metadata = get_md;
    ctx->md_arg = s->c;
    ctx->tls = herald_conn_is_tls(s->c);
    ctx->peer_names = rbac_peer_names;  /* decoded only if an authenticated rule asks */
    ctx->peer_arg = s->c;
}

static enum herald_status on_read(void *p, struct herald_buf *data, bool end_stream)
{
    struct session *s = p;
    struct conf *c = s->conf;
    struct rbac_ctx ctx;
    struct rbac_ip peer, direct, local;
    const char *policy;

    if (s->verdict == V_DENY)
        return HERALD_CLOSE;
    if (s->verdict == V_ALLOW && !c->continuous)
        return HERALD_CONTINUE;
    if (!c->rules && (!c->shadow || s->shadow_done))
        return HERALD_CONTINUE;
    fill_ctx(s, &ctx, &peer, &direct, &local);

    struct rbac_verdict v;
    if (c->shadow && !s->shadow_done) {
        s->shadow_done = true;
        rbac_engine_decide(c->shadow, &ctx, &v);
        herald_stat_inc(v.allowed ? c->shadow_allowed : c->shadow_denied);
        if (v.policy)
            herald_conn_metadata_set(s->c, MD_NS, c->md_policy_key, v.policy);
        herald_conn_metadata_set(s->c, MD_NS, c->md_result_key, v.allowed ? "allowed" : "denied");
    }
    if (!c->rules) {
        s->verdict = V_ALLOW;
        return HERALD_CONTINUE;
    }
    rbac_engine_decide(c->rules, &ctx, &v);
    policy = v.policy;
    bool ok = v.allowed;
    if (v.log_hint >= 0 && s->verdict == V_UNKNOWN) {
        herald_stat_inc(v.log_hint ? c->logged : c->not_logged);
        herald_conn_metadata_set(s->c, "envoy.common", "access_log_hint", v.log_hint ? "true" : "false");
    }
    if (ok) {
        /* counted once per connection, also when CONTINUOUS checks again */
        if (s->verdict == V_UNKNOWN)
            herald_stat_inc(c->allowed);
        s->verdict = V_ALLOW;
        return HERALD_CONTINUE;
    }
    s->verdict = V_DENY;
    herald_stat_inc(c->denied);
    char details[512];
    snprintf(details, sizeof(details), "rbac_access_denied_matched_policy[%s]", policy ? policy : "none");
    herald_conn_metadata_set(s->c, MD_NS, "connection_termination_details", details);
    HERALD_LOGF(HERALD_LOG_DEBUG, "rbac", "[C%llu] %s: closing", (unsigned long long)herald_conn_id(s->c),
                details);
    return HERALD_CLOSE; /* the core resets the connection */
}

static const struct herald_network_filter_ops ops = {
    .size = sizeof(struct herald_network_filter_ops),
    .config_create = conf_create,
    .config_destroy = conf_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .on_read = on_read,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.network.rbac.v3.RBAC",
    "envoy.config.filter.network.rbac.v2.RBAC",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.network.rbac",
              .kind = HERALD_PLUGIN_NETWORK_FILTER,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "role-based access control of connections (closed when denied)",
              .config_schema = &rbac_network_schema,
              .ops = &ops);
