/* Logging: one line per write(2), so lines from several threads never mix. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "log.h"

static int log_fd = 2;
static char *log_path;
static __thread char thread_name[16] = "main";

static const char *const level_names[] = {"trace", "debug", "info", "warning", "error", "critical", "off"};

/* Envoy's loggers, one per component (the name in a line's brackets), each
 * with its own level. herald_log_enabled() checks the most verbose of all,
 * so a hot path pays one atomic load unless some logger is that verbose;
 * herald_vlog() then checks the component's own level.
 *
 * The table only grows: a component is added when it first logs, when a
 * plugin loads (its short name), or from the list of core ones below, and
 * readers scan it without a lock (entries are complete before nloggers
 * counts them). Levels are read by every thread and set by the admin
 * thread: atomics. */
#define MAX_LOGGERS 128
struct logger {
    const char *name;
    enum herald_log_level level;
};
static struct logger loggers[MAX_LOGGERS];
static size_t nloggers;
static pthread_mutex_t register_lock = PTHREAD_MUTEX_INITIALIZER;
static enum herald_log_level default_level = HERALD_LOG_INFO; /* -l, ?level=: for components not yet seen */
static enum herald_log_level min_level = HERALD_LOG_INFO;     /* the most verbose of all loggers */

static const char *const core_components[] = {
    "access_log", "admin", "config", "conn", "health_check", "http", "http1", "http2", "http_pool",
    "libevent", "listener", "main", "outlier", "overload", "plugin", "reload", "runtime", "splice", "stats",
    "tls", "upstream", "worker",
};

/* Envoy's names for what herald calls otherwise */
static const struct {
    const char *envoy, *herald;
} aliases[] = {
    {"connection", "conn"}, {"pool", "http_pool"}, {"hc", "health_check"}, {"conn_handler", "listener"},
};

static struct logger *find_logger(const char *name)
{
    size_t n = __atomic_load_n(&nloggers, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n; i++)
        if (strcmp(loggers[i].name, name) == 0)
            return &loggers[i];
    return NULL;
}

static void recompute_min_level(void)
{
    enum herald_log_level m = __atomic_load_n(&default_level, __ATOMIC_RELAXED);
    size_t n = __atomic_load_n(&nloggers, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n; i++) {
        enum herald_log_level l = __atomic_load_n(&loggers[i].level, __ATOMIC_RELAXED);
        if (l < m)
            m = l;
    }
    __atomic_store_n(&min_level, m, __ATOMIC_RELAXED);
}

/* The component's logger, added at the default level when new; NULL when
 * the table is full (the default level applies then). */
static struct logger *logger_for(const char *name)
{
    struct logger *lg = find_logger(name);
    if (lg)
        return lg;
    pthread_mutex_lock(&register_lock);
    lg = find_logger(name);
    if (!lg && nloggers < MAX_LOGGERS) {
        lg = &loggers[nloggers];
        lg->name = xstrdup(name);
        lg->level = __atomic_load_n(&default_level, __ATOMIC_RELAXED);
        __atomic_store_n(&nloggers, nloggers + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&register_lock);
    return lg;
}

void log_register(const char *component)
{
    logger_for(component);
}

static void add_core_components(void)
{
    for (size_t i = 0; i < ARRAY_SIZE(core_components); i++)
        logger_for(core_components[i]);
}

/* before any level is set or listed, so that the core components are known */
static void register_core(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, add_core_components);
}

bool herald_log_enabled(enum herald_log_level level)
{
    return level >= __atomic_load_n(&min_level, __ATOMIC_RELAXED) && level < HERALD_LOG_OFF;
}

/* -l and ?level=: every logger, and those still to come */
void log_set_level(enum herald_log_level level)
{
    register_core();
    pthread_mutex_lock(&register_lock);
    __atomic_store_n(&default_level, level, __ATOMIC_RELAXED);
    for (size_t i = 0; i < nloggers; i++)
        __atomic_store_n(&loggers[i].level, level, __ATOMIC_RELAXED);
    __atomic_store_n(&min_level, level, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&register_lock);
}

enum herald_log_level log_get_level(void) { return __atomic_load_n(&default_level, __ATOMIC_RELAXED); }

const char *log_component_name(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(aliases); i++)
        if (strcmp(name, aliases[i].envoy) == 0)
            return aliases[i].herald;
    return name;
}

bool log_component_known(const char *name)
{
    register_core();
    return find_logger(log_component_name(name)) != NULL;
}

enum herald_log_level log_component_level(const char *name)
{
    struct logger *lg = find_logger(log_component_name(name));
    return lg ? __atomic_load_n(&lg->level, __ATOMIC_RELAXED) : log_get_level();
}

int log_set_component_level(const char *name, enum herald_log_level level)
{
    register_core();
    struct logger *lg = find_logger(log_component_name(name));
    if (!lg)
        return -1;
    pthread_mutex_lock(&register_lock);
    __atomic_store_n(&lg->level, level, __ATOMIC_RELAXED);
    recompute_min_level();
    pthread_mutex_unlock(&register_lock);
    return 0;
}

size_t log_loggers(const char **names, enum herald_log_level *levels, size_t max)
{
    register_core();
    size_t n = __atomic_load_n(&nloggers, __ATOMIC_ACQUIRE);
    if (n > max)
        n = max;
    for (size_t i = 0; i < n; i++) {
        names[i] = loggers[i].name;
        levels[i] = __atomic_load_n(&loggers[i].level, __ATOMIC_RELAXED);
    }
    return n;
}

const char *log_level_name(enum herald_log_level level)
{
    return (unsigned)level < ARRAY_SIZE(level_names) ? level_names[level] : "?";
}

int log_level_from_name(const char *name, enum herald_log_level *level)
{
    for (size_t i = 0; i < ARRAY_SIZE(level_names); i++)
        if (strcasecmp(name, level_names[i]) == 0) {
            *level = (enum herald_log_level)i;
            return 0;
        }
    if (strcasecmp(name, "warn") == 0) {
        *level = HERALD_LOG_WARN;
        return 0;
    }
    return -1;
}

int log_set_level_name(const char *name)
{
    enum herald_log_level level;
    if (log_level_from_name(name, &level) < 0)
        return -1;
    log_set_level(level);
    return 0;
}

void log_set_thread_name(const char *name)
{
    snprintf(thread_name, sizeof(thread_name), "%s", name);
}

int log_open_path(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    if (log_fd > 2)
        close(log_fd);
    log_fd = fd;
    if (path != log_path) {
        free(log_path);
        log_path = xstrdup(path);
    }
    return 0;
}

void log_reopen(void)
{
    if (log_path && log_open_path(log_path) < 0)
        herald_log(HERALD_LOG_ERROR, "main", "cannot reopen log %s: %s", log_path, strerror(errno));
}

void herald_vlog(enum herald_log_level level, const char *component, const char *fmt, va_list ap)
{
    if (!herald_log_enabled(level))
        return;
    struct logger *lg = component ? logger_for(component) : NULL;
    enum herald_log_level at = lg ? __atomic_load_n(&lg->level, __ATOMIC_RELAXED)
                                  : __atomic_load_n(&default_level, __ATOMIC_RELAXED);
    if (level < at)
        return;
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "[%04d-%02d-%02d %02d:%02d:%02d.%03ld][%s][%s][%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), thread_name, log_level_name(level),
                     component ? component : "-");
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(log_fd, line, len);
    (void)w;
}

void herald_log(enum herald_log_level level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    herald_vlog(level, component, fmt, ap);
    va_end(ap);
}
