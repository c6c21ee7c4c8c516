/* The HCM's local_reply_config (envoy.extensions.filters.network.
 * http_connection_manager.v3.LocalReplyConfig): every reply herald makes
 * itself (no route, no healthy upstream, timeouts, 400s, rbac's 403,
 * direct_response, ...) passes its mappers, the first whose filter matches
 * rewriting status, body and headers, then its body format. */
#ifndef HERALD_CORE_HTTP_LOCAL_REPLY_H
#define HERALD_CORE_HTTP_LOCAL_REPLY_H

#include "herald/access_log.h"
#include "herald/config.h"
#include "herald/http.h"

struct local_reply;
struct lr_mapper;

/* NULL and an error (place, field path) in *err when n is bad. */
struct local_reply *local_reply_create(const struct herald_cfg *n, char **err);
void local_reply_free(struct local_reply *lr);

/* The first mapper whose filter accepts the reply (the field callback sees
 * its status code and body), or NULL. */
const struct lr_mapper *local_reply_match(const struct local_reply *lr, herald_log_field_cb field, void *ctx);
/* What the mapper rewrites: its status_code (0: keep) and body (NULL: keep). */
int lr_mapper_status(const struct lr_mapper *m);
const char *lr_mapper_body(const struct lr_mapper *m);
/* Its headers_to_add, applied to the reply's headers h. */
void lr_mapper_add_headers(const struct lr_mapper *m, struct herald_headers *h, herald_log_field_cb field,
                           void *ctx);
/* The reply's body through m's body_format_override or else the config's
 * body_format (%LOCAL_REPLY_BODY% being the body so far): malloc'd, *len;
 * *content_type is the format's. */
char *local_reply_format(const struct local_reply *lr, const struct lr_mapper *m, herald_log_field_cb field,
                         void *ctx, size_t *len, const char **content_type);

#endif
