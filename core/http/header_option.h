/* Envoy's HeaderValueOption lists (request_headers_to_add and the like): the
 * core side of the SDK's herald_header_options, for the routes, local
 * replies and health checks, which apply them with their own operator
 * source. */
#ifndef HERALD_CORE_HEADER_OPTION_H
#define HERALD_CORE_HEADER_OPTION_H

#include "herald/access_log.h"
#include "herald/http.h"

/* Applies o to h in order. Values with %OPERATORS% are rendered through
 * field(ctx, ...) (NULL: every operator has no value); as Envoy's
 * HeaderParser, an operator without a value renders as nothing, and a value
 * that comes out empty is not added unless keep_empty_value. */
void header_options_apply_with(const struct herald_header_options *o, struct herald_headers *h,
                               herald_log_field_cb field, void *ctx);
size_t header_options_count(const struct herald_header_options *o);

/* header_option_schema.c: the message's tables and check, for the parser */
extern const char *const header_option_actions[];     /* the append_action names, by value */
extern const struct herald_field header_option_fields[], header_option_value_fields[];
int header_option_check(const struct herald_cfg *n, char **err);

#endif
