/* herald SDK: access logs in Envoy's config and format language.
 *
 * One entry of an `access_log:` list (envoy.access_loggers.file / .stdout /
 * .stderr with FileAccessLog path + log_format {text_format,
 * text_format_source.inline_string, json_format}, or the deprecated
 * `format`) becomes a herald_access_log. The core owns the file (appends
 * whole lines, reopens on SIGUSR1) and the format parser; the filter supplies
 * the value of each %OPERATOR% when it writes a line. */
#ifndef HERALD_ACCESS_LOG_H
#define HERALD_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "herald/config.h"
#include "herald/network_filter.h"
#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

struct herald_access_log;

/* Returns the value of operator `op` (e.g. "BYTES_RECEIVED", or "REQ" with
 * arg "USER-AGENT") for this line, written into scratch if it needs
 * formatting, or NULL when it has none (logged as "-"). */
typedef const char *(*herald_log_field_cb)(void *ctx, const char *op, const char *arg, char *scratch,
                                           size_t scratch_len);

/* default_format: used when the entry has none (Envoy's differs by filter).
 * In validate-only mode the file is not opened. */
HERALD_EXPORT struct herald_access_log *herald_access_log_create(const struct herald_cfg *entry,
                                                                const struct herald_filter_env *env,
                                                                const char *default_format, char **err);
HERALD_EXPORT void herald_access_log_destroy(struct herald_access_log *l);
HERALD_EXPORT void herald_access_log_write(struct herald_access_log *l, herald_log_field_cb field, void *ctx);

/* (1.1) %START_TIME(fmt)% for a field callback: strftime in UTC with
 * Envoy's extras (%f, %1f..%9f, %ES, %E1S..%E9S, %s); fmt NULL or "" means
 * Envoy's default. Returns out, or NULL when it does not fit. */
HERALD_EXPORT const char *herald_access_log_format_time(uint64_t wall_ms, const char *fmt, char *out, size_t len);

/* (1.11) One string with %OPERATORS% (a header value's rules: an operator
 * without a value renders as nothing, %% is '%'), such as tcp_proxy's
 * tunneling_config.hostname. new compiles the string node n (NULL and a
 * malloc'd *err with n's place when it is bad); render gives it through
 * field (malloc'd; field NULL: every operator empty). */
struct herald_format;
HERALD_EXPORT struct herald_format *herald_format_new(const struct herald_cfg *n, char **err);
HERALD_EXPORT char *herald_format_render(const struct herald_format *f, herald_log_field_cb field, void *ctx);
HERALD_EXPORT void herald_format_free(struct herald_format *f);

/* Envoy's default format for TCP and HTTP. */
#define HERALD_DEFAULT_ACCESS_LOG_FORMAT                                                              \
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% " \
    "%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% " \
    "\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" "   \
    "\"%UPSTREAM_HOST%\"\n"

#ifdef __cplusplus
}
#endif
#endif
