/* Internal logging: the SDK's herald_log() plus set-up. Lines go to stderr
 * (or --log-path) as "[time][thread][level][component] message". */
#ifndef HERALD_CORE_LOG_H
#define HERALD_CORE_LOG_H

#include "herald/log.h"

int log_set_level_name(const char *name); /* 0, or -1 for an unknown name */
int log_level_from_name(const char *name, enum herald_log_level *level); /* the same, without setting it */
void log_set_level(enum herald_log_level level);           /* every component's */
enum herald_log_level log_get_level(void);                 /* the default: -l or the last ?level= */
/* One component's level (Envoy's /logging?<logger>=<level>); name may be
 * Envoy's ("connection" for herald's "conn"). -1: no such component. */
int log_set_component_level(const char *name, enum herald_log_level level);
const char *log_component_name(const char *name);          /* herald's name for an Envoy logger name */
bool log_component_known(const char *name);                /* (Envoy's names too) */
enum herald_log_level log_component_level(const char *name);
void log_register(const char *component);                  /* known before it first logs (a plugin's) */
/* up to max components and their levels, in no order; returns how many */
size_t log_loggers(const char **names, enum herald_log_level *levels, size_t max);
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
