/* herald(8): command line, like Envoy's. */
#include "config.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/version.h"
#include "log.h"
#include "mem_cache.h"
#include "plugin.h"
#include "server.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: herald [OPTIONS]\n"
            "An Envoy-compatible L4/L7 proxy: reads Envoy v3 bootstrap YAML/JSON.\n\n"
            "  -c, --config-path FILE      bootstrap config (.yaml, .yml or .json)\n"
            "      --config-yaml TEXT      inline YAML, merged over --config-path\n"
            "      --mode serve|validate   validate: check the config, print warnings, exit 0/1\n"
            "      --concurrency N         worker threads (default: number of CPUs)\n"
            "  -l, --log-level LEVEL       trace, debug, info (default), warning, error, critical, off\n"
            "      --component-log-level C:LEVEL,...  one component's level, e.g. upstream:debug,\n"
            "                              connection:trace (Envoy's names for herald's too)\n"
            "      --log-path FILE         log here instead of stderr (reopened on SIGUSR1)\n"
            "      --plugin-dir DIRS       colon-separated plugin directories\n"
            "                              (default: $HERALD_PLUGIN_PATH, then %s)\n"
            "      --list-plugins          list the plugins found and exit\n"
            "      --describe NAME         print a filter's config fields and exit\n"
            "      --drain-time-s N        how long shutdown waits for connections (default 5)\n"
            "      --parent-shutdown-time-s N  after a reload, how long the old process may drain\n"
            "                              before it closes what is left and exits (default 900)\n"
            "      --admin-address-path F  write the admin listener's bound address to F\n"
            "      --version               print the version and exit\n"
            "  -h, --help                  this help\n\n"
            "Signals: SIGTERM/SIGINT drain and exit 0; SIGUSR1 reopens log files;\n"
            "SIGHUP reloads the configuration (a new process takes the sockets over).\n"
            "See herald(8), herald.yaml(5) and herald-sdk(3).\n",
            HERALD_PLUGIN_DIR);
}

enum {
    OPT_CONFIG_YAML = 256, OPT_MODE, OPT_CONCURRENCY, OPT_PLUGIN_DIR, OPT_LIST_PLUGINS, OPT_DESCRIBE,
    OPT_VERSION, OPT_LOG_PATH, OPT_DRAIN_TIME, OPT_ADMIN_PATH, OPT_PARENT_SHUTDOWN_TIME, OPT_COMPONENT_LOG_LEVEL,
};

static const struct option long_opts[] = {
    {"config-path", required_argument, NULL, 'c'},
    {"config-yaml", required_argument, NULL, OPT_CONFIG_YAML},
    {"mode", required_argument, NULL, OPT_MODE},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"log-level", required_argument, NULL, 'l'},
    {"component-log-level", required_argument, NULL, OPT_COMPONENT_LOG_LEVEL},
    {"log-path", required_argument, NULL, OPT_LOG_PATH},
    {"plugin-dir", required_argument, NULL, OPT_PLUGIN_DIR},
    {"list-plugins", no_argument, NULL, OPT_LIST_PLUGINS},
    {"describe", required_argument, NULL, OPT_DESCRIBE},
    {"drain-time-s", required_argument, NULL, OPT_DRAIN_TIME},
    {"parent-shutdown-time-s", required_argument, NULL, OPT_PARENT_SHUTDOWN_TIME},
    {"admin-address-path", required_argument, NULL, OPT_ADMIN_PATH},
    {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse_uint(const char *opt, const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v > max || s[0] == '-') {
        fprintf(stderr, "herald: %s: '%s' is not a number between 0 and %lu\n", opt, s, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* libevent's own messages (e.g. "Nameserver ... has failed") go to our log. */
static void libevent_log(int severity, const char *msg)
{
    enum herald_log_level l = severity == EVENT_LOG_DEBUG ? HERALD_LOG_DEBUG
                              : severity == EVENT_LOG_MSG ? HERALD_LOG_INFO
                              : severity == EVENT_LOG_WARN ? HERALD_LOG_WARN
                                                           : HERALD_LOG_ERROR;
    herald_log(l, "libevent", "%s", msg);
}

static int set_component_level(char *name, char *level, void *arg)
{
    (void)arg;
    const char *component = log_component_find(name);
    enum herald_log_level l;
    if (!level || log_level_from_name(level, &l) < 0) {
        fprintf(stderr, "herald: --component-log-level: '%s' is not <component>:<level> with a level of "
                        "trace, debug, info, warning, error, critical, off\n", name);
        return -1;
    }
    if (!component) {
        fprintf(stderr, "herald: --component-log-level: no component '%s' (POST /logging lists them)\n", name);
        return -1;
    }
    log_set_component_level(component, l);
    return 0;
}

/* --component-log-level upstream:debug,connection:trace, after -l whatever
 * the order (as Envoy); the plugins are loaded first, so that their
 * components are known. */
static int set_component_levels(const char *spec, const char *plugin_dirs)
{
    plugin_set_dirs(plugin_dirs);
    plugin_load_all();
    return log_each_component_level(spec, set_component_level, NULL);
}

/* glibc gives freed memory at the top of a heap back with madvise() as soon
 * as 128 KiB are free, and the next burst faults it in again: a busy proxy
 * paid a madvise every ~25 requests and the page faults after it. Keep up to
 * 8 MiB per heap instead (the peak, not the idle size, is what grows). */
static void tune_malloc(void)
{
#if defined(M_TRIM_THRESHOLD) && defined(M_TOP_PAD)
    if (!getenv("MALLOC_TRIM_THRESHOLD_"))
        mallopt(M_TRIM_THRESHOLD, 8 * 1024 * 1024);
    if (!getenv("MALLOC_TOP_PAD_"))
        mallopt(M_TOP_PAD, 1024 * 1024);
#endif
}

int main(int argc, char **argv)
{
    struct options o = {.drain_time_ms = 5000, .parent_shutdown_time_ms = 900000, .argc = argc, .argv = argv};
    const char *describe = NULL, *component_levels = NULL;
    bool list = false;
    unsigned long v;
    int c;

    tune_malloc();
    mem_cache_init();
    evthread_use_pthreads();
    event_set_log_callback(libevent_log);
    while ((c = getopt_long(argc, argv, "c:l:h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'c': o.config_path = optarg; break;
        case OPT_CONFIG_YAML: o.config_yaml = optarg; break;
        case OPT_MODE:
            if (strcmp(optarg, "validate") == 0)
                o.validate = true;
            else if (strcmp(optarg, "serve") != 0) {
                fprintf(stderr, "herald: --mode: '%s' is not one of serve, validate\n", optarg);
                return 1;
            }
            break;
        case OPT_CONCURRENCY:
            if (parse_uint("--concurrency", optarg, 1024, &v) < 0)
                return 1;
            o.concurrency = v ? (unsigned)v : 1; /* like Envoy, 0 still means one worker */
            break;
        case 'l':
            if (log_set_level_name(optarg) < 0) {
                fprintf(stderr, "herald: --log-level: '%s' is not one of trace, debug, info, warning, error, "
                                "critical, off\n", optarg);
                return 1;
            }
            o.log_level = optarg;
            break;
        case OPT_COMPONENT_LOG_LEVEL: component_levels = optarg; break;
        case OPT_LOG_PATH: o.log_path = optarg; break;
        case OPT_PLUGIN_DIR: o.plugin_dirs = optarg; break;
        case OPT_LIST_PLUGINS: list = true; break;
        case OPT_DESCRIBE: describe = optarg; break;
        case OPT_DRAIN_TIME:
            if (parse_uint("--drain-time-s", optarg, 86400, &v) < 0)
                return 1;
            o.drain_time_ms = v * 1000;
            break;
        case OPT_PARENT_SHUTDOWN_TIME:
            if (parse_uint("--parent-shutdown-time-s", optarg, 86400 * 7, &v) < 0)
                return 1;
            o.parent_shutdown_time_ms = v * 1000;
            break;
        case OPT_ADMIN_PATH: o.admin_address_path = optarg; break;
        case OPT_VERSION:
            printf("herald version: herald/%s/RELEASE/%s (SDK ABI %d.%d, libevent %s)\n", PACKAGE_VERSION,
                   OpenSSL_version(OPENSSL_VERSION), HERALD_ABI_MAJOR, HERALD_ABI_MINOR, event_get_version());
            return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "herald: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 1;
    }
    if (o.validate && !o.log_level)
        log_set_level(HERALD_LOG_WARN); /* validate prints diagnostics, not progress */
    if (o.log_path && log_open_path(o.log_path) < 0) {
        perror(o.log_path);
        return 1;
    }
    if (component_levels && !list && !describe && set_component_levels(component_levels, o.plugin_dirs) < 0)
        return 1;
    if (list || describe) {
        plugin_set_dirs(o.plugin_dirs);
        int rc = 0;
        if (list)
            plugin_list(stdout);
        if (describe)
            rc = plugin_describe(stdout, describe) < 0 ? 1 : 0;
        plugin_unload_all();
        return rc;
    }
    return server_run(&o);
}
