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

static enum herald_log_level min_level = HERALD_LOG_INFO;
static int log_fd = 2;
static char *log_path;
static __thread char thread_name[16] = "main";

static const char *const level_names[] = {"trace", "debug", "info", "warning", "error", "critical", "off"};

/* Read by every thread, set by the admin thread (POST /logging): atomic. */
bool herald_log_enabled(enum herald_log_level level)
{
    return level >= __atomic_load_n(&min_level, __ATOMIC_RELAXED) && level < HERALD_LOG_OFF;
}

void log_set_level(enum herald_log_level level) { __atomic_store_n(&min_level, level, __ATOMIC_RELAXED); }

enum herald_log_level log_get_level(void) { return __atomic_load_n(&min_level, __ATOMIC_RELAXED); }

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
