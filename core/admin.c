/* The admin listener: libevent's evhttp on the main thread, with Envoy's
 * endpoints and semantics (mutating endpoints need POST; every reply is
 * no-cache and nosniff). */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <jansson.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "herald/http.h"
#include "common.h"
#include "config/tree.h"
#include "log.h"
#include "net/tls.h"
#include "mem_cache.h"
#include "reload.h"
#include "runtime.h"
#include "server.h"
#include "stats.h"
#include "stats_sink.h"
#include "upstream/cluster.h"

#define CT_TEXT "text/plain; charset=UTF-8"
#define CT_JSON "application/json"
#define CT_PROM "text/plain; version=0.0.4"
#define MAX_PARAMS 32

struct admin {
    struct server *srv;
    struct evhttp *http;
    char *address;                 /* "ip:port" or the pipe path */
    struct evhttp_bound_socket *bound;
    struct event *quit_ev;
    bool quit_done;
    struct herald_stat *rq_total, *rq_xx[5], *cx_total;
    struct herald_string_matcher **allow; size_t nallow; /* allow_paths; none: every path */
};

static atomic_bool health_failed;

bool admin_health_failed(void)
{
    return atomic_load_explicit(&health_failed, memory_order_relaxed);
}

/* SDK 1.2, for the health_check filter: failed by /healthcheck/fail, or draining. */
bool herald_server_health_failed(void)
{
    struct server *srv = the_server;
    return admin_health_failed() || (srv && server_reported_state(srv) == SERVER_DRAINING);
}

const char *admin_address(const struct admin *a)
{
    return a ? a->address : NULL;
}

struct ctx {
    struct admin *a;
    struct evhttp_request *req;
    const char *path;
    char *keys[MAX_PARAMS], *vals[MAX_PARAMS];
    size_t nparams;
    struct evbuffer *out;
    int code;
    const char *ctype;
};

typedef void (*handler_fn)(struct ctx *c);

struct endpoint {
    const char *path;
    const char *help;
    bool mutates;
    handler_fn fn;
};

/* ------------------------------------------------------------------ helpers */

static const char *param(const struct ctx *c, const char *key)
{
    for (size_t i = 0; i < c->nparams; i++)
        if (strcmp(c->keys[i], key) == 0)
            return c->vals[i];
    return NULL;
}

static bool has_param(const struct ctx *c, const char *key)
{
    return param(c, key) != NULL;
}

/* "a=1&b&c=x%20y": Envoy accepts flags without "=", which evhttp's parser refuses. */
static void parse_query(struct ctx *c, const char *q)
{
    if (!q)
        return;
    char *copy = xstrdup(q), *save = NULL;
    for (char *part = strtok_r(copy, "&", &save); part && c->nparams < MAX_PARAMS;
         part = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(part, '=');
        if (eq)
            *eq = '\0';
        char *k = evhttp_uridecode(part, 1, NULL);
        char *v = evhttp_uridecode(eq ? eq + 1 : "", 1, NULL);
        if (!k || !v) {
            free(k);
            free(v);
            continue;
        }
        c->keys[c->nparams] = k;
        c->vals[c->nparams++] = v;
    }
    free(copy);
}

static void text(struct ctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void text(struct ctx *c, int code, const char *fmt, ...)
{
    va_list ap;
    c->code = code;
    c->ctype = CT_TEXT;
    va_start(ap, fmt);
    evbuffer_add_vprintf(c->out, fmt, ap);
    va_end(ap);
}

static void json_reply(struct ctx *c, json_t *j, size_t flags)
{
    char *s = json_dumps(j, flags);
    c->code = 200;
    c->ctype = CT_JSON;
    evbuffer_add_printf(c->out, "%s\n", s ? s : "{}");
    free(s);
    json_decref(j);
}

static bool want_json(const struct ctx *c)
{
    const char *f = param(c, "format");
    return f && strcmp(f, "json") == 0;
}

static const char *reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "";
    }
}

/* ------------------------------------------------------------------ endpoints */

static const struct endpoint endpoints[];

static void help_table(struct evbuffer *out)
{
    evbuffer_add_printf(out, "admin commands are:\n");
    for (const struct endpoint *e = endpoints; e->path; e++)
        evbuffer_add_printf(out, "  %s: %s%s\n", e->path, e->help, e->mutates ? " (POST)" : "");
}

static void h_help(struct ctx *c)
{
    c->code = 200;
    c->ctype = CT_TEXT;
    help_table(c->out);
}

static void h_ready(struct ctx *c)
{
    struct server *s = c->a->srv;
    struct evbuffer *why = evbuffer_new();
    int pending = cluster_manager_pending(why);
    enum server_state state = server_reported_state(s);
    if (state == SERVER_LIVE && pending == 0) {
        text(c, 200, "LIVE\n");
    } else {
        enum server_state st = state == SERVER_LIVE ? SERVER_INITIALIZING : state;
        text(c, 503, "%s\n", server_state_name(st));
        evbuffer_add_buffer(c->out, why);
        size_t n = evbuffer_get_length(c->out);
        unsigned char *body = evbuffer_pullup(c->out, -1);
        if (n && body[n - 1] != '\n')
            evbuffer_add(c->out, "\n", 1);
    }
    evbuffer_free(why);
}

static void stats_common(struct ctx *c, enum stats_format fmt)
{
    char *err = NULL;
    const char *filter = param(c, "filter");
    bool used_only = has_param(c, "usedonly");
    /* stats_flush_on_admin: the sinks are fed when someone reads the stats */
    if (stats_sinks_flush_on_admin())
        stats_sinks_flush();
    if (stats_render(c->out, fmt, filter, used_only, &err) != 0) {
        evbuffer_drain(c->out, evbuffer_get_length(c->out));
        text(c, 400, "%s\n", err ? err : "invalid filter");
        free(err);
        return;
    }
    c->code = 200;
    c->ctype = fmt == STATS_JSON ? CT_JSON : fmt == STATS_PROMETHEUS ? CT_PROM : CT_TEXT;
}

static void h_stats(struct ctx *c)
{
    const char *f = param(c, "format");
    enum stats_format fmt;
    if (!f || strcmp(f, "text") == 0)
        fmt = STATS_TEXT;
    else if (strcmp(f, "json") == 0)
        fmt = STATS_JSON;
    else if (strcmp(f, "prometheus") == 0)
        fmt = STATS_PROMETHEUS;
    else {
        text(c, 400, "usage: /stats?format=(text|json|prometheus): unknown format '%s'\n", f);
        return;
    }
    stats_common(c, fmt);
}

static void h_stats_prometheus(struct ctx *c)
{
    stats_common(c, STATS_PROMETHEUS);
}

static void h_clusters(struct ctx *c)
{
    bool json = want_json(c);
    cluster_manager_dump(c->out, json);
    c->code = 200;
    c->ctype = json ? CT_JSON : CT_TEXT;
}

static void h_listeners(struct ctx *c)
{
    bool json = want_json(c);
    server_listeners_dump(c->out, json);
    c->code = 200;
    c->ctype = json ? CT_JSON : CT_TEXT;
}

static bool is_secret_source(const char *key)
{
    return strcmp(key, "private_key") == 0 || strcmp(key, "session_ticket_keys") == 0 ||
           strcmp(key, "generic_secret") == 0 || strcmp(key, "keys") == 0;
}

/* v holds secret material: inline data sources become "[redacted]", file names stay (as in Envoy). */
static void redact_secret(json_t *v)
{
    if (json_is_string(v) || json_is_number(v)) {
        return; /* handled by the caller */
    } else if (json_is_array(v)) {
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it) {
            if (json_is_string(it))
                json_array_set_new(v, i, json_string("[redacted]"));
            else
                redact_secret(it);
        }
    } else if (json_is_object(v)) {
        const char *k;
        json_t *it;
        json_object_foreach(v, k, it) {
            if (strcmp(k, "inline_string") == 0 || strcmp(k, "inline_bytes") == 0 ||
                strcmp(k, "environment_variable") == 0 || strcmp(k, "secret") == 0)
                json_object_set_new(v, k, json_string("[redacted]"));
            else if (json_is_object(it) || json_is_array(it))
                redact_secret(it);
        }
    }
}

static void redact(json_t *j)
{
    if (json_is_array(j)) {
        size_t i;
        json_t *it;
        json_array_foreach(j, i, it)
            redact(it);
    } else if (json_is_object(j)) {
        const char *k;
        json_t *it;
        json_object_foreach(j, k, it) {
            bool scalar = json_is_string(it) || json_is_number(it);
            if (strcmp(k, "password") == 0 || (is_secret_source(k) && scalar))
                json_object_set_new(j, k, json_string("[redacted]"));
            else if (is_secret_source(k))
                redact_secret(it);
            else
                redact(it);
        }
    }
}

static char *rfc3339(uint64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char buf[64];
    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    return xasprintf("%s.%03uZ", buf, (unsigned)(ms % 1000));
}

static void h_config_dump(struct ctx *c)
{
    struct server *s = c->a->srv;
    json_t *boot = s->boot && s->boot->doc && s->boot->doc->root ? cfg_to_json(s->boot->doc->root) : NULL;
    if (!boot)
        boot = json_object();
    redact(boot);
    char *updated = rfc3339(s->start_wall_ms ? s->start_wall_ms : wall_ms());
    json_t *j = json_pack("{s:[{s:s, s:o, s:s}]}", "configs", "@type",
                          "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap", boot,
                          "last_updated", updated);
    free(updated);
    json_reply(c, j, JSON_INDENT(1));
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

static void h_server_info(struct ctx *c)
{
    struct server *s = c->a->srv;
    const struct options *o = &s->opt;
    uint64_t up = s->start_wall_ms ? (wall_ms() - s->start_wall_ms) / 1000 : 0;
    char *uptime = xasprintf("%" PRIu64 "s", up);
    char *drain = xasprintf("%" PRIu64 "s", o->drain_time_ms / 1000);
    json_t *argv = json_array();
    for (int i = 0; i < o->argc && o->argv; i++)
        json_array_append_new(argv, json_string(o->argv[i]));
    const char *node_id = s->boot ? nz(s->boot->node_id) : "";
    const char *node_cluster = s->boot ? nz(s->boot->node_cluster) : "";
    json_t *opts = json_pack(
        "{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:b, s:s, s:s, s:o}",
        "base_id", "0",
        "concurrency", (json_int_t)(s->nworkers ? s->nworkers : o->concurrency),
        "config_path", nz(o->config_path),
        "config_yaml", nz(o->config_yaml),
        "admin_address_path", nz(o->admin_address_path),
        "log_level", o->log_level ? o->log_level : "info",
        "log_path", nz(o->log_path),
        "service_cluster", node_cluster,
        "service_node", node_id,
        "mode", o->validate ? "Validate" : "Serve",
        "drain_time", drain,
        "restart_epoch", 0,
        "disable_hot_restart", 1,
        "plugin_dirs", nz(o->plugin_dirs),
        "drain_strategy", "Gradual",
        "argv", argv);
    json_t *j = json_pack("{s:s+, s:s, s:s, s:o, s:{s:s, s:s, s:s}, s:s, s:s}",
                          "version", "herald/", PACKAGE_VERSION,
                          "state", server_state_name(server_reported_state(s)),
                          "hot_restart_version", "disabled",
                          "command_line_options", opts,
                          "node", "id", node_id, "cluster", node_cluster, "user_agent_name", "herald",
                          "uptime_current_epoch", uptime,
                          "uptime_all_epochs", uptime);
    free(uptime);
    free(drain);
    json_reply(c, j, JSON_INDENT(1));
}

static void h_runtime(struct ctx *c)
{
    c->code = 200;
    c->ctype = CT_JSON;
    runtime_dump(c->out);
}

/* Envoy's answers: 400 with usage when nothing is given, 503 without an admin layer. */
static void h_runtime_modify(struct ctx *c)
{
    struct evbuffer *body = evhttp_request_get_input_buffer(c->req);
    size_t blen = body ? evbuffer_get_length(body) : 0;
    if (c->nparams == 0 && blen > 0 && blen < 65536) {
        /* the parameters as form values */
        char *form = xstrndup((const char *)evbuffer_pullup(body, -1), blen);
        parse_query(c, form);
        free(form);
    }
    if (c->nparams == 0) {
        text(c, 400, "usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n"
             "use an empty value to remove a previously added override\n");
        return;
    }
    char *err = NULL;
    const char *const *keys = (const char *const *)c->keys, *const *vals = (const char *const *)c->vals;
    if (runtime_admin_set_many(keys, vals, c->nparams, &err) < 0) {
        text(c, 503, "%s\n", err ? err : "error");
        free(err);
        return;
    }
    text(c, 200, "OK\n");
}

/* Envoy prints its 64-bit figures as JSON strings. */
static void set_u64_string(json_t *o, const char *key, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    json_object_set_new(o, key, json_string(buf));
}

/* Envoy's figures come from tcmalloc; these are glibc's (all arenas) and
 * herald's per-thread lists (mem_cache), which play the part of tcmalloc's
 * thread caches: blocks malloc counts as in use, waiting for reuse. */
static void h_memory(struct ctx *c)
{
    struct mallinfo2 mi = mallinfo2();
    size_t cached = mem_cache_kept_bytes();
    size_t in_use = mi.uordblks + mi.hblkhd;
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%*u %lu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    json_t *j = json_object();
    set_u64_string(j, "allocated", in_use > cached ? in_use - cached : 0);
    set_u64_string(j, "heap_size", mi.arena + mi.hblkhd);
    set_u64_string(j, "pageheap_unmapped", 0);
    set_u64_string(j, "pageheap_free", mi.fordblks);
    set_u64_string(j, "total_thread_cache", cached);
    set_u64_string(j, "total_physical_bytes", (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE));
    json_reply(c, j, JSON_INDENT(1));
}

static void h_hot_restart_version(struct ctx *c)
{
    text(c, 200, "disabled\n");
}

static void quit_cb(evutil_socket_t fd, short what, void *arg)
{
    struct admin *a = arg;
    if (a->quit_done)
        return;
    a->quit_done = true;
    server_shutdown(a->srv, "admin /quitquitquit");
}

/* The reply is on the wire: shut down from a fresh zero-delay event. */
static void quit_reply_sent(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    if (a->quit_ev && !a->quit_done)
        event_active(a->quit_ev, EV_TIMEOUT, 0);
}

static void h_quit(struct ctx *c)
{
    struct admin *a = c->a;
    text(c, 200, "OK\n");
    if (!a->quit_ev)
        a->quit_ev = evtimer_new(a->srv->base, quit_cb, a);
    /* fallback in case the client goes away before the reply is written */
    struct timeval fallback = {1, 0};
    evtimer_add(a->quit_ev, &fallback);
    evhttp_request_set_on_complete_cb(c->req, quit_reply_sent, a);
}

static void h_reset_counters(struct ctx *c)
{
    stats_reset_counters();
    text(c, 200, "OK\n");
}

static void h_hc_fail(struct ctx *c)
{
    atomic_store_explicit(&health_failed, true, memory_order_relaxed);
    text(c, 200, "OK\n");
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct log_component *)a)->name, ((const struct log_component *)b)->name);
}

static void list_loggers(struct ctx *c)
{
    struct log_component all[256];
    size_t n = log_components(all, ARRAY_SIZE(all));
    qsort(all, n, sizeof(*all), by_name);
    text(c, 200, "active loggers:\n");
    for (size_t i = 0; i < n; i++)
        evbuffer_add_printf(c->out, "  %s: %s\n", all[i].name, log_level_name(all[i].level));
}

static void set_level(const char *component, enum herald_log_level level)
{
    if (component)
        log_set_component_level(component, level);
    else
        log_set_level(level);
}

/* Every component's level (NULL: logged under admin) or one's (logged under
 * it), logged under the more verbose of the two so that the line shows
 * either way. */
static void change_level(const char *component, enum herald_log_level now)
{
    enum herald_log_level was = log_component_level(component), verbose = now < was ? now : was;
    set_level(component, verbose);
    herald_log(verbose, component ? component : "admin", "log level %s -> %s (POST /logging)", log_level_name(was),
               log_level_name(now));
    set_level(component, now);
}

struct level_changes {
    struct log_component *v;
    size_t n;
    char *err;
};

/* one <logger>=<level> or ?paths= pair checked into the list; 0, or -1 with err */
static int add_change(char *name, char *level, void *arg)
{
    struct level_changes *ch = arg;
    const char *component = log_component_find(name);
    enum herald_log_level l;
    if (!level)
        ch->err = xasprintf("?paths= takes <logger>:<level>,...: '%s' has no level", name);
    else if (!component)
        ch->err = xasprintf("unknown logger '%s' (POST /logging lists them)", name);
    else if (log_level_from_name(level, &l) < 0)
        ch->err = xasprintf("unknown log level '%s' for '%s': trace, debug, info, warning, error, critical or off",
                            level, name);
    if (ch->err)
        return -1;
    ch->v = xrealloc(ch->v, (ch->n + 1) * sizeof(*ch->v));
    ch->v[ch->n++] = (struct log_component){component, l};
    return 0;
}

/* Envoy's /logging: ?level= sets every component's level, ?<logger>=<level>
 * one's, ?paths=<logger>:<level>,... several; with none it lists them.
 * All or nothing: with one bad name or level, no level changes. */
static void h_logging(struct ctx *c)
{
    const char *level = param(c, "level");
    if (level && c->nparams > 1) {
        text(c, 400, "?level= sets every logger's level: give it alone\n");
        return;
    }
    if (level) {
        enum herald_log_level now;
        if (log_level_from_name(level, &now) < 0) {
            text(c, 400, "unknown log level '%s': trace, debug, info, warning, error, critical or off\n", level);
            return;
        }
        change_level(NULL, now);
        list_loggers(c);
        return;
    }
    struct level_changes ch = {0};
    for (size_t i = 0; i < c->nparams && !ch.err; i++) {
        if (strcmp(c->keys[i], "paths") == 0)
            log_each_component_level(c->vals[i], add_change, &ch);
        else
            add_change(c->keys[i], c->vals[i], &ch);
    }
    if (ch.err) {
        text(c, 400, "%s; no level changed\n", ch.err);
    } else {
        for (size_t i = 0; i < ch.n; i++)
            change_level(ch.v[i].name, ch.v[i].level);
        list_loggers(c);
    }
    free(ch.v);
    free(ch.err);
}

static void h_certs(struct ctx *c)
{
    json_reply(c, tls_certs_dump(), JSON_INDENT(1));
}

/* Envoy's /drain_listeners: ?graceful, ?inboundonly, ?skip_exit (with graceful). */
static void h_drain_listeners(struct ctx *c)
{
    bool graceful = has_param(c, "graceful"), inbound = has_param(c, "inboundonly");
    bool skip_exit = has_param(c, "skip_exit");
    for (size_t i = 0; i < c->nparams; i++)
        if (strcmp(c->keys[i], "graceful") && strcmp(c->keys[i], "inboundonly") && strcmp(c->keys[i], "skip_exit")) {
            text(c, 400, "unknown parameter '%s': /drain_listeners takes graceful, inboundonly and skip_exit\n",
                 c->keys[i]);
            return;
        }
    if (skip_exit && !graceful) {
        text(c, 400, "skip_exit needs graceful: /drain_listeners?graceful&skip_exit\n");
        return;
    }
    if (server_drain_listeners(c->a->srv, graceful, inbound, skip_exit) < 0) {
        text(c, 503, "herald is shutting down: its listeners are closed already\n");
        return;
    }
    text(c, 200, "OK\n");
}

static void h_reopen_logs(struct ctx *c)
{
    server_reopen_logs("POST /reopen_logs");
    text(c, 200, "OK\n");
}

static void h_hc_ok(struct ctx *c)
{
    atomic_store_explicit(&health_failed, false, memory_order_relaxed);
    text(c, 200, "OK\n");
}

static const struct endpoint endpoints[] = {
    {"/", "Admin home page (this list)", false, h_help},
    {"/certs", "print certs on machine", false, h_certs},
    {"/clusters", "upstream cluster status; ?format=json", false, h_clusters},
    {"/config_dump", "dump current herald configs (secrets redacted)", false, h_config_dump},
    {"/drain_listeners", "close the listeners; ?graceful (drain first), ?inboundonly, ?skip_exit", true,
     h_drain_listeners},
    {"/healthcheck/fail", "cause the server to fail health checks", true, h_hc_fail},
    {"/healthcheck/ok", "cause the server to pass health checks", true, h_hc_ok},
    {"/help", "print out list of admin commands", false, h_help},
    {"/hot_restart_version", "print the hot restart compatibility version", false, h_hot_restart_version},
    {"/listeners", "print listener info; ?format=json", false, h_listeners},
    {"/logging", "list the loggers and their levels; ?level=<level> sets all, ?<logger>=<level> or "
                 "?paths=<logger>:<level>,... some", true, h_logging},
    {"/memory", "print current allocation/heap usage", false, h_memory},
    {"/quitquitquit", "exit the server", true, h_quit},
    {"/ready", "print server state, return 200 if LIVE, otherwise return 503", false, h_ready},
    {"/reopen_logs", "reopen the log and the access logs (as SIGUSR1)", true, h_reopen_logs},
    {"/reset_counters", "reset all counters to zero", true, h_reset_counters},
    {"/runtime", "print runtime values", false, h_runtime},
    {"/runtime_modify", "modify runtime values; ?key1=value1&key2=value2 (an empty value removes)", true,
     h_runtime_modify},
    {"/server_info", "print server version/status information", false, h_server_info},
    {"/stats", "print server stats; ?format=json|prometheus, ?filter=<regex>, ?usedonly", false, h_stats},
    {"/stats/prometheus", "print server stats in prometheus format; ?filter=<regex>, ?usedonly", false,
     h_stats_prometheus},
    {NULL, NULL, false, NULL},
};

/* ------------------------------------------------------------------ dispatch */

/* admin.allow_paths: a way to expose /ready or /stats and nothing else */
static bool path_allowed(const struct admin *a, const char *path)
{
    if (!a->nallow)
        return true;
    for (size_t i = 0; i < a->nallow; i++)
        if (herald_string_matcher_match(a->allow[i], path))
            return true;
    return false;
}

static void dispatch(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    struct ctx c = {.a = a, .req = req, .out = evbuffer_new(), .code = 500, .ctype = CT_TEXT};
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    c.path = path && *path ? path : "/";
    parse_query(&c, uri ? evhttp_uri_get_query(uri) : NULL);

    const struct endpoint *e = endpoints;
    while (e->path && strcmp(e->path, c.path) != 0)
        e++;
    if (!path_allowed(a, c.path)) {
        text(&c, 403, "admin path '%s' is not in admin.allow_paths\n", c.path);
    } else if (!e->path) {
        text(&c, 404, "invalid path '%s'; GET /help lists the admin commands.\n", c.path);
        help_table(c.out);
    } else if (e->mutates && evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        text(&c, 400, "This endpoint requires POST\n");
    } else {
        e->fn(&c);
    }

    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", c.ctype);
    evhttp_add_header(h, "Cache-Control", "no-cache, max-age=0");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    herald_stat_inc(a->rq_total);
    if (c.code >= 100 && c.code < 600)
        herald_stat_inc(a->rq_xx[c.code / 100 - 1]);
    log_debug("admin", "%s %s -> %d", evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "GET",
              c.path, c.code);
    evhttp_send_reply(req, c.code, reason(c.code), c.out);

    evbuffer_free(c.out);
    for (size_t i = 0; i < c.nparams; i++) {
        free(c.keys[i]);
        free(c.vals[i]);
    }
}

/* evhttp asks for each new connection's bufferevent: count it, let evhttp make it. */
static struct bufferevent *new_conn(struct event_base *base, void *arg)
{
    struct admin *a = arg;
    herald_stat_inc(a->cx_total);
    return NULL;
}

/* ------------------------------------------------------------------ start / stop */

static char *sockname(evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return NULL;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        return xasprintf("%s:%u", ip, ntohs(sin->sin_port));
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        return xasprintf("[%s]:%u", ip, ntohs(sin6->sin6_port));
    }
    return NULL;
}

static int bind_pipe(struct admin *a, const char *path, char **err)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        *err = xasprintf("admin pipe path '%s' is too long", path);
        return -1;
    }
    strcpy(sun.sun_path, path);
    char *key = reload_key("admin", path, 0);
    int fd = reload_take_socket(key); /* a reload: the old process's socket */
    struct evconnlistener *l;
    if (fd >= 0) {
        l = evconnlistener_new(a->srv->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    } else {
        unlink(path);
        l = evconnlistener_new_bind(a->srv->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 128,
                                    (struct sockaddr *)&sun, (int)sizeof(sun));
    }
    if (!l || !(a->bound = evhttp_bind_listener(a->http, l))) {
        *err = xasprintf("admin: cannot listen on pipe %s: %s", path, strerror(errno));
        if (l)
            evconnlistener_free(l);
        free(key);
        return -1;
    }
    reload_add_socket(key, evconnlistener_get_fd(l));
    free(key);
    a->address = xstrdup(path);
    return 0;
}

static int bind_tcp(struct admin *a, const struct address_cfg *ac, char **err)
{
    const char *host = ac->host && *ac->host ? ac->host : "127.0.0.1";
    char *key = reload_key("admin", host, ac->port);
    int fd = reload_take_socket(key); /* a reload: the old process's socket */
    struct evhttp_bound_socket *bs = fd >= 0 ? evhttp_accept_socket_with_handle(a->http, fd)
                                             : evhttp_bind_socket_with_handle(a->http, host, ac->port);
    if (!bs) {
        *err = xasprintf("admin: cannot listen on %s:%u: %s", host, ac->port, strerror(errno));
        free(key);
        return -1;
    }
    a->bound = bs;
    reload_add_socket(key, evhttp_bound_socket_get_fd(bs));
    free(key);
    a->address = sockname(evhttp_bound_socket_get_fd(bs));
    if (!a->address)
        a->address = xasprintf("%s:%u", host, ac->port);
    return 0;
}

struct admin *admin_start(struct server *s, char **err)
{
    struct admin *a = xcalloc(1, sizeof(*a));
    a->srv = s;
    if (!s->boot || !s->boot->admin.present)
        return a;

    a->rq_total = herald_counter("http.admin", "downstream_rq_total");
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof(name), "downstream_rq_%dxx", i + 1);
        a->rq_xx[i] = herald_counter("http.admin", name);
    }
    a->cx_total = herald_counter("listener.admin", "downstream_cx_total");
    const struct herald_cfg *ap = herald_cfg_get(herald_cfg_get(s->boot->doc->root, "admin"), "allow_paths");
    a->nallow = herald_cfg_len(ap);
    a->allow = a->nallow ? xcalloc(a->nallow, sizeof(*a->allow)) : NULL;
    for (size_t i = 0; i < a->nallow; i++)
        if (!(a->allow[i] = herald_string_matcher_new(herald_cfg_at(ap, i), err))) {
            a->nallow = i;
            admin_stop(a);
            return NULL;
        }

    a->http = evhttp_new(s->base);
    if (!a->http) {
        *err = xstrdup("admin: evhttp_new failed");
        free(a);
        return NULL;
    }
    evhttp_set_timeout(a->http, 60);
    evhttp_set_max_headers_size(a->http, 64 * 1024);
    evhttp_set_max_body_size(a->http, 1024 * 1024);
    evhttp_set_gencb(a->http, dispatch, a);
    evhttp_set_bevcb(a->http, new_conn, a);

    const struct address_cfg *ac = &s->boot->admin.address;
    if ((ac->pipe ? bind_pipe(a, ac->pipe, err) : bind_tcp(a, ac, err)) != 0) {
        admin_stop(a);
        return NULL;
    }

    if (s->opt.admin_address_path && *s->opt.admin_address_path) {
        FILE *f = fopen(s->opt.admin_address_path, "w");
        bool wrote = f && fprintf(f, "%s\n", a->address) >= 0;
        if (f && fclose(f) != 0)
            wrote = false;
        if (!wrote) {
            *err = xasprintf("admin: cannot write the admin address to %s: %s", s->opt.admin_address_path,
                             strerror(errno));
            admin_stop(a);
            return NULL;
        }
    }
    log_info("admin", "admin address: %s", a->address);
    return a;
}

void admin_stop_accepting(struct admin *a)
{
    if (a && a->http && a->bound)
        evhttp_del_accept_socket(a->http, a->bound);
    if (a)
        a->bound = NULL;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    if (a->quit_ev)
        event_free(a->quit_ev);
    for (size_t i = 0; i < a->nallow; i++)
        herald_string_matcher_free(a->allow[i]);
    free(a->allow);
    free(a->address);
    free(a);
}
