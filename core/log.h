/* Internal logging: the SDK's herald_log() plus set-up. Lines go to stderr
 * (or --log-path) as "[time][thread][level][component] message". */
#ifndef HERALD_CORE_LOG_H
#define HERALD_CORE_LOG_H

#include "herald/log.h"

int log_set_level_name(const char *name); /* 0, or -1 for an unknown name */
int log_level_from_name(const char *name, enum herald_log_level *level); /* the same, without setting it */
void log_set_level(enum herald_log_level level);           /* every component's */
enum herald_log_level log_get_level(void);                 /* the default: -l or the last ?level= */

/* Each component has its level (Envoy's loggers): the core's, and those
 * registered (a plugin's, as it loads). */
struct log_component {
    const char *name;
    enum herald_log_level level;
};
void log_register(const char *component);
/* The component's own name for name, Envoy's logger names too ("connection"
 * is herald's "conn"); NULL when there is none. It lives as long as herald. */
const char *log_component_find(const char *name);
enum herald_log_level log_component_level(const char *component); /* the default: unknown or NULL */
void log_set_component_level(const char *component, enum herald_log_level level);
size_t log_components(struct log_component *out, size_t max);     /* in no order; how many */
/* "<component>:<level>,..." (--component-log-level, /logging?paths=): fn on
 * each pair, level NULL when a pair has no ':', until fn returns non-zero
 * (returned). Each caller checks and words its errors its own way. */
int log_each_component_level(const char *spec, int (*fn)(char *name, char *level, void *arg), void *arg);
const char *log_level_name(enum herald_log_level level);
int log_open_path(const char *path);      /* --log-path; -1 with errno */
void log_reopen(void);                    /* SIGUSR1 */
void log_set_thread_name(const char *name);

#define log_trace(comp, ...) HERALD_LOGF(HERALD_LOG_TRACE, comp, __VA_ARGS__)
#define log_debug(comp, ...) HERALD_LOGF(HERALD_LOG_DEBUG, comp, __VA_ARGS__)
#define log_info(comp, ...) HERALD_LOGF(HERALD_LOG_INFO, comp, __VA_ARGS__)
#define log_warn(comp, ...) HERALD_LOGF(HERALD_LOG_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) HERALD_LOGF(HERALD_LOG_ERROR, comp, __VA_ARGS__)

#endif
