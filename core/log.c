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
 * with its own level: the core's below and each plugin's (log_register, as
 * it loads); a line of any other component follows the default level.
 * herald_log_enabled() checks the most verbose level of all, so a hot path
 * pays one atomic load unless some logger is that verbose; herald_vlog()
 * looks the component up only while the levels differ.
 *
 * The table only grows, under register_lock; readers scan it without one
 * (an entry is complete before nloggers counts it). Levels are read by
 * every thread and set by the admin thread: atomics. */
#define MAX_LOGGERS 128
#define C(name) {name, HERALD_LOG_INFO}
#define CORE_LOGGERS                                                                                          \
    C("access_log"), C("admin"), C("config"), C("conn"), C("health_check"), C("http"), C("http1"), C("http2"), \
    C("http_pool"), C("libevent"), C("listener"), C("main"), C("outlier"), C("overload"), C("plugin"),        \
    C("reload"), C("runtime"), C("splice"), C("stats"), C("tls"), C("upstream"), C("worker")
static struct log_component loggers[MAX_LOGGERS] = {CORE_LOGGERS};
static size_t nloggers = sizeof((struct log_component[]){CORE_LOGGERS}) / sizeof(struct log_component);
#undef CORE_LOGGERS
#undef C
static pthread_mutex_t register_lock = PTHREAD_MUTEX_INITIALIZER;
/* -l, ?level=: every logger's until one is set alone, and the unknown components' */
static enum herald_log_level default_level = HERALD_LOG_INFO;
static enum herald_log_level min_level = HERALD_LOG_INFO; /* the most verbose of all */
static enum herald_log_level max_level = HERALD_LOG_INFO; /* the least verbose of all */

/* Envoy's names for what herald calls otherwise */
static const struct {
    const char *envoy, *herald;
} aliases[] = {
    {"connection", "conn"}, {"pool", "http_pool"}, {"hc", "health_check"}, {"conn_handler", "listener"},
};

static struct log_component *find_logger(const char *name)
{
    size_t n = __atomic_load_n(&nloggers, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n; i++)
        if (strcmp(loggers[i].name, name) == 0)
            return &loggers[i];
    return NULL;
}

/* under register_lock */
static void recompute_bounds(void)
{
    enum herald_log_level lo = default_level, hi = default_level;
    for (size_t i = 0; i < nloggers; i++) {
        enum herald_log_level l = __atomic_load_n(&loggers[i].level, __ATOMIC_RELAXED);
        lo = l < lo ? l : lo;
        hi = l > hi ? l : hi;
    }
    __atomic_store_n(&min_level, lo, __ATOMIC_RELAXED);
    __atomic_store_n(&max_level, hi, __ATOMIC_RELAXED);
}

void log_register(const char *component)
{
    pthread_mutex_lock(&register_lock);
    if (!find_logger(component) && nloggers < MAX_LOGGERS) {
        loggers[nloggers] = (struct log_component){xstrdup(component), default_level};
        __atomic_store_n(&nloggers, nloggers + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&register_lock);
}

bool herald_log_enabled(enum herald_log_level level)
{
    return level >= __atomic_load_n(&min_level, __ATOMIC_RELAXED) && level < HERALD_LOG_OFF;
}

/* -l and ?level=: every logger */
void log_set_level(enum herald_log_level level)
{
    pthread_mutex_lock(&register_lock);
    default_level = level;
    for (size_t i = 0; i < nloggers; i++)
        __atomic_store_n(&loggers[i].level, level, __ATOMIC_RELAXED);
    recompute_bounds();
    pthread_mutex_unlock(&register_lock);
}

enum herald_log_level log_get_level(void) { return __atomic_load_n(&default_level, __ATOMIC_RELAXED); }

const char *log_component_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(aliases); i++)
        if (strcmp(name, aliases[i].envoy) == 0)
            name = aliases[i].herald;
    struct log_component *lg = find_logger(name);
    return lg ? lg->name : NULL;
}

enum herald_log_level log_component_level(const char *component)
{
    struct log_component *lg = component ? find_logger(component) : NULL;
    return lg ? __atomic_load_n(&lg->level, __ATOMIC_RELAXED) : log_get_level();
}

void log_set_component_level(const char *component, enum herald_log_level level)
{
    pthread_mutex_lock(&register_lock);
    struct log_component *lg = find_logger(component);
    if (lg) {
        __atomic_store_n(&lg->level, level, __ATOMIC_RELAXED);
        recompute_bounds();
    }
    pthread_mutex_unlock(&register_lock);
}

size_t log_components(struct log_component *out, size_t max)
{
    size_t n = __atomic_load_n(&nloggers, __ATOMIC_ACQUIRE);
    n = n < max ? n : max;
    for (size_t i = 0; i < n; i++)
        out[i] = (struct log_component){loggers[i].name, __atomic_load_n(&loggers[i].level, __ATOMIC_RELAXED)};
    return n;
}

int log_each_component_level(const char *spec, int (*fn)(char *name, char *level, void *arg), void *arg)
{
    char *copy = xstrdup(spec), *save = NULL;
    int rc = 0;
    for (char *pair = strtok_r(copy, ",", &save); pair && rc == 0; pair = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(pair, ':');
        if (colon)
            *colon = '\0';
        rc = fn(pair, colon ? colon + 1 : NULL, arg);
    }
    free(copy);
    return rc;
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
    if (level < __atomic_load_n(&max_level, __ATOMIC_RELAXED) && level < log_component_level(component))
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
