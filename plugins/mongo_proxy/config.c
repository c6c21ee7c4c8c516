/* mongo_proxy: the config schema (envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy),
 * the factory and the plugin descriptor. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mongo_proxy.h"

static const char *const denominators[] = {"HUNDRED", "TEN_THOUSAND", "MILLION", NULL};

static const struct herald_field percent_fields[] = {
    {.name = "numerator", .kind = HERALD_FIELD_UINT, .help = "the share, over the denominator"},
    {.name = "denominator", .kind = HERALD_FIELD_ENUM, .enum_values = denominators,
     .help = "HUNDRED (default), TEN_THOUSAND or MILLION"},
    {NULL},
};

static const struct herald_message percent_msg = {
    .name = "envoy.type.v3.FractionalPercent",
    .fields = percent_fields,
};

static const struct herald_field delay_fields[] = {
    {.name = "fixed_delay", .kind = HERALD_FIELD_DURATION, .oneof = "fault_delay_secifier",
     .help = "how long to hold a delayed request"},
    {.name = "header_delay", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED,
     .oneof = "fault_delay_secifier", .help = "a delay taken from an HTTP header (HTTP only)"},
    {.name = "percentage", .kind = HERALD_FIELD_MESSAGE, .message = &percent_msg,
     .help = "the share of requests delayed (default 0)"},
    {NULL},
};

static const struct herald_message delay_msg = {
    .name = "envoy.extensions.filters.common.fault.v3.FaultDelay",
    .fields = delay_fields,
};

static const struct herald_field mongo_proxy_fields[] = {
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "stats are named mongo.<stat_prefix>.*"},
    {.name = "access_log", .kind = HERALD_FIELD_STRING,
     .help = "a file to append one JSON line per operation to"},
    {.name = "delay", .kind = HERALD_FIELD_MESSAGE, .message = &delay_msg,
     .help = "fault injection: hold a share of requests (query, insert, getMore, killCursors, OP_MSG)"},
    {.name = "emit_dynamic_metadata", .kind = HERALD_FIELD_BOOL,
     .help = "set connection metadata <db>.<collection> = the operations seen on it"},
    {.name = "commands", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REPEATED,
     .help = "commands that get cmd.<command>.* stats (default delete, insert, update)"},
    {NULL},
};

static int check_mongo_proxy(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *sp = herald_cfg_get(n, "stat_prefix");
    if (sp && !*herald_cfg_str(sp, ""))
        return herald_cfg_errorf(sp, err, "stat_prefix must not be empty");
    const struct herald_cfg *d = herald_cfg_get(n, "delay");
    if (d && !herald_cfg_get(d, "fixed_delay"))
        return herald_cfg_errorf(d, err, "delay needs fixed_delay");
    return 0;
}

const struct herald_message mongo_proxy_schema = {
    .name = "envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy",
    .fields = mongo_proxy_fields,
    .check = check_mongo_proxy,
};

static char *dupstr(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

static void make_stats(struct mongo_proxy_stats *st, const char *p)
{
#define C(x) st->x = herald_counter(p, #x)
    C(decoding_error); C(delays_injected); C(op_get_more); C(op_insert); C(op_kill_cursors);
    C(op_query); C(op_query_tailable_cursor); C(op_query_no_cursor_timeout); C(op_query_await_data);
    C(op_query_exhaust); C(op_query_no_max_time); C(op_query_scatter_get); C(op_query_multi_get);
    C(op_reply); C(op_reply_cursor_not_found); C(op_reply_query_failure); C(op_reply_valid_cursor);
    C(cx_destroy_local_with_active_rq); C(cx_destroy_remote_with_active_rq); C(cx_drain_close);
    C(op_msg); C(op_msg_reply); C(op_compressed); C(op_update); C(op_delete);
#undef C
    st->op_query_active = herald_gauge(p, "op_query_active");
}

bool mongo_proxy_collection_allowed(struct mongo_proxy_conf *conf, const char *name)
{
    bool ok = false;

    pthread_mutex_lock(&conf->names_lock);
    for (size_t i = 0; i < conf->nnames && !ok; i++)
        ok = !strcmp(conf->names[i], name);
    if (!ok && conf->nnames < MONGO_MAX_COLLECTION_STATS) {
        conf->names[conf->nnames++] = dupstr(name);
        ok = true;
    }
    pthread_mutex_unlock(&conf->names_lock);
    return ok;
}

void mongo_proxy_config_destroy(void *p)
{
    struct mongo_proxy_conf *conf = p;

    if (!conf)
        return;
    if (conf->log_fd >= 0)
        close(conf->log_fd);
    for (size_t i = 0; i < conf->ncommands; i++)
        free(conf->commands[i]);
    free(conf->commands);
    for (size_t i = 0; i < conf->nnames; i++)
        free(conf->names[i]);
    free(conf->names);
    pthread_mutex_destroy(&conf->names_lock);
    free(conf->access_log_path);
    free(conf->stat_prefix);
    free(conf);
}

int mongo_proxy_config_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                              char **err)
{
    struct mongo_proxy_conf *conf = calloc(1, sizeof(*conf));
    if (!conf)
        abort();
    conf->log_fd = -1;
    pthread_mutex_init(&conf->names_lock, NULL);
    conf->names = calloc(MONGO_MAX_COLLECTION_STATS, sizeof(*conf->names));
    if (!conf->names)
        abort();

    if (check_mongo_proxy(n, err) < 0)
        goto fail;
    const char *sp = herald_cfg_str(herald_cfg_get(n, "stat_prefix"), "");
    size_t splen = strlen(sp);
    int keep = (int)(splen && sp[splen - 1] == '.' ? splen - 1 : splen);
    conf->stat_prefix = malloc(splen + 7);
    if (!conf->stat_prefix)
        abort();
    snprintf(conf->stat_prefix, splen + 7, "mongo.%.*s", keep, sp);

    const struct herald_cfg *al = herald_cfg_get(n, "access_log");
    if (al && *herald_cfg_str(al, "")) {
        conf->access_log_path = dupstr(herald_cfg_str(al, ""));
        if (!herald_env_validate_only(env)) {
            conf->log_fd = open(conf->access_log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
            if (conf->log_fd < 0) {
                herald_cfg_errorf(al, err, "cannot open access log '%s': %m", conf->access_log_path);
                goto fail;
            }
        }
    }

    const struct herald_cfg *d = herald_cfg_get(n, "delay");
    if (d) {
        conf->delay_ms = herald_cfg_duration_ms(herald_cfg_get(d, "fixed_delay"), 0);
        const struct herald_cfg *pc = herald_cfg_get(d, "percentage");
        uint64_t num = (uint64_t)herald_cfg_int(herald_cfg_get(pc, "numerator"), 0);
        const char *den = herald_cfg_str(herald_cfg_get(pc, "denominator"), "HUNDRED");
        uint64_t scale = !strcmp(den, "MILLION") ? 1 : !strcmp(den, "TEN_THOUSAND") ? 100 : 10000;
        uint64_t pm = num * scale;
        conf->delay_per_million = pm > 1000000 ? 1000000 : (uint32_t)pm;
    }
    conf->emit_dynamic_metadata = herald_cfg_bool(herald_cfg_get(n, "emit_dynamic_metadata"), false);

    const struct herald_cfg *cmds = herald_cfg_get(n, "commands");
    static const char *const defaults[] = {"delete", "insert", "update"};
    size_t nc = cmds ? herald_cfg_len(cmds) : 3;
    conf->commands = calloc(nc ? nc : 1, sizeof(*conf->commands));
    if (!conf->commands)
        abort();
    for (size_t i = 0; i < nc; i++)
        conf->commands[conf->ncommands++] =
            dupstr(cmds ? herald_cfg_str(herald_cfg_at(cmds, i), "") : defaults[i]);

    make_stats(&conf->stats, conf->stat_prefix);
    *out = conf;
    return 0;

fail:
    mongo_proxy_config_destroy(conf);
    return -1;
}

static const char *const mongo_proxy_aliases[] = {"envoy.mongo_proxy", NULL};
static const char *const mongo_proxy_type_urls[] = {
    "envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy",
    "envoy.config.filter.network.mongo_proxy.v2.MongoProxy",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.network.mongo_proxy",
              .kind = HERALD_PLUGIN_NETWORK_FILTER,
              .aliases = mongo_proxy_aliases,
              .type_urls = mongo_proxy_type_urls,
              .version = "1.0.0",
              .description = "MongoDB wire protocol sniffer: stats, access log, dynamic metadata and "
                             "delay faults; passes the bytes unchanged",
              .config_schema = &mongo_proxy_schema,
              .ops = &mongo_proxy_ops);
