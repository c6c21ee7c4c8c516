/* The main thread: owns the loaded config, the workers, the admin listener,
 * DNS, signals and shutdown. */
#ifndef HERALD_CORE_SERVER_H
#define HERALD_CORE_SERVER_H

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/bootstrap.h"

enum server_state { SERVER_INITIALIZING = 0, SERVER_LIVE, SERVER_DRAINING };

struct options {
    const char *config_path;
    const char *config_yaml;
    bool validate;
    unsigned concurrency;          /* 0: number of CPUs */
    const char *log_level;
    const char *log_path;
    const char *plugin_dirs;       /* colon-separated */
    uint64_t drain_time_ms;        /* --drain-time-s */
    uint64_t parent_shutdown_time_ms; /* --parent-shutdown-time-s: an old process's drain after a reload */
    const char *admin_address_path;
    int argc; char **argv;         /* for /server_info */
};

struct server {
    struct options opt;
    struct event_base *base;
    struct evdns_base *dns;
    struct bootstrap *boot;
    struct worker *workers; unsigned nworkers;
    enum server_state state;
    uint64_t start_wall_ms;
    struct admin *admin;
    struct event *sigterm, *sigint, *sigusr1, *sighup;
    struct xds_files *xds_files;       /* dynamic_resources files (config/xds_files.h) */
    struct xds_watch *xds;
    int exit_code;
};

extern struct server *the_server;

/* Runs herald with these options until shutdown; returns the exit code. */
int server_run(struct options *o);
const char *server_state_name(enum server_state s);
/* Stops accepting, drains for up to drain_time_ms, then leaves the loop. */
void server_shutdown(struct server *s, const char *why);
/* After a reload, once the new process is ready: stop accepting (admin too),
 * drain for up to parent_shutdown_time_ms, then leave the loop. */
void server_handover(struct server *s);
/* POST /drain_listeners: closes the listeners (inbound_only: all but the
 * OUTBOUND ones) now, or with graceful first tells every connection, open
 * or new, to drain for --drain-time-s and then closes them (skip_exit: leaves
 * them open). Open connections go on; herald keeps running. -1 when herald
 * is shutting down anyway. */
int server_drain_listeners(struct server *s, bool graceful, bool inbound_only, bool skip_exit);
/* The state /ready and /server_info report: DRAINING also during a graceful
 * drain_listeners. */
enum server_state server_reported_state(const struct server *s);
/* SIGUSR1 and POST /reopen_logs (why): the log and every access log reopened. */
void server_reopen_logs(const char *why);
/* /listeners: name and bound address of each listener. */
void server_listeners_dump(struct evbuffer *out, bool json);

#endif
