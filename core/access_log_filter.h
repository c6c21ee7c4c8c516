/* Envoy's AccessLogFilter (envoy.config.accesslog.v3.AccessLogFilter): whether
 * a line is written. Used by access_log[].filter and by the HTTP connection
 * manager's local_reply_config mappers. A filter reads the same values a log
 * line does, through the writer's herald_log_field_cb, so every writer (HTTP
 * streams, tcp_proxy) gets filters without knowing of them. */
#ifndef HERALD_CORE_ACCESS_LOG_FILTER_H
#define HERALD_CORE_ACCESS_LOG_FILTER_H

#include <stdbool.h>

#include "herald/access_log.h"
#include "herald/config.h"

struct log_filter;

/* Parses an AccessLogFilter node; an error (with its place and field path)
 * in *err and NULL when it is bad or asks for a filter herald lacks. */
struct log_filter *log_filter_create(const struct herald_cfg *n, char **err);
void log_filter_free(struct log_filter *f);
bool log_filter_matches(const struct log_filter *f, herald_log_field_cb field, void *ctx);

/* The internal query (not a format operator) a writer answers with "1" for a
 * health check request: not_health_check_filter. */
#define LOG_FILTER_HEALTH_CHECK_QUERY "HERALD_IS_HEALTH_CHECK"

#endif
