/* Access logs: the core side of herald/access_log.h (format parser, shared
 * output files). */
#ifndef HERALD_CORE_ACCESS_LOG_H
#define HERALD_CORE_ACCESS_LOG_H

#include "herald/access_log.h"

/* Reopens every access log file (logrotate's SIGUSR1). Main thread; workers
 * keep writing meanwhile: the new file takes the old descriptor's number. */
void access_log_reopen_all(void);
/* Whether l's format has an operator whose name starts with prefix: what a
 * writer need not gather per request when no log line asks for it. */
bool access_log_uses(const struct herald_access_log *l, const char *prefix);
/* A SubstitutionFormatString (text_format, text_format_source, json_format,
 * omit_empty_values) made into memory rather than to a file: the HCM's
 * local replies. default_format when it names no format. NULL and an error
 * with its place in *err when it is bad. Free with herald_access_log_destroy. */
struct herald_access_log *access_log_format_create(const struct herald_cfg *sfs, const char *default_format,
                                                  char **err);
/* The same for a lone text format string (a header value) at node `at`. */
struct herald_access_log *access_log_text_create(const char *text, const struct herald_cfg *at, char **err);
/* A header value (HeaderValueOption): the same, except that an operator
 * without a value renders as nothing rather than "-", as Envoy's headers. */
struct herald_access_log *access_log_header_value_create(const char *text, const struct herald_cfg *at, char **err);
/* Whether the format is json_format (a local reply's application/json). */
bool access_log_is_json(const struct herald_access_log *l);
/* l rendered for one request: a malloc'd, NUL-terminated string (*len). */
char *access_log_render(const struct herald_access_log *l, herald_log_field_cb field, void *ctx, size_t *len);
/* A thread that wrote access log lines frees its line buffer. */
void access_log_thread_exit(void);

#endif
