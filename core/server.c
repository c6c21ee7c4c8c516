/* The main thread: loads the config, starts workers and listeners, serves
 * admin, handles signals and shuts down by draining. */
#include "config.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "access_log.h"
#include "admin.h"
#include "common.h"
#include "config/schema.h"
#include "config/xds_files.h"
#include "http/pool.h"
#include "log.h"
#include "mem_cache.h"
#include "net/connection.h"
#include "net/listener.h"
#include "net/tls.h"
#include "overload.h"
#include "plugin.h"
#include "reload.h"
#include "stats_sink.h"
#include "runtime.h"
#include "sd_notify.h"
#include "server.h"
#include "stats.h"
#include "timer.h"
#include "upstream/cluster.h"
#include "upstream/health_check.h"
#include "upstream/outlier.h"
#include "worker.h"

struct server *the_server;

const char *server_state_name(enum server_state s)
{
    switch (s) {
    case SERVER_INITIALIZING: return "INITIALIZING";
    case SERVER_LIVE: return "LIVE";
    case SERVER_DRAINING: return "DRAINING";
    }
    return "?";
}

static struct event *drain_timer;
static struct event *graceful_timer;   /* drain_listeners?graceful: set while it runs and after */
static bool graceful_inbound_only, graceful_skip_exit;

enum server_state server_reported_state(const struct server *s)
{
    return s->state == SERVER_LIVE && graceful_timer ? SERVER_DRAINING : s->state;
}

static uint64_t drain_deadline;
static unsigned workers_finished;
static unsigned workers_stopped;   /* workers whose listeners are closed: their count of connections is final */

static void worker_finish(struct worker *w, void *arg)
{
    conn_close_all(w);
    http_pools_worker_close_all(w);
    upstream_close_all(w);
    listeners_worker_teardown(w);
    cluster_worker_free(w);
    struct timeval grace = {0, 50000};
    w->stopping = true;
    event_base_loopexit(w->base, &grace);
}

static void worker_rescale(struct worker *w, void *arg)
{
    (void)arg;
    conn_raise_all(w, HERALD_EV_TIMERS_RESCALED);
}

/* The overload manager's reduce_timeouts scale moved: every worker re-arms
 * the idle timers of its connections for their new length. */
static void rescale_workers(void)
{
    struct server *s = the_server;
    for (unsigned i = 0; s && i < s->nworkers; i++)
        worker_post(&s->workers[i], worker_rescale, NULL);
}

static void worker_stop_drained_listeners(struct worker *w, void *arg)
{
    (void)arg;
    listeners_worker_stop(w, true);
}

/* Open connections are told to drain (HTTP: close after the response in
 * flight, GOAWAY), and so is each new one: drain_listeners?graceful, and
 * the shutdown and reload drains (worker_stop_accepting). */
static void worker_discourage(struct worker *w, void *arg)
{
    (void)arg;
    w->draining = true;
    conn_drain_all(w);
}

static void stop_drained_listeners(struct server *s, bool inbound_only)
{
    listeners_forget_for_drain(inbound_only);
    for (unsigned i = 0; i < s->nworkers; i++)
        worker_post(&s->workers[i], worker_stop_drained_listeners, NULL);
}

static void graceful_over(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    (void)fd, (void)what;
    if (s->state == SERVER_DRAINING)
        return;   /* shutting down meanwhile: that drain closes everything */
    if (graceful_skip_exit) {
        log_info("main", "drain_listeners: drain time over; listeners left open (skip_exit)");
        return;
    }
    log_info("main", "drain_listeners: drain time over; closing the listeners");
    stop_drained_listeners(s, graceful_inbound_only);
}

int server_drain_listeners(struct server *s, bool graceful, bool inbound_only, bool skip_exit)
{
    if (s->state == SERVER_DRAINING)
        return -1;
    if (!graceful) {
        log_info("main", "drain_listeners: closing the %slisteners", inbound_only ? "inbound " : "");
        stop_drained_listeners(s, inbound_only);
        return 0;
    }
    if (graceful_timer)
        return 0;   /* as Envoy: a second graceful drain changes nothing */
    graceful_inbound_only = inbound_only;
    graceful_skip_exit = skip_exit;
    log_info("main", "drain_listeners: draining for %llu ms, then %s", (unsigned long long)s->opt.drain_time_ms,
             skip_exit ? "leaving the listeners open" : "closing the listeners");
    for (unsigned i = 0; i < s->nworkers; i++)
        worker_post(&s->workers[i], worker_discourage, NULL);
    graceful_timer = evtimer_new(s->base, graceful_over, s);
    struct timeval tv = {(time_t)(s->opt.drain_time_ms / 1000), (suseconds_t)(s->opt.drain_time_ms % 1000) * 1000};
    evtimer_add(graceful_timer, &tv);
    return 0;
}

static void worker_stop_accepting(struct worker *w, void *arg)
{
    w->stopping = true;
    listeners_worker_stop(w, false);
    /* Idle keep-alive connections would otherwise hold the drain to its end. */
    http_pools_worker_drain(w);
    worker_discourage(w, arg);
    __atomic_add_fetch(&workers_stopped, 1, __ATOMIC_RELEASE);
}

static unsigned active_connections(struct server *s)
{
    unsigned n = 0;
    for (unsigned i = 0; i < s->nworkers; i++)
        n += __atomic_load_n(&s->workers[i].active_conns, __ATOMIC_RELAXED) +
             __atomic_load_n(&s->workers[i].pending_sockets, __ATOMIC_RELAXED);
    return n;
}

static void drain_tick(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    /* Until a worker has run worker_stop_accepting it may still accept: a
     * count of 0 read before then would close what it accepts next (after
     * a reload handover, a client's connection closed unanswered). */
    bool all_stopped = __atomic_load_n(&workers_stopped, __ATOMIC_ACQUIRE) == s->nworkers;
    unsigned n = active_connections(s);
    if ((n > 0 || !all_stopped) && mono_ms() < drain_deadline) {
        struct timeval tv = {0, all_stopped ? 100000 : 5000};
        evtimer_add(drain_timer, &tv);
        return;
    }
    if (n > 0)
        log_info("main", "drain time over: closing %u connection%s", n, n == 1 ? "" : "s");
    for (unsigned i = 0; i < s->nworkers; i++)
        worker_post(&s->workers[i], worker_finish, NULL);
    for (unsigned i = 0; i < s->nworkers; i++) {
        pthread_join(s->workers[i].thread, NULL);
        workers_finished++;
    }
    event_base_loopexit(s->base, NULL);
}

static void begin_drain(struct server *s, uint64_t max_ms)
{
    s->state = SERVER_DRAINING;
    for (unsigned i = 0; i < s->nworkers; i++)
        worker_post(&s->workers[i], worker_stop_accepting, NULL);
    drain_deadline = mono_ms() + max_ms;
    drain_timer = evtimer_new(s->base, drain_tick, s);
    struct timeval tv = {0, 0};
    evtimer_add(drain_timer, &tv);
}

void server_shutdown(struct server *s, const char *why)
{
    if (s->state == SERVER_DRAINING) {
        /* draining after a reload handover: a SIGTERM cuts it to --drain-time-s */
        uint64_t d = mono_ms() + s->opt.drain_time_ms;
        if (reload_handed_over() && d < drain_deadline) {
            log_info("main", "%s: draining for up to %llu ms more", why,
                     (unsigned long long)s->opt.drain_time_ms);
            drain_deadline = d;
        }
        return;
    }
    log_info("main", "shutting down (%s): draining for up to %llu ms", why, (unsigned long long)s->opt.drain_time_ms);
    sd_notify_stopping();
    reload_abort();
    begin_drain(s, s->opt.drain_time_ms);
}

void server_handover(struct server *s)
{
    if (s->state == SERVER_DRAINING)
        return;
    admin_stop_accepting(s->admin);
    log_info("main", "handed over to the new process: draining for up to %llu s (--parent-shutdown-time-s)",
             (unsigned long long)(s->opt.parent_shutdown_time_ms / 1000));
    begin_drain(s, s->opt.parent_shutdown_time_ms);
}

void server_reopen_logs(const char *why)
{
    log_info("main", "%s: reopening log files", why);
    log_reopen();
    access_log_reopen_all();
    log_info("main", "log files reopened (%s)", why);   /* the first line of a rotated log */
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;
    switch (sig) {
    case SIGTERM: server_shutdown(s, "SIGTERM"); break;
    case SIGINT: server_shutdown(s, "SIGINT"); break;
    case SIGUSR1: server_reopen_logs("SIGUSR1"); break;
    case SIGHUP: reload_begin(s, "SIGHUP"); break;
    }
}

static struct cfg_doc *load_config(const struct options *o, struct cfg_diag *d)
{
    char *err = NULL;
    struct cfg_doc *doc = NULL, *over = NULL;
    if (o->config_path) {
        doc = cfg_load_file(o->config_path, &err);
        if (!doc) {
            diag_error_take(d, err);
            return NULL;
        }
    }
    if (o->config_yaml) {
        over = cfg_load_string(o->config_yaml, strlen(o->config_yaml), "--config-yaml", &err);
        if (!over) {
            diag_error_take(d, err);
            cfg_doc_free(doc);
            return NULL;
        }
        if (!doc)
            return over;
        cfg_merge(doc, over);
        cfg_doc_free(over);
    }
    if (!doc)
        diag_error(d, NULL, "no configuration: give one with -c FILE or --config-yaml TEXT");
    return doc;
}

/* A dynamic_resources file changed: the same reload as SIGHUP */
static void on_xds_changed(void *arg)
{
    reload_begin(arg, "a dynamic_resources file changed");
}

/* Likely mistakes worth a warning (printed at start-up and by --mode validate). */
static void warn_unreferenced_clusters(const struct bootstrap *b, struct cfg_diag *d)
{
    for (size_t i = 0; i < b->nclusters; i++)
        if (!bootstrap_cluster_referenced(&b->clusters[i]))
            diag_warn(d, b->clusters[i].node, "cluster '%s' is never referenced by a filter", b->clusters[i].name);
}

static void cleanup(struct server *s)
{
    if (s->admin)
        admin_stop(s->admin);
    listeners_destroy();
    stats_sinks_shutdown();
    health_check_shutdown();
    outlier_shutdown();
    cluster_manager_shutdown();
    tls_watch_stop();
    xds_watch_stop(s->xds);
    s->xds = NULL;
    xds_files_free(s->xds_files);
    s->xds_files = NULL;
    tls_clusters_destroy(s->boot);
    if (s->boot)
        bootstrap_free(s->boot);
    plugin_unload_all();
    overload_shutdown();
    runtime_shutdown();
    if (s->dns)
        evdns_base_free(s->dns, 0);
    if (drain_timer)
        event_free(drain_timer);
    drain_timer = NULL;
    if (graceful_timer)
        event_free(graceful_timer);
    graceful_timer = NULL;
    reload_free();
    for (struct event **e = &s->sigterm; e <= &s->sighup; e++)
        if (*e)
            event_free(*e);
    timer_thread_exit();
    if (s->base)
        event_base_free(s->base);
    free(s->workers);
}

int server_run(struct options *o)
{
    static struct server srv;
    struct server *s = &srv;
    struct cfg_diag d = {0};
    memset(s, 0, sizeof(*s));
    s->opt = *o;
    the_server = s;
    s->start_wall_ms = wall_ms();
    stats_init();
    plugin_set_dirs(o->plugin_dirs);
    plugin_load_all();   /* the first filter would load them all anyway; now /logging knows their loggers */
    reload_init();

    unsigned nworkers = o->concurrency ? o->concurrency : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if (nworkers == 0)
        nworkers = 1;
    s->nworkers = nworkers;

    struct cfg_doc *doc = load_config(o, &d);
    if (doc && xds_files_expand(doc, &d, &s->xds_files) < 0) {
        cfg_doc_free(doc);   /* its errors are said; the rest would only repeat them */
        doc = NULL;
    }
    if (doc)
        s->boot = bootstrap_load(doc, &d);
    if (s->boot) {
        s->base = event_base_new();
        main_thread_set_base(s->base);
        /* before clusters and listeners: both read runtime keys */
        const struct herald_cfg *root = s->boot->doc->root;
        runtime_init(herald_cfg_get(root, "layered_runtime"), o->validate ? NULL : s->base, &d);
        overload_init(herald_cfg_get(root, "overload_manager"), &d);
        if (!o->validate)
            overload_actions_start(s->base);
        if (!o->validate)
            s->dns = evdns_base_new(s->base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        tls_clusters_build(s->boot, o->validate, &d);
        health_checks_validate(s->boot, &d);
        if (cluster_manager_init(s->boot, s->base, s->dns, &d) == 0) {
            listeners_build(s->boot, nworkers, o->validate, &d);
            stats_sinks_init(s->boot, o->validate ? NULL : s->base, &d);
        }
        if (d.nerrors == 0)
            warn_unreferenced_clusters(s->boot, &d);
    }
    diag_print(&d, stderr);
    int failed = d.nerrors > 0;
    diag_free(&d);
    if (o->validate || failed) {
        if (o->validate && !failed)
            fprintf(stderr, "configuration '%s' OK\n", o->config_path ? o->config_path : "--config-yaml");
        cleanup(s);
        return failed ? 1 : 0;
    }

    char *err = NULL;
    if (listeners_bind(&err) < 0) {
        fprintf(stderr, "error: %s\n", err);
        free(err);
        cleanup(s);
        return 1;
    }
    s->admin = admin_start(s, &err);
    if (!s->admin) {
        fprintf(stderr, "error: %s\n", err);
        free(err);
        cleanup(s);
        return 1;
    }
    worker_on_exit(access_log_thread_exit);
    worker_on_exit(runtime_thread_exit);
    worker_on_exit(splice_worker_cleanup);
    s->workers = xcalloc(nworkers, sizeof(*s->workers));
    for (unsigned i = 0; i < nworkers; i++) {
        cluster_worker_init(&s->workers[i]);
        s->workers[i].index = i;
    }
    for (unsigned i = 0; i < nworkers; i++)
        if (worker_start(&s->workers[i], i) < 0) {
            fprintf(stderr, "error: cannot start worker %u\n", i);
            return 1;
        }
    listeners_start(s->workers, nworkers);
    overload_on_rescale(rescale_workers);
    tls_watch_start(s->base);
    s->xds = xds_watch_start(s->base, s->xds_files, on_xds_changed, s);
    cluster_manager_start();
    health_check_start(s->base);
    outlier_init(s->base);
    stats_sinks_start(s->base);

    signal(SIGPIPE, SIG_IGN);
    s->sigterm = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->sigint = evsignal_new(s->base, SIGINT, on_signal, s);
    s->sigusr1 = evsignal_new(s->base, SIGUSR1, on_signal, s);
    s->sighup = evsignal_new(s->base, SIGHUP, on_signal, s);
    for (struct event **e = &s->sigterm; e <= &s->sighup; e++)
        evsignal_add(*e, NULL);

    s->state = SERVER_LIVE;
    log_info("main", "herald %s started: %u worker%s", PACKAGE_VERSION, nworkers, nworkers == 1 ? "" : "s");
    reload_started(s);
    loop_run(s->base);
    log_info("main", "exiting");
    for (unsigned i = 0; i < nworkers; i++) {
        event_free(s->workers[i].wakeup);
        close(s->workers[i].wake_fd);
        event_base_free(s->workers[i].base);
        pthread_mutex_destroy(&s->workers[i].lock);
    }
    cleanup(s);
    access_log_thread_exit();
    stats_thread_exit();
    return s->exit_code;
}
