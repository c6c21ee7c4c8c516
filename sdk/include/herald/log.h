/* herald SDK: logging into herald's log, at herald's level (-l). */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

#include <stdarg.h>
#include <stdbool.h>

#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

enum herald_log_level {
    HERALD_LOG_TRACE = 0,
    HERALD_LOG_DEBUG,
    HERALD_LOG_INFO,
    HERALD_LOG_WARN,
    HERALD_LOG_ERROR,
    HERALD_LOG_CRITICAL,
    HERALD_LOG_OFF,
};

HERALD_EXPORT bool herald_log_enabled(enum herald_log_level level);
/* component: a short name shown in brackets, e.g. "tcp_proxy". Each
 * component has its own level (/logging?tcp_proxy=debug); a plugin's own is
 * known by the last dotted part of its name ("envoy.filters.network.tcp_proxy":
 * "tcp_proxy"), so log under that. herald_log_enabled() is true when some
 * component logs at that level: herald_log() checks the component's. */
HERALD_EXPORT void herald_log(enum herald_log_level level, const char *component, const char *fmt, ...)
    HERALD_PRINTF(3, 4);
HERALD_EXPORT void herald_vlog(enum herald_log_level level, const char *component, const char *fmt, va_list ap);

#define HERALD_LOGF(lvl, comp, ...) \
    do { if (herald_log_enabled(lvl)) herald_log((lvl), (comp), __VA_ARGS__); } while (0)

#ifdef __cplusplus
}
#endif
#endif
