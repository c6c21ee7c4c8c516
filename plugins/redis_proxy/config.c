/* redis_proxy: the config schema (envoy.extensions.filters.network.redis_proxy.v3.RedisProxy),
 * the factory and the plugin descriptor. Every field of Envoy's message is
 * listed: those herald does not implement are refused, never ignored. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "redis_proxy.h"
#include "xalloc.h"

#define PREFIX_MAX 1000   /* Envoy's max_bytes on a route prefix */

/* ---------------------------------------------------------------- schema */

static const struct herald_field data_source_fields[] = {
    {.name = "filename", .kind = HERALD_FIELD_STRING, .oneof = "specifier",
     .help = "read from this file when the config loads"},
    {.name = "inline_bytes", .kind = HERALD_FIELD_STRING, .oneof = "specifier", .help = "base64"},
    {.name = "inline_string", .kind = HERALD_FIELD_STRING, .oneof = "specifier"},
    {.name = "environment_variable", .kind = HERALD_FIELD_STRING, .oneof = "specifier"},
    {.name = "watched_directory", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {NULL},
};

static const struct herald_message data_source_msg = {
    .name = "envoy.config.core.v3.DataSource",
    .fields = data_source_fields,
};

static const char *const read_policies[] = {
    "MASTER", "PREFER_MASTER", "REPLICA", "PREFER_REPLICA", "ANY", "AZ_AFFINITY",
    "AZ_AFFINITY_REPLICAS_AND_PRIMARY", "PRIMARY", "PREFER_PRIMARY", NULL,
};

static int check_settings(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *f;
    if ((f = herald_cfg_get(n, "enable_redirection")) && herald_cfg_bool(f, false))
        return herald_cfg_errorf(f, err, "not supported: enable_redirection (herald does not follow MOVED/ASK "
                                 "redirections; leave it false)");
    if ((f = herald_cfg_get(n, "enable_command_stats")) && herald_cfg_bool(f, false))
        return herald_cfg_errorf(f, err, "not supported: enable_command_stats (the per-cluster "
                                 "upstream_commands.* stats; the filter's command.<name>.* are kept)");
    f = herald_cfg_get(n, "read_policy");
    const char *rp = herald_cfg_str(f, "MASTER");
    if (strcmp(rp, "MASTER") != 0 && strcmp(rp, "PRIMARY") != 0)
        return herald_cfg_errorf(f, err, "not supported: read_policy %s (replica reads need a Redis Cluster "
                                 "cluster, which herald does not have; use MASTER)", rp);
    return 0;
}

static const struct herald_field settings_fields[] = {
    {.name = "op_timeout", .kind = HERALD_FIELD_DURATION, .flags = HERALD_F_REQUIRED,
     .help = "how long requests may wait for a connected server's next reply (0: no limit)"},
    {.name = "enable_hashtagging", .kind = HERALD_FIELD_BOOL,
     .help = "hash only the {tag} part of keys that have one, as Redis Cluster does"},
    {.name = "enable_redirection", .kind = HERALD_FIELD_BOOL,
     .help = "following MOVED/ASK: only false is accepted"},
    {.name = "dns_cache_config", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "max_buffer_size_before_flush", .kind = HERALD_FIELD_UINT,
     .help = "hold requests to a server until this many bytes are waiting (0: send each at once)"},
    {.name = "buffer_flush_timeout", .kind = HERALD_FIELD_DURATION,
     .help = "send held requests after this long (default 3ms)"},
    {.name = "max_upstream_unknown_connections", .kind = HERALD_FIELD_UINT,
     .help = "accepted; applies to redirections only, which herald does not follow"},
    {.name = "enable_command_stats", .kind = HERALD_FIELD_BOOL, .help = "only false is accepted"},
    {.name = "read_policy", .kind = HERALD_FIELD_ENUM, .enum_values = read_policies,
     .help = "only MASTER (the default) is accepted"},
    {.name = "connection_rate_limit", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {NULL},
};

static const struct herald_message settings_msg = {
    .name = "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.ConnPoolSettings",
    .fields = settings_fields,
    .check = check_settings,
};

static const struct herald_field mirror_fields[] = {
    {.name = "cluster", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "the cluster requests are copied to"},
    {.name = "runtime_fraction", .kind = HERALD_FIELD_MESSAGE, .message = &fraction_runtime_schema,
     .help = "the share of requests mirrored (default all)"},
    {.name = "exclude_read_commands", .kind = HERALD_FIELD_BOOL, .help = "mirror only commands that write"},
    {NULL},
};

static const struct herald_message mirror_msg = {
    .name = "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes.Route.RequestMirrorPolicy",
    .fields = mirror_fields,
};

static const struct herald_field route_fields[] = {
    {.name = "prefix", .kind = HERALD_FIELD_STRING, .help = "the start of the keys this route takes"},
    {.name = "remove_prefix", .kind = HERALD_FIELD_BOOL, .help = "send keys without the prefix"},
    {.name = "cluster", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED, .help = "the upstream cluster"},
    {.name = "request_mirror_policy", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED,
     .message = &mirror_msg, .help = "clusters that also get the requests (their replies are dropped)"},
    {.name = "key_formatter", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_UNSUPPORTED},
    {.name = "read_command_policy", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {NULL},
};

static const struct herald_message route_msg = {
    .name = "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes.Route",
    .fields = route_fields,
};

static const struct herald_field prefix_routes_fields[] = {
    {.name = "routes", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED, .message = &route_msg,
     .help = "the longest matching prefix wins"},
    {.name = "case_insensitive", .kind = HERALD_FIELD_BOOL, .help = "prefixes match in any case"},
    {.name = "catch_all_route", .kind = HERALD_FIELD_MESSAGE, .message = &route_msg,
     .help = "for keys no prefix matches (without it they get \"no upstream host\")"},
    {.name = "catch_all_cluster", .kind = HERALD_FIELD_REMOVED, .hint = "use catch_all_route: {cluster: ...}"},
    {NULL},
};

static const struct herald_message prefix_routes_msg = {
    .name = "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy.PrefixRoutes",
    .fields = prefix_routes_fields,
};

static int check_redis_proxy(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *sp = herald_cfg_get(n, "stat_prefix");
    if (!sp || !*herald_cfg_str(sp, ""))
        return herald_cfg_errorf(sp ? sp : n, err, "stat_prefix must not be empty");
    const struct herald_cfg *pr = herald_cfg_get(n, "prefix_routes");
    if (!herald_cfg_len(herald_cfg_get(pr, "routes")) && !herald_cfg_get(pr, "catch_all_route"))
        return herald_cfg_errorf(pr ? pr : n, err, "prefix_routes needs routes or a catch_all_route: "
                                 "without them every command would get \"no upstream host\"");
    if (herald_cfg_get(n, "downstream_auth_username") && !herald_cfg_get(n, "downstream_auth_password") &&
        !herald_cfg_len(herald_cfg_get(n, "downstream_auth_passwords")))
        return herald_cfg_errorf(herald_cfg_get(n, "downstream_auth_username"), err,
                                 "downstream_auth_username needs downstream_auth_passwords (or the deprecated "
                                 "downstream_auth_password)");
    return 0;
}

static const struct herald_field redis_proxy_fields[] = {
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "stats are named redis.<stat_prefix>.*"},
    {.name = "settings", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &settings_msg,
     .help = "the connections to the servers"},
    {.name = "latency_in_micros", .kind = HERALD_FIELD_BOOL,
     .help = "command.<name>.latency in microseconds (default milliseconds)"},
    {.name = "prefix_routes", .kind = HERALD_FIELD_MESSAGE, .message = &prefix_routes_msg,
     .help = "which cluster each key goes to"},
    {.name = "downstream_auth_password", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_DEPRECATED,
     .message = &data_source_msg, .hint = "use downstream_auth_passwords"},
    {.name = "downstream_auth_passwords", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED,
     .message = &data_source_msg, .help = "clients must AUTH with one of these before anything else"},
    {.name = "downstream_auth_username", .kind = HERALD_FIELD_MESSAGE, .message = &data_source_msg,
     .help = "clients must AUTH with this user name and a password"},
    {.name = "faults", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "external_auth_provider", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "custom_commands", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REPEATED,
     .help = "more commands sent to the server owning their first argument (module commands)"},
    {.name = "cluster", .kind = HERALD_FIELD_REMOVED, .hint = "use prefix_routes: {catch_all_route: {cluster: ...}}"},
    {NULL},
};

const struct herald_message redis_proxy_schema = {
    .name = "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
    .fields = redis_proxy_fields,
    .check = check_redis_proxy,
};

/* ---------------------------------------------------------------- factory */

/* A DataSource's bytes into *out (len in *len); a secret, so a file of at most 4 KiB. */
static int read_data_source(const struct herald_cfg *n, char **out, size_t *len, char **err)
{
    enum { MAX_SECRET = 4095 };
    if (!(*out = herald_cfg_data_source(n, MAX_SECRET, len, err)))
        return -1;
    if (*len > MAX_SECRET) {
        free(*out);
        *out = NULL;
        return herald_cfg_errorf(herald_cfg_at(n, 0), err, "a secret longer than %d bytes", MAX_SECRET);
    }
    return 0;
}

/* The index of cluster name in conf->clusters, added when new. */
static size_t cluster_index(struct redis_proxy_conf *conf, const char *name)
{
    for (size_t i = 0; i < conf->nclusters; i++)
        if (strcmp(conf->clusters[i].name, name) == 0)
            return i;
    struct redis_cluster *c = realloc(conf->clusters, (conf->nclusters + 1) * sizeof(*c));
    if (!c)
        abort();
    conf->clusters = c;
    c = &conf->clusters[conf->nclusters];
    memset(c, 0, sizeof(*c));
    c->name = xstrdup(name);
    return conf->nclusters++;
}

static int parse_route(struct redis_proxy_conf *conf, const struct herald_cfg *n, struct redis_route *rt,
                       const struct herald_filter_env *env, char **err)
{
    const struct herald_cfg *cl = herald_cfg_get(n, "cluster");
    const char *prefix = herald_cfg_str(herald_cfg_get(n, "prefix"), "");
    if (strlen(prefix) > PREFIX_MAX)
        return herald_cfg_errorf(herald_cfg_get(n, "prefix"), err, "a prefix may have at most %d bytes",
                                 PREFIX_MAX);
    rt->prefix = xstrdup(prefix);
    rt->prefix_len = strlen(prefix);
    rt->remove_prefix = herald_cfg_bool(herald_cfg_get(n, "remove_prefix"), false);
    rt->cluster = cluster_index(conf, herald_cfg_str(cl, ""));
    if (!herald_env_cluster_exists(env, herald_cfg_str(cl, "")))   /* also marks it referenced */
        herald_env_warn(env, cl, "cluster '%s' is not defined: its commands get \"no upstream host\"",
                        herald_cfg_str(cl, ""));
    const struct herald_cfg *mp = herald_cfg_get(n, "request_mirror_policy");
    rt->nmirrors = herald_cfg_len(mp);
    rt->mirrors = xcalloc(rt->nmirrors, sizeof(*rt->mirrors));
    for (size_t i = 0; i < rt->nmirrors; i++) {
        const struct herald_cfg *m = herald_cfg_at(mp, i), *mc = herald_cfg_get(m, "cluster");
        struct redis_mirror *mi = &rt->mirrors[i];
        mi->cluster = cluster_index(conf, herald_cfg_str(mc, ""));
        mi->exclude_read_commands = herald_cfg_bool(herald_cfg_get(m, "exclude_read_commands"), false);
        fraction_parse(herald_cfg_get(m, "runtime_fraction"), &mi->fraction);
        if (!herald_env_cluster_exists(env, herald_cfg_str(mc, "")))
            herald_env_warn(env, mc, "mirror cluster '%s' is not defined", herald_cfg_str(mc, ""));
    }
    return 0;
}

static void free_route(struct redis_route *rt)
{
    free(rt->prefix);
    for (size_t i = 0; i < rt->nmirrors; i++)
        fraction_free(&rt->mirrors[i].fraction);
    free(rt->mirrors);
}

void redis_proxy_config_destroy(void *p)
{
    struct redis_proxy_conf *conf = p;
    if (!conf)
        return;
    for (size_t i = 0; i < conf->router.nroutes; i++)
        free_route(&conf->router.routes[i]);
    free(conf->router.routes);
    if (conf->router.catch_all) {
        free_route(conf->router.catch_all);
        free(conf->router.catch_all);
    }
    for (size_t i = 0; i < conf->nclusters; i++) {
        struct redis_cluster *c = &conf->clusters[i];
        free(c->name);
        free(c->auth_username);
        free(c->auth_password);
    }
    free(conf->clusters);
    for (size_t i = 0; i < conf->npasswords; i++)
        free(conf->passwords[i]);
    free(conf->passwords);
    free(conf->password_lens);
    free(conf->username);
    for (size_t i = 0; i < conf->ncustom; i++)
        free(conf->custom_commands[i]);
    free(conf->custom_commands);
    free(conf->cmd_stats);
    free(conf->stat_prefix);
    free(conf);
}

static void add_password(struct redis_proxy_conf *conf, char *p, size_t len)
{
    if (len == 0) {   /* as Envoy: an empty password is no password */
        free(p);
        return;
    }
    conf->passwords[conf->npasswords] = p;
    conf->password_lens[conf->npasswords++] = len;
}

static void make_cmd_stats(struct redis_cmd_stats *st, const char *stat_prefix, const char *name)
{
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "%s.command.%s", stat_prefix, name);
    st->total = herald_counter(prefix, "total");
    st->success = herald_counter(prefix, "success");
    st->error = herald_counter(prefix, "error");
    st->latency = herald_histogram(prefix, "latency");
}

static void make_stats(struct redis_proxy_conf *conf)
{
    const char *p = conf->stat_prefix;
    struct redis_proxy_stats *st = &conf->stats;
    char splitter[512];

#define C(x) st->x = herald_counter(p, #x)
#define G(x) st->x = herald_gauge(p, #x)
    G(downstream_cx_active); C(downstream_cx_protocol_error); G(downstream_cx_rx_bytes_buffered);
    C(downstream_cx_rx_bytes_total); C(downstream_cx_total); G(downstream_cx_tx_bytes_buffered);
    C(downstream_cx_tx_bytes_total); C(downstream_cx_drain_close); G(downstream_rq_active);
    C(downstream_rq_total);
#undef C
#undef G
    snprintf(splitter, sizeof(splitter), "%s.splitter", p);
    st->invalid_request = herald_counter(splitter, "invalid_request");
    st->unsupported_command = herald_counter(splitter, "unsupported_command");

    size_t n = redis_cmd_count();
    conf->cmd_stats = xcalloc(n + conf->ncustom, sizeof(*conf->cmd_stats));
    for (size_t i = 0; i < n; i++) {
        const struct redis_cmd *c = redis_cmd_at(i);
        if (redis_cmd_has_stats(c->kind))
            make_cmd_stats(&conf->cmd_stats[i], p, c->name);
    }
    for (size_t i = 0; i < conf->ncustom; i++)
        make_cmd_stats(&conf->cmd_stats[n + i], p, conf->custom_commands[i]);

    for (size_t i = 0; i < conf->nclusters; i++) {
        struct redis_cluster *c = &conf->clusters[i];
        char cp[512];
        snprintf(cp, sizeof(cp), "cluster.%s", c->name);
        c->upstream_rq_total = herald_counter(cp, "upstream_rq_total");
        c->upstream_rq_timeout = herald_counter(cp, "upstream_rq_timeout");
        c->upstream_rq_active = herald_gauge(cp, "upstream_rq_active");
    }
}

int redis_proxy_config_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                              char **err)
{
    if (check_redis_proxy(n, err) < 0)
        return -1;
    struct redis_proxy_conf *conf = xcalloc(1, sizeof(*conf));
    const char *sp = herald_cfg_str(herald_cfg_get(n, "stat_prefix"), "");
    size_t splen = strlen(sp);
    int keep = (int)(splen && sp[splen - 1] == '.' ? splen - 1 : splen);
    if (asprintf(&conf->stat_prefix, "redis.%.*s", keep, sp) < 0)
        abort();

    const struct herald_cfg *st = herald_cfg_get(n, "settings");
    conf->op_timeout_ms = herald_cfg_duration_ms(herald_cfg_get(st, "op_timeout"), 0);
    conf->hashtagging = herald_cfg_bool(herald_cfg_get(st, "enable_hashtagging"), false);
    conf->max_buffer_before_flush = (uint32_t)herald_cfg_int(herald_cfg_get(st, "max_buffer_size_before_flush"), 0);
    conf->buffer_flush_timeout_ms = herald_cfg_duration_ms(herald_cfg_get(st, "buffer_flush_timeout"), 3);
    conf->latency_in_micros = herald_cfg_bool(herald_cfg_get(n, "latency_in_micros"), false);

    /* routes: duplicates are an error, as in Envoy */
    const struct herald_cfg *pr = herald_cfg_get(n, "prefix_routes");
    const struct herald_cfg *routes = herald_cfg_get(pr, "routes");
    conf->router.case_insensitive = herald_cfg_bool(herald_cfg_get(pr, "case_insensitive"), false);
    conf->router.routes = xcalloc(herald_cfg_len(routes), sizeof(*conf->router.routes));
    for (size_t i = 0; i < herald_cfg_len(routes); i++) {
        const struct herald_cfg *r = herald_cfg_at(routes, i);
        struct redis_route *rt = &conf->router.routes[conf->router.nroutes];
        if (parse_route(conf, r, rt, env, err) < 0) {
            free_route(rt);
            goto fail;
        }
        conf->router.nroutes++;
        for (size_t j = 0; j + 1 < conf->router.nroutes; j++) {
            const struct redis_route *o = &conf->router.routes[j];
            if (o->prefix_len == rt->prefix_len &&
                (conf->router.case_insensitive ? strcasecmp(o->prefix, rt->prefix) == 0
                                               : strcmp(o->prefix, rt->prefix) == 0)) {
                herald_cfg_errorf(herald_cfg_get(r, "prefix") ? herald_cfg_get(r, "prefix") : r, err,
                                  "prefix '%s' is given twice%s", rt->prefix,
                                  conf->router.case_insensitive ? " (case_insensitive)" : "");
                goto fail;
            }
        }
    }
    redis_router_sort(&conf->router);
    const struct herald_cfg *ca = herald_cfg_get(pr, "catch_all_route");
    if (ca) {
        conf->router.catch_all = xcalloc(1, sizeof(*conf->router.catch_all));
        if (parse_route(conf, ca, conf->router.catch_all, env, err) < 0)
            goto fail;
    }

    /* downstream AUTH */
    const struct herald_cfg *pw = herald_cfg_get(n, "downstream_auth_passwords");
    const struct herald_cfg *pw1 = herald_cfg_get(n, "downstream_auth_password");
    size_t npw = herald_cfg_len(pw) + (pw1 ? 1 : 0);
    conf->passwords = xcalloc(npw, sizeof(*conf->passwords));
    conf->password_lens = xcalloc(npw, sizeof(*conf->password_lens));
    char *secret;
    size_t slen;
    if (pw1) {
        if (read_data_source(pw1, &secret, &slen, err) < 0)
            goto fail;
        add_password(conf, secret, slen);
    }
    for (size_t i = 0; i < herald_cfg_len(pw); i++) {
        if (read_data_source(herald_cfg_at(pw, i), &secret, &slen, err) < 0)
            goto fail;
        add_password(conf, secret, slen);
    }
    const struct herald_cfg *user = herald_cfg_get(n, "downstream_auth_username");
    if (user) {
        if (read_data_source(user, &secret, &slen, err) < 0)
            goto fail;
        if (slen) {
            conf->username = secret;
            conf->username_len = slen;
        } else {
            free(secret);
        }
    }

    /* the servers' AUTH: each cluster's RedisProtocolOptions (typed_extension_protocol_options) */
    for (size_t i = 0; i < conf->nclusters; i++) {
        struct redis_cluster *c = &conf->clusters[i];
        const struct herald_cfg *po =
            herald_env_cluster_protocol_options(env, c->name, "envoy.filters.network.redis_proxy");
        const struct herald_cfg *pass = herald_cfg_get(po, "auth_password"), *un = herald_cfg_get(po, "auth_username");
        if (pass) {
            if (read_data_source(pass, &c->auth_password, &c->auth_password_len, err) < 0)
                goto fail;
            if (!c->auth_password_len) {   /* as Envoy: an empty password sends no AUTH */
                free(c->auth_password);
                c->auth_password = NULL;
            }
        }
        if (un && c->auth_password) {
            if (read_data_source(un, &c->auth_username, &c->auth_username_len, err) < 0)
                goto fail;
            if (!c->auth_username_len) {
                free(c->auth_username);
                c->auth_username = NULL;
            }
        }
    }

    const struct herald_cfg *cc = herald_cfg_get(n, "custom_commands");
    conf->custom_commands = xcalloc(herald_cfg_len(cc), sizeof(char *));
    for (size_t i = 0; i < herald_cfg_len(cc); i++) {
        const struct herald_cfg *c = herald_cfg_at(cc, i);
        const char *name = herald_cfg_str(c, "");
        if (!*name || strlen(name) > 64 || strpbrk(name, " \t\r\n")) {
            herald_cfg_errorf(c, err, "'%s' is not a command name", name);
            goto fail;
        }
        char *low = xstrdup(name);
        for (char *q = low; *q; q++)
            if (*q >= 'A' && *q <= 'Z')
                *q = (char)(*q - 'A' + 'a');
        conf->custom_commands[conf->ncustom++] = low;
    }

    make_stats(conf);
    *out = conf;
    return 0;

fail:
    redis_proxy_config_destroy(conf);
    return -1;
}

static const char *const redis_proxy_aliases[] = {"envoy.redis_proxy", NULL};
static const char *const redis_proxy_type_urls[] = {
    "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
    "envoy.config.filter.network.redis_proxy.v2.RedisProxy",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.network.redis_proxy",
              .kind = HERALD_PLUGIN_NETWORK_FILTER,
              .flags = HERALD_PLUGIN_TERMINAL,
              .aliases = redis_proxy_aliases,
              .type_urls = redis_proxy_type_urls,
              .version = "1.0.0",
              .description = "Redis proxy: keys routed by prefix and hashed over a cluster's hosts, multi-key "
                             "commands split, pipelined replies in order, AUTH, Envoy's stats",
              .config_schema = &redis_proxy_schema,
              .ops = &redis_proxy_ops);
